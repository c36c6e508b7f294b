//! Request heads: httparse plus the limits and the few headers the server acts on.

/// Size limits applied while reading a request head.
#[derive(Clone, Copy, Debug)]
pub struct HeadLimits {
    /// Largest request head (request line plus headers), in bytes.
    pub max_header_bytes: usize,
    /// Longest request target, in bytes.
    pub max_uri_bytes: usize,
}

/// Most header fields accepted in one request (httparse needs a fixed array).
pub const MAX_HEADERS: usize = 64;

/// The request method, as far as the server cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `GET`
    Get,
    /// `HEAD`
    Head,
    /// `OPTIONS`: a browser's CORS preflight, or a client asking what is allowed.
    Options,
    /// Anything else: answered 405.
    Other,
}

/// A parsed request head, borrowing from the connection's input buffer.
#[derive(Debug)]
pub struct Request<'b> {
    /// The method.
    pub method: Method,
    /// The method's token as sent (for the access log).
    pub method_token: &'b str,
    /// The request target as sent (origin-form or absolute-form).
    pub target: &'b [u8],
    /// Minor HTTP version: 0 or 1.
    pub minor_version: u8,
    /// Whether the client wants the connection kept open after this response.
    pub keep_alive: bool,
    /// Whether the request carries a body (Content-Length > 0 or Transfer-Encoding).
    pub has_body: bool,
    /// Whether an HTTP/1.1 request had no Host header, or had several.
    pub bad_host: bool,
    /// `Range` value.
    pub range: Option<&'b [u8]>,
    /// `If-Range` value.
    pub if_range: Option<&'b [u8]>,
    /// `If-None-Match` value.
    pub if_none_match: Option<&'b [u8]>,
    /// `If-Modified-Since` value.
    pub if_modified_since: Option<&'b [u8]>,
    /// `Origin` value (a browser's cross-origin request).
    pub origin: Option<&'b [u8]>,
    /// Whether `Access-Control-Request-Method` was sent (an `OPTIONS` is then a CORS preflight).
    pub preflight: bool,
    /// `Referer` value (access log).
    pub referer: Option<&'b [u8]>,
    /// `User-Agent` value (access log).
    pub user_agent: Option<&'b [u8]>,
}

/// Why a request head is refused before it reaches routing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadError {
    /// Malformed request line or header: 400.
    Malformed,
    /// Request target over the limit: 414.
    UriTooLong,
    /// Header block over the limit, or too many fields: 431.
    HeaderTooLarge,
    /// HTTP/2 preface or a version other than HTTP/1.x: 505.
    Version,
}

/// Result of trying to parse the bytes received so far.
#[derive(Debug)]
pub enum Parsed<'b> {
    /// The head is not complete yet.
    Partial,
    /// A complete head and the number of bytes it used.
    Complete(Request<'b>, usize),
}

/// Parses a request head from `buf`, applying `limits`.
pub fn parse_head<'b>(buf: &'b [u8], limits: HeadLimits) -> Result<Parsed<'b>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) => partial_verdict(buf, limits),
        Ok(httparse::Status::Complete(used)) => {
            if used > limits.max_header_bytes {
                return Err(HeadError::HeaderTooLarge);
            }
            let target = req.path.unwrap_or("").as_bytes();
            if target.len() > limits.max_uri_bytes {
                return Err(HeadError::UriTooLong);
            }
            let request = interpret(&req, target)?;
            Ok(Parsed::Complete(request, used))
        }
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::HeaderTooLarge),
        Err(httparse::Error::Version) => Err(version_verdict(buf)),
        Err(_) => Err(if looks_like_h2_preface(buf) {
            HeadError::Version
        } else {
            HeadError::Malformed
        }),
    }
}

