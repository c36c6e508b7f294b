//! The tables of ocactl's listings: for each admin API answer, the columns an operator scans
//! (an appliance's site, status and how long ago it reported; a content file's rendition and
//! size; a session's state and since when). The answer is read as its `oca_protocol` type, so a
//! change of the API's shape is a compile error here rather than an empty column.

use anyhow::Result;
use control_plane::domain::maintenance::utc;
use oca_protocol::accounts::{Organisation, User};
use oca_protocol::admin::{
    ApplianceState, BgpAppliance, BgpRoutes, Content, HeardVia, InconsistentSite, Site, Subscriber,
    Title, Zone,
};
use oca_protocol::history::History;
use oca_protocol::live::Issue;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::table::{age, bits_per_sec, bytes, list, opt, span, Table};

/// The API's answer as its type.
pub fn parse<T: DeserializeOwned>(v: &Value) -> Result<T> {
    Ok(T::deserialize(v)?)
}

/// `GET /v1/admin/sites`.
pub fn sites(v: &Value) -> Result<Table> {
    let sites: Vec<Site> = parse(v)?;
    Ok(Table::of(
        &["ID", "KIND", "REGION", "PARENT", "ORG", "ALLOWED PREFIXES"],
        sites,
        |s| {
            vec![
                s.id,
                s.kind.as_str().into(),
                s.region,
                opt(s.parent),
                opt(s.org),
                list(s.allowed_prefixes),
            ]
        },
    ))
}

/// `GET /v1/admin/appliances`, as of `now`.
pub fn appliances(v: &Value, now: i64) -> Result<Table> {
    let states: Vec<ApplianceState> = parse(v)?;
    Ok(Table::of(
        &[
            "ID",
            "SITE",
            "STATUS",
            "SERVING",
            "LAST REPORT",
            "CAPACITY",
            "URL",
        ],
        states,
        |s| {
            vec![
                s.appliance.id.clone(),
                s.appliance.site.clone(),
                s.status.clone(),
                serving(&s),
                age(now, s.last_report),
                bits_per_sec(s.appliance.capacity_bps),
                s.appliance.url,
            ]
        },
    ))
}

/// An appliance's serving state, with the maintenance window that set it.
pub fn serving(s: &ApplianceState) -> String {
    match &s.maintenance {
        Some(w) => format!("{} (window {})", s.serving.as_str(), w.id),
        None => s.serving.as_str().into(),
    }
}

/// `GET /v1/admin/zones`.
pub fn zones(v: &Value) -> Result<Table> {
    let zones: Vec<Zone> = parse(v)?;
    Ok(Table::of(&["PREFIX", "SITE", "COUNTRY"], zones, |z| {
        vec![z.prefix.to_string(), opt(z.site), opt(z.country)]
    }))
}

/// `GET /v1/admin/titles`.
pub fn titles(v: &Value) -> Result<Table> {
    let titles: Vec<Title> = parse(v)?;
    Ok(Table::of(&["ID", "NAME", "COUNTRIES"], titles, |t| {
        vec![t.id, t.name, list(t.countries)]
    }))
}

/// `GET /v1/admin/content` (or some of it).
pub fn content(files: Vec<Content>) -> Table {
    Table::of(
        &[
            "ID", "TITLE", "RES", "BITRATE", "SIZE", "SHA256", "TYPE", "ORIGIN",
        ],
        files,
        |c| {
            vec![
                c.id,
                c.title,
                format!("{}p", c.resolution),
                format!("{} kbit/s", c.bitrate_kbps),
                bytes(c.size),
                // Enough to tell files apart and to compare with `sha256sum` by eye.
                c.sha256.chars().take(12).collect(),
                c.content_type,
                c.origin,
            ]
        },
    )
}

/// `GET /v1/admin/subscribers`.
pub fn subscribers(v: &Value) -> Result<Table> {
    let subs: Vec<Subscriber> = parse(v)?;
    Ok(Table::of(
        &["ID", "ACTIVE", "MAX RES", "MAX STREAMS"],
        subs,
        |s| {
            vec![
                s.id,
                if s.active { "yes" } else { "no" }.into(),
                format!("{}p", s.max_resolution),
                s.max_streams.to_string(),
            ]
        },
    ))
}

/// `GET /v1/admin/orgs`.
pub fn orgs(v: &Value) -> Result<Table> {
    let orgs: Vec<Organisation> = parse(v)?;
    Ok(Table::of(&["ID", "NAME"], orgs, |o| vec![o.id, o.name]))
}

/// `GET /v1/admin/users`.
pub fn users(v: &Value) -> Result<Table> {
    let users: Vec<User> = parse(v)?;
    Ok(Table::of(
        &["LOGIN", "ROLE", "ORG", "CREATED"],
        users,
        |u| vec![u.login, u.role.as_str().into(), opt(u.org), utc(u.created)],
    ))
}

