//! From a parsed request to a response: routing, the store lookup, validators, conditionals and
//! ranges. Engine-independent; the connection sends what this decides.

use std::io::Write;

use std::rc::Rc;
use std::time::Instant;

use oca_store::{ContentId, OpenError, Store};

use crate::disk_health::DiskHealth;
use crate::http::cors::Cors;
use crate::open_files::{Direct, NotOpened, OpenFile, OpenFiles};
use crate::signed_urls::{Admitted, UrlAuth};
use oca_protocol::signing::Rejection;

use super::range::{parse_range_header, ByteRange, PathRange, RangeRequest};
use super::request::{HeadError, Method, Request};
use super::response::{self, content_type, end_head, http_date, start_head, DateCache, Segment};

/// What the server knows while answering, owned by one worker.
pub struct ServeCtx<'a> {
    /// The content store.
    pub store: &'a Store,
    /// Who may fetch content.
    pub auth: &'a UrlAuth,
    /// Which pages' origins may read content (browser players).
    pub cors: &'a Cors,
    /// The worker's open files.
    pub files: &'a mut OpenFiles,
    /// The worker's clock.
    pub now: Instant,
    /// Cap on ranges in one `Range` header.
    pub max_ranges: usize,
    /// Cached `Date` value.
    pub date: &'a mut DateCache,
    /// State of the multipart boundary generator.
    pub boundary_state: &'a mut u64,
    /// Whether the server is draining (every response then closes its connection).
    pub draining: bool,
    /// Which disks have failed (and the watch on blocking calls to them).
    pub disks: &'a DiskHealth,
    /// Files not already open are opened by the engine, off the worker's thread.
    pub defer_opens: bool,
    /// The worker's index (its blocking disk operations are timed under it).
    pub worker: usize,
}

/// The open file a response's file parts come from.
#[derive(Debug, Clone)]
pub struct ServedFile {
    /// The file (page-cache reads, sendfile, splice).
    pub file: Rc<std::fs::File>,
    /// Its disk.
    pub disk: usize,
    /// Inode number.
    pub ino: u64,
    /// Its O_DIRECT twin (cold path).
    pub direct: Rc<Direct>,
}

/// The decision for one request; the head and any memory parts are already in the output buffer.
#[derive(Debug)]
pub struct Served {
    /// Status sent.
    pub status: u16,
    /// Whether the connection stays open after the response.
    pub keep_alive: bool,
    /// The file the `Segment::File` parts refer to.
    pub file: Option<ServedFile>,
    /// Disk an I/O error came from (for per-disk error counts).
    pub disk_error: Option<usize>,
    /// How the URL's signature was judged, for content requests.
    pub admission: Option<Result<Admitted, Rejection>>,
    /// The content id to open off the worker's thread before the request can be answered
    /// (`defer_opens`); nothing was written.
    pub open: Option<String>,
}

