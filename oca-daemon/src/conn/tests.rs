//! The lifecycle driven as the engines drive it, over a socketpair against a real file.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;

use super::*;
use crate::admission::Admission;
use crate::cold::{ColdConfig, ColdMode, Sketch};
use crate::config::Limits;
use crate::disk_health::DiskHealth;
use crate::engine::contract::BodyChunk;
use crate::metrics::Metrics;
use crate::process::Process;
use crate::signed_urls::UrlAuth;
use crate::worker::Shared;

const ID: &str = "f1_1080p.mp4";

struct World {
    _dir: tempfile::TempDir,
    body: Vec<u8>,
    ctx: WorkerCtx,
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let body: Vec<u8> = (0..100_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::create_dir_all(dir.path().join("objects/f1")).unwrap();
    std::fs::write(dir.path().join("objects/f1").join(ID), &body).unwrap();
    let store = oca_store::Store::open(&[dir.path()]).unwrap();
    let process = Arc::new(Process::new(
        Metrics::new(1, vec!["d".into()], "test", "sendfile"),
        DiskHealth::new(vec!["d".into()], 1),
        Arc::new(Admission::new(1 << 20, 0)),
    ));
    let shared = Arc::new(Shared {
        store,
        limits: Limits::default(),
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
        ctx: WorkerCtx::new(shared, 0),
    }
}

/// A connection on one end of a socketpair, and the other end as its client.
fn connect(ctx: &WorkerCtx) -> (Conn, OwnedFd) {
    let mut fds = [0i32; 2];
    // SAFETY: socketpair writes two descriptors into the array we own.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(r, 0);
    // SAFETY: both were just created and nothing else owns them.
    let (ours, peer) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let ticket = ctx.shared.process.admission.admit(None).unwrap();
    (Conn::new(ours, ctx, None, ticket), peer)
}

/// What the client end has received so far; `None` once the connection shut its write side.
fn received(peer: &OwnedFd) -> (Vec<u8>, bool) {
    let mut wire = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        // SAFETY: reading into a live local buffer from an open descriptor.
        let n = unsafe {
            libc::recv(
                peer.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        match n {
            0 => return (wire, true),
            n if n < 0 => return (wire, false),
            n => wire.extend_from_slice(&buf[..n as usize]),
        }
    }
}

/// Bytes after the first response head.
fn body_of(wire: &[u8]) -> &[u8] {
    let end = wire.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    &wire[end + 4..]
}

fn get(range: &str, extra: &str) -> Vec<u8> {
    format!("GET /c/{ID} HTTP/1.1\r\nHost: x\r\nRange: bytes={range}\r\n{extra}\r\n").into_bytes()
}

#[test]
fn a_range_is_answered_and_the_connection_reads_again() {
    let mut w = world();
    let (mut conn, peer) = connect(&w.ctx);
    assert_eq!(conn.on_data(&get("10-19", ""), &mut w.ctx), Next::Read);
    let (wire, closed) = received(&peer);
    assert!(wire.starts_with(b"HTTP/1.1 206"));
    assert_eq!(body_of(&wire), &w.body[10..20]);
    assert!(!closed && conn.is_idle());
    assert!(
        conn.direct_file().is_none(),
        "no file is held between requests"
    );
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let mut w = world();
    let (mut conn, peer) = connect(&w.ctx);
    let mut two = get("0-1", "");
    two.extend(get("5-6", ""));
    assert_eq!(conn.on_data(&two, &mut w.ctx), Next::Read);
    let (wire, _) = received(&peer);
    let text = String::from_utf8_lossy(&wire);
    let first = text.find("bytes 0-1/").unwrap();
    let second = text.find("bytes 5-6/").unwrap();
    assert!(first < second);
    assert!(conn.is_idle());
}

#[test]
fn connection_close_lingers_with_the_write_side_shut() {
    let mut w = world();
    let (mut conn, peer) = connect(&w.ctx);
    let next = conn.on_data(&get("0-9", "Connection: close\r\n"), &mut w.ctx);
    assert_eq!(next, Next::Read, "lingering reads until the peer closes");
    let (wire, closed) = received(&peer);
    assert_eq!(body_of(&wire), &w.body[..10]);
    assert!(closed);
    assert_eq!(
        conn.on_data(b"more", &mut w.ctx),
        Next::Read,
        "input is discarded"
    );
    assert_eq!(conn.on_eof(&mut w.ctx), Next::Close);
}

#[test]
fn a_head_past_its_timeout_is_answered_408_and_closed() {
    let mut w = world();
    let (mut conn, peer) = connect(&w.ctx);
    assert_eq!(conn.on_data(b"GET /c/", &mut w.ctx), Next::Read);
    assert_eq!(conn.on_tick(&mut w.ctx), None);
    w.ctx.now += w.ctx.shared.limits.header_timeout + std::time::Duration::from_millis(1);
    assert_eq!(conn.on_tick(&mut w.ctx), Some(Next::Close));
    assert!(received(&peer).0.starts_with(b"HTTP/1.1 408"));
}

#[test]
fn a_file_not_open_waits_for_the_engine_and_nothing_is_written_meanwhile() {
    let mut w = world();
    w.ctx.caps.off_thread_io = true;
    let (mut conn, peer) = connect(&w.ctx);
    assert_eq!(conn.on_data(&get("0-3", ""), &mut w.ctx), Next::Open);
    assert_eq!(conn.opening(), Some(ID));
    assert!(!conn.wants_input(&w.ctx) || conn.on_eof(&mut w.ctx) == Next::Wait);
    assert!(received(&peer).0.is_empty());
    // What an engine does: open the file, give it to the worker's open files.
    let cid = oca_store::ContentId::parse(ID).unwrap();
    let opened = w.ctx.shared.store.open_on(cid, 0).unwrap();
    let now = w.ctx.now;
    w.ctx.files_mut().adopt(cid, opened, now);
    conn.on_opened(&mut w.ctx);
    let (wire, _) = received(&peer);
    assert_eq!(body_of(&wire), &w.body[..4]);
    assert_eq!(conn.opening(), None);
}

#[test]
fn an_engine_that_splices_gets_the_file_part_and_finishes_the_response() {
    let mut w = world();
    w.ctx.caps.splice_from = Some(0);
    let (mut conn, peer) = connect(&w.ctx);
    let Next::Splice(BodyChunk { offset, len, .. }) =
        conn.on_data(&get("100-1099", ""), &mut w.ctx)
    else {
        panic!("the file part goes to the engine");
    };
    assert_eq!((offset, len), (100, 1000));
    assert!(
        conn.direct_file().is_some(),
        "the writing phase holds the file"
    );
    // Bytes arriving meanwhile wait for the response (pipelining).
    assert_eq!(conn.on_data(b"GET /", &mut w.ctx), Next::Wait);
    assert_eq!(conn.on_body_sent(1000, &mut w.ctx), Next::Read);
    assert!(!conn.is_idle(), "the pipelined bytes are buffered");
    assert!(received(&peer).0.starts_with(b"HTTP/1.1 206"));
    assert_eq!(
        conn.on_body_sent(1, &mut w.ctx),
        Next::Close,
        "no body is being sent"
    );
}

#[test]
fn an_engine_without_splice_never_gets_one() {
    let mut w = world();
    let (mut conn, peer) = connect(&w.ctx);
    let mut next = conn.on_data(&get("0-99999", ""), &mut w.ctx);
    let mut wire = Vec::new();
    for _ in 0..100 {
        wire.extend(received(&peer).0);
        match next {
            Next::Write => next = conn.on_writable(&mut w.ctx),
            Next::Read => break,
            other => panic!("{other:?} from an engine that cannot"),
        }
    }
    assert_eq!(next, Next::Read);
    wire.extend(received(&peer).0);
    assert_eq!(body_of(&wire), &w.body[..]);
}
