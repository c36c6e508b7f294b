//! The connection state machine, fed any byte stream in any chunks over a real socket against a
//! real file, as the engines drive it: it never panics, never loops, and everything it writes
//! is a sequence of whole responses whose file bytes are exactly the file's bytes at the
//! offsets its `Content-Range` names (or the whole file, for a 200).
#![no_main]

use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use oca_daemon::admission::Admission;
use oca_daemon::cold::{ColdConfig, ColdMode, Sketch};
use oca_daemon::config::Limits;
use oca_daemon::conn::Conn;
use oca_daemon::disk_health::DiskHealth;
use oca_daemon::engine::contract::Next;
use oca_daemon::metrics::Metrics;
use oca_daemon::process::Process;
use oca_daemon::signed_urls::UrlAuth;
use oca_daemon::worker::{Shared, WorkerCtx};

const ID: &str = "f1_1080p.mp4";

struct World {
    _dir: tempfile::TempDir,
    body: Vec<u8>,
    shared: Arc<Shared>,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let body: Vec<u8> = (0..100_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::create_dir_all(dir.path().join("objects/f1")).unwrap();
        std::fs::write(dir.path().join("objects/f1").join(ID), &body).unwrap();
        let store = oca_store::Store::open(&[dir.path()]).unwrap();
        let limits = Limits {
            max_header_bytes: 1024,
            max_uri_bytes: 512,
            max_ranges: 4,
            ..Limits::default()
        };
        let admission = Arc::new(Admission::new(1 << 20, 0));
        let process = Arc::new(Process::new(
            Metrics::new(1, vec!["d".into()], "fuzz", "sendfile"),
            DiskHealth::new(vec!["d".into()], 1),
            admission,
        ));
        let shared = Arc::new(Shared {
            store,
            limits,
            process,
            access_log: None,
            cors: Default::default(),
            auth: UrlAuth::new(None, true),
            tls: None,
            cold: ColdConfig {
                mode: ColdMode::Off,
                ..ColdConfig::default()
            },
            sketch: Sketch::default(),
        });
        World {
            _dir: dir,
            body,
            shared,
        }
    })
}

/// Reads what the connection wrote so far.
fn drain(peer: &OwnedFd, wire: &mut Vec<u8>) {
    let mut buf = [0u8; 65536];
    loop {
        // SAFETY: reading into a live local buffer from an open descriptor.
        let n = unsafe {
            libc::recv(
                std::os::fd::AsRawFd::as_raw_fd(peer),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n <= 0 {
            return;
        }
        wire.extend_from_slice(&buf[..n as usize]);
    }
}

/// Follows the connection's answer to an event until it waits for input or closes; false once
/// closed.
fn drive(
    conn: &mut Conn,
    mut next: Next,
    ctx: &mut WorkerCtx,
    peer: &OwnedFd,
    wire: &mut Vec<u8>,
) -> bool {
    for _ in 0..10_000 {
        match next {
            Next::Read | Next::Wait | Next::Pause => return true,
            Next::Close => return false,
            Next::Write => {
                drain(peer, wire);
                next = conn.on_writable(ctx);
            }
            other => panic!("an engine operation this set-up never asks for: {other:?}"),
        }
    }
    panic!("the connection keeps asking to write");
}

/// Checks that `wire` is whole responses with the file's own bytes.
fn check(wire: &[u8], body: &[u8]) {
    let mut rest = wire;
    while !rest.is_empty() {
        let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") else {
            panic!(
                "a response head cut short: {:?}",
                String::from_utf8_lossy(&rest[..rest.len().min(200)])
            );
        };
        let head = std::str::from_utf8(&rest[..end]).expect("heads are ASCII");
        let status: u16 = head[9..12].parse().unwrap();
        let field = |name: &str| {
            head.lines().skip(1).find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
        };
        let len: usize = field("content-length").map_or(0, |v| v.parse().unwrap());
        let body_start = end + 4;
        // Answers to HEAD, and 304s, carry a length but no body: what follows (if anything)
        // begins the next response. No file or error body here begins with "HTTP/1.".
        let after = &rest[body_start..];
        let bodyless = status == 304 || after.is_empty() || after.starts_with(b"HTTP/1.");
        let take = if bodyless { 0 } else { len };
        assert!(
            rest.len() >= body_start + take,
            "a body cut short ({status}, {len})"
        );
        let got = &rest[body_start..body_start + take];
        if take > 0 && field("etag").is_some() {
            match (status, field("content-range"), field("content-type")) {
                (200, _, _) => assert_eq!(got, body, "a 200 that is not the file"),
                (206, Some(cr), _) => {
                    let span = cr
                        .strip_prefix("bytes ")
                        .unwrap()
                        .split('/')
                        .next()
                        .unwrap();
                    let (a, b) = span.split_once('-').unwrap();
                    let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
                    assert_eq!(got, &body[a..=b], "bytes other than {a}-{b}");
                }
                _ => {}
            }
        }
        rest = &rest[body_start + take..];
    }
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    let mut fds = [0i32; 2];
    // SAFETY: socketpair writes two descriptors into the array we own.
    assert_eq!(
        unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        },
        0
    );
    // SAFETY: both were just created and nothing else owns them.
    let (ours, peer) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let mut ctx = WorkerCtx::new(w.shared.clone(), 0);
    let ticket = w.shared.process.admission.admit(None).unwrap();
    let mut conn = Conn::new(ours, &ctx, None, ticket);
    let _ = conn.sock().as_fd();
    let mut wire = Vec::new();
    // The first byte picks the chunk sizes the bytes arrive in.
    let (seed, mut rest) = data.split_first().map_or((0, &[][..]), |(s, r)| (*s, r));
    let mut x = u32::from(seed) | 1;
    let mut open = true;
    while open && !rest.is_empty() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let n = (1 + (x as usize % 64)).min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        let next = conn.on_data(chunk, &mut ctx);
        open = drive(&mut conn, next, &mut ctx, &peer, &mut wire);
    }
    if open {
        let next = conn.on_eof(&mut ctx);
        drive(&mut conn, next, &mut ctx, &peer, &mut wire);
    }
    drain(&peer, &mut wire);
    check(&wire, &w.body);
});