/// Builds the response to `req`, appending bytes to `out` and parts to `segs`.
pub fn serve(
    req: &Request<'_>,
    ctx: &mut ServeCtx<'_>,
    out: &mut Vec<u8>,
    segs: &mut Vec<Segment>,
) -> Served {
    // A body we do not read would be taken for the next request; refuse and close instead.
    let keep_alive = req.keep_alive && !req.has_body && !ctx.draining;
    let plain = |status, extra, keep_alive| Short::to(req, status, extra, keep_alive);
    match req.method {
        Method::Other => {
            return plain(405, "Allow: GET, HEAD, OPTIONS\r\n", false).write(out, segs, ctx.date)
        }
        Method::Options if !req.has_body => {
            let extra = ctx.cors.preflight_headers(req.origin, req.preflight);
            return no_content(out, segs, ctx.date, &extra, keep_alive, req.minor_version);
        }
        _ => {}
    }
    if req.has_body || req.bad_host {
        return plain(400, "", false).write(out, segs, ctx.date);
    }
    let (id, path_range) = match route(req.target) {
        Route::Content { id, range } => (id, range),
        Route::NotFound => return plain(404, "", keep_alive).write(out, segs, ctx.date),
        Route::Bad => return plain(400, "", keep_alive).write(out, segs, ctx.date),
    };
    // From here on the answer is about content: a page of another origin may read it, errors
    // included (a 403 is then the player's to see, not a network failure).
    let policy: &Cors = ctx.cors;
    let cors = policy.content_headers(req.origin);
    let mut simple =
        |status: u16, keep_alive: bool| plain(status, &cors, keep_alive).write(out, segs, ctx.date);
    let admitted = ctx.auth.check(id.as_str(), query_of(req.target));
    if let Err(reason) = admitted {
        // One answer whatever was wrong with the signature: no hint for a forger.
        let mut s = simple(403, keep_alive);
        s.admission = Some(Err(reason));
        return s;
    }
    let path_range = match path_range.map(PathRange::parse) {
        None => None,
        Some(Some(r)) => Some(r),
        Some(None) => return simple(400, keep_alive),
    };
    let disks = ctx.disks;
    let failed = |d: usize| disks.failed(d);
    let worker = ctx.worker;
    let on_disk = |d: usize| Some(disks.enter(worker, d));
    let opened = match ctx
        .files
        .open(ctx.store, id, ctx.now, &failed, ctx.defer_opens, &on_disk)
    {
        Ok(o) => o,
        Err(NotOpened::Deferred) => {
            // Nothing is written: the request is answered afresh once the engine has opened
            // the file (or found it missing) off the worker's thread.
            out.truncate(0);
            segs.clear();
            return Served {
                status: 0,
                keep_alive,
                file: None,
                disk_error: None,
                admission: Some(admitted),
                open: Some(id.as_str().to_string()),
            };
        }
        // Files only on a failed disk are not found: the player moves to the next appliance, and
        // a copy the fill agent puts on a healthy disk is served again.
        Err(NotOpened::Failed(OpenError::NotFound)) => return simple(404, keep_alive),
        Err(NotOpened::Failed(OpenError::Io { disk, source })) => {
            tracing::warn!(disk, %source, id = %id, "disk error opening content");
            let mut s = simple(500, keep_alive);
            if source.raw_os_error().is_some_and(oca_store::is_media_error) {
                s.disk_error = Some(disk);
            }
            return s;
        }
    };
    let file_resp = FileResponse {
        req,
        id,
        opened: &opened,
        keep_alive,
        cors: &cors,
    };
    let status = file_resp.write(ctx, out, segs, path_range);
    Served {
        status,
        keep_alive,
        file: Some(ServedFile {
            file: opened.file,
            disk: opened.disk,
            ino: opened.ino,
            direct: opened.direct,
        }),
        disk_error: None,
        admission: Some(admitted),
        open: None,
    }
}

/// The query string of a request target (empty without one); not UTF-8 is as good as none.
fn query_of(target: &[u8]) -> &str {
    let query = match target.iter().position(|&b| b == b'?') {
        Some(q) => &target[q + 1..],
        None => b"",
    };
    std::str::from_utf8(query).unwrap_or("")
}

/// A `204 No Content` carrying `extra` headers (the answer to an `OPTIONS`).
fn no_content(
    out: &mut Vec<u8>,
    segs: &mut Vec<Segment>,
    date: &mut DateCache,
    extra: &str,
    keep_alive: bool,
    minor_version: u8,
) -> Served {
    let start = out.len();
    start_head(out, 204, date.now());
    out.extend_from_slice(extra.as_bytes());
    end_head(out, keep_alive, minor_version);
    segs.push(Segment::Mem {
        start,
        end: out.len(),
    });
    Served {
        status: 204,
        keep_alive,
        file: None,
        disk_error: None,
        admission: None,
        open: None,
    }
}

/// Builds the response to a request head that could not be accepted; always closes.
pub fn refuse(
    err: HeadError,
    date: &mut DateCache,
    out: &mut Vec<u8>,
    segs: &mut Vec<Segment>,
) -> u16 {
    let status = match err {
        HeadError::Malformed => 400,
        HeadError::UriTooLong => 414,
        HeadError::HeaderTooLarge => 431,
        HeadError::Version => 505,
    };
    Short::closing(status).write(out, segs, date).status
}

/// Builds a standalone response (timeouts, overload) that closes the connection.
pub fn standalone(status: u16, date: &mut DateCache, out: &mut Vec<u8>, segs: &mut Vec<Segment>) {
    Short::closing(status).write(out, segs, date);
}

