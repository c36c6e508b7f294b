//! Checks a play's answer against the model (docs/fleetsim.md, "What it verifies").
//!
//! For each rendition offered: the content belongs to the title; 1 to 10 URLs on distinct
//! appliances; each URL names an appliance of the fleet, its content id, and a `play`
//! signature that verifies under the keys that appliance's site was handed and expires within
//! the URL lifetime; each appliance is inside the client's neighbourhood (own site hearing the
//! route, the own site's parent, an IXP site of its region), ranked no worse than a nearer
//! one (but for the last place, which may go to a second site), reported recently, not
//! `error`, and holds the file. When fewer than 10 are offered, every appliance that has
//! certainly qualified for longer than the bound is among them; a rendition left out, or a
//! 503 `no_appliance`, means no such appliance exists.
//!
//! "Certainly" and "may" come from the propagation bound: a change (a file added or removed,
//! a status flip, a withdrawn route) makes both the old and the new state acceptable for
//! `bound` after the report that carried it.

use std::time::{Duration, Instant};

use oca_protocol::playback::PlayAnswer;
use oca_protocol::signing::{self, Scope};
use oca_protocol::steering::SteerAnswer;

use crate::fleet;
use crate::model::{Appliance, Model};

/// A play URL's lifetime at the control plane (`play::URL_TTL_SECS`, 6 hours); an expiry
/// further out than this (plus clock slack) is wrong.
pub const URL_TTL_SECS: u64 = 6 * 3600;

/// One failed check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Stable kind, for counting.
    pub kind: &'static str,
    /// What exactly.
    pub detail: String,
    /// The file and appliances concerned, so the control plane's own reasons can be asked for
    /// (`/v1/steer?explain=1`) and added to the detail.
    pub about: Option<(u32, Vec<u32>)>,
}

/// A failure of `kind`.
pub fn fail(kind: &'static str, detail: String) -> Failure {
    Failure {
        kind,
        detail,
        about: None,
    }
}

/// A failure about file `f` on `appliances`.
fn fail_about(kind: &'static str, detail: String, f: u32, appliances: Vec<u32>) -> Failure {
    Failure {
        about: Some((f, appliances)),
        ..fail(kind, detail)
    }
}

/// When a play was asked and answered.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Sent.
    pub asked: Instant,
    /// Answered.
    pub answered: Instant,
    /// Unix seconds at the answer (for URL expiries).
    pub unix_now: u64,
}

/// How appliance `a` may stand for an answer in `w`: whether it may serve file `f` (`may`)
/// and whether it certainly does (`sure`).
struct Standing {
    may: Result<(), &'static str>,
    sure: bool,
}

fn standing(m: &Model, st: &Appliance, f: u32, w: &Window) -> Standing {
    let since = w.asked.checked_sub(m.bound).unwrap_or(w.asked);
    let slack = m.bound + Duration::from_secs(1);
    let status_recent = st.status_at.after(since);
    // The control plane counts freshness from when it took a report: after it was sent,
    // before it was answered (or now, while it is on its way).
    let may_fresh = st.reporting
        || st
            .last_ok_done
            .is_some_and(|t| t + m.stale_after + slack >= w.asked);
    let sure_fresh = st.surely_fresh(since, w.answered + slack, m.stale_after);
    let unsure_inventory = st.inventory_unsure(since);
    let may = if !may_fresh {
        Err("stale")
    } else if st.error && !status_recent {
        Err("status error")
    } else if !st.holds(f) && !st.changed_since(f, since) && !unsure_inventory {
        Err("does not hold the file")
    } else {
        Ok(())
    };
    let sure = may.is_ok()
        && sure_fresh
        && !st.error
        && !status_recent
        && st.holds(f)
        && !st.changed_since(f, since)
        && !unsure_inventory;
    Standing { may, sure }
}

/// The client's prefix and who in its site hears it: read once per answer.
struct Client {
    n: u32,
    first: u32,
    hears: Vec<bool>,
    /// No route of the client's site changed within the bound: places are certain.
    sure: bool,
}

