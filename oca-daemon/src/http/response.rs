//! Response heads and the segment list a connection writes: memory from the head buffer, file
//! bytes straight from the page cache.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One piece of a response, in send order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Segment {
    /// Bytes `start..end` of the connection's output buffer.
    Mem {
        /// Start offset in the output buffer.
        start: usize,
        /// End offset (exclusive).
        end: usize,
    },
    /// `len` bytes of the response's file from `offset`, sent without a userspace copy.
    File {
        /// Offset in the file.
        offset: u64,
        /// Byte count.
        len: u64,
    },
}

impl Segment {
    /// Bytes in this piece.
    pub fn len(&self) -> u64 {
        match *self {
            Segment::Mem { start, end } => (end - start) as u64,
            Segment::File { len, .. } => len,
        }
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Reason phrase for the statuses this server sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        206 => "Partial Content",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        414 => "URI Too Long",
        416 => "Range Not Satisfiable",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// The `Date` header value, formatted once per second rather than once per response.
#[derive(Debug, Default)]
pub struct DateCache {
    secs: u64,
    text: Vec<u8>,
}

impl DateCache {
    /// The current date in IMF-fixdate form.
    pub fn now(&mut self) -> &[u8] {
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if secs != self.secs || self.text.is_empty() {
            self.secs = secs;
            self.text.clear();
            let _ = write!(self.text, "{}", httpdate::HttpDate::from(now));
        }
        &self.text
    }
}

/// Formats a Unix time as an HTTP date.
pub fn http_date(unix_secs: i64) -> httpdate::HttpDate {
    let t = UNIX_EPOCH + Duration::from_secs(unix_secs.max(0) as u64);
    httpdate::HttpDate::from(t)
}

/// Appends a status line and the headers every response carries.
pub fn start_head(out: &mut Vec<u8>, status: u16, date: &[u8]) {
    let _ = write!(
        out,
        "HTTP/1.1 {status} {}\r\nServer: oca-daemon\r\nDate: ",
        reason(status)
    );
    out.extend_from_slice(date);
    out.extend_from_slice(b"\r\n");
}

/// Appends the connection header (when one is needed) and the blank line ending the head.
pub fn end_head(out: &mut Vec<u8>, keep_alive: bool, minor_version: u8) {
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if minor_version == 0 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends a complete short plain-text response and returns its length.
pub fn simple(
    out: &mut Vec<u8>,
    status: u16,
    date: &[u8],
    extra_headers: &str,
    keep_alive: bool,
    minor_version: u8,
    with_body: bool,
) -> usize {
    let start = out.len();
    start_head(out, status, date);
    let body_len = 5 + reason(status).len();
    let _ = write!(
        out,
        "Content-Type: text/plain\r\nContent-Length: {body_len}\r\n{extra_headers}"
    );
    end_head(out, keep_alive, minor_version);
    if with_body {
        let _ = writeln!(out, "{status} {}", reason(status));
    }
    out.len() - start
}

/// Media type from the id's extension; ids are opaque, so anything unknown is octet-stream.
pub fn content_type(id: &str) -> &'static str {
    const TYPES: [(&str, &str); 18] = [
        ("mp4", "video/mp4"),
        ("m4v", "video/mp4"),
        ("m4s", "video/iso.segment"),
        ("m4a", "audio/mp4"),
        ("ts", "video/mp2t"),
        ("webm", "video/webm"),
        ("mkv", "video/x-matroska"),
        ("mp3", "audio/mpeg"),
        ("ogg", "audio/ogg"),
        ("opus", "audio/ogg"),
        ("vtt", "text/vtt"),
        ("ttml", "application/ttml+xml"),
        ("m3u8", "application/vnd.apple.mpegurl"),
        ("mpd", "application/dash+xml"),
        ("json", "application/json"),
        ("jpg", "image/jpeg"),
        ("png", "image/png"),
        ("webp", "image/webp"),
    ];
    let ext = id.rsplit_once('.').map_or("", |(_, e)| e);
    TYPES
        .iter()
        .find(|(e, _)| e.eq_ignore_ascii_case(ext))
        .map_or("application/octet-stream", |(_, t)| t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_response_is_framed() {
        let mut out = Vec::new();
        let n = simple(&mut out, 405, b"D", "Allow: GET, HEAD\r\n", false, 1, true);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(n, text.len());
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(head.contains("\r\nAllow: GET, HEAD"));
        assert!(head.contains("\r\nConnection: close"));
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }

    #[test]
    fn types() {
        assert_eq!(content_type("x_1080p.MP4"), "video/mp4");
        assert_eq!(content_type("noext"), "application/octet-stream");
    }
}
