//! Byte ranges (RFC 9110 §14): the `Range` header and the `/range/<first>-<last>` path form.
//!
//! Written here rather than taken from `http-range-header` because that crate refuses what RFC 9110
//! asks servers to accept (a suffix longer than the file, leading zeros, whitespace around commas, a
//! multi-range list where only some ranges are satisfiable) and mishandles zero-length files.

/// A satisfiable range, both ends inclusive and inside the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte offset.
    pub first: u64,
    /// Last byte offset (inclusive).
    pub last: u64,
}

impl ByteRange {
    /// Number of bytes in the range.
    pub fn len(&self) -> u64 {
        self.last - self.first + 1
    }

    /// Never: both ends are inclusive, so a range holds at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// What a `Range` header asks for, resolved against the file size.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// A unit other than `bytes`: RFC 9110 says to ignore the header and send the whole file.
    Ignore,
    /// A `bytes=` header that does not parse: answered 416, so that a client asking for a part
    /// never receives a whole file it did not ask for.
    Malformed,
    /// No range overlaps the file: 416.
    Unsatisfiable,
    /// More ranges than the configured cap: 416 (the cap exists to stop amplification).
    TooMany,
    /// The satisfiable ranges add up to more bytes than the file has (`bytes=0-,0-,...`):
    /// answered 200 with the whole file once, as nginx does and Apache has since CVE-2011-3192,
    /// so no request makes the server send or read more than the file.
    Excessive,
    /// The satisfiable ranges, overlapping and adjacent ones merged, in ascending order.
    Ranges(Vec<ByteRange>),
}

/// Parses a `Range` header value against a file of `size` bytes.
pub fn parse_range_header(value: &[u8], size: u64, max_ranges: usize) -> RangeRequest {
    let Some(eq) = value.iter().position(|&b| b == b'=') else {
        return RangeRequest::Malformed;
    };
    if !value[..eq].trim_ascii().eq_ignore_ascii_case(b"bytes") {
        return RangeRequest::Ignore;
    }
    let mut ranges = Vec::new();
    let mut specs = 0usize;
    for spec in value[eq + 1..].split(|&b| b == b',') {
        let spec = spec.trim_ascii();
        if spec.is_empty() {
            continue; // RFC 9110 §5.6.1: empty list elements are tolerated.
        }
        specs += 1;
        if specs > max_ranges {
            return RangeRequest::TooMany;
        }
        match parse_spec(spec, size) {
            Spec::Bad => return RangeRequest::Malformed,
            Spec::Unsatisfiable => {}
            Spec::Ok(r) => ranges.push(r),
        }
    }
    if specs == 0 {
        RangeRequest::Malformed
    } else if ranges.is_empty() {
        RangeRequest::Unsatisfiable
    } else if ranges.iter().map(ByteRange::len).sum::<u64>() > size {
        RangeRequest::Excessive
    } else {
        RangeRequest::Ranges(coalesce(ranges))
    }
}

/// Sorts the ranges and merges those that overlap or touch (RFC 9110 §15.3.7.2 lets a server
/// coalesce them whatever order they were asked in): every byte is sent at most once.
fn coalesce(mut ranges: Vec<ByteRange>) -> Vec<ByteRange> {
    ranges.sort_unstable_by_key(|r| r.first);
    let mut out: Vec<ByteRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(prev) if r.first <= prev.last.saturating_add(1) => {
                prev.last = prev.last.max(r.last)
            }
            _ => out.push(r),
        }
    }
    out
}

enum Spec {
    Bad,
    Unsatisfiable,
    Ok(ByteRange),
}

fn parse_spec(spec: &[u8], size: u64) -> Spec {
    let Some(dash) = spec.iter().position(|&b| b == b'-') else {
        return Spec::Bad;
    };
    let (first, last) = (&spec[..dash], &spec[dash + 1..]);
    if first.is_empty() {
        // Suffix range: the last n bytes.
        let Some(n) = parse_u64(last) else {
            return Spec::Bad;
        };
        if n == 0 || size == 0 {
            return Spec::Unsatisfiable;
        }
        return Spec::Ok(ByteRange {
            first: size.saturating_sub(n),
            last: size - 1,
        });
    }
    let Some(first) = parse_u64(first) else {
        return Spec::Bad;
    };
    let last = if last.is_empty() {
        u64::MAX
    } else {
        match parse_u64(last) {
            Some(l) if l >= first => l,
            _ => return Spec::Bad,
        }
    };
    resolve(first, last, size)
}

fn resolve(first: u64, last: u64, size: u64) -> Spec {
    if first >= size {
        Spec::Unsatisfiable
    } else {
        Spec::Ok(ByteRange {
            first,
            last: last.min(size - 1),
        })
    }
}

/// Decimal digits only; values past u64 saturate (a last-pos that large just means "to the end").
fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0u64, |acc, &d| {
        acc.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

/// A `/range/<first>-<last>` path segment, before the file size is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathRange {
    first: u64,
    last: u64,
}