impl Client {
    fn of(m: &Model, n: u32, w: &Window) -> Client {
        let since = w.asked.checked_sub(m.bound).unwrap_or(w.asked);
        let site = m.shape.site_appliances(m.shape.prefix_site(n));
        let mut sure = true;
        let hears = site
            .clone()
            .map(|b| {
                let st = m.appliance(b);
                sure &= !st.routes_changed_since(since);
                st.hears(n)
            })
            .collect();
        Client {
            n,
            first: site.start,
            hears,
            sure,
        }
    }

    /// Appliance `a`'s place for this client.
    fn place(&self, m: &Model, a: u32) -> Option<u8> {
        m.place(a, self.n, &|b| self.hears[(b - self.first) as usize])
    }
}

/// Appliance number behind a play URL, and its query; none when the URL is not one of ours.
fn parse_url<'u>(m: &Model, url: &'u str, content_id: &str) -> Option<(u32, &'u str)> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/')?;
    let o = fleet::parse_oca_host(host)?;
    if o.site >= m.shape.sites || o.k >= m.shape.per_site {
        return None;
    }
    let (path, query) = path.split_once('?')?;
    (path.strip_prefix("c/")? == content_id).then_some((m.shape.index(o), query))
}

fn check_signature(m: &Model, a: u32, id: &str, query: &str, w: &Window) -> Result<(), Failure> {
    let site = m.shape.oca(a).site;
    match m.keys(site) {
        Some(ring) => signing::verify(&ring, id, query, Scope::Play, w.unix_now)
            .map_err(|r| fail("bad_signature", format!("{id} on appliance {a}: {r}"))),
        // No key seen yet for that site (its appliances have not been answered): the shape
        // and the expiry at least.
        None => signing::parse_query(query)
            .map(|_| ())
            .map_err(|r| fail("bad_signature", format!("{id}: {r}"))),
    }?;
    let e = signing::parse_query(query).map(|p| p.expires).unwrap_or(0);
    if e < w.unix_now || e > w.unix_now + URL_TTL_SECS + 120 {
        return Err(fail(
            "bad_expiry",
            format!("{id}: expires {e}, now {}", w.unix_now),
        ));
    }
    Ok(())
}

/// The appliances that certainly qualify to serve file `f` to `client`.
fn sure_holders(m: &Model, client: &Client, f: u32, w: &Window) -> Vec<u32> {
    if !client.sure {
        return Vec::new();
    }
    m.neighbourhood(client.n)
        .into_iter()
        .filter(|&a| client.place(m, a).is_some() && standing(m, &m.appliance(a), f, w).sure)
        .collect()
}

/// Checks one rendition's URLs for file `f`.
fn check_rendition(m: &Model, c: &Client, f: u32, urls: &[String], w: &Window) -> Vec<Failure> {
    let id = fleet::content_id(f);
    let mut out = Vec::new();
    let mut offered: Vec<u32> = Vec::with_capacity(urls.len());
    for url in urls {
        let Some((a, query)) = parse_url(m, url, &id) else {
            out.push(fail("bad_url", url.clone()));
            continue;
        };
        if let Err(e) = check_signature(m, a, &id, query, w) {
            out.push(e);
        }
        offered.push(a);
    }
    out.extend(check_offered(m, c, f, &offered, w));
    out
}