/// `GET /v1/admin/bgp/sessions`: a row a session (a row with dashes for an appliance that
/// reported BGP without sessions).
pub fn bgp_sessions(v: &Value, now: i64) -> Result<Table> {
    let apps: Vec<BgpAppliance> = parse(v)?;
    let mut t = Table::new(&[
        "APPLIANCE",
        "SITE",
        "NEIGHBOR",
        "PEER AS",
        "STATE",
        "SINCE",
        "RECEIVED",
        "ACCEPTED",
        "FLAPS",
        "ROUTES",
        "REPORT",
        "LAST ERROR",
    ]);
    for a in apps {
        let common = |cells: Vec<String>| {
            let mut row = vec![a.oca_id.clone(), a.site.clone()];
            row.extend(cells);
            row.push(a.routes.to_string());
            row.push(age(now, Some(a.last_report)));
            row
        };
        if a.sessions.is_empty() {
            t.row(common(vec![String::new(); 7]));
        }
        for s in &a.sessions {
            let mut row = common(vec![
                s.neighbor.to_string(),
                s.peer_as.to_string(),
                s.state.as_str().into(),
                age(now, Some(s.since as i64)),
                s.prefixes_received.to_string(),
                s.prefixes_accepted.to_string(),
                s.flaps.to_string(),
            ]);
            row.push(opt(s.last_error.clone()));
            t.row(row);
        }
    }
    Ok(t)
}

/// `GET /v1/admin/bgp/routes`, and a note when more routes matched than were listed.
pub fn bgp_routes(v: &Value) -> Result<(Table, Option<String>)> {
    let r: BgpRoutes = parse(v)?;
    let note = r.more.then(|| {
        format!(
            "more routes matched than the {} listed: give a prefix, --appliance or --limit",
            r.routes.len()
        )
    });
    let t = Table::of(
        &[
            "PREFIX",
            "APPLIANCE",
            "SITE",
            "BEST",
            "SOURCE",
            "NEIGHBOR",
            "AS PATH",
            "ORIGIN",
            "MED",
            "LOCAL PREF",
            "COMMUNITIES",
        ],
        r.routes,
        |h| {
            let mut row = vec![
                h.prefix().to_string(),
                h.oca_id.clone(),
                h.site.clone(),
                if h.best { "*" } else { "" }.into(),
            ];
            match h.via {
                HeardVia::Bgp(b) => row.extend([
                    if b.stale { "bgp (stale)" } else { "bgp" }.into(),
                    b.neighbor.to_string(),
                    b.as_path
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(" "),
                    b.origin.as_str().into(),
                    opt(b.med),
                    opt(b.local_pref),
                    list(b.communities.iter().chain(&b.large_communities)),
                ]),
                HeardVia::Static { .. } => row.push("static".into()),
            }
            row
        },
    );
    Ok((t, note))
}

/// `GET /v1/admin/bgp/inconsistent`: a row a prefix that differs, and a note for sites with
/// more differing prefixes than the API lists.
pub fn bgp_inconsistent(v: &Value) -> Result<(Table, Option<String>)> {
    let sites: Vec<InconsistentSite> = parse(v)?;
    let mut t = Table::new(&["SITE", "PREFIX", "HEARD BY", "NOT HEARD BY"]);
    let mut notes = Vec::new();
    for s in sites {
        if s.differing_total > s.differing.len() as u64 {
            notes.push(format!(
                "{}: {} prefixes differ, the first {} listed",
                s.site,
                s.differing_total,
                s.differing.len()
            ));
        }
        for p in s.differing {
            t.row(vec![
                s.site.clone(),
                p.prefix.to_string(),
                list(p.heard_by),
                list(p.not_heard_by),
            ]);
        }
    }
    Ok((t, (!notes.is_empty()).then(|| notes.join("\n"))))
}

/// `GET /v1/admin/issues`.
pub fn issues(v: &Value, now: i64) -> Result<Table> {
    let issues: Vec<Issue> = parse(v)?;
    Ok(Table::of(
        &[
            "ID",
            "SEVERITY",
            "KIND",
            "APPLIANCE",
            "SITE",
            "FIRST SEEN",
            "LAST SEEN",
            "CLEARED",
            "MESSAGE",
        ],
        issues,
        |i| {
            vec![
                i.id.to_string(),
                i.severity.as_str().into(),
                i.kind.as_str().into(),
                i.oca_id,
                i.site,
                age(now, Some(i.first_seen)),
                age(now, Some(i.last_seen)),
                i.cleared_at.map_or_else(String::new, |c| age(now, Some(c))),
                i.message,
            ]
        },
    ))
}

/// A traffic history: a row a bucket (rates in bits per second, as links are sized), and a
/// summary line.
pub fn history(h: &History) -> (Table, String) {
    let site = matches!(h.of, oca_protocol::history::HistoryOf::Site);
    let mut head = vec![
        "START",
        "REPORTS",
        "MEAN",
        "PEAK",
        "CONNS MEAN",
        "CONNS PEAK",
        "REQ/S",
        "SERVED",
    ];
    if site {
        head.extend(["CONTENT MISSES", "HEALTH MISSES"]);
    }
    let t = Table::of(&head, &h.buckets, |b| {
        let mut row = vec![
            utc(b.start),
            b.reports.to_string(),
            bits_per_sec(b.bytes_per_sec_mean.saturating_mul(8)),
            bits_per_sec(b.bytes_per_sec_peak.saturating_mul(8)),
            b.connections_mean.to_string(),
            b.connections_peak.to_string(),
            b.requests_per_sec_mean.to_string(),
            bytes(b.total_bytes),
        ];
        if site {
            row.extend([opt(b.content_misses), opt(b.health_misses)]);
        }
        row
    });
    let summary = format!(
        "{} {}: {} buckets of {} from {} to {}, capacity {}, {} served",
        h.of.as_str(),
        h.id,
        h.buckets.len(),
        span(h.bucket_secs),
        utc(h.from),
        utc(h.to),
        bits_per_sec(h.capacity_bps),
        bytes(h.total_bytes)
    );
    (t, summary)
}
