//! Differential conformance against nginx: the same randomized requests (ranges of every form,
//! conditionals, HEAD, bad heads) to oca-daemon and to nginx serving the same files, comparing
//! status, Content-Range and body bytes. Where the two differ by design the difference is named
//! in [`documented`] (and in docs/oca-daemon.md, "Against nginx"); anything else fails.
//! nginx comes from Debian's nginx-light (.ci/run installs it); skips without it unless
//! OCA_REQUIRE_VM is set.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const NGINX: &str = "/usr/sbin/nginx";

/// The files both serve: (id, size).
const FILES: [(&str, usize); 4] = [
    ("df_one_1080p.mp4", 1),
    ("df_small_1080p.mp4", 1000),
    ("df_mid_1080p.mp4", 100_003),
    ("df_big_1080p.mp4", 2_000_000),
];

struct Nginx(Child, SocketAddr);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_nginx(dir: &Path, root: &Path) -> Nginx {
    let port = test_support::free_port();
    let conf = dir.join("nginx.conf");
    let tmp = dir.join("nginx-tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let t = tmp.display();
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log warn;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n  access_log off;\n  sendfile on;\n  max_ranges 16;\n  default_type application/octet-stream;\n\
               client_body_temp_path {t}; proxy_temp_path {t}; fastcgi_temp_path {t}; uwsgi_temp_path {t}; scgi_temp_path {t};\n\
               server {{ listen 127.0.0.1:{port}; root {r}; }}\n}}\n",
            d = dir.display(),
            r = root.display(),
        ),
    )
    .unwrap();
    let child = Command::new(NGINX)
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(dir.join("nginx-error.log"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting nginx");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    for _ in 0..100 {
        if TcpStream::connect(addr).is_ok() {
            return Nginx(child, addr);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(Nginx(child, addr));
    panic!(
        "nginx did not start: {}",
        std::fs::read_to_string(dir.join("nginx-error.log")).unwrap_or_default()
    );
}

/// One answer, read to the end of the connection.
#[derive(Debug)]
struct Answer {
    status: u16,
    content_range: Option<String>,
    content_type: String,
    /// The file bytes it carries: the body, or for multipart the parts' (range, bytes).
    parts: Vec<(String, Vec<u8>)>,
}

fn ask(addr: SocketAddr, req: &[u8], head_only: bool) -> Option<Answer> {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = c.write_all(req);
    let _ = c.shutdown(std::net::Shutdown::Write);
    let mut all = Vec::new();
    let _ = c.read_to_end(&mut all);
    let end = all.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&all[..end]).to_string();
    let status = head.get(9..12)?.parse().ok()?;
    let field = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let len: usize = field("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let body = if head_only || status == 304 {
        Vec::new()
    } else {
        all[end + 4..].iter().copied().take(len).collect()
    };
    let content_type = field("content-type").unwrap_or_default();
    let content_range = field("content-range");
    let parts = if content_type.starts_with("multipart/byteranges") && !body.is_empty() {
        multipart_parts(&content_type, &body)
    } else if matches!(status, 200 | 206) {
        vec![(content_range.clone().unwrap_or_default(), body)]
    } else {
        Vec::new()
    };
    Some(Answer {
        status,
        content_range,
        content_type,
        parts,
    })
}

/// A deterministic stream of choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
}

/// One range spec of any form for a file of `size` bytes.
fn spec(r: &mut Rng, size: u64) -> String {
    let at = |r: &mut Rng| match r.below(4) {
        0 => 0,
        1 => size.saturating_sub(1),
        2 => size + r.below(10),
        _ => r.below(size + 1),
    };
    match r.below(7) {
        0 => format!("{}-", at(r)),
        1 => format!("-{}", r.below(size + 20)),
        2 => {
            let a = at(r);
            format!("{a}-{}", a + r.below(size + 1))
        }
        3 => {
            let a = at(r);
            format!("{a}-{}", a.saturating_sub(1 + r.below(5))) // last < first
        }
        4 => r
            .pick(&["x-1", "1-y", "--3", "", " 5-6 ", "0-0", "-0"])
            .to_string(),
        5 => format!("{}-{}", at(r), 99_999_999_999_999_999u64),
        _ => {
            let a = r.below(size.max(1));
            format!("{a}-{}", (a + r.below(64)).min(size))
        }
    }
}

/// What a request was, for the report and for [`documented`].
#[derive(Debug, Clone)]
struct Asked {
    head: bool,
    range: Option<String>,
    text: String,
}