/// A short plain-text response: errors, timeouts, 416.
struct Short<'x> {
    status: u16,
    extra: &'x str,
    keep_alive: bool,
    minor_version: u8,
    with_body: bool,
}

impl<'x> Short<'x> {
    /// The short answer `status` to `req`, with `extra` headers.
    fn to(req: &Request<'_>, status: u16, extra: &'x str, keep_alive: bool) -> Short<'x> {
        Short {
            status,
            extra,
            keep_alive,
            minor_version: req.minor_version,
            with_body: req.method != Method::Head,
        }
    }

    /// A response that ends the connection.
    fn closing(status: u16) -> Short<'static> {
        Short {
            status,
            extra: "",
            keep_alive: false,
            minor_version: 1,
            with_body: true,
        }
    }

    fn write(&self, out: &mut Vec<u8>, segs: &mut Vec<Segment>, date: &mut DateCache) -> Served {
        let start = out.len();
        let n = response::simple(
            out,
            self.status,
            date.now(),
            self.extra,
            self.keep_alive,
            self.minor_version,
            self.with_body,
        );
        segs.push(Segment::Mem {
            start,
            end: start + n,
        });
        Served {
            status: self.status,
            keep_alive: self.keep_alive,
            file: None,
            disk_error: None,
            admission: None,
            open: None,
        }
    }
}

enum Route<'t> {
    Content {
        id: ContentId<'t>,
        range: Option<&'t [u8]>,
    },
    NotFound,
    Bad,
}

/// `/c/<id>` or `/c/<id>/range/<first>-<last>`; query strings are not part of the route.
/// Ids are never percent-decoded: `%` is not in the id alphabet, so `%2e%2e` is simply invalid.
fn route(target: &[u8]) -> Route<'_> {
    let path = origin_path(target);
    let path = match path.iter().position(|&b| b == b'?') {
        Some(q) => &path[..q],
        None => path,
    };
    let Some(rest) = path.strip_prefix(b"/c/") else {
        return Route::NotFound;
    };
    let mut parts = rest.splitn(3, |&b| b == b'/');
    let id = parts.next().unwrap_or_default();
    let range = match (parts.next(), parts.next()) {
        (None, _) => None,
        (Some(b"range"), Some(spec)) => Some(spec),
        _ => return Route::NotFound,
    };
    match ContentId::parse_bytes(id) {
        Ok(id) => Route::Content { id, range },
        Err(_) => Route::Bad,
    }
}

/// The path of an origin-form or absolute-form (`http://host/path`) target.
fn origin_path(target: &[u8]) -> &[u8] {
    for scheme in [&b"http://"[..], b"https://"] {
        if target.len() >= scheme.len() && target[..scheme.len()].eq_ignore_ascii_case(scheme) {
            let rest = &target[scheme.len()..];
            return match rest.iter().position(|&b| b == b'/') {
                Some(slash) => &rest[slash..],
                None => b"/",
            };
        }
    }
    target
}

struct FileResponse<'r> {
    req: &'r Request<'r>,
    id: ContentId<'r>,
    opened: &'r OpenFile,
    keep_alive: bool,
    /// The CORS headers (`http::cors`) every answer about this content carries.
    cors: &'r str,
}

