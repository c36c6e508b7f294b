//! Bearer credentials: the admin token and appliance credentials are random secrets handed out
//! once and kept only as SHA-256 hashes; a presented credential is hashed and compared in
//! constant time. (Player tokens are signed instead: [`crate::domain::player_tokens`].)

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

/// 32 random bytes, base64url without padding: credentials and tokens.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the kernel's random source is available");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The hash a credential is stored as.
pub fn sha256(credential: &str) -> [u8; 32] {
    Sha256::digest(credential.as_bytes()).into()
}

/// Whether `presented` hashes to `stored`, compared without an early exit.
pub fn matches(presented: &str, stored: &[u8]) -> bool {
    constant_time_eq(&sha256(presented), stored)
}

/// Compares without an early exit, so timing says nothing about where two values differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
