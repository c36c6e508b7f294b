//! Cross-origin access for browser players (the Fetch standard's CORS protocol).
//!
//! An MSE player (Netflix's web player, Shaka Player, dash.js, hls.js) runs in a page of the
//! service's origin and fetches byte ranges from the appliance, another origin, with `fetch` or
//! XHR. The browser lets the page read a response only when it carries
//! `Access-Control-Allow-Origin` naming the page's origin (or `*`), shows it only the headers
//! named in `Access-Control-Expose-Headers` beyond the safelisted few, and sends a preflight
//! `OPTIONS` first when the request carries a header that is not safelisted (`If-Range`, a
//! `Range` of several ranges). `Timing-Allow-Origin` lets the page's Resource Timing see the
//! transfer's timings, which players use to measure throughput and pick a bitrate.
//!
//! The policy is an allow-list of origins, `*` by default: content is protected by its signed
//! URL, not by the page that asks for it, so any page holding a valid URL may read it (as a
//! player on a TV or a `curl` may). With `*` every content response carries the headers, whether
//! or not the request named an origin, so a response does not vary with the request's `Origin`.
//! With a list, a listed origin is echoed and every content response says `Vary: Origin` (a
//! cache between us and the browser must not hand one origin's answer to another). An empty
//! list turns CORS off: no header, and preflights get no permission.
//!
//! No credentials are allowed (`Access-Control-Allow-Credentials` is never sent): the URL is the
//! credential, and cookies mean nothing to an appliance.

use std::borrow::Cow;

/// The methods a preflight may ask for.
const METHODS: &str = "GET, HEAD, OPTIONS";
/// The request headers a preflight may ask for: the ones the server acts on, and CMCD's (players
/// in CMCD header mode send them; the server ignores them, a refused preflight would stop play).
const HEADERS: &str =
    "Range, If-Range, If-None-Match, If-Modified-Since, CMCD-Request, CMCD-Object, CMCD-Status, CMCD-Session";
/// The response headers a page may read beyond the safelisted ones.
const EXPOSE: &str = "Content-Range, Content-Length, ETag, Accept-Ranges, Last-Modified";
/// How long a browser may keep a preflight's answer (Chromium caps it at 2 hours). It spares
/// the preflights of multi-range requests; conditional ones (`If-Range`) bypass the preflight
/// cache in Chromium, so a player sending `If-Range` pays one preflight per range (measured in
/// tests/browser_player.rs: 18 preflights for 18 ranges).
const MAX_AGE_SECS: u32 = 7200;

/// The allow-list of origins that may read content.
#[derive(Clone, Debug)]
pub struct Cors {
    /// `*`: any origin.
    any: bool,
    /// The listed origins, lowercased (`scheme://host[:port]`).
    origins: Vec<String>,
    /// The content headers under `*`, built once.
    any_block: String,
}

/// Why an origin in the configuration was refused.
#[derive(Debug, thiserror::Error)]
#[error("CORS origin {0:?}: expected \"*\" or scheme://host[:port] (no path, no trailing slash)")]
pub struct BadOrigin(pub String);

impl Default for Cors {
    /// Any origin (`*`), the default.
    fn default() -> Cors {
        Cors::new(&["*".to_string()]).expect("* is an origin")
    }
}

impl Cors {
    /// The policy for `origins` (each `*` or `scheme://host[:port]`); empty: CORS off.
    pub fn new(origins: &[String]) -> Result<Cors, BadOrigin> {
        let mut any = false;
        let mut list = Vec::new();
        for o in origins {
            if o == "*" {
                any = true;
            } else if is_origin(o) {
                list.push(o.to_ascii_lowercase());
            } else {
                return Err(BadOrigin(o.clone()));
            }
        }
        let any_block = format!(
            "Access-Control-Allow-Origin: *\r\nAccess-Control-Expose-Headers: {EXPOSE}\r\nTiming-Allow-Origin: *\r\n"
        );
        Ok(Cors {
            any,
            origins: list,
            any_block,
        })
    }

    /// Whether any origin is allowed at all.
    pub fn enabled(&self) -> bool {
        self.any || !self.origins.is_empty()
    }

