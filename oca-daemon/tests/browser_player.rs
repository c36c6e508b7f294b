//! A real browser player against the real daemon (issue 19, "Browser players"): headless
//! Chromium, driven over WebDriver (`test_support::browser`), runs Shaka Player from a page of
//! another origin than the appliance, and plays a DASH On-Demand presentation whose segments are
//! byte ranges of one signed file per representation, served by oca-daemon with `--keys` (never
//! `--allow-unsigned`). One browser, one page, three daemons:
//!
//! - over HTTP, CORS as by default (`*`): plays past 2 s, seeks to 8 s and plays on from there,
//!   with plain `Range` requests (a single range is CORS-safelisted: no preflight);
//! - over HTTPS (the daemon's TLS listener, a fresh self-signed certificate), CORS an allow-list
//!   naming the page's origin, and the player adding `If-Range` to its ranges, as a player
//!   resuming a range does: the same, each range after a preflight the daemon allows;
//! - the negative control, `--cors-origin http://some-other-origin.example`, played twice: with
//!   plain ranges the daemon answers each `GET` with its 206 and Chromium keeps it from the page;
//!   with `If-Range` Chromium stops at the preflight and sends no `GET`. Either way the player
//!   reports an error and the video never moves, which is what shows that the plays above depend
//!   on the daemon's CORS headers and on nothing else letting them through. (Run with
//!   `--cors-origin ''` instead of the default, the first play fails the same way.)
//!
//! After each successful play the test asserts, from both ends, that the player fetched byte
//! ranges: the daemon's access log (`--access-log -`) has only `206` answers to ranged `GET`s of
//! the media (and over HTTPS, TLS connections), and the page's Resource Timing entries for them
//! show a `206` status, a nonzero `responseStart` and transfer sizes, which Chromium shows a page
//! of another origin only when the response has `Timing-Allow-Origin` for it (players measure
//! throughput with them; a response with CORS but without it reads 0 for both, as checked by
//! hand with this Chromium). A script of the page then reads the exposed headers of a ranged
//! response (`Content-Range`, `Content-Length`, `ETag`, `Accept-Ranges`, `Last-Modified`).
//!
//! The media: ffmpeg (Debian's) makes a 16-second test card, VP9 video (libvpx-vp9, which
//! Chromium plays through MSE) with silent Opus audio, each a WebM file whose clusters start at
//! the 2-second keyframes and whose Cues index them (`-dash 1`); `-f webm_dash_manifest` writes
//! the MPD (`SegmentBase` with `indexRange` and the `Initialization` range), whose `BaseURL`s
//! the test points at the appliance with a signed query. The files go into the store as an
//! operator puts them (`objects/<first two characters>/<id>`).
//!
//! The player: Shaka Player, pinned in `tests/player/package.json` and its lock file (version
//! and checksum); `.ci/run` installs it with `npm ci --prefix oca-daemon/tests/player`, and the
//! test reads `dist/shaka-player.compiled.js` from there. The page, the player and the MPD come
//! from a small HTTP server in this test on another port of 127.0.0.1: another origin.
//!
//! HTTPS trust: Chromium does not trust the test's self-signed certificate; the WebDriver
//! session `test_support::browser` opens asks for `acceptInsecureCerts`, with which Chromium
//! accepts certificate errors for every request of the session, the player's cross-origin
//! fetches included (what `--ignore-certificate-errors` does). Making it trust the certificate
//! instead means writing it into an NSS database under `$HOME/.pki/nssdb` (certutil, one more
//! package, and the home directory of whoever runs the tests) for a property this test is not
//! about: it checks the player, CORS and ranges over the daemon's TLS listener, and the access
//! log shows the connections were TLS.
//!
//! Needs `chromium`, `chromedriver`, `ffmpeg` and the player (`npm ci` above); without one it
//! says which and passes, unless `OCA_REQUIRE_VM` is set (CI), where it fails. About 15 s here.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use oca_protocol::keys::{Key, Keyring};
use oca_protocol::signing::{signed_query, Scope};
use serde_json::{json, Value};
use test_support::browser::{self, Browser};

