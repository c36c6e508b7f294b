//! One access-log line: nginx's `combined` format, then the appliance's own fields.
//!
//! ```text
//! 192.0.2.7 - - [02/Dec/2026:05:19:31 +0000] "GET /c/t1.mp4?e=1764660000&k=k1 HTTP/1.1" 206 1048576 "https://player.example/" "Mozilla/5.0" range="bytes=0-1048575" sent=1048903 rt=0.004 path=cache tls=ktls kid=k1 end=ok
//! ```
//!
//! Up to the User-Agent it is nginx's `combined`: the client's address, `-` (ident), `-`
//! (user), the time the response ended (always UTC), the request line, the status, the body
//! bytes sent (`$body_bytes_sent`), `Referer`, `User-Agent`; goaccess's `COMBINED` format and any
//! combined parser read it and ignore what follows. What follows is `name=value`, in this order:
//!
//! | field | what |
//! |---|---|
//! | `range` | the `Range` header as sent, `"-"` without one |
//! | `sent` | every byte sent, head included (`$bytes_sent`) |
//! | `rt` | seconds from the request's head to its last byte, as nginx's `$request_time` |
//! | `path` | where the body came from: `mem` (no file bytes), `cache` (page cache: sendfile, splice, or read for TLS), `cold` (O_DIRECT), `mixed` |
//! | `tls` | `off`, `ktls` or `userspace` |
//! | `kid` | the signing key's id (`k=`), `-` without one |
//! | `end` | `ok`, or `aborted` when the connection ended before the last byte |
//!
//! The URL's signature (`s=`) is never written: it is a bearer credential until it expires, and
//! logs travel further than URLs should. It is dropped from the request line; `kid` says which
//! key signed. Everything a client sent is escaped as nginx does (`"`, `\` and bytes outside
//! printable ASCII become `\xHH`), so a line is one line of printable ASCII whatever was sent.

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::http::request::Request;
use crate::metrics::TlsMode;

/// Longest request line, header value or key id kept for the log; longer ones are cut (the
/// head limits bound them already; this bounds what one line may cost the buffer).
const MAX_FIELD: usize = 2048;

/// What the log needs from a request, taken when it is answered (the input buffer is reused
/// after): each field already escaped, in one allocation.
#[derive(Debug)]
pub struct Pending {
    text: Vec<u8>,
    /// Ends of the request line, Referer, User-Agent, Range and key id in `text`.
    ends: [usize; 5],
}

/// Where a response's body bytes came from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BodySources {
    /// Some went through the page cache.
    pub cache: bool,
    /// Some were read with O_DIRECT.
    pub cold: bool,
}

impl BodySources {
    fn name(self) -> &'static str {
        match (self.cache, self.cold) {
            (false, false) => "mem",
            (true, false) => "cache",
            (false, true) => "cold",
            (true, true) => "mixed",
        }
    }
}

/// How a response ended.
#[derive(Clone, Copy, Debug)]
pub struct Outcome {
    /// Status sent.
    pub status: u16,
    /// Bytes sent, head included.
    pub sent: u64,
    /// The head's length (body bytes are `sent` less it).
    pub head_len: u64,
    /// From the request's head to the end.
    pub elapsed: Duration,
    /// Where the body came from.
    pub body: BodySources,
    /// How it was encrypted.
    pub tls: Option<TlsMode>,
    /// Whether every byte went out.
    pub complete: bool,
}

impl Outcome {
    /// A one-shot reply on a connection about to close (400, 408, 503): `sent` bytes of
    /// `reply` (head and body, one buffer) went out at once.
    pub fn closing(status: u16, reply: &[u8], sent: usize, tls: Option<TlsMode>) -> Outcome {
        let head_len = reply
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(reply.len(), |i| i + 4);
        Outcome {
            status,
            sent: sent as u64,
            head_len: head_len.min(sent) as u64,
            elapsed: Duration::ZERO,
            body: BodySources::default(),
            tls,
            complete: sent == reply.len(),
        }
    }
}

impl Pending {
    /// The fields of a parsed request.
    pub fn capture(req: &Request<'_>) -> Pending {
        let mut p = Pending::empty();
        escape(&mut p.text, req.method_token.as_bytes());
        p.text.push(b' ');
        let kid = push_target(&mut p.text, req.target).unwrap_or(b"-");
        let _ = write!(p.text, " HTTP/1.{}", req.minor_version);
        p.ends[0] = p.text.len();
        for (i, field) in [req.referer, req.user_agent, req.range, Some(kid)]
            .into_iter()
            .enumerate()
        {
            escape(&mut p.text, field.unwrap_or(b"-"));
            p.ends[i + 1] = p.text.len();
        }
        p
    }