/// httparse reports any bad version token as a version error; only a real `HTTP/x.y` that is not
/// 1.x deserves 505, anything else is a malformed request line.
fn version_verdict(buf: &[u8]) -> HeadError {
    let line = buf
        .split(|&b| b == b'\n')
        .next()
        .unwrap_or_default()
        .trim_ascii_end();
    let token = line.rsplit(|&b| b == b' ').next().unwrap_or_default();
    if token.starts_with(b"HTTP/") {
        HeadError::Version
    } else {
        HeadError::Malformed
    }
}

fn looks_like_h2_preface(buf: &[u8]) -> bool {
    buf.starts_with(b"PRI * HTTP/2")
}

/// An incomplete head is refused as soon as it is certain to break a limit.
fn partial_verdict<'b>(buf: &[u8], limits: HeadLimits) -> Result<Parsed<'b>, HeadError> {
    let line_done = buf.contains(&b'\n');
    // Method, spaces and "HTTP/1.1" add at most a few dozen bytes to the target.
    if !line_done && buf.len() > limits.max_uri_bytes + 32 {
        return Err(HeadError::UriTooLong);
    }
    if buf.len() > limits.max_header_bytes {
        return Err(HeadError::HeaderTooLarge);
    }
    Ok(Parsed::Partial)
}

fn interpret<'b>(
    req: &httparse::Request<'_, 'b>,
    target: &'b [u8],
) -> Result<Request<'b>, HeadError> {
    let method = match req.method {
        Some("GET") => Method::Get,
        Some("HEAD") => Method::Head,
        Some("OPTIONS") => Method::Options,
        _ => Method::Other,
    };
    let minor_version = req.version.unwrap_or(1);
    let mut out = Request {
        method,
        method_token: req.method.unwrap_or("-"),
        target,
        minor_version,
        keep_alive: minor_version == 1,
        has_body: false,
        bad_host: false,
        range: None,
        if_range: None,
        if_none_match: None,
        if_modified_since: None,
        origin: None,
        preflight: false,
        referer: None,
        user_agent: None,
    };
    let mut hosts = 0;
    let mut content_length: Option<&[u8]> = None;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        let value = h.value;
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case(b"connection") {
            apply_connection(&mut out, value);
        } else if name.eq_ignore_ascii_case(b"range") {
            set_once(&mut out.range, value)?;
        } else if name.eq_ignore_ascii_case(b"if-range") {
            set_once(&mut out.if_range, value)?;
        } else if name.eq_ignore_ascii_case(b"if-none-match") {
            out.if_none_match = Some(value);
        } else if name.eq_ignore_ascii_case(b"if-modified-since") {
            out.if_modified_since = Some(value);
        } else if name.eq_ignore_ascii_case(b"origin") {
            out.origin = Some(value);
        } else if name.eq_ignore_ascii_case(b"access-control-request-method") {
            out.preflight = true;
        } else if name.eq_ignore_ascii_case(b"referer") {
            out.referer = Some(value);
        } else if name.eq_ignore_ascii_case(b"user-agent") {
            out.user_agent = Some(value);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            out.has_body = true;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            // Two differing lengths are the classic request-smuggling vector (RFC 9112 §6.3).
            if content_length.is_some_and(|prev| prev != value) {
                return Err(HeadError::Malformed);
            }
            content_length = Some(value);
            let v = value.trim_ascii();
            if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
                return Err(HeadError::Malformed);
            }
            out.has_body |= v.iter().any(|&d| d != b'0');
        }
    }
    out.bad_host = minor_version == 1 && hosts != 1;
    Ok(out)
}

/// A field that may appear once (RFC 9110 §14.2, §13.1.5): a second one is a malformed
/// request, not "the last one wins" (which a cache in front could read the other way).
fn set_once<'b>(slot: &mut Option<&'b [u8]>, value: &'b [u8]) -> Result<(), HeadError> {
    if slot.replace(value).is_some() {
        return Err(HeadError::Malformed);
    }
    Ok(())
}