/// The content ids of the two representations.
const VIDEO_ID: &str = "testcard_vp9_240p.webm";
const AUDIO_ID: &str = "testcard_opus.webm";
/// The presentation's length, and where the test seeks to.
const SECONDS: u32 = 16;
const SEEK_TO: f64 = 8.0;
/// The origin the negative control's daemon allows: not the page's.
const OTHER_ORIGIN: &str = "http://some-other-origin.example";

/// The player's directory (`npm ci --prefix` there) and its script.
fn player_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/player")
}

fn player_js() -> PathBuf {
    player_dir().join("node_modules/shaka-player/dist/shaka-player.compiled.js")
}

/// Why this test cannot run here, if it cannot.
fn missing() -> Option<String> {
    if let Some(why) = browser::unavailable() {
        return Some(why);
    }
    if !test_support::on_path("ffmpeg") {
        return Some("ffmpeg is not installed (Debian: ffmpeg)".into());
    }
    if !player_js().exists() {
        return Some(format!(
            "the player is not installed: npm ci --prefix {}",
            player_dir().display()
        ));
    }
    None
}

/// Whether to skip, saying why (failing instead under `OCA_REQUIRE_VM`, as CI sets).
fn skip() -> bool {
    let Some(why) = missing() else {
        return false;
    };
    assert!(
        std::env::var_os("OCA_REQUIRE_VM").is_none(),
        "cannot run the browser player test: {why}"
    );
    eprintln!("skipped: {why}");
    true
}

