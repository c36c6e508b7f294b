//! The partner portal in a real browser against the lab (issue 17): headless Chromium over
//! WebDriver signs in through the login form as the lab's operator and sees every appliance,
//! checks that the traffic history adds up to the bytes the players verified, has a form
//! without its CSRF token refused, signs in as a partner who cannot see another
//! organisation's appliance (page and API), drains an appliance through the maintenance form
//! while a play runs on it (Draining, Drained, the audit log, another partner refused), sees
//! a scheduled window start and end by itself, blocks an appliance's content port (unreachable:
//! out of steering, an issue raised and cleared), watches a killed appliance turn Unknown, and
//! writes screenshots of the main pages to `docs/portal/`.
//!
//! Needs root, iproute2, tc and iptables (the lab's namespaces), and `chromium` and `chromedriver`
//! (Debian's `chromium`, `chromium-driver`); it skips, saying which is missing, otherwise
//! (fails instead where `OCA_REQUIRE_VM` is set, as CI does).
//!
//! One lab and one browser serve every step, in one test (a lab takes half a minute to fill);
//! each step is a function named for what it checks.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::Locator;
use oca_lab::{ControlPlanes, Lab, Options, Topology};
use serde_json::Value;
use test_support::browser::{self, Browser};
use test_support::client_summary;

/// An IXP site and two ISP sites, each ISP site owned by its own organisation (the lab makes
/// one per ISP site); one title, big enough that a play at real speed spans many report
/// intervals.
const TOPOLOGY: &str = r#"
[content]
titles = 1
size_1080p_mib = 12
size_480p_mib = 2

[[site]]
id = "ixp"
kind = "ixp"
region = "eu"
appliances = 1
link_mbit = 1000

[[site]]
id = "isp-a"
kind = "isp"
region = "eu"
parent = "ixp"
appliances = 1
link_mbit = 1000

[[site]]
id = "isp-b"
kind = "isp"
region = "eu"
parent = "ixp"
appliances = 1
link_mbit = 1000
"#;

/// Seconds between health reports in this lab.
const INTERVAL: u64 = 1;
/// What a page may lag behind a report interval on this two-core machine: the control plane's
/// clock in whole seconds (1 s), a report's round trip and a page load.
const SLACK: Duration = Duration::from_millis(2000);
/// The session cookie's name over HTTPS (the lab does not set `portal_insecure_cookies`).
const SESSION_COOKIE: &str = "__Host-oca_session";

/// Where the screenshots go: `docs/portal/` of the repository.
fn shots() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/portal")
}

/// Whether to skip, saying why (failing instead under `OCA_REQUIRE_VM`).
fn skip() -> bool {
    if test_support::netns::skip_without("the portal's browser test", &["tc", "iptables"]) {
        return true;
    }
    let Some(why) = browser::unavailable() else {
        return false;
    };
    assert!(
        std::env::var_os("OCA_REQUIRE_VM").is_none(),
        "cannot run the portal's browser test: {why}"
    );
    eprintln!("skipped: {why}");
    true
}

fn start_lab(dir: &Path) -> Lab {
    let lab = Lab::start(
        &Topology::parse(TOPOLOGY).unwrap(),
        &Options {
            netns: true,
            dir: dir.to_path_buf(),
            report_interval: INTERVAL,
            release: false,
            bgp: false,
            control_planes: ControlPlanes::Sqlite,
        },
    )
    .unwrap();
    lab.wait_filled(Duration::from_secs(120)).unwrap();
    lab
}

/// A headless Chromium on the lab's portal. The lab's calls are blocking (reqwest's blocking
/// client runs its own runtime), so the browser gets a runtime of its own and each step is
/// one `block_on`, never nested in the other.
struct Web {
    rt: tokio::runtime::Runtime,
    b: Option<Browser>,
    base: String,
}

impl Web {
    fn start(lab: &Lab) -> Web {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let b = rt.block_on(Browser::start()).unwrap();
        let web = Web {
            rt,
            b: Some(b),
            base: lab.cp_url.clone(),
        };
        web.fit_viewport(1280, 900);
        web
    }

    /// Sizes the window so the page itself (what a screenshot shows) is `width` x `height`:
    /// headless Chromium's window includes a frame.
    fn fit_viewport(&self, width: u32, height: u32) {
        let frame = self.script(
            "return [window.outerWidth - window.innerWidth, window.outerHeight - window.innerHeight];",
        );
        let px = |i: usize| frame[i].as_u64().unwrap_or(0) as u32;
        self.rt
            .block_on(self.client().set_window_size(width + px(0), height + px(1)))
            .unwrap();
    }