impl FileResponse<'_> {
    fn write(
        &self,
        ctx: &mut ServeCtx<'_>,
        out: &mut Vec<u8>,
        segs: &mut Vec<Segment>,
        path_range: Option<PathRange>,
    ) -> u16 {
        let size = self.opened.size;
        if self.not_modified() {
            return self.head_only(ctx, out, segs, 304, "");
        }
        let ranges = match path_range {
            // The path names the bytes, so HEAD gets the same answer as GET.
            Some(pr) => match pr.resolve(size) {
                Some(r) => RangeRequest::Ranges(vec![r]),
                None => RangeRequest::Unsatisfiable,
            },
            None => self.header_ranges(ctx.max_ranges),
        };
        match ranges {
            RangeRequest::Ignore | RangeRequest::Excessive => self.whole(ctx, out, segs),
            RangeRequest::Ranges(r) if r.len() == 1 => self.single(ctx, out, segs, r[0]),
            RangeRequest::Ranges(r) => self.multipart(ctx, out, segs, &r),
            RangeRequest::Malformed | RangeRequest::Unsatisfiable | RangeRequest::TooMany => {
                let extra = format!("Content-Range: bytes */{size}\r\n{}", self.cors);
                let short = Short {
                    status: 416,
                    extra: &extra,
                    keep_alive: self.keep_alive,
                    minor_version: self.req.minor_version,
                    with_body: self.req.method != Method::Head,
                };
                short.write(out, segs, ctx.date).status
            }
        }
    }

    /// The `Range` header's request, or `Ignore` when it does not apply (RFC 9110 §14.2: only GET,
    /// and only while `If-Range` still matches).
    fn header_ranges(&self, max_ranges: usize) -> RangeRequest {
        let Some(value) = self.req.range else {
            return RangeRequest::Ignore;
        };
        if self.req.method != Method::Get {
            return RangeRequest::Ignore;
        }
        if let Some(if_range) = self.req.if_range {
            if !self.if_range_matches(if_range) {
                return RangeRequest::Ignore;
            }
        }
        parse_range_header(value, self.opened.size, max_ranges)
    }

    fn etag_is(&self, tag: &[u8]) -> bool {
        let id = self.id.as_str().as_bytes();
        tag.len() == id.len() + 2
            && tag[0] == b'"'
            && tag[tag.len() - 1] == b'"'
            && &tag[1..tag.len() - 1] == id
    }

    fn if_range_matches(&self, value: &[u8]) -> bool {
        let value = value.trim_ascii();
        if value.starts_with(b"\"") || value.starts_with(b"W/") {
            // Strong comparison: a weak tag never matches.
            return self.etag_is(value);
        }
        let date = std::str::from_utf8(value)
            .ok()
            .and_then(|s| httpdate::parse_http_date(s).ok());
        date.is_some_and(|d| unix_secs(d) == self.opened.mtime)
    }

    fn not_modified(&self) -> bool {
        if let Some(inm) = self.req.if_none_match {
            // Weak comparison (RFC 9110 §13.1.2).
            return inm.split(|&b| b == b',').any(|t| {
                let t = t.trim_ascii();
                t == b"*" || self.etag_is(t.strip_prefix(b"W/").unwrap_or(t))
            });
        }
        let Some(ims) = self.req.if_modified_since else {
            return false;
        };
        let date = std::str::from_utf8(ims)
            .ok()
            .and_then(|s| httpdate::parse_http_date(s).ok());
        date.is_some_and(|d| self.opened.mtime <= unix_secs(d))
    }

    /// The validators, and what every answer with them carries: the content behind an id never
    /// changes (a new version is a new id), so caches may keep it for a year unrevalidated.
    fn validators(&self, out: &mut Vec<u8>) {
        let _ = write!(
            out,
            "Last-Modified: {}\r\nETag: \"{}\"\r\nAccept-Ranges: bytes\r\nCache-Control: public, max-age=31536000, immutable\r\n{}",
            http_date(self.opened.mtime),
            self.id,
            self.cors
        );
    }

    fn finish_head(&self, out: &mut Vec<u8>, segs: &mut Vec<Segment>, start: usize) {
        end_head(out, self.keep_alive, self.req.minor_version);
        segs.push(Segment::Mem {
            start,
            end: out.len(),
        });
    }

    fn body(&self, segs: &mut Vec<Segment>, r: ByteRange) {
        if self.req.method == Method::Get && !r.is_empty() {
            segs.push(Segment::File {
                offset: r.first,
                len: r.len(),
            });
        }
    }

    fn head_only(
        &self,
        ctx: &mut ServeCtx<'_>,
        out: &mut Vec<u8>,
        segs: &mut Vec<Segment>,
        status: u16,
        extra: &str,
    ) -> u16 {
        let start = out.len();
        start_head(out, status, ctx.date.now());
        out.extend_from_slice(extra.as_bytes());
        self.validators(out);
        self.finish_head(out, segs, start);
        status
    }

    fn whole(&self, ctx: &mut ServeCtx<'_>, out: &mut Vec<u8>, segs: &mut Vec<Segment>) -> u16 {
        let size = self.opened.size;
        let start = out.len();
        start_head(out, 200, ctx.date.now());
        let _ = write!(
            out,
            "Content-Type: {}\r\nContent-Length: {size}\r\n",
            content_type(self.id.as_str())
        );
        self.validators(out);
        self.finish_head(out, segs, start);
        if size > 0 {
            self.body(
                segs,
                ByteRange {
                    first: 0,
                    last: size - 1,
                },
            );
        }
        200
    }

    fn single(
        &self,
        ctx: &mut ServeCtx<'_>,
        out: &mut Vec<u8>,
        segs: &mut Vec<Segment>,
        r: ByteRange,
    ) -> u16 {
        let start = out.len();
        start_head(out, 206, ctx.date.now());
        let _ = write!(
            out,
            "Content-Type: {}\r\nContent-Length: {}\r\nContent-Range: bytes {}-{}/{}\r\n",
            content_type(self.id.as_str()),
            r.len(),
            r.first,
            r.last,
            self.opened.size
        );
        self.validators(out);
        self.finish_head(out, segs, start);
        self.body(segs, r);
        206
    }

    fn multipart(
        &self,
        ctx: &mut ServeCtx<'_>,
        out: &mut Vec<u8>,
        segs: &mut Vec<Segment>,
        ranges: &[ByteRange],
    ) -> u16 {
        let boundary = next_boundary(ctx.boundary_state);
        let ctype = content_type(self.id.as_str());
        let size = self.opened.size;
        // The part heads are built first (after the response head's slot) so the total length is
        // known; the response head is then written after them and sent first.
        let mut part_bounds = Vec::with_capacity(ranges.len() + 1);
        let mut total: u64 = 0;
        for r in ranges {
            let s = out.len();
            let _ = write!(
                out,
                "\r\n--{boundary}\r\nContent-Type: {ctype}\r\nContent-Range: bytes {}-{}/{size}\r\n\r\n",
                r.first, r.last
            );
            part_bounds.push((s, out.len()));
            total += (out.len() - s) as u64 + r.len();
        }
        let s = out.len();
        let _ = write!(out, "\r\n--{boundary}--\r\n");
        part_bounds.push((s, out.len()));
        total += (out.len() - s) as u64;
        let head_start = out.len();
        start_head(out, 206, ctx.date.now());
        let _ = write!(
            out,
            "Content-Type: multipart/byteranges; boundary={boundary}\r\nContent-Length: {total}\r\n"
        );
        self.validators(out);
        self.finish_head(out, segs, head_start);
        if self.req.method == Method::Get {
            for (r, &(start, end)) in ranges.iter().zip(&part_bounds) {
                segs.push(Segment::Mem { start, end });
                self.body(segs, *r);
            }
            let (start, end) = part_bounds[ranges.len()];
            segs.push(Segment::Mem { start, end });
        }
        206
    }
}

