//! Content ids: whatever is accepted names one file inside a shard directory and nothing else.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oca_store::ContentId;

fuzz_target!(|data: &[u8]| {
    let Ok(id) = ContentId::parse_bytes(data) else {
        return;
    };
    let s = id.as_str();
    assert!(!s.is_empty() && s.len() <= 128, "{s:?}");
    assert!(!s.starts_with('.') && !s.contains('/') && !s.contains('\0'), "{s:?}");
    assert!(s.starts_with(id.shard()));
    let path = oca_store::content_path(id);
    let path = path.to_str().unwrap();
    assert_eq!(path, format!("{}/{s}", id.shard()));
    assert!(!path.split('/').any(|c| c == ".." || c == "."));
});