    fn client(&self) -> &fantoccini::Client {
        &self.b.as_ref().expect("open").client
    }

    /// Opens `path` of the portal.
    fn goto(&self, path: &str) {
        let url = format!("{}{path}", self.base);
        self.rt.block_on(self.client().goto(&url)).unwrap();
    }

    /// The current page's path.
    fn path(&self) -> String {
        self.rt
            .block_on(self.client().current_url())
            .unwrap()
            .path()
            .to_string()
    }

    /// The HTTP status of the page shown (Navigation Timing's `responseStatus`).
    fn http_status(&self) -> u16 {
        let v = self
            .rt
            .block_on(self.client().execute(
                "return performance.getEntriesByType('navigation')[0].responseStatus;",
                vec![],
            ))
            .unwrap();
        v.as_u64().unwrap_or(0) as u16
    }

    /// The text of the first element matching `css`.
    fn text(&self, css: &str) -> String {
        self.rt
            .block_on(async { self.client().find(Locator::Css(css)).await?.text().await })
            .unwrap_or_else(|e| panic!("{css} on {}: {e}", self.path()))
    }

    /// The texts of every element matching `css`.
    fn texts(&self, css: &str) -> Vec<String> {
        self.rt
            .block_on(async {
                let mut out = Vec::new();
                for e in self.client().find_all(Locator::Css(css)).await? {
                    out.push(e.text().await?);
                }
                Ok::<_, fantoccini::error::CmdError>(out)
            })
            .unwrap()
    }

    /// Types `text` into the input that the label reading `label` names (`<label for>`), as a
    /// person would find it.
    fn type_into(&self, label: &str, text: &str) {
        self.rt
            .block_on(async {
                let xpath = format!("//label[normalize-space()='{label}']");
                let l = self.client().find(Locator::XPath(&xpath)).await?;
                let id = l.attr("for").await?.expect("the label names its input");
                let input = self.client().find(Locator::Id(&id)).await?;
                input.clear().await?;
                input.send_keys(text).await
            })
            .unwrap_or_else(|e| panic!("typing into {label:?}: {e}"));
    }