    /// The fields of a head that was refused before it could be parsed (or before it was
    /// whole: a 408): its first line as sent, less any signature. Every word with a `?` is
    /// written as a target is, so a signed URL in a head refused for a later fault does not
    /// put its signature in the log.
    pub fn refused(input: &[u8]) -> Pending {
        let mut p = Pending::empty();
        let line = input
            .split(|&b| b == b'\n')
            .next()
            .unwrap_or_default()
            .trim_ascii_end();
        for (i, word) in line.split(|&b| b == b' ').enumerate() {
            if i > 0 {
                p.text.push(b' ');
            }
            if word.contains(&b'?') {
                push_target(&mut p.text, word);
            } else {
                escape(&mut p.text, word);
            }
        }
        p.ends[0] = p.text.len();
        p.dashes_from(1);
        p
    }

    /// A connection refused before anything was read from it (a 503 at accept): `"-"` for
    /// the request, as for every other field.
    pub fn unread() -> Pending {
        let mut p = Pending::empty();
        p.dashes_from(0);
        p
    }

    fn dashes_from(&mut self, first: usize) {
        for i in first..5 {
            self.text.push(b'-');
            self.ends[i] = self.text.len();
        }
    }

    fn empty() -> Pending {
        Pending {
            text: Vec::with_capacity(256),
            ends: [0; 5],
        }
    }

    fn field(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.text[start..self.ends[i]]
    }
}

/// The `[day/Mon/year:hh:mm:ss +0000]` of the current second, formatted once per second.
#[derive(Debug, Default)]
pub struct LogClock {
    secs: u64,
    text: Vec<u8>,
}

impl LogClock {
    fn at(&mut self, now: SystemTime) -> &[u8] {
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if secs != self.secs || self.text.is_empty() {
            self.secs = secs;
            self.text.clear();
            let t = time::OffsetDateTime::from_unix_timestamp(secs as i64)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
            const MONTHS: [&str; 12] = [
                "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
            ];
            let _ = write!(
                self.text,
                "[{:02}/{}/{}:{:02}:{:02}:{:02} +0000]",
                t.day(),
                MONTHS[usize::from(u8::from(t.month())) - 1],
                t.year(),
                t.hour(),
                t.minute(),
                t.second()
            );
        }
        &self.text
    }
}

/// Appends the line for a response to `p`'s request from `peer`, ended `now`.
pub fn write_line(
    out: &mut Vec<u8>,
    clock: &mut LogClock,
    now: SystemTime,
    peer: Option<SocketAddr>,
    p: &Pending,
    o: &Outcome,
) {
    match peer {
        Some(a) => {
            let _ = write!(out, "{}", a.ip().to_canonical());
        }
        None => out.push(b'-'),
    }
    out.extend_from_slice(b" - - ");
    out.extend_from_slice(clock.at(now));
    out.extend_from_slice(b" \"");
    out.extend_from_slice(p.field(0));
    let _ = write!(
        out,
        "\" {} {} \"",
        o.status,
        o.sent.saturating_sub(o.head_len)
    );
    out.extend_from_slice(p.field(1));
    out.extend_from_slice(b"\" \"");
    out.extend_from_slice(p.field(2));
    out.extend_from_slice(b"\" range=\"");
    out.extend_from_slice(p.field(3));
    let tls = o.tls.map_or("off", TlsMode::name);
    let _ = write!(
        out,
        "\" sent={} rt={:.3} path={} tls={tls} kid=",
        o.sent,
        o.elapsed.as_secs_f64(),
        o.body.name()
    );
    out.extend_from_slice(p.field(4));
    out.extend_from_slice(if o.complete {
        b" end=ok\n"
    } else {
        b" end=aborted\n"
    });
}

/// Writes a request target escaped, its query without the signature (`s=`); returns the key
/// id (`k=`) when it names one.
fn push_target<'t>(out: &mut Vec<u8>, target: &'t [u8]) -> Option<&'t [u8]> {
    let (path, query) = match target.iter().position(|&b| b == b'?') {
        Some(q) => (&target[..q], Some(&target[q + 1..])),
        None => (target, None),
    };
    escape(out, path);
    let mut kid = None;
    let mut sep = b'?';
    for pair in query.into_iter().flat_map(|q| q.split(|&b| b == b'&')) {
        if pair.is_empty() || pair == b"s" || pair.starts_with(b"s=") {
            continue;
        }
        if let Some(k) = pair.strip_prefix(b"k=") {
            kid = Some(k);
        }
        out.push(sep);
        escape(out, pair);
        sep = b'&';
    }
    kid
}