impl PathRange {
    /// Parses `<first>-<last>` (both required, `first <= last`); `None` when malformed.
    pub fn parse(s: &[u8]) -> Option<PathRange> {
        let dash = s.iter().position(|&b| b == b'-')?;
        let first = parse_u64(&s[..dash])?;
        let last = parse_u64(&s[dash + 1..])?;
        (first <= last).then_some(PathRange { first, last })
    }

    /// The range inside a file of `size` bytes, or `None` when it starts past the end.
    pub fn resolve(self, size: u64) -> Option<ByteRange> {
        match resolve(self.first, self.last, size) {
            Spec::Ok(r) => Some(r),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(first: u64, last: u64) -> ByteRange {
        ByteRange { first, last }
    }

    fn ranges(v: &str, size: u64) -> RangeRequest {
        parse_range_header(v.as_bytes(), size, 4)
    }

    #[test]
    fn single_forms() {
        use RangeRequest::Ranges;
        assert_eq!(ranges("bytes=0-99", 1000), Ranges(vec![r(0, 99)]));
        assert_eq!(ranges("bytes=900-", 1000), Ranges(vec![r(900, 999)]));
        assert_eq!(ranges("bytes=-100", 1000), Ranges(vec![r(900, 999)]));
        assert_eq!(ranges("bytes=-5000", 1000), Ranges(vec![r(0, 999)]));
        assert_eq!(ranges("bytes=990-5000", 1000), Ranges(vec![r(990, 999)]));
        assert_eq!(ranges("bytes=007-008", 1000), Ranges(vec![r(7, 8)]));
        assert_eq!(ranges("Bytes = 1-1", 10), Ranges(vec![r(1, 1)]));
        assert_eq!(
            ranges("bytes=0-99999999999999999999999", 10),
            Ranges(vec![r(0, 9)])
        );
    }

    #[test]
    fn multiple_and_partly_satisfiable() {
        use RangeRequest::Ranges;
        assert_eq!(
            ranges("bytes=0-0, -1 ,,5-6", 10),
            Ranges(vec![r(0, 0), r(5, 6), r(9, 9)])
        );
        assert_eq!(ranges("bytes=0-1,50-60", 10), Ranges(vec![r(0, 1)]));
        assert_eq!(
            ranges("bytes=0-0,1-1,2-2,3-3,4-4", 10),
            RangeRequest::TooMany
        );
    }

    #[test]
    fn overlapping_and_adjacent_ranges_are_merged_and_excess_is_refused() {
        use RangeRequest::*;
        assert_eq!(ranges("bytes=0-99,50-149", 1000), Ranges(vec![r(0, 149)]));
        assert_eq!(ranges("bytes=10-19,0-9", 1000), Ranges(vec![r(0, 19)]));
        assert_eq!(ranges("bytes=0-9,20-29,5-24", 1000), Ranges(vec![r(0, 29)]));
        assert_eq!(
            ranges("bytes=500-599,0-9", 1000),
            Ranges(vec![r(0, 9), r(500, 599)])
        );
        assert_eq!(ranges("bytes=0-,0-", 1000), Excessive);
        assert_eq!(ranges("bytes=0-599,-500", 1000), Excessive);
        assert_eq!(ranges("bytes=0-499,-500", 1000), Ranges(vec![r(0, 999)]));
        let sixteen = vec!["0-"; 16].join(",");
        assert_eq!(
            parse_range_header(format!("bytes={sixteen}").as_bytes(), 4 << 20, 16),
            Excessive
        );
    }

    #[test]
    fn unsatisfiable_and_malformed() {
        use RangeRequest::*;
        assert_eq!(ranges("bytes=1000-", 1000), Unsatisfiable);
        assert_eq!(ranges("bytes=-0", 1000), Unsatisfiable);
        assert_eq!(ranges("bytes=0-", 0), Unsatisfiable);
        assert_eq!(ranges("bytes=-1", 0), Unsatisfiable);
        for bad in [
            "bytes=",
            "bytes=5-1",
            "bytes=a-b",
            "bytes=1",
            "bytes=--1",
            "bytes=+1-2",
            "bytes=1-2-3",
            "bytes 0-1",
        ] {
            assert_eq!(ranges(bad, 1000), Malformed, "{bad}");
        }
        assert_eq!(ranges("items=0-1", 1000), Ignore);
    }

    #[test]
    fn path_ranges() {
        assert_eq!(
            PathRange::parse(b"10-19").unwrap().resolve(15),
            Some(r(10, 14))
        );
        assert_eq!(PathRange::parse(b"15-19").unwrap().resolve(15), None);
        assert_eq!(PathRange::parse(b"5-4"), None);
        assert_eq!(PathRange::parse(b"-4"), None);
        assert_eq!(PathRange::parse(b"4-"), None);
    }
}