    /// Clicks the button reading `label` (a form's submit button) and waits for the page it
    /// leads to.
    fn press(&self, label: &str) {
        // A mark on the old document: gone once the new one has loaded.
        self.script("window.ocaOldPage = true; return null;");
        self.rt
            .block_on(async {
                let xpath = format!("//button[normalize-space()='{label}']");
                self.client()
                    .find(Locator::XPath(&xpath))
                    .await?
                    .click()
                    .await
            })
            .unwrap_or_else(|e| panic!("pressing {label:?} on {}: {e}", self.path()));
        let start = Instant::now();
        while self
            .script("return window.ocaOldPage === true || document.readyState !== 'complete';")
            != Value::Bool(false)
        {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "pressing {label:?} led to no new page within 10 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Signs in through the login form (signing out first if someone is signed in); the path
    /// it lands on.
    fn login(&self, login: &str, password: &str) -> String {
        self.rt
            .block_on(self.client().delete_all_cookies())
            .unwrap();
        self.goto("/login");
        self.type_into("Login", login);
        self.type_into("Password", password);
        self.press("Sign in");
        self.path()
    }

    /// What the definition list of the page's facts says for `term` (e.g. "Status"), as shown.
    fn fact(&self, term: &str) -> String {
        self.text_at(&format!(
            "//dl[contains(@class,'facts')]/dt[normalize-space()='{term}']/following-sibling::dd[1]"
        ))
    }

    fn text_at(&self, xpath: &str) -> String {
        self.rt
            .block_on(async {
                self.client()
                    .find(Locator::XPath(xpath))
                    .await?
                    .text()
                    .await
            })
            .unwrap_or_else(|e| panic!("{xpath} on {}: {e}", self.path()))
    }

    /// The appliances listed on a site's page.
    fn site_appliances(&self, site: &str) -> Vec<String> {
        self.goto(&format!("/sites/{site}"));
        self.texts("table tbody th[scope=row] a")
    }

    /// An appliance's status as its page shows it (`ok`, `warning`, `error`, `unknown`),
    /// lower-cased.
    fn appliance_status(&self, id: &str) -> String {
        self.goto(&format!("/appliances/{id}"));
        self.fact("Status").to_lowercase()
    }

    /// Reloads the appliance's page until its status reads `want`; how long that took
    /// (panics after `within`).
    fn wait_appliance_status(&self, id: &str, want: &str, within: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let got = self.appliance_status(id);
            if got == want {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < within,
                "{id}'s page still says {got:?}, not {want:?}, after {within:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The browser's session cookie, for requests outside the browser.
    fn session_cookie(&self) -> String {
        let c = self
            .rt
            .block_on(self.client().get_named_cookie(SESSION_COOKIE))
            .unwrap();
        format!("{SESSION_COOKIE}={}", c.value())
    }

    /// Runs `script` in the page.
    fn script(&self, script: &str) -> Value {
        self.rt
            .block_on(self.client().execute(script, vec![]))
            .unwrap()
    }

    /// Saves a screenshot of the window as `docs/portal/<name>.png`.
    fn screenshot(&self, name: &str) {
        let b = self.b.as_ref().expect("open");
        self.rt
            .block_on(b.screenshot(&shots().join(format!("{name}.png"))))
            .unwrap();
    }
}

impl Drop for Web {
    fn drop(&mut self) {
        if let Some(b) = self.b.take() {
            self.rt.block_on(b.close());
        }
    }
}

/// A GET of the portal's JSON API with a session cookie: status and body.
fn api_get(lab: &Lab, cookie: &str, path: &str) -> (u16, String) {
    let r = lab
        .client()
        .unwrap()
        .get(format!("{}{path}", lab.cp_url))
        .header("cookie", cookie)
        .send()
        .unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

/// Kills an appliance's daemon and agent (SIGKILL), as a power cut would.
fn kill_appliance(lab: &mut Lab, id: &str) {
    lab.appliance(id)
        .unwrap_or_else(|| panic!("no appliance {id}"))
        .kill();
}

/// `total_bytes` of the traffic history summed over every appliance of the lab (the default
/// range: the last day).
fn history_total(lab: &Lab) -> f64 {
    lab.appliances
        .iter()
        .map(|a| {
            let h = lab
                .admin(
                    "GET",
                    &format!("/v1/admin/history/appliances/{}", a.id),
                    None,
                )
                .unwrap();
            h["total_bytes"].as_f64().unwrap_or(0.0)
        })
        .sum()
}

/// Starts playing `title` at real speed with a small buffer, so the bytes flow over many
/// report intervals.
fn start_play(lab: &Lab, title: &str) -> std::process::Child {
    Command::new(&lab.bins["oca-client"])
        .args(["--control-plane", &lab.cp_url, "--title", title])
        .arg("--ca")
        .arg(&lab.ca)
        .arg("--token-file")
        .arg(&lab.player_token)
        .args([
            "--json", "--speed", "1", "--buffer", "1", "--chunk", "262144",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for a play to end (bounded by the player's own stall and give-up timeouts); its
/// summary, which must say the file verified.
fn finish_play(child: std::process::Child) -> Value {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = client_summary(&out);
    assert_eq!(s["verified"], true, "{s}");
    s
}

#[test]
fn the_portal_in_a_browser_against_the_lab() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut lab = start_lab(dir.path());
    let ids: Vec<String> = lab.appliances.iter().map(|a| a.id.clone()).collect();
    let portal = lab.portal.clone();
    // The logins file holds passwords in clear: readable by the lab's user alone.
    let meta = std::fs::metadata(&portal.logins_file).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o600
    );
    let logins = std::fs::read_to_string(&portal.logins_file).unwrap();
    for l in std::iter::once(&portal.operator).chain(&portal.partners) {
        assert!(
            logins.contains(&format!("{} {} ", l.login, l.password)),
            "{logins}"
        );
    }
    let web = Web::start(&lab);

    // Signed out, `/` leads to the login form.
    web.goto("/");
    assert_eq!(web.path(), "/login");
    web.screenshot("login");

    // The operator signs in through the form and sees every appliance of the lab, OK once
    // each has reported.
    let landed = web.login(&portal.operator.login, &portal.operator.password);
    assert_eq!(
        landed,
        "/",
        "the operator's sign-in did not reach the overview: {:?} (status {})",
        web.texts("main"),
        web.http_status()
    );
    let sites = web.texts("table tbody th[scope=row] a");
    assert_eq!(sites, ["isp-a", "isp-b", "ixp"], "sites on the overview");
    let mut seen = Vec::new();
    for s in &sites {
        seen.extend(web.site_appliances(s));
    }
    seen.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(seen, want, "appliances on the site pages");
    for id in &ids {
        web.wait_appliance_status(id, "ok", Duration::from_secs(10));
    }
    web.goto("/");
    web.screenshot("overview");

    // Traffic history: what a play's player verified is what the history's totals grew by.
    // The site's and appliance's pages are taken while it plays.
    // Let the fills' last reports land before the first reading.
    std::thread::sleep(Duration::from_secs(3 * INTERVAL));
    let before = history_total(&lab);
    let playing = start_play(&lab, &lab.titles[0]);
    std::thread::sleep(Duration::from_secs(4 * INTERVAL));
    web.goto("/sites/isp-a");
    web.screenshot("site");
    web.goto("/appliances/isp-a-1");
    web.screenshot("appliance");
    let summary = finish_play(playing);
    history_adds_up_to_what_the_player_verified(&lab, before, &summary);

    csrf_is_required(&web, &lab);
    partners_see_only_their_own(&web, &lab);
    for (name, step) in [
        (
            "drain",
            disabling_an_appliance_drains_it_and_the_audit_log_says_who_and_why as fn(&Web, &Lab),
        ),
        (
            "scheduled window",
            a_scheduled_window_starts_and_ends_by_itself,
        ),
        (
            "unreachable",
            an_appliance_unreachable_from_outside_raises_an_issue_and_leaves_steering,
        ),
    ] {
        let start = Instant::now();
        step(&web, &lab);
        eprintln!("step {name}: {:?}", start.elapsed());
    }

    // A killed appliance turns Unknown on its page within three report intervals.
    web.login(&portal.operator.login, &portal.operator.password);
    assert_eq!(web.appliance_status("isp-a-1"), "ok");
    kill_appliance(&mut lab, "isp-a-1");
    let within = Duration::from_secs(3 * INTERVAL) + SLACK;
    let took = web.wait_appliance_status("isp-a-1", "unknown", within);
    eprintln!("isp-a-1 read Unknown {took:?} after it was killed");
    web.goto("/");
    assert_eq!(
        web.text_at("//tbody/tr[th[normalize-space()='isp-a']]/td[last()]"),
        "1",
        "the overview's Unknown column for isp-a"
    );
}

/// A play's bytes against the growth of the history's `total_bytes`. Each report adds its
/// rate times the seconds since the previous one (at most one interval, in whole seconds of the
/// control plane's clock), so the sum can be off by about one report interval of traffic per
/// appliance that served at each end of the play; the tolerance is two intervals at the play's
/// mean rate. `before` is the total read before the play started.
fn history_adds_up_to_what_the_player_verified(lab: &Lab, before: f64, s: &Value) {
    // The play's last interval is reported one interval later.
    std::thread::sleep(Duration::from_secs(3 * INTERVAL));
    let grew = history_total(lab) - before;
    let verified = (s["bytes"].as_u64().unwrap() + s["verify_bytes"].as_u64().unwrap()) as f64;
    let rate = verified / s["secs"].as_f64().unwrap().max(1.0);
    let tolerance = 2.0 * INTERVAL as f64 * rate;
    eprintln!(
        "history grew by {grew} bytes; the player verified {verified} in {} s (tolerance {tolerance:.0}, off by {:.1}%)",
        s["secs"],
        100.0 * (grew - verified) / verified
    );
    assert!(
        (grew - verified).abs() <= tolerance,
        "the history grew by {grew} bytes, the player verified {verified}: more than {tolerance:.0} apart"
    );
}

/// A form posted without its CSRF token is refused with 403, in the browser and outside it,
/// and changes nothing (still signed in); with it, it works.
fn csrf_is_required(web: &Web, lab: &Lab) {
    web.goto("/");
    let cookie = web.session_cookie();
    // The browser: the sign-out form with its hidden token removed.
    web.script("document.querySelector('form[action=\"/logout\"] input[name=csrf]').remove(); return null;");
    web.press("Sign out");
    assert_eq!(web.http_status(), 403, "sign-out without a CSRF token");
    // Outside the browser, with its session cookie.
    let r = lab
        .client()
        .unwrap()
        .post(format!("{}/logout", lab.cp_url))
        .header("cookie", &cookie)
        .form(&[("other", "x")])
        .send()
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        403,
        "POST /logout without a CSRF token"
    );
    assert_eq!(
        api_get(lab, &cookie, "/v1/portal/sites").0,
        200,
        "still signed in"
    );
    // With the token the form works, and the session is over.
    web.goto("/");
    web.press("Sign out");
    assert_eq!(web.path(), "/login");
    assert_ne!(
        api_get(lab, &cookie, "/v1/portal/sites").0,
        200,
        "signed out"
    );
}

/// A partner sees its own site and appliance, and neither the other ISP's nor the IXP's: their
/// pages are 404 in the browser, as their ids are in the API with the partner's cookie.
fn partners_see_only_their_own(web: &Web, lab: &Lab) {
    let a = lab
        .portal
        .partner_of("isp-a")
        .expect("isp-a's partner user");
    assert_eq!(web.login(&a.login, &a.password), "/");
    assert_eq!(web.texts("table tbody th[scope=row] a"), ["isp-a"]);
    assert_eq!(web.site_appliances("isp-a"), ["isp-a-1"]);
    assert_eq!(web.appliance_status("isp-a-1"), "ok");
    let cookie = web.session_cookie();
    assert_eq!(
        api_get(lab, &cookie, "/v1/portal/appliances/isp-a-1").0,
        200
    );
    for (page, api) in [
        ("/appliances/isp-b-1", "/v1/portal/appliances/isp-b-1"),
        ("/appliances/ixp-1", "/v1/portal/appliances/ixp-1"),
        ("/sites/isp-b", "/v1/portal/sites/isp-b"),
    ] {
        web.goto(page);
        assert_eq!(web.http_status(), 404, "{page} for isp-a's partner");
        assert_eq!(web.text("h1"), "Not found", "{page}");
        let (status, body) = api_get(lab, &cookie, api);
        assert_eq!(status, 404, "{api} for isp-a's partner: {body}");
    }
}

/// The content every step plays and asks steering about: the lab's one title in 1080p.
const CONTENT: &str = "title1_1080p.mp4";

/// Steering's verdict on appliance `id` for a player on this machine (whose home site is
/// `isp-a`): whether it is offered, and why (`explain=1`).
fn steering_of(lab: &Lab, id: &str) -> (bool, String) {
    let d = lab
        .admin(
            "GET",
            &format!("/v1/steer?client_ip=127.0.0.1&content_id={CONTENT}&explain=1"),
            None,
        )
        .unwrap();
    let e = d["explain"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["oca_id"] == id))
        .unwrap_or_else(|| panic!("steering does not consider {id}: {d}"));
    (
        e["kept"].as_bool().unwrap_or(false),
        e["reason"].as_str().unwrap_or_default().to_string(),
    )
}

/// Asks steering every 200 ms until `ok` holds for its verdict on `id`; how long that took
/// (panics after `within`, saying what steering said last).
fn wait_steering(
    lab: &Lab,
    id: &str,
    what: &str,
    within: Duration,
    ok: impl Fn(bool, &str) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let (kept, reason) = steering_of(lab, id);
        if ok(kept, &reason) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "steering has not {what} {id} after {within:?}: kept {kept}, {reason:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Plays the title at eight times real speed to its end: the summary (verified).
fn play_fast(lab: &Lab) -> Value {
    let child = Command::new(&lab.bins["oca-client"])
        .args(["--control-plane", &lab.cp_url, "--title", &lab.titles[0]])
        .arg("--ca")
        .arg(&lab.ca)
        .arg("--token-file")
        .arg(&lab.player_token)
        .args(["--json", "--speed", "8", "--buffer", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    finish_play(child)
}

/// The appliances a play's summary says served it (it names them by address), in order of
/// first use, by id.
fn served_by(lab: &Lab, s: &Value) -> Vec<String> {
    s["appliances"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str())
        .map(|addr| {
            lab.appliances
                .iter()
                .find(|a| a.url.trim_start_matches("http://") == addr.trim_start_matches("http://"))
                .map_or_else(|| addr.to_string(), |a| a.id.clone())
        })
        .collect()
}

/// The windows scheduled or in force (admin API).
fn open_windows(lab: &Lab) -> Vec<Value> {
    lab.admin("GET", "/v1/admin/maintenance", None)
        .unwrap()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// A POST of the portal's JSON API with a session cookie and its CSRF token: status and body.
fn api_post(lab: &Lab, cookie: &str, path: &str, body: &Value) -> (u16, String) {
    let (status, session) = api_get(lab, cookie, "/v1/portal/session");
    assert_eq!(status, 200, "{session}");
    let session: Value = serde_json::from_str(&session).unwrap();
    let r = lab
        .client()
        .unwrap()
        .post(format!("{}{path}", lab.cp_url))
        .header("cookie", cookie)
        .header("x-csrf-token", session["csrf"].as_str().unwrap())
        .json(body)
        .send()
        .unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

impl Web {
    /// Reloads appliance `id`'s page until its serving state (`Web::fact("Serving state")`,
    /// e.g. "Draining (maintenance until ...)") starts with `want`; how long that took (panics
    /// after `within`).
    fn wait_serving(&self, id: &str, want: &str, within: Duration) -> Duration {
        let start = Instant::now();
        loop {
            self.goto(&format!("/appliances/{id}"));
            let got = self.fact("Serving state");
            if got.starts_with(want) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < within,
                "{id}'s page still says {got:?}, not {want:?}, after {within:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The rows of the page's tables, each as its cells' texts joined by " | ".
    fn rows(&self) -> Vec<String> {
        self.rt
            .block_on(async {
                let mut out = Vec::new();
                for tr in self
                    .client()
                    .find_all(Locator::Css("table tbody tr"))
                    .await?
                {
                    let mut cells = Vec::new();
                    for c in tr.find_all(Locator::Css("th, td")).await? {
                        cells.push(c.text().await?);
                    }
                    out.push(cells.join(" | "));
                }
                Ok::<_, fantoccini::error::CmdError>(out)
            })
            .unwrap()
    }
}

/// The appliance the drain, the window and the outage happen to: the home site's, which
/// steering offers first to a player on this machine (whose zone is `isp-a`'s).
const HOME: &str = "isp-a-1";

/// `noc@isp-a` disables its appliance through the form on its page, with a reason and a
/// duration, while a play runs on it: steering stops offering it at once (a new play goes
/// elsewhere) while the play in flight finishes and verifies; the page reads Draining, then
/// Drained once the play's traffic has left its reports; `/audit` names the user and the
/// reason. `noc@isp-b` posting the same form (or the JSON API) for it gets 404 and changes
/// nothing. Ending the window through the form makes it Serving and offered again.
fn disabling_an_appliance_drains_it_and_the_audit_log_says_who_and_why(web: &Web, lab: &Lab) {
    let a = lab.portal.partner_of("isp-a").expect("isp-a's partner");
    let b = lab.portal.partner_of("isp-b").expect("isp-b's partner");
    let reason = "swap disk 3 (browser test)";
    web.login(&a.login, &a.password);
    web.wait_serving(HOME, "Serving", Duration::from_secs(5));
    assert!(steering_of(lab, HOME).0, "{HOME} offered before the window");

    // A play at real speed (about 12 s) served by it: the player probes every appliance it is
    // offered and streams from the fastest, so the others are out of steering (admin windows)
    // until its traffic shows on the page; then they serve again, for the plays to come.
    let others: Vec<i64> = lab
        .appliances
        .iter()
        .filter(|x| x.id != HOME)
        .map(|x| {
            let w = lab
                .admin(
                    "POST",
                    "/v1/admin/maintenance",
                    Some(
                        serde_json::json!({"appliance": x.id, "reason": "one offer for the play"}),
                    ),
                )
                .unwrap();
            w["id"].as_i64().expect("a window id")
        })
        .collect();
    let playing = start_play(lab, &lab.titles[0]);
    let start = Instant::now();
    loop {
        web.goto(&format!("/appliances/{HOME}"));
        // "0.01 Gb/s of 10.0 Gb/s (0%)": 1080p at real speed is 8 Mb/s, a probe far less.
        let gbps = web.fact("Traffic now");
        if gbps.split(' ').next().and_then(|g| g.parse::<f64>().ok()) > Some(0.0) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(8),
            "the play does not show on {HOME}'s page after 8 s: traffic {gbps:?}, connections {:?}",
            web.fact("Connections")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for id in others {
        lab.admin(
            "POST",
            &format!("/v1/admin/maintenance/{id}/end"),
            Some(serde_json::json!({"reason": "the play has started"})),
        )
        .unwrap();
    }
    web.type_into("Reason (required)", reason);
    web.type_into("or hours", "1");
    web.press("Disable this appliance");
    assert_eq!(
        web.path(),
        format!("/appliances/{HOME}"),
        "post/redirect/get"
    );
    // The play is still running, so its last report shows its traffic.
    let draining = web.wait_serving(HOME, "Draining", SLACK);
    eprintln!("{HOME} read Draining {draining:?} after the form was sent");
    assert!(
        web.fact("Serving state").contains("maintenance until"),
        "{}",
        web.fact("Serving state")
    );
    web.screenshot("maintenance");

    // No new play lands on it: steering says why, and a play started now goes elsewhere.
    let (kept, why) = steering_of(lab, HOME);
    assert!(
        !kept && why.starts_with("maintenance until") && why.ends_with(reason),
        "{why}"
    );
    let other = play_fast(lab);
    assert!(
        !served_by(lab, &other).contains(&HOME.to_string()) && !served_by(lab, &other).is_empty(),
        "a play started during the window was served by {:?}",
        served_by(lab, &other)
    );
    eprintln!(
        "a play started during the window went to {:?}",
        served_by(lab, &other)
    );

    // Another organisation's partner posting the form (and the JSON API) for it: 404, nothing
    // changes.
    let before = open_windows(lab);
    web.login(&b.login, &b.password);
    web.goto("/appliances/isp-b-1");
    web.script(&format!(
        "document.querySelector('form.disable').action = '/appliances/{HOME}/maintenance'; return null;"
    ));
    web.type_into("Reason (required)", "not ours");
    web.press("Disable this appliance");
    assert_eq!(
        web.http_status(),
        404,
        "isp-b's partner posting the form for {HOME}"
    );
    let (status, body) = api_post(
        lab,
        &web.session_cookie(),
        "/v1/portal/maintenance",
        &serde_json::json!({"appliance": HOME, "reason": "not ours"}),
    );
    assert_eq!(status, 404, "isp-b's partner through the JSON API: {body}");
    assert_eq!(
        open_windows(lab),
        before,
        "the refused posts changed the windows"
    );
    let audit = lab.admin("GET", "/v1/admin/audit", None).unwrap();
    assert!(
        !audit.to_string().contains(&format!("user:{}", b.login)),
        "the refused posts are in the audit log: {audit}"
    );

    // The play in flight was served by it, finishes and verifies.
    let s = finish_play(playing);
    assert_eq!(
        served_by(lab, &s).first().map(String::as_str),
        Some(HOME),
        "{s}"
    );
    let ended = Instant::now();

    // Drained once its reports no longer show the play.
    web.login(&a.login, &a.password);
    let drained = web.wait_serving(HOME, "Drained", Duration::from_secs(3 * INTERVAL) + SLACK);
    eprintln!(
        "{HOME} read Drained {:?} after the play ended",
        ended.elapsed().max(drained)
    );

    // The audit log names the user and the reason.
    web.goto("/audit");
    let rows = web.rows();
    let entry = format!("user:{} | maintenance.start | appliance:{HOME} | ", a.login);
    assert!(
        rows.iter()
            .any(|r| r.contains(&entry) && r.contains(reason)),
        "no audit row {entry:?} with {reason:?}: {rows:#?}"
    );

    // Ended through the form: Serving and offered again.
    let id = open_windows(lab)
        .iter()
        .find(|w| w["target"] == HOME)
        .and_then(|w| w["id"].as_i64())
        .expect("the window in force");
    web.goto(&format!("/appliances/{HOME}"));
    web.type_into("Reason", "disk swapped");
    web.press(&format!("End window {id} now"));
    assert!(
        web.fact("Serving state").starts_with("Serving"),
        "{}",
        web.fact("Serving state")
    );
    wait_steering(lab, HOME, "offered again", SLACK, |kept, _| kept);
    web.goto("/audit");
    let entry = format!("user:{} | maintenance.end | appliance:{HOME} | ", a.login);
    assert!(
        web.rows()
            .iter()
            .any(|r| r.contains(&entry) && r.contains("disk swapped")),
        "no audit row {entry:?}"
    );
    web.screenshot("audit");
}

/// A window scheduled through the portal a few seconds ahead (by `noc@isp-a`, over the
/// portal's JSON API with the browser's session: the form's `datetime-local` inputs take
/// whole minutes) leaves the appliance Serving and offered until it starts, then starts by
/// itself (Drained: it has no traffic; not offered) and ends by itself (Serving, offered),
/// with nothing done in between.
fn a_scheduled_window_starts_and_ends_by_itself(web: &Web, lab: &Lab) {
    let a = lab.portal.partner_of("isp-a").expect("isp-a's partner");
    web.login(&a.login, &a.password);
    let now = unix_now();
    let (start, end) = (now + AHEAD, now + AHEAD + LASTS);
    let (status, body) = api_post(
        lab,
        &web.session_cookie(),
        "/v1/portal/maintenance",
        &serde_json::json!({"appliance": HOME, "reason": "firmware", "start": start, "end": end}),
    );
    assert_eq!(status, 201, "{body}");
    web.goto(&format!("/appliances/{HOME}"));
    assert!(
        web.fact("Serving state").starts_with("Serving"),
        "{}",
        web.fact("Serving state")
    );
    assert!(
        web.rows()
            .iter()
            .any(|r| r.contains("Scheduled") && r.contains("firmware")),
        "the scheduled window on the page: {:#?}",
        web.rows()
    );
    assert!(steering_of(lab, HOME).0, "offered before the window starts");

    sleep_until(start);
    let took = web.wait_serving(HOME, "Drained", SLACK);
    eprintln!("the window started: {HOME} read Drained {took:?} after its start");
    let (kept, why) = steering_of(lab, HOME);
    assert!(!kept && why.ends_with("firmware"), "{why}");
    assert!(web
        .rows()
        .iter()
        .any(|r| r.contains("In force") && r.contains("firmware")));

    sleep_until(end);
    let took = web.wait_serving(HOME, "Serving", SLACK);
    eprintln!("the window ended: {HOME} read Serving {took:?} after its end");
    wait_steering(lab, HOME, "offered again", SLACK, |kept, _| kept);
}

/// How far ahead the scheduled window starts, and how long it lasts (seconds).
const AHEAD: i64 = 6;
const LASTS: i64 = 8;

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Sleeps until unix second `t` has begun (the control plane compares whole seconds).
fn sleep_until(t: i64) {
    let at = std::time::UNIX_EPOCH + Duration::from_secs(t as u64);
    if let Ok(d) = at.duration_since(std::time::SystemTime::now()) {
        std::thread::sleep(d);
    }
}

/// An iptables DROP on the appliance's content port in its site's namespace (its agent still
/// reports, so it stays OK): within a few probe intervals steering no longer offers it
/// ("unreachable from the control plane") and an `unreachable` issue is open; the rule
/// removed, it is offered again and the issue cleared.
fn an_appliance_unreachable_from_outside_raises_an_issue_and_leaves_steering(web: &Web, lab: &Lab) {
    web.login(&lab.portal.operator.login, &lab.portal.operator.password);
    assert!(steering_of(lab, HOME).0);
    assert!(open_unreachable(lab).is_none());
    lab.block_content_port(HOME, true).unwrap();
    // Two failed probes in a row, each given 3 s to connect, one probe interval apart.
    let within = Duration::from_secs(2 * (3 + INTERVAL) + 2 * INTERVAL) + SLACK;
    let took = wait_steering(lab, HOME, "dropped", within, |kept, why| {
        !kept && why.starts_with("unreachable from the control plane")
    });
    eprintln!("{HOME} left steering {took:?} after its content port was blocked");
    let start = Instant::now();
    let issue = loop {
        if let Some(i) = open_unreachable(lab) {
            break i;
        }
        assert!(
            start.elapsed() < SLACK + Duration::from_secs(2 * INTERVAL),
            "no unreachable issue"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(issue["severity"], "critical", "{issue}");
    // Its reports still flow: the page reads OK.
    assert_eq!(web.appliance_status(HOME), "ok");
    // The appliance's page says why it is out of steering and lists the open issue.
    let page = web.text("main");
    assert!(
        page.contains("unreachable from the control plane") && page.contains("Critical"),
        "{page}"
    );
    eprintln!("the unreachable issue: {}", issue["message"]);

    lab.block_content_port(HOME, false).unwrap();
    let took = wait_steering(lab, HOME, "offered again", within, |kept, _| kept);
    eprintln!("{HOME} was offered again {took:?} after the rule was removed");
    let start = Instant::now();
    while open_unreachable(lab).is_some() {
        assert!(
            start.elapsed() < SLACK + Duration::from_secs(2 * INTERVAL),
            "the issue stays open"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let cleared = lab
        .admin("GET", &format!("/v1/admin/issues?appliance={HOME}"), None)
        .unwrap();
    assert!(
        cleared
            .as_array()
            .into_iter()
            .flatten()
            .any(|i| i["id"] == issue["id"] && !i["cleared_at"].is_null()),
        "{cleared}"
    );
}

/// The open `unreachable` issue of the home appliance, if any (admin API).
fn open_unreachable(lab: &Lab) -> Option<Value> {
    lab.admin(
        "GET",
        &format!("/v1/admin/issues?open=1&appliance={HOME}"),
        None,
    )
    .unwrap()
    .as_array()
    .into_iter()
    .flatten()
    .find(|i| i["kind"] == "unreachable")
    .cloned()
}