/// Appends `raw` escaped as nginx escapes its variables, cut at [`MAX_FIELD`] bytes.
fn escape(out: &mut Vec<u8>, raw: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in &raw[..raw.len().min(MAX_FIELD)] {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            out.extend_from_slice(&[
                b'\\',
                b'x',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 15)],
            ]);
        } else {
            out.push(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::{parse_head, HeadLimits, Parsed};

    const LIMITS: HeadLimits = HeadLimits {
        max_header_bytes: 8192,
        max_uri_bytes: 4096,
    };

    fn line(raw: &[u8], o: Outcome, peer: &str) -> String {
        let Ok(Parsed::Complete(req, _)) = parse_head(raw, LIMITS) else {
            panic!("{}", raw.escape_ascii())
        };
        let p = Pending::capture(&req);
        let mut out = Vec::new();
        let when = UNIX_EPOCH + Duration::from_secs(1_764_652_771);
        write_line(
            &mut out,
            &mut LogClock::default(),
            when,
            Some(peer.parse().unwrap()),
            &p,
            &o,
        );
        String::from_utf8(out).unwrap()
    }

    fn outcome() -> Outcome {
        Outcome {
            status: 206,
            sent: 1300,
            head_len: 300,
            elapsed: Duration::from_micros(4200),
            body: BodySources {
                cache: true,
                cold: false,
            },
            tls: Some(TlsMode::Kernel),
            complete: true,
        }
    }

    /// A pinned line: what log pipelines parse must not drift unnoticed.
    #[test]
    fn a_signed_range_request_is_combined_then_ours_without_the_signature() {
        let got = line(
            b"GET /c/t1.mp4?e=1764660000&k=k1&s=SECRETSIG HTTP/1.1\r\nHost: a\r\n\
             Range: bytes=0-999\r\nReferer: https://player.example/\r\nUser-Agent: Mozilla/5.0 (X11)\r\n\r\n",
            outcome(),
            "192.0.2.7:50000",
        );
        assert_eq!(
            got,
            "192.0.2.7 - - [02/Dec/2025:05:19:31 +0000] \"GET /c/t1.mp4?e=1764660000&k=k1 HTTP/1.1\" \
             206 1000 \"https://player.example/\" \"Mozilla/5.0 (X11)\" range=\"bytes=0-999\" \
             sent=1300 rt=0.004 path=cache tls=ktls kid=k1 end=ok\n"
        );
        assert!(!got.contains("SECRETSIG"));
    }

    #[test]
    fn hostile_bytes_are_escaped_and_missing_fields_are_dashes() {
        let mut o = outcome();
        o.complete = false;
        o.tls = None;
        o.body = BodySources::default();
        let got = line(
            b"GET /c/x?s=a&s=b&q=\"x\\ HTTP/1.0\r\nUser-Agent: a\"b\\c\xc3\xa9\r\n\r\n",
            o,
            "[::ffff:10.0.0.1]:1",
        );
        assert!(
            got.starts_with("10.0.0.1 - - ["),
            "IPv4-mapped addresses are written as IPv4: {got}"
        );
        assert!(got.contains("\"GET /c/x?q=\\x22x\\x5C HTTP/1.0\""), "{got}");
        assert!(got.contains("\"a\\x22b\\x5Cc\\xC3\\xA9\""), "{got}");
        assert!(got.contains("\"-\" \"a"), "no Referer: {got}");
        assert!(
            got.ends_with("range=\"-\" sent=1300 rt=0.004 path=mem tls=off kid=- end=aborted\n"),
            "{got}"
        );
        assert_eq!(got.matches('\n').count(), 1);
    }

    #[test]
    fn a_refused_head_logs_its_first_line() {
        let p = Pending::refused(b"GARBAGE \x01\"\r\nHost: x\r\n");
        let mut out = Vec::new();
        let o = Outcome {
            status: 400,
            ..outcome()
        };
        write_line(&mut out, &mut LogClock::default(), UNIX_EPOCH, None, &p, &o);
        let got = String::from_utf8(out).unwrap();
        assert!(
            got.starts_with("- - - [01/Jan/1970:00:00:00 +0000] \"GARBAGE \\x01\\x22\" 400 1000 \"-\" \"-\" range=\"-\""),
            "{got}"
        );
    }

    fn refused_line(p: &Pending, status: u16) -> String {
        let mut out = Vec::new();
        let o = Outcome {
            status,
            ..outcome()
        };
        write_line(&mut out, &mut LogClock::default(), UNIX_EPOCH, None, p, &o);
        String::from_utf8(out).unwrap()
    }

    /// A head refused for a fault after its request line (or cut off by the header timeout)
    /// still names a signed URL: the signature stays out of the log there too.
    #[test]
    fn a_refused_or_unfinished_head_loses_its_signature() {
        for input in [
            &b"GET /c/t1.mp4?e=1&k=k1&s=SECRETSIG HTTP/1.1\r\nBad Header\r\n\r\n"[..],
            b"GET /c/t1.mp4?s=SECRETSIG&e=1&k=k1 HTTP/1.1\r\nHost: a",
            b"GET /c/t1.mp4?e=1&k=k1&s=SECRETSIG",
        ] {
            let got = refused_line(&Pending::refused(input), 408);
            assert!(!got.contains("SECRETSIG"), "{got}");
            assert!(got.contains("\"GET /c/t1.mp4?e=1&k=k1"), "{got}");
        }
    }

    #[test]
    fn an_unread_connection_is_all_dashes() {
        let got = refused_line(&Pending::unread(), 503);
        assert!(
            got.starts_with(
                "- - - [01/Jan/1970:00:00:00 +0000] \"-\" 503 1000 \"-\" \"-\" range=\"-\""
            ),
            "{got}"
        );
        assert!(got.contains(" kid=- "), "{got}");
    }
}