    /// The origin to allow for a request that sent `origin`: `*`, the origin itself, or none.
    fn allowed<'o>(&self, origin: Option<&'o [u8]>) -> Option<Cow<'o, str>> {
        if self.any {
            return Some(Cow::Borrowed("*"));
        }
        let o = std::str::from_utf8(origin?).ok()?;
        self.origins
            .iter()
            .any(|l| l.eq_ignore_ascii_case(o))
            .then_some(Cow::Borrowed(o))
    }

    /// The headers every response to a content request carries (errors too, so a page can tell
    /// a 403 from a network failure).
    pub fn content_headers<'a>(&'a self, origin: Option<&[u8]>) -> Cow<'a, str> {
        if self.any {
            return Cow::Borrowed(&self.any_block);
        }
        if self.origins.is_empty() {
            return Cow::Borrowed("");
        }
        match self.allowed(origin) {
            Some(o) => Cow::Owned(format!(
                "Access-Control-Allow-Origin: {o}\r\nAccess-Control-Expose-Headers: {EXPOSE}\r\nTiming-Allow-Origin: {o}\r\nVary: Origin\r\n"
            )),
            None => Cow::Borrowed("Vary: Origin\r\n"),
        }
    }

    /// The headers of the answer to an `OPTIONS` (`preflight`: it asked for a method); a
    /// preflight from an origin not allowed gets none of the permissions, so the browser stops.
    pub fn preflight_headers(&self, origin: Option<&[u8]>, preflight: bool) -> String {
        let mut h = format!("Allow: {METHODS}\r\n");
        if !self.any && self.enabled() {
            h.push_str("Vary: Origin\r\n");
        }
        if let (true, Some(o)) = (preflight, self.allowed(origin)) {
            h.push_str(&format!(
                "Access-Control-Allow-Origin: {o}\r\nAccess-Control-Allow-Methods: {METHODS}\r\nAccess-Control-Allow-Headers: {HEADERS}\r\nAccess-Control-Max-Age: {MAX_AGE_SECS}\r\n"
            ));
        }
        h
    }
}

/// Whether `o` is a serialized origin: `http` or `https`, a host, an optional port, nothing
/// after. Checked so a typo in the configuration fails at start rather than never matching.
fn is_origin(o: &str) -> bool {
    let Some((scheme, rest)) = o.split_once("://") else {
        return false;
    };
    let scheme_ok = scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https");
    // An IPv6 literal is bracketed; a port, when there is one, follows the host's `:`.
    let (host, port) = match rest.strip_prefix('[') {
        Some(r) => {
            let Some((v6, after)) = r.split_once(']') else {
                return false;
            };
            (
                v6,
                if after.is_empty() {
                    Some("0")
                } else {
                    after.strip_prefix(':')
                },
            )
        }
        None => match rest.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, Some("0")),
        },
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:".contains(&b));
    let port_ok = port.is_some_and(|p| p.parse::<u16>().is_ok());
    scheme_ok && host_ok && port_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(list: &[&str]) -> Cors {
        Cors::new(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn any_origin_is_answered_with_a_star_whoever_asks() {
        let c = cors(&["*"]);
        for origin in [None, Some(&b"https://evil.example"[..])] {
            let h = c.content_headers(origin);
            assert!(h.contains("Access-Control-Allow-Origin: *\r\n"), "{h}");
            assert!(h.contains("Timing-Allow-Origin: *\r\n"), "{h}");
            assert!(h.contains("Content-Range") && !h.contains("Vary"), "{h}");
        }
        let p = c.preflight_headers(Some(b"https://a.example"), true);
        assert!(
            p.contains("Access-Control-Allow-Headers: Range, If-Range"),
            "{p}"
        );
        assert!(p.contains("Access-Control-Max-Age: 7200"), "{p}");
    }

    #[test]
    fn a_list_echoes_listed_origins_only_and_always_varies() {
        let c = cors(&["https://Player.example", "http://10.0.0.1:8080"]);
        let h = c.content_headers(Some(b"https://player.example"));
        assert!(h.contains("Access-Control-Allow-Origin: https://player.example\r\n"));
        assert!(h.contains("Vary: Origin"));
        let h = c.content_headers(Some(b"https://other.example"));
        assert_eq!(h, "Vary: Origin\r\n");
        assert_eq!(c.content_headers(None), "Vary: Origin\r\n");
        let p = c.preflight_headers(Some(b"https://other.example"), true);
        assert!(!p.contains("Access-Control-Allow-Origin"), "{p}");
        let p = c.preflight_headers(Some(b"http://10.0.0.1:8080"), true);
        assert!(
            p.contains("Access-Control-Allow-Origin: http://10.0.0.1:8080"),
            "{p}"
        );
    }

    #[test]
    fn an_empty_list_is_off() {
        let c = cors(&[]);
        assert!(!c.enabled());
        assert_eq!(c.content_headers(Some(b"https://a.example")), "");
        let p = c.preflight_headers(Some(b"https://a.example"), true);
        assert_eq!(p, "Allow: GET, HEAD, OPTIONS\r\n");
    }

    #[test]
    fn origins_are_checked() {
        for bad in [
            "example.com",
            "https://a.example/",
            "ftp://a",
            "https://a:x",
            "https://",
            "http://[::1]x",
        ] {
            assert!(Cors::new(&[bad.to_string()]).is_err(), "{bad}");
        }
        for good in [
            "https://a.example",
            "http://a.example:8080",
            "http://[::1]:80",
            "http://[::1]",
            "*",
        ] {
            assert!(Cors::new(&[good.to_string()]).is_ok(), "{good}");
        }
    }
}
