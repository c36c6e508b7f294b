//! Query strings and signatures: parsing and verifying any query never panics, and a URL signed
//! with the key verifies for the id and scope it was signed for, and for no other.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oca_protocol::keys::{Key, Keyring};
use oca_protocol::signing::{parse_query, signed_query, verify, verify_any, Scope};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (id, query) = text.split_once('?').unwrap_or(("title_1080p.mp4", text));
    let ring = Keyring::new(vec![
        Key::new("k1", [7; 32]).unwrap(),
        Key::new("k2", [9; 32]).unwrap(),
    ])
    .unwrap();
    let now = 1_700_000_000;
    if let Ok(p) = parse_query(query) {
        assert!(query.contains(p.key_id) && query.contains(p.signature));
    }
    let _ = verify_any(&ring, id, query, &[Scope::Play, Scope::Fill], now);
    let good = signed_query(ring.current(), id, now + 60, Scope::Play);
    assert_eq!(verify(&ring, id, &good, Scope::Play, now), Ok(()));
    assert!(verify(&ring, id, &good, Scope::Fill, now).is_err());
    assert!(verify(&ring, id, &good, Scope::Play, now + 61).is_err());
    assert!(verify(&ring, &format!("{id}x"), &good, Scope::Play, now).is_err());
});