/// A randomized request for `id` of `size` bytes; `validators` are the server's own ETag and
/// Last-Modified, substituted where the request names "the file's".
fn request(r: &mut Rng, id: &str, size: u64) -> Asked {
    let head = r.below(8) == 0;
    let range = match r.below(10) {
        0 => None,
        1 => Some(format!("items={}", spec(r, size))),
        2..=5 => Some(format!("bytes={}", spec(r, size))),
        _ => {
            let n = 2 + r.below(5);
            Some(format!(
                "bytes={}",
                (0..n).map(|_| spec(r, size)).collect::<Vec<_>>().join(",")
            ))
        }
    };
    let if_range = match r.below(6) {
        0 => Some("etag"),
        1 => Some("date"),
        2 => Some("stale-date"),
        3 => Some("weak"),
        _ => None,
    };
    let mut text = format!(
        "{} /c/{id} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n",
        if head { "HEAD" } else { "GET" }
    );
    if let Some(v) = &range {
        text.push_str(&format!("Range: {v}\r\n"));
    }
    if let Some(k) = if_range {
        text.push_str(&format!("If-Range: {{{k}}}\r\n"));
    }
    match r.below(8) {
        0 => text.push_str("If-None-Match: {etag}\r\n"),
        1 => text.push_str("If-Modified-Since: {date}\r\n"),
        2 => text.push_str("If-Modified-Since: {stale-date}\r\n"),
        _ => {}
    }
    text.push_str("\r\n");
    Asked { head, range, text }
}

/// The file's validators on one server: (ETag, Last-Modified).
fn validators(addr: SocketAddr, id: &str) -> (String, String) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(
        format!("HEAD /c/{id} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut s = String::new();
    c.read_to_string(&mut s).unwrap();
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_string))
            .unwrap()
    };
    (field("ETag"), field("Last-Modified"))
}

fn fill(text: &str, etag: &str, date: &str) -> Vec<u8> {
    text.replace("{etag}", etag)
        .replace("{weak}", &format!("W/{etag}"))
        .replace("{date}", date)
        .replace("{stale-date}", "Thu, 01 Jan 1970 00:00:01 GMT")
        .into_bytes()
}

/// Bytes of `body` each answer's parts carry must be the file's, wherever they differ.
fn parts_are_the_files(a: &Answer, body: &[u8]) -> bool {
    a.parts.iter().all(|(cr, bytes)| {
        if a.status == 200 {
            return bytes[..] == body[..] || bytes.is_empty();
        }
        let Some(span) = cr.strip_prefix("bytes ").and_then(|s| s.split('/').next()) else {
            return false;
        };
        let Some((x, y)) = span.split_once('-') else {
            return false;
        };
        let (x, y): (usize, usize) = (x.parse().unwrap(), y.parse().unwrap());
        bytes.is_empty() || bytes[..] == body[x..=y]
    })
}

/// Where oca-daemon and nginx answer differently by design: the reason, or None.
fn documented(asked: &Asked, oca: &Answer, ngx: &Answer, size: u64) -> Option<&'static str> {
    let range = asked.range.as_deref().unwrap_or("");
    let specs: Vec<&str> = range
        .strip_prefix("bytes=")
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let invalid = |s: &&str| match s.split_once('-') {
        Some((a, b)) if !a.is_empty() && !b.is_empty() => {
            match (a.parse::<u64>(), b.parse::<u64>()) {
                (Ok(a), Ok(b)) => b < a,
                _ => true,
            }
        }
        Some(("", b)) => b.parse::<u64>().is_err(),
        Some((a, "")) => a.parse::<u64>().is_err(),
        _ => true,
    };
    let raw_specs: Vec<&str> = range
        .strip_prefix("bytes=")
        .map(|v| v.split(',').map(str::trim).collect())
        .unwrap_or_default();
    if ngx.status == 416
        && oca.status != 416
        && (raw_specs.iter().any(|s| s.is_empty() || *s == "-0"))
    {
        return Some("nginx refuses a set with an empty element or a zero-length suffix (416); RFC 9110 §5.6.1 lets empty elements be, and a zero suffix is one unsatisfiable range among others");
    }
    if oca.status == 416 && ngx.status != 416 && specs.len() > 1 && specs.iter().any(invalid) {
        return Some("a set with an invalid range (last before first, not numbers) is 416 whole; nginx drops that range and serves the rest");
    }
    if asked.head && range.starts_with("bytes=") && oca.status == 200 {
        return Some(
            "HEAD ignores Range (RFC 9110 §14.2: ranges are for GET); nginx answers HEAD like GET",
        );
    }
    if oca.status == 416 && ngx.status == 200 && range.starts_with("bytes=") {
        return Some("a malformed bytes= range is 416, never the whole file; nginx ignores it");
    }
    if oca.status == 206 && ngx.status == 206 && specs.len() > 1 {
        return Some("overlapping and adjacent ranges are merged and sorted (RFC 9110 §15.3.7.2); nginx keeps them as asked");
    }
    let _ = size;
    None
}

