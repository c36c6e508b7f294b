//! The URL-keys file the daemon reloads (written by the fill agent from the control plane's
//! reply): any text is a keyring or a clear error, and a keyring round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oca_protocol::keys::Keyring;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(ring) = Keyring::from_json(text) {
        let again = Keyring::from_json(&ring.to_json()).expect("a keyring's own JSON reads back");
        assert_eq!(ring.to_json(), again.to_json());
        assert!(!ring.keys().is_empty());
    }
});