fn unix_secs(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A 20-hex-digit boundary from a per-worker xorshift stream: unguessable enough that it does not
/// occur in the parts, and free of allocation and locking.
fn next_boundary(state: &mut u64) -> String {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    format!("OCA{x:016x}{:04x}", (x >> 48) ^ (x & 0xffff))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert!(matches!(
            route(b"/c/abc"),
            Route::Content { range: None, .. }
        ));
        assert!(matches!(
            route(b"/c/abc?e=1&k=k&s=x"),
            Route::Content { range: None, .. }
        ));
        assert!(matches!(
            route(b"http://h:8080/c/abc"),
            Route::Content { .. }
        ));
        assert!(matches!(
            route(b"/c/abc/range/1-2"),
            Route::Content {
                range: Some(b"1-2"),
                ..
            }
        ));
        assert!(matches!(route(b"/c/abc/other/1-2"), Route::NotFound));
        assert!(matches!(route(b"/c/../etc/passwd"), Route::NotFound));
        assert!(matches!(route(b"/c/.."), Route::Bad));
        assert!(matches!(route(b"/c/%2e%2e"), Route::Bad));
        assert!(matches!(route(b"/c/"), Route::Bad));
        assert!(matches!(route(b"/metrics"), Route::NotFound));
        assert!(matches!(route(b"*"), Route::NotFound));
    }
}