#[test]
fn randomized_requests_against_nginx() {
    if !Path::new(NGINX).exists() {
        assert!(
            std::env::var_os("OCA_REQUIRE_VM").is_none(),
            "nginx is not installed (apt-get install nginx-light)"
        );
        eprintln!("skipped: nginx is not installed (apt-get install nginx-light)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let root = dir.path().join("nginx-root/c");
    std::fs::create_dir_all(&root).unwrap();
    let mut bodies = Vec::new();
    for (i, (id, size)) in FILES.iter().enumerate() {
        let body = pattern(50 + i as u64, *size);
        let p = put(&store, id, &body);
        std::fs::hard_link(&p, root.join(id)).unwrap();
        bodies.push(body);
    }
    let nginx = start_nginx(dir.path(), &dir.path().join("nginx-root"));
    let report = std::env::var_os("NGINX_DIFF_REPORT").is_some();
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for engine in ["uring", "epoll"] {
        let s = Server::start(engine, &[&store], &[]);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ engine.len() as u64);
        let mut undocumented = Vec::new();
        for n in 0..600 {
            let f = rng.below(FILES.len() as u64) as usize;
            let (id, size) = FILES[f];
            let asked = request(&mut rng, id, size as u64);
            let (oe, od) = validators(s.addr, id);
            let (ne, nd) = validators(nginx.1, id);
            let oca = ask(s.addr, &fill(&asked.text, &oe, &od), asked.head).unwrap();
            let ngx = ask(nginx.1, &fill(&asked.text, &ne, &nd), asked.head).unwrap();
            assert!(
                parts_are_the_files(&oca, &bodies[f]),
                "{engine} {n}: oca-daemon sent other bytes: {asked:?} {oca:?}"
            );
            assert!(
                parts_are_the_files(&ngx, &bodies[f]),
                "{engine} {n}: nginx sent other bytes?"
            );
            let same = oca.status == ngx.status
                && oca.content_range == ngx.content_range
                && oca.parts == ngx.parts;
            if same {
                *counts.entry("same").or_default() += 1;
                continue;
            }
            match documented(&asked, &oca, &ngx, size as u64) {
                Some(why) => *counts.entry(why).or_default() += 1,
                None => undocumented.push(format!(
                    "{n}: {:?}\n  oca {} {:?} {:?} parts {:?}\n  nginx {} {:?} {:?} parts {:?}",
                    asked.text,
                    oca.status,
                    oca.content_range,
                    oca.content_type,
                    oca.parts
                        .iter()
                        .map(|(c, b)| (c.clone(), b.len()))
                        .collect::<Vec<_>>(),
                    ngx.status,
                    ngx.content_range,
                    ngx.content_type,
                    ngx.parts
                        .iter()
                        .map(|(c, b)| (c.clone(), b.len()))
                        .collect::<Vec<_>>(),
                )),
            }
        }
        if report {
            for u in &undocumented {
                eprintln!("{u}");
            }
        }
        assert!(
            undocumented.is_empty(),
            "{engine}: {} answers differ from nginx's without a documented reason:\n{}",
            undocumented.len(),
            undocumented
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    // Bad heads: the status each gives, compared (documented where they differ).
    let s = Server::start("uring", &[&store], &[]);
    let id = FILES[1].0;
    let long = "a".repeat(9000);
    let big = format!("X: {}\r\n", "b".repeat(9000));
    let body = "a GET with a body is refused (400; an unread body would be taken for the next request); nginx reads and discards it";
    let bad: Vec<(String, Option<&str>)> = vec![
        ("GARBAGE\r\n\r\n".into(), None),
        (format!("GET /c/{id} HTTP/1.1\r\n\r\n"), None),
        (
            format!("GET /c/{id} HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            None,
        ),
        (
            format!("GET /c/{id} HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"),
            Some(body),
        ),
        (
            format!(
                "GET /c/{id} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            ),
            Some(body),
        ),
        (
            format!(
                "GET /c/{id} HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
            ),
            None,
        ),
        (
            format!("POST /c/{id} HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"),
            None,
        ),
        (format!("GET /{long} HTTP/1.1\r\nHost: a\r\n\r\n"), None),
        (
            format!("GET /c/{id} HTTP/1.1\r\nHost: a\r\n{big}\r\n"),
            Some("a head over max_header_bytes (8 KiB) is 431; nginx answers 400"),
        ),
        (
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".into(),
            Some("an HTTP/2 preface on an HTTP/1.1 port is 505; nginx answers 400"),
        ),
        (format!("GET /c/{id} HTTP/3.0\r\nHost: a\r\n\r\n"), None),
        (
            format!("GET http://t/c/{id} HTTP/1.1\r\nHost: a\r\n\r\n"),
            None,
        ),
        (format!("GET /c/{id}%00 HTTP/1.1\r\nHost: a\r\n\r\n"), None),
        (
            format!(
                "GET /c/{id} HTTP/1.1\r\nHost: a\r\nRange: bytes=0-1\r\nRange: bytes=2-3\r\n\r\n"
            ),
            Some("Range twice is a 400; nginx takes one of them"),
        ),
    ];
    for (req, why) in &bad {
        let status = |addr| ask(addr, req.as_bytes(), false).map_or(0, |a| a.status);
        let (o, n) = (status(s.addr), status(nginx.1));
        eprintln!(
            "bad head {:?}: oca {o}, nginx {n}",
            &req[..req.len().min(40)]
        );
        match why {
            None => assert_eq!(o, n, "{req:?}: oca-daemon {o}, nginx {n}"),
            Some(why) if o != n => *counts.entry(why).or_default() += 1,
            Some(_) => {}
        }
    }
    for (why, n) in &counts {
        eprintln!("{n:5}  {why}");
    }
    assert!(
        counts.get("same").copied().unwrap_or(0) > 600,
        "most answers agree: {counts:?}"
    );
}