/// Runs ffmpeg in `dir`, quietly, failing the test with its errors.
fn ffmpeg(dir: &Path, args: &[&str]) {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running ffmpeg");
    assert!(
        out.status.success(),
        "ffmpeg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The presentation: the two files, and the MPD with `{video}` and `{audio}` where their URLs
/// go.
struct Media {
    video: Vec<u8>,
    audio: Vec<u8>,
    mpd: String,
}

/// Encodes the test card and writes its manifest (about 1.5 s on this machine).
fn make_media(dir: &Path) -> Media {
    let secs = SECONDS.to_string();
    // Keyframes every 2 s (25 fps), and with `-dash 1` a cluster starts at each: the Cues are
    // the segment index, each cluster a segment the player fetches as one byte range.
    ffmpeg(
        dir,
        &[
            "-f",
            "lavfi",
            "-i",
            &format!("testsrc=size=426x240:rate=25:duration={secs}"),
            "-pix_fmt",
            "yuv420p",
            "-c:v",
            "libvpx-vp9",
            "-b:v",
            "400k",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
            "-g",
            "50",
            "-keyint_min",
            "50",
            "-an",
            "-f",
            "webm",
            "-dash",
            "1",
            "v.webm",
        ],
    );
    ffmpeg(
        dir,
        &[
            "-f",
            "lavfi",
            "-i",
            "anullsrc=r=48000:cl=stereo",
            "-t",
            &secs,
            "-c:a",
            "libopus",
            "-b:a",
            "32k",
            "-vn",
            "-f",
            "webm",
            "-dash",
            "1",
            "a.webm",
        ],
    );
    ffmpeg(
        dir,
        &[
            "-f",
            "webm_dash_manifest",
            "-i",
            "v.webm",
            "-f",
            "webm_dash_manifest",
            "-i",
            "a.webm",
            "-c",
            "copy",
            "-map",
            "0",
            "-map",
            "1",
            "-f",
            "webm_dash_manifest",
            "-adaptation_sets",
            "id=0,streams=0 id=1,streams=1",
            "manifest.mpd",
        ],
    );
    let mpd = std::fs::read_to_string(dir.join("manifest.mpd")).unwrap();
    for base in ["<BaseURL>v.webm</BaseURL>", "<BaseURL>a.webm</BaseURL>"] {
        assert!(mpd.contains(base), "no {base} in the MPD:\n{mpd}");
    }
    assert!(
        mpd.contains("indexRange=") && mpd.contains("<Initialization"),
        "not SegmentBase:\n{mpd}"
    );
    Media {
        video: std::fs::read(dir.join("v.webm")).unwrap(),
        audio: std::fs::read(dir.join("a.webm")).unwrap(),
        mpd: mpd
            .replace("<BaseURL>v.webm</BaseURL>", "<BaseURL>{video}</BaseURL>")
            .replace("<BaseURL>a.webm</BaseURL>", "<BaseURL>{audio}</BaseURL>"),
    }
}

/// The player's page: Shaka Player on a muted `<video>` (muted video may play without a user
/// gesture), the MPD named by `?mpd=`, and `snapshot()` for the test to read its state.
const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>player</title>
<script src="/shaka-player.compiled.js"></script></head>
<body><video id="v" muted playsinline width="426" height="240"></video>
<script>
const video = document.getElementById('v');
const state = { loaded: false, errors: [] };
function describe(e) {
  return e && e.code !== undefined
    ? `shaka error ${e.code} (category ${e.category}, severity ${e.severity}): ${JSON.stringify(e.data)}`
    : String(e);
}
window.addEventListener('error', e => state.errors.push('page: ' + e.message));
video.addEventListener('error', () => state.errors.push('video: ' + (video.error && video.error.message)));
window.snapshot = () => ({
  time: video.currentTime,
  readyState: video.readyState,
  paused: video.paused,
  seeking: video.seeking,
  loaded: state.loaded,
  errors: state.errors,
  resources: performance.getEntriesByType('resource')
    .filter(r => r.name.includes('/c/'))
    .map(r => ({
      url: r.name.split('?')[0],
      status: r.responseStatus,
      responseStart: r.responseStart,
      transferSize: r.transferSize,
      encodedBodySize: r.encodedBodySize,
    })),
});
// What a script of the page reads of one ranged response: status and the exposed headers.
window.readHeaders = async url => {
  const r = await fetch(url, { headers: { Range: 'bytes=0-9' } });
  const h = {};
  for (const name of ['content-range', 'content-length', 'etag', 'accept-ranges', 'last-modified', 'cache-control'])
    h[name] = r.headers.get(name);
  return { status: r.status, headers: h, body: (await r.arrayBuffer()).byteLength };
};
(async () => {
  try {
    shaka.polyfill.installAll();
    if (!shaka.Player.isBrowserSupported()) throw 'Shaka Player does not support this browser';
    video.muted = true;
    const player = new shaka.Player();
    await player.attach(video);
    player.addEventListener('error', e => state.errors.push(describe(e.detail)));
    if (new URLSearchParams(location.search).get('if-range')) {
      // As a player resuming a range would: If-Range with the ETag, which is the id, quoted.
      player.getNetworkingEngine().registerRequestFilter((type, request) => {
        const path = new URL(request.uris[0]).pathname;
        if (path.startsWith('/c/')) request.headers['If-Range'] = `"${path.slice(3)}"`;
      });
    }
    await player.load(new URLSearchParams(location.search).get('mpd'));
    state.loaded = true;
    await video.play();
  } catch (e) {
    state.errors.push(describe(e));
  }
})();
</script></body></html>
"#;

/// What the page's site serves: path, then content type and body.
type Files = HashMap<String, (&'static str, Vec<u8>)>;

/// The page's origin: a tiny HTTP/1.1 server on its own port, one thread per connection,
/// answering `GET`s of the paths in `files`.
struct Site {
    addr: SocketAddr,
    files: Arc<Mutex<Files>>,
}

impl Site {
    fn start() -> Site {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let files = Arc::new(Mutex::new(HashMap::new()));
        let served = files.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let files = served.clone();
                std::thread::spawn(move || Site::answer(conn, &files));
            }
        });
        Site { addr, files }
    }

    fn put(&self, path: &str, content_type: &'static str, body: Vec<u8>) {
        self.files
            .lock()
            .unwrap()
            .insert(path.to_string(), (content_type, body));
    }

    fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answers the requests of one connection until the client closes it.
    fn answer(conn: TcpStream, files: &Mutex<Files>) {
        let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
        let mut out = conn.try_clone().unwrap();
        let mut reader = BufReader::new(conn);
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
            // The rest of the head (no request here has a body).
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 {
                    return;
                }
                if h == "\r\n" || h == "\n" {
                    break;
                }
            }
            let path = target.split('?').next().unwrap_or("/");
            let found = files.lock().unwrap().get(path).cloned();
            let (status, content_type, body) = match found {
                Some((t, b)) => ("200 OK", t, b),
                None => ("404 Not Found", "text/plain", b"not here\n".to_vec()),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
                 Cache-Control: no-store\r\n\r\n",
                body.len()
            );
            if out.write_all(head.as_bytes()).is_err() || out.write_all(&body).is_err() {
                return;
            }
        }
    }
}