fn apply_connection(req: &mut Request<'_>, value: &[u8]) {
    for token in value.split(|&b| b == b',') {
        let token = token.trim_ascii();
        if token.eq_ignore_ascii_case(b"close") {
            req.keep_alive = false;
        } else if token.eq_ignore_ascii_case(b"keep-alive") && req.minor_version == 0 {
            req.keep_alive = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_header_bytes: 1024,
        max_uri_bytes: 128,
    };

    fn parse(s: &str) -> Result<Parsed<'_>, HeadError> {
        parse_head(s.as_bytes(), LIMITS)
    }

    #[test]
    fn complete_request_with_interesting_headers() {
        let raw = "GET /c/x HTTP/1.1\r\nHost: a\r\nRange: bytes=0-1\r\nIf-Range: \"x\"\r\n\r\nGET";
        let Ok(Parsed::Complete(req, used)) = parse(raw) else {
            panic!()
        };
        assert_eq!(used, raw.len() - 3);
        assert_eq!(req.method, Method::Get);
        assert_eq!(req.target, b"/c/x");
        assert!(req.keep_alive && !req.has_body && !req.bad_host);
        assert_eq!(req.range, Some(&b"bytes=0-1"[..]));
        assert_eq!(req.if_range, Some(&b"\"x\""[..]));
    }

    #[test]
    fn connection_semantics() {
        let Ok(Parsed::Complete(r, _)) =
            parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: Close\r\n\r\n")
        else {
            panic!()
        };
        assert!(!r.keep_alive);
        let Ok(Parsed::Complete(r, _)) = parse("GET / HTTP/1.0\r\n\r\n") else {
            panic!()
        };
        assert!(!r.keep_alive && !r.bad_host);
        let Ok(Parsed::Complete(r, _)) = parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        else {
            panic!()
        };
        assert!(r.keep_alive);
        let Ok(Parsed::Complete(r, _)) = parse("GET / HTTP/1.1\r\n\r\n") else {
            panic!()
        };
        assert!(r.bad_host);
    }

    #[test]
    fn limits_and_errors() {
        assert!(matches!(
            parse("GET / HTTP/1.1\r\nHost"),
            Ok(Parsed::Partial)
        ));
        let long_uri = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(200));
        assert_eq!(parse(&long_uri).unwrap_err(), HeadError::UriTooLong);
        let long_partial = format!("GET /{}", "a".repeat(200));
        assert_eq!(parse(&long_partial).unwrap_err(), HeadError::UriTooLong);
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "b".repeat(2000));
        assert_eq!(parse(&big).unwrap_err(), HeadError::HeaderTooLarge);
        let many: String = (0..70).map(|i| format!("X{i}: y\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(
            parse_head(
                many.as_bytes(),
                HeadLimits {
                    max_header_bytes: 1 << 20,
                    ..LIMITS
                }
            )
            .unwrap_err(),
            HeadError::HeaderTooLarge
        );
        assert_eq!(
            parse("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap_err(),
            HeadError::Version
        );
        assert_eq!(
            parse("GET / HTTP/3.0\r\n\r\n").unwrap_err(),
            HeadError::Version
        );
        assert_eq!(
            parse("GET / FOO\r\n\r\n").unwrap_err(),
            HeadError::Malformed
        );
        assert_eq!(
            parse("GET /\0 HTTP/1.1\r\n\r\n").unwrap_err(),
            HeadError::Malformed
        );
        assert_eq!(
            parse("GET / HTTP/1.1\r\nBad Header: x\r\n\r\n").unwrap_err(),
            HeadError::Malformed
        );
        assert_eq!(
            parse("GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n").unwrap_err(),
            HeadError::Malformed
        );
        for dup in ["Range: bytes=0-1", "If-Range: \"x\""] {
            let twice = format!("GET / HTTP/1.1\r\nHost: a\r\n{dup}\r\n{dup}\r\n\r\n");
            assert_eq!(parse(&twice).unwrap_err(), HeadError::Malformed, "{dup}");
        }
        let Ok(Parsed::Complete(r, _)) =
            parse("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n")
        else {
            panic!()
        };
        assert!(r.has_body);
    }
}
