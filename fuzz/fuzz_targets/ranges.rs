//! `Range` headers and `/range/<first>-<last>` path ranges, against files of any size: what is
//! accepted lies inside the file, ascending, never overlapping or touching, and never adds up
//! to more than the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oca_daemon::http::range::{parse_range_header, PathRange, RangeRequest};

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let size = u64::from_le_bytes(data[..8].try_into().unwrap()) >> (data[8] % 64);
    let max_ranges = 1 + usize::from(data[8] % 32);
    let value = &data[9..];
    if let RangeRequest::Ranges(ranges) = parse_range_header(value, size, max_ranges) {
        assert!(!ranges.is_empty() && ranges.len() <= max_ranges);
        let mut total = 0u64;
        for (i, r) in ranges.iter().enumerate() {
            assert!(r.first <= r.last && r.last < size, "{r:?} in {size}");
            if i > 0 {
                assert!(ranges[i - 1].last + 1 < r.first, "not merged: {ranges:?}");
            }
            total += r.len();
        }
        assert!(total <= size);
    }
    if let Some(pr) = PathRange::parse(value) {
        if let Some(r) = pr.resolve(size) {
            assert!(r.first <= r.last && r.last < size);
        }
    }
});