/// Headless Chromium. The test's own calls are blocking, so the browser gets a runtime of its
/// own, each WebDriver call one `block_on` bounded by a deadline.
struct Web {
    rt: tokio::runtime::Runtime,
    b: Option<Browser>,
}

/// Runs `f` on `rt` for at most `limit` (None when it took longer).
fn within<F: std::future::Future>(
    rt: &tokio::runtime::Runtime,
    limit: Duration,
    f: F,
) -> Option<F::Output> {
    rt.block_on(async { tokio::time::timeout(limit, f).await.ok() })
}

/// The longest any one WebDriver call may take.
const CALL: Duration = Duration::from_secs(20);

impl Web {
    fn start() -> Web {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let b = within(&rt, Duration::from_secs(30), Browser::start())
            .expect("Chromium started within 30 s")
            .unwrap();
        Web { rt, b: Some(b) }
    }

    fn browser(&self) -> &Browser {
        self.b.as_ref().expect("open")
    }

    fn goto(&self, url: &str) {
        within(&self.rt, CALL, self.browser().client.goto(url))
            .unwrap_or_else(|| panic!("{url} did not load within {CALL:?}"))
            .unwrap();
    }

    fn script(&self, script: &str, args: Vec<Value>) -> Value {
        within(&self.rt, CALL, self.browser().client.execute(script, args))
            .unwrap_or_else(|| panic!("script did not return within {CALL:?}: {script}"))
            .unwrap()
    }

    /// Runs `script` as an asynchronous script: it ends by calling its last argument.
    fn script_async(&self, script: &str, args: Vec<Value>) -> Value {
        within(
            &self.rt,
            CALL,
            self.browser().client.execute_async(script, args),
        )
        .unwrap_or_else(|| panic!("script did not finish within {CALL:?}: {script}"))
        .unwrap()
    }

    /// The player's state (the page's `snapshot()`).
    fn snapshot(&self) -> Snapshot {
        let v = self.script("return window.snapshot ? window.snapshot() : null;", vec![]);
        Snapshot(v)
    }
}

impl Drop for Web {
    fn drop(&mut self) {
        if let Some(b) = self.b.take() {
            let _ = within(&self.rt, Duration::from_secs(10), b.close());
        }
    }
}

/// What `snapshot()` returned.
#[derive(Debug)]
struct Snapshot(Value);

impl Snapshot {
    fn time(&self) -> f64 {
        self.0["time"].as_f64().unwrap_or(0.0)
    }

    fn ready_state(&self) -> u64 {
        self.0["readyState"].as_u64().unwrap_or(0)
    }