/// Checks the appliances offered (best first) for file `f` to a client in prefix `n`:
/// count, distinct, neighbourhood, eligibility, proximity order, completeness.
fn check_offered(m: &Model, c: &Client, f: u32, offered: &[u32], w: &Window) -> Vec<Failure> {
    let id = fleet::content_id(f);
    let n = c.n;
    let mut out = Vec::new();
    if offered.is_empty() || offered.len() > 10 {
        out.push(fail(
            "url_count",
            format!("{id}: {} offered", offered.len()),
        ));
    }
    let mut places: Vec<Option<u8>> = Vec::with_capacity(offered.len());
    for (i, &a) in offered.iter().enumerate() {
        if offered[..i].contains(&a) {
            out.push(fail("duplicate_appliance", format!("{id}: appliance {a}")));
        }
        let p = c.place(m, a);
        places.push(p);
        if p.is_none() && c.sure {
            out.push(fail_about(
                "outside_neighbourhood",
                format!("{id} for prefix {n} on appliance {a}"),
                f,
                vec![a],
            ));
        }
        if let Err(why) = standing(m, &m.appliance(a), f, w).may {
            out.push(fail_about(
                "ineligible_appliance",
                format!("{id} on appliance {a}: {why}"),
                f,
                vec![a],
            ));
        }
    }
    // Nearer first; the last place may go to a second site's best. Appliances outside the
    // neighbourhood are reported above, not ranked.
    let ranked: Vec<u8> = places[..places.len().saturating_sub(1)]
        .iter()
        .flatten()
        .copied()
        .collect();
    if c.sure && ranked.windows(2).any(|w| w[0] > w[1]) {
        out.push(fail(
            "proximity_order",
            format!("{id} for prefix {n}: places {places:?}"),
        ));
    }
    if offered.len() < 10 {
        let missing: Vec<u32> = sure_holders(m, c, f, w)
            .into_iter()
            .filter(|a| !offered.contains(a))
            .collect();
        if !missing.is_empty() {
            out.push(fail_about(
                "qualified_left_out",
                format!("{id} for prefix {n}: {missing:?} qualify, {offered:?} offered"),
                f,
                missing,
            ));
        }
    }
    out
}

/// Checks a `GET /v1/steer` answer for file `f` and a client in prefix `n` by the same rules
/// as a play's rendition (no URLs, so no signatures); an empty answer means nobody certainly
/// qualifies.
pub fn steering(m: &Model, n: u32, f: u32, ans: &SteerAnswer, w: &Window) -> Vec<Failure> {
    let mut out = Vec::new();
    if ans.content_id != fleet::content_id(f) {
        out.push(fail("wrong_content", ans.content_id.clone()));
    }
    let mut offered = Vec::with_capacity(ans.appliances.len());
    for s in &ans.appliances {
        let url = s
            .url
            .strip_prefix("http://")
            .and_then(fleet::parse_oca_host);
        let o = url.filter(|o| o.site < m.shape.sites && o.k < m.shape.per_site);
        match o {
            Some(o) if fleet::oca_id(o) == s.oca_id && fleet::site_id(o.site) == s.site => {
                offered.push(m.shape.index(o));
            }
            _ => out.push(fail(
                "bad_appliance",
                format!("{} at {} in {}", s.oca_id, s.url, s.site),
            )),
        }
    }
    let client = Client::of(m, n, w);
    if offered.is_empty() {
        let qualify = sure_holders(m, &client, f, w);
        if !qualify.is_empty() {
            out.push(fail_about(
                "wrong_no_appliance",
                format!("{} for prefix {n}: {qualify:?} qualify", ans.content_id),
                f,
                qualify,
            ));
        }
        return out;
    }
    out.extend(check_offered(m, &client, f, &offered, w));
    out
}

/// Checks a 200 answer to a play of title `t` from a client in prefix `n`.
pub fn answer(m: &Model, n: u32, t: u32, ans: &PlayAnswer, w: &Window) -> Vec<Failure> {
    let client = Client::of(m, n, w);
    let mut out = Vec::new();
    if ans.title != fleet::title_id(t) {
        out.push(fail(
            "wrong_title",
            format!("asked t{t}, got {}", ans.title),
        ));
    }
    let mut seen = [false; 4];
    for r in &ans.renditions {
        match fleet::parse_content_id(&r.content_id) {
            Some(f) if f / 4 == t => {
                seen[(f % 4) as usize] = true;
                out.extend(check_rendition(m, &client, f, &r.urls, w));
            }
            _ => out.push(fail(
                "wrong_rendition",
                format!("{} in title t{t}", r.content_id),
            )),
        }
    }
    if ans.renditions.is_empty() {
        out.push(fail(
            "no_renditions",
            format!("t{t}: 200 without renditions"),
        ));
    }
    for (i, _) in seen.iter().enumerate().filter(|(_, s)| !**s) {
        let f = t * 4 + i as u32;
        let qualify = sure_holders(m, &client, f, w);
        if !qualify.is_empty() {
            out.push(fail_about(
                "rendition_left_out",
                format!(
                    "{} for prefix {n}: {qualify:?} qualify",
                    fleet::content_id(f)
                ),
                f,
                qualify,
            ));
        }
    }
    out
}

