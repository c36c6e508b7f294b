//! CORS against the real daemon, as a browser sends it (the player test in
//! tests/browser_player.rs plays through it in Chromium): preflights answered, content
//! answers (errors too) readable by pages of the allowed origins only.

mod common;

use common::*;

const ID: &str = "80100172_1080p.mp4";

fn ask(s: &Server, req: &str) -> RawResponse {
    raw(s.addr, req.as_bytes()).expect("answered")
}

#[test]
fn any_origin_may_read_content_and_its_preflight_is_answered() {
    let dir = tempfile::tempdir().unwrap();
    put(dir.path(), ID, &pattern(2, 10_000));
    for engine in ["uring", "epoll"] {
        let s = Server::start(engine, &[dir.path()], &[]);
        let pre = ask(
            &s,
            &format!(
                "OPTIONS /c/{ID}?e=1&k=k&s=x HTTP/1.1\r\nHost: t\r\nOrigin: https://player.example\r\n\
                 Access-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: range, if-range\r\n\r\n"
            ),
        );
        assert_eq!(pre.status, 204, "{engine}");
        assert_eq!(
            pre.header("access-control-allow-origin").as_deref(),
            Some("*")
        );
        let methods = pre.header("access-control-allow-methods").unwrap();
        assert!(
            methods.contains("GET") && methods.contains("HEAD"),
            "{methods}"
        );
        let headers = pre.header("access-control-allow-headers").unwrap();
        assert!(
            headers.contains("Range") && headers.contains("If-Range"),
            "{headers}"
        );
        assert_eq!(
            pre.header("access-control-max-age").as_deref(),
            Some("7200")
        );
        assert!(pre.body.is_empty());

        let r = ask(
            &s,
            &format!("GET /c/{ID} HTTP/1.1\r\nHost: t\r\nOrigin: https://player.example\r\nRange: bytes=0-99\r\n\r\n"),
        );
        assert_eq!(r.status, 206);
        assert_eq!(
            r.header("access-control-allow-origin").as_deref(),
            Some("*")
        );
        assert_eq!(r.header("timing-allow-origin").as_deref(), Some("*"));
        let exposed = r.header("access-control-expose-headers").unwrap();
        for h in ["Content-Range", "Content-Length", "ETag", "Accept-Ranges"] {
            assert!(exposed.contains(h), "{exposed}");
        }
        assert_eq!(
            r.header("cache-control").as_deref(),
            Some("public, max-age=31536000, immutable")
        );
        // Errors about content are readable too: the player sees a 404, not a network error.
        let missing = ask(
            &s,
            "GET /c/nothing_here.mp4 HTTP/1.1\r\nHost: t\r\nOrigin: https://player.example\r\n\r\n",
        );
        assert_eq!(missing.status, 404);
        assert_eq!(
            missing.header("access-control-allow-origin").as_deref(),
            Some("*")
        );
        assert_eq!(missing.header("cache-control"), None);

        let other = ask(&s, "DELETE /c/x HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(other.status, 405);
        assert_eq!(other.header("allow").as_deref(), Some("GET, HEAD, OPTIONS"));
        let with_body = ask(
            &s,
            "OPTIONS /c/x HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc",
        );
        assert_eq!(with_body.status, 400);
    }
}

#[test]
fn an_allow_list_echoes_its_origins_and_gives_others_nothing() {
    let dir = tempfile::tempdir().unwrap();
    put(dir.path(), ID, &pattern(2, 10_000));
    let s = Server::start(
        "uring",
        &[dir.path()],
        &[
            "--cors-origin",
            "https://player.example",
            "--cors-origin",
            "http://127.0.0.1:8000",
        ],
    );
    let get = |origin: &str| {
        ask(
            &s,
            &format!("GET /c/{ID} HTTP/1.1\r\nHost: t\r\nOrigin: {origin}\r\n\r\n"),
        )
    };
    let ok = get("https://player.example");
    assert_eq!(
        ok.header("access-control-allow-origin").as_deref(),
        Some("https://player.example")
    );
    assert_eq!(ok.header("vary").as_deref(), Some("Origin"));
    let no = get("https://evil.example");
    assert_eq!(
        no.status, 200,
        "the bytes are the URL's to guard, not the origin's"
    );
    assert_eq!(no.header("access-control-allow-origin"), None);
    assert_eq!(no.header("vary").as_deref(), Some("Origin"));
    let pre = ask(
        &s,
        "OPTIONS /c/x HTTP/1.1\r\nHost: t\r\nOrigin: https://evil.example\r\nAccess-Control-Request-Method: GET\r\n\r\n",
    );
    assert_eq!(pre.status, 204);
    assert_eq!(pre.header("access-control-allow-origin"), None);
    assert_eq!(pre.header("access-control-allow-methods"), None);

    let off = Server::start("epoll", &[dir.path()], &["--cors-origin", ""]);
    let r = raw(
        off.addr,
        format!("GET /c/{ID} HTTP/1.1\r\nHost: t\r\nOrigin: https://player.example\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(r.header("access-control-allow-origin"), None);
}

#[test]
fn a_bad_origin_in_the_configuration_is_refused_at_start() {
    let out = daemon_cmd(
        "epoll",
        &[],
        &["--cors-origin", "player.example/", "--demo"],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("scheme://host[:port]"), "{err}");
}