    fn errors(&self) -> Vec<String> {
        self.0["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| e.as_str().unwrap_or("?").to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn playing(&self) -> bool {
        self.0["paused"] == false && self.0["seeking"] == false && self.ready_state() >= 3
    }

    fn resources(&self) -> Vec<Value> {
        self.0["resources"].as_array().cloned().unwrap_or_default()
    }
}

/// Polls the player's state until `done` holds for it, failing with `what` and the state after
/// `within` or at the player's first error.
fn wait_for(web: &Web, within: Duration, what: &str, done: impl Fn(&Snapshot) -> bool) -> Snapshot {
    let end = Instant::now() + within;
    loop {
        let s = web.snapshot();
        assert!(
            s.errors().is_empty(),
            "player error while waiting for {what}: {:#}",
            s.0
        );
        if done(&s) {
            return s;
        }
        assert!(
            Instant::now() < end,
            "no {what} within {within:?}; the player's state: {:#}",
            s.0
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A keyring file as the fill agent writes it (0600), with one key.
fn write_keys(path: &Path, key: &Key) {
    std::fs::write(path, Keyring::new(vec![key.clone()]).unwrap().to_json()).unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
}

/// One play: which daemon, at which base URL (`http://...` or `https://...`), and a name for
/// its MPD on the page's site.
struct Play<'a> {
    name: &'a str,
    daemon: &'a Server,
    base: String,
    key: &'a Key,
    /// Whether the player sends `If-Range` with its ranges (see [`PAGE`]): a header outside
    /// the CORS safelist, so Chromium asks the daemon first with a preflight.
    if_range: bool,
}

impl Play<'_> {
    /// Publishes this play's MPD (BaseURLs: the appliance's signed URLs) and opens the page on
    /// it.
    fn open(&self, web: &Web, site: &Site, media: &Media) {
        // An XML text node: the query's `&`s are escaped.
        let url = |id: &str| self.url(id).replace('&', "&amp;");
        let mpd = media
            .mpd
            .replace("{video}", &url(VIDEO_ID))
            .replace("{audio}", &url(AUDIO_ID));
        let slug: String = self
            .name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let path = format!("/{slug}.mpd");
        site.put(&path, "application/dash+xml", mpd.into_bytes());
        let if_range = if self.if_range { "&if-range=1" } else { "" };
        web.goto(&format!("{}/?mpd={path}{if_range}", site.origin()));
    }

    /// The signed URL of `id` on this play's appliance.
    fn url(&self, id: &str) -> String {
        let q = signed_query(self.key, id, now() + 600, Scope::Play);
        format!("{}/c/{id}?{q}", self.base)
    }

    /// The daemon's access-log lines for the media (`--access-log -`, in its log) once `ready`
    /// holds for them, or after 3 s (the log is written every 100 ms).
    fn media_lines_when(&self, ready: impl Fn(&[String]) -> bool) -> Vec<String> {
        let end = Instant::now() + Duration::from_secs(3);
        loop {
            let lines: Vec<String> = self
                .daemon
                .log()
                .lines()
                .filter(|l| l.contains(" /c/testcard_"))
                .map(str::to_string)
                .collect();
            if ready(&lines) || Instant::now() > end {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The status an access-log line gives (after the quoted request line).
fn status_of(line: &str) -> u16 {
    line.split("HTTP/1.1\" ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {line:?}"))
}

/// Plays to past 2 s, seeks to [`SEEK_TO`] and plays on from there; then checks from the page
/// and from the daemon that every media response was a byte range.
fn plays_and_seeks(web: &Web, site: &Site, media: &Media, play: &Play<'_>, tls: bool) {
    let started = Instant::now();
    play.open(web, site, media);
    let s = wait_for(web, Duration::from_secs(20), "playback past 2 s", |s| {
        s.playing() && s.time() > 2.0
    });
    eprintln!(
        "{}: playing at {:.2} s after {:.1} s",
        play.name,
        s.time(),
        started.elapsed().as_secs_f64()
    );

    let seeked = Instant::now();
    web.script(
        "document.getElementById('v').currentTime = arguments[0]; return true;",
        vec![json!(SEEK_TO)],
    );
    let s = wait_for(
        web,
        Duration::from_secs(20),
        "playback after the seek",
        |s| {
            assert!(
                s.time() >= SEEK_TO - 0.05,
                "the seek to {SEEK_TO} s went back to {} s",
                s.time()
            );
            s.playing() && s.time() > SEEK_TO + 1.0
        },
    );
    // It resumed from the seek's position, not from somewhere else ahead of it.
    let played = s.time() - SEEK_TO;
    assert!(
        played <= seeked.elapsed().as_secs_f64() + 0.5,
        "{played:.2} s past the seek after only {:.2} s",
        seeked.elapsed().as_secs_f64()
    );
    eprintln!(
        "{}: playing at {:.2} s, {:.1} s after seeking to {SEEK_TO} s",
        play.name,
        s.time(),
        seeked.elapsed().as_secs_f64()
    );
    assert!(s.errors().is_empty() && s.0["loaded"] == true, "{:#}", s.0);

    // The page's view: every media response a 206 whose timings the page may see (the daemon's
    // Timing-Allow-Origin; without it responseStart and transferSize read 0 across origins).
    let resources = s.resources();
    assert!(resources.len() >= 4, "media fetches: {resources:#?}");
    for r in &resources {
        assert_eq!(r["status"], 206, "not a byte range: {r:#}");
        assert!(
            r["responseStart"].as_f64().unwrap_or(0.0) > 0.0,
            "no timings: {r:#}"
        );
    }
    let transferred: f64 = resources
        .iter()
        .map(|r| r["transferSize"].as_f64().unwrap_or(0.0))
        .sum();
    assert!(
        transferred > 100_000.0,
        "Resource Timing saw {transferred} bytes: {resources:#?}"
    );
    for id in [VIDEO_ID, AUDIO_ID] {
        assert!(
            resources
                .iter()
                .any(|r| r["url"].as_str().is_some_and(|u| u.ends_with(id))),
            "no fetch of {id}: {resources:#?}"
        );
    }

    // The daemon's view: the same requests, each a GET with a Range answered 206.
    // (A fetch with no transfer came from Chromium's cache: the answers are `immutable`, and
    // Shaka asks for each initialization range twice.)
    let fetched = resources
        .iter()
        .filter(|r| r["transferSize"].as_f64().unwrap_or(0.0) > 0.0)
        .count();
    let is_get = |l: &&String| l.contains("\"GET /c/");
    let lines = play.media_lines_when(|lines| lines.iter().filter(is_get).count() >= fetched);
    let gets: Vec<&String> = lines.iter().filter(is_get).collect();
    assert!(
        gets.len() >= fetched,
        "{fetched} fetches over the network seen by the page, {} by the daemon: \
         {resources:#?}\n{lines:#?}",
        gets.len()
    );
    for l in &gets {
        assert_eq!(status_of(l), 206, "{l}");
        assert!(l.contains(" range=\"bytes="), "no Range: {l}");
        let tls_said = l.split(" tls=").nth(1).and_then(|r| r.split(' ').next());
        assert!(tls_said.is_some_and(|t| (t != "off") == tls), "{l}");
    }
    let video_ranges = gets.iter().filter(|l| l.contains(VIDEO_ID)).count();
    assert!(
        video_ranges >= 4,
        "the video in {video_ranges} ranges: {gets:#?}"
    );
    // Preflights: none are needed for a plain `Range` (Chromium safelists a single range).
    // `If-Range` is not safelisted, and a conditional header turns the request's cache mode to
    // `no-store` (Fetch, "HTTP-network-or-cache fetch"), which in Chromium skips the preflight
    // cache too: one preflight before every range, whatever `Access-Control-Max-Age` says.
    let preflights: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("\"OPTIONS /c/"))
        .collect();
    if play.if_range {
        assert!(
            preflights.len() >= gets.len(),
            "{} preflights for {} ranges: {lines:#?}",
            preflights.len(),
            gets.len()
        );
        for l in &preflights {
            assert_eq!(status_of(l), 204, "{l}");
        }
    }
    eprintln!(
        "{}: {} media requests, all 206 ({} of the video); {} preflights; page saw {:.0} bytes",
        play.name,
        gets.len(),
        video_ranges,
        preflights.len(),
        transferred
    );

    // What a script of the page may read of an answer: the headers the daemon exposes.
    let read = web.script_async(
        "const done = arguments[arguments.length - 1];\
         window.readHeaders(arguments[0]).then(done, e => done({ error: String(e) }));",
        vec![json!(play.url(VIDEO_ID))],
    );
    let header = |name: &str| read["headers"][name].as_str().map(str::to_string);
    assert_eq!(read["status"], 206, "{read:#}");
    assert_eq!(read["body"], 10, "{read:#}");
    let total = media.video.len();
    assert_eq!(header("content-range"), Some(format!("bytes 0-9/{total}")));
    assert_eq!(header("content-length").as_deref(), Some("10"));
    assert_eq!(header("etag"), Some(format!("\"{VIDEO_ID}\"")));
    assert_eq!(header("accept-ranges").as_deref(), Some("bytes"));
    assert!(header("last-modified").is_some(), "{read:#}");
    assert_eq!(
        header("cache-control").as_deref(),
        Some("public, max-age=31536000, immutable")
    );
}

/// The negative control: the daemon allows another origin only. The player's requests reach
/// the daemon, but Chromium keeps the answers from the page: the player fails and the video
/// never starts. With plain ranges the daemon answers each `GET` (206) and the browser withholds
/// the response; with `If-Range` the browser stops at the preflight, which gets no permission,
/// and sends no `GET` at all.
fn does_not_play_for_an_origin_not_allowed(web: &Web, site: &Site, media: &Media, play: &Play<'_>) {
    let before = play.media_lines_when(|_| true).len();
    play.open(web, site, media);
    let end = Instant::now() + Duration::from_secs(20);
    let s = loop {
        let s = web.snapshot();
        assert!(
            s.time() == 0.0 && s.ready_state() < 3,
            "played without the daemon allowing the page's origin: {:#}",
            s.0
        );
        if !s.errors().is_empty() {
            break s;
        }
        assert!(
            Instant::now() < end,
            "the player reported no error within 20 s: {:#}",
            s.0
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // A while longer: nothing moves after the error either.
    std::thread::sleep(Duration::from_secs(1));
    let after = web.snapshot();
    assert!(
        after.time() == 0.0 && after.0["loaded"] == false,
        "{:#}",
        after.0
    );
    let errors = s.errors();
    eprintln!("{}: the player failed as it should: {errors:?}", play.name);
    // The failure is the browser's CORS check, not an unreachable or refusing daemon: the
    // requests reached it and were answered.
    let (method, status) = if play.if_range {
        ("\"OPTIONS /c/", 204)
    } else {
        ("\"GET /c/", 206)
    };
    let answered = |l: &String| l.contains(method) && status_of(l) == status;
    let lines = play.media_lines_when(|lines| lines[before..].iter().any(answered));
    let lines = &lines[before..];
    assert!(
        lines.iter().any(answered),
        "the daemon answered none of the player's requests with {status}: {lines:#?}\n\
         player: {errors:?}"
    );
    if play.if_range {
        assert!(
            !lines.iter().any(|l| l.contains("\"GET /c/")),
            "a GET after a refused preflight: {lines:#?}"
        );
    }
    // What the page saw of them: no status.
    for r in after.resources() {
        assert!(r["status"] != 206, "the page read a response: {r:#}");
    }
}

#[test]
fn shaka_player_plays_and_seeks_signed_byte_ranges_across_origins_over_http_and_https() {
    if skip() {
        return;
    }
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("media");
    std::fs::create_dir(&work).unwrap();
    let media = make_media(&work);
    eprintln!(
        "media: video {} bytes, audio {} bytes, made in {:.1} s",
        media.video.len(),
        media.audio.len(),
        started.elapsed().as_secs_f64()
    );
    let store = dir.path().join("disk0");
    put(&store, VIDEO_ID, &media.video);
    put(&store, AUDIO_ID, &media.audio);
    let key = Key::new("k1", [7; 32]).unwrap();
    let keys = dir.path().join("keys.json");
    write_keys(&keys, &key);
    let (cert, tls_key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    tls::write_cert(&cert, &tls_key);

    let site = Site::start();
    site.put("/", "text/html; charset=utf-8", PAGE.as_bytes().to_vec());
    site.put(
        "/shaka-player.compiled.js",
        "text/javascript",
        std::fs::read(player_js()).unwrap(),
    );
    let keys_flag = ["--keys", keys.to_str().unwrap(), "--access-log", "-"];
    let web = Web::start();

    // HTTP, CORS as by default: any origin.
    let open = Server::start("uring", &[&store], &keys_flag);
    plays_and_seeks(
        &web,
        &site,
        &media,
        &Play {
            name: "http, any origin",
            daemon: &open,
            base: format!("http://{}", open.addr),
            key: &key,
            if_range: false,
        },
        false,
    );
    drop(open);

    // HTTPS, CORS an allow-list naming the page's origin.
    let origin = site.origin();
    let mut flags = keys_flag.to_vec();
    flags.extend(["--cors-origin", &origin]);
    flags.extend(tls::flags(&cert, &tls_key));
    let listed = Server::start("uring", &[&store], &flags);
    plays_and_seeks(
        &web,
        &site,
        &media,
        &Play {
            name: "https, the page's origin listed",
            daemon: &listed,
            base: format!("https://{}", tls::tls_addr(&listed)),
            key: &key,
            if_range: true,
        },
        true,
    );
    drop(listed);

    // The negative control: another origin listed, not the page's.
    let mut flags = keys_flag.to_vec();
    flags.extend(["--cors-origin", OTHER_ORIGIN]);
    let closed = Server::start("uring", &[&store], &flags);
    for if_range in [false, true] {
        does_not_play_for_an_origin_not_allowed(
            &web,
            &site,
            &media,
            &Play {
                name: if if_range {
                    "http, another origin listed, If-Range"
                } else {
                    "http, another origin listed"
                },
                daemon: &closed,
                base: format!("http://{}", closed.addr),
                key: &key,
                if_range,
            },
        );
    }
    eprintln!("all plays done in {:.1} s", started.elapsed().as_secs_f64());
}