/// Checks a 503 `no_appliance` for title `t` from prefix `n`: nobody certainly qualifies.
pub fn no_appliance(m: &Model, n: u32, t: u32, w: &Window) -> Vec<Failure> {
    let client = Client::of(m, n, w);
    (t * 4..t * 4 + 4)
        .filter_map(|f| {
            let qualify = sure_holders(m, &client, f, w);
            (!qualify.is_empty()).then(|| {
                fail_about(
                    "wrong_no_appliance",
                    format!(
                        "{} for prefix {n}: {qualify:?} qualify",
                        fleet::content_id(f)
                    ),
                    f,
                    qualify,
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::Shape;
    use crate::model::Stamp;
    use oca_protocol::keys::{Key, Keyring};
    use oca_protocol::playback::Rendition;

    fn model() -> Model {
        let shape = Shape {
            sites: 10,
            per_site: 2,
            regions: 1,
            prefixes_per_site: 2,
            files: 400,
            files_per_appliance: 20,
            subscribers: 1,
        };
        let m = Model::new(shape, Duration::from_secs(1), Duration::from_secs(10), 1);
        let ring = Keyring::new(vec![Key::new("k1", [7; 32]).unwrap()]).unwrap();
        for s in 0..10 {
            m.set_keys(s, &ring.to_wire());
        }
        let long_ago = Instant::now() - Duration::from_secs(5);
        for a in 0..20 {
            let mut st = m.appliance(a);
            st.took(long_ago, long_ago + Duration::from_secs(1));
            st.took(
                long_ago + Duration::from_secs(3),
                long_ago + Duration::from_secs(4),
            );
        }
        m
    }

    fn url(m: &Model, a: u32, f: u32, now: u64) -> String {
        let ring = m.keys(m.shape.oca(a).site).unwrap();
        let id = fleet::content_id(f);
        let q = signing::signed_query(ring.current(), &id, now + 3600, Scope::Play);
        format!("{}/c/{id}?{q}", fleet::oca_url(m.shape.oca(a)))
    }

    fn window() -> Window {
        let now = Instant::now();
        Window {
            asked: now,
            answered: now,
            unix_now: 1_800_000_000,
        }
    }

    fn play(renditions: Vec<(u32, Vec<String>)>) -> PlayAnswer {
        PlayAnswer {
            title: "t0".into(),
            expires: 0,
            renditions: renditions
                .into_iter()
                .map(|(f, urls)| Rendition {
                    content_id: fleet::content_id(f),
                    urls,
                    ..Rendition::default()
                })
                .collect(),
        }
    }

    /// Head files 0..20 (site share 2×20/2): file f on appliance k = f % 2 of every site.
    /// Prefix 2 is site 1's (ISP, parent 0, region 0 with IXP sites 0 and 5).
    #[test]
    fn a_correct_answer_passes_and_each_fault_is_named() {
        let m = model();
        let w = window();
        let now = w.unix_now;
        // File 0: held by appliance k=0 of each site: own 2, tier 0, region IXP 10.
        let good = vec![url(&m, 2, 0, now), url(&m, 0, 0, now), url(&m, 10, 0, now)];
        let others: Vec<(u32, Vec<String>)> = (1..4)
            .map(|f| {
                let k = f % 2;
                (
                    f,
                    vec![
                        url(&m, 2 + k, f, now),
                        url(&m, k, f, now),
                        url(&m, 10 + k, f, now),
                    ],
                )
            })
            .collect();
        let mut all = vec![(0, good.clone())];
        all.extend(others.clone());
        assert_eq!(answer(&m, 2, 0, &play(all.clone()), &w), vec![]);

        let kinds = |renditions: Vec<(u32, Vec<String>)>| -> Vec<&'static str> {
            let mut all = renditions;
            all.extend(others.clone());
            answer(&m, 2, 0, &play(all), &w)
                .into_iter()
                .map(|f| f.kind)
                .collect()
        };
        // Another ISP's appliance (site 2 is not the client's).
        assert_eq!(
            kinds(vec![(
                0,
                vec![
                    url(&m, 2, 0, now),
                    url(&m, 4, 0, now),
                    url(&m, 0, 0, now),
                    url(&m, 10, 0, now)
                ]
            )]),
            ["outside_neighbourhood"]
        );
        // The region IXP before the client's own (the last place alone may break the order).
        assert_eq!(
            kinds(vec![(
                0,
                vec![url(&m, 10, 0, now), url(&m, 2, 0, now), url(&m, 0, 0, now)]
            )]),
            ["proximity_order"]
        );
        assert_eq!(
            kinds(vec![(
                0,
                vec![url(&m, 2, 0, now), url(&m, 10, 0, now), url(&m, 0, 0, now)]
            )]),
            Vec::<&str>::new()
        );
        // The tier appliance left out with fewer than 10 offered.
        assert_eq!(
            kinds(vec![(0, vec![url(&m, 2, 0, now), url(&m, 10, 0, now)])]),
            ["qualified_left_out"]
        );
        // An appliance that does not hold the file.
        assert_eq!(
            kinds(vec![(
                0,
                vec![
                    url(&m, 2, 0, now),
                    url(&m, 0, 0, now),
                    url(&m, 10, 0, now),
                    url(&m, 3, 0, now)
                ]
            )]),
            ["ineligible_appliance"]
        );
        // A forged signature.
        let forged = good[0].replace("&s=", "&s=A");
        assert_eq!(
            kinds(vec![(0, vec![forged, good[1].clone(), good[2].clone()])]),
            ["bad_signature"]
        );
        // A rendition that was servable left out.
        assert_eq!(kinds(vec![]), ["rendition_left_out"]);
        // 503 while appliances hold the title.
        assert_eq!(no_appliance(&m, 2, 0, &w).len(), 4);
    }

    #[test]
    fn a_recent_change_is_accepted_both_ways_within_the_bound() {
        let m = model();
        let w = window();
        let now = w.unix_now;
        // Appliance 2 just reported status error: offering it is fine for the bound...
        {
            let mut st = m.appliance(2);
            st.error = true;
            st.status_at = Stamp::At(w.asked - Duration::from_millis(10));
        }
        let ans = |urls: Vec<String>| play(vec![(0, urls)]);
        let f = answer(
            &m,
            2,
            0,
            &ans(vec![
                url(&m, 2, 0, now),
                url(&m, 0, 0, now),
                url(&m, 10, 0, now),
            ]),
            &w,
        );
        assert!(f.iter().all(|f| f.kind == "rendition_left_out"), "{f:?}");
        // ...and so is leaving it out.
        let f = answer(
            &m,
            2,
            0,
            &ans(vec![url(&m, 0, 0, now), url(&m, 10, 0, now)]),
            &w,
        );
        assert!(f.iter().all(|f| f.kind == "rendition_left_out"), "{f:?}");
        // Past the bound, offering it fails.
        m.appliance(2).status_at = Stamp::At(w.asked - Duration::from_secs(3));
        let f = answer(
            &m,
            2,
            0,
            &ans(vec![
                url(&m, 2, 0, now),
                url(&m, 0, 0, now),
                url(&m, 10, 0, now),
            ]),
            &w,
        );
        assert!(f.iter().any(|f| f.kind == "ineligible_appliance"), "{f:?}");
    }
}
