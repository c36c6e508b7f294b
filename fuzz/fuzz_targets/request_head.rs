//! The request head parser: any bytes, under the daemon's default limits and the tightest ones.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oca_daemon::http::request::{parse_head, HeadLimits, Parsed};

fuzz_target!(|data: &[u8]| {
    for limits in [
        HeadLimits { max_header_bytes: 8192, max_uri_bytes: 4096 },
        HeadLimits { max_header_bytes: 256, max_uri_bytes: 64 },
    ] {
        match parse_head(data, limits) {
            Ok(Parsed::Complete(req, used)) => {
                assert!(used <= data.len() && used <= limits.max_header_bytes);
                assert!(req.target.len() <= limits.max_uri_bytes);
            }
            // A partial head never passes the limit: it would have been refused.
            Ok(Parsed::Partial) => assert!(data.len() <= limits.max_header_bytes),
            Err(_) => {}
        }
    }
});
