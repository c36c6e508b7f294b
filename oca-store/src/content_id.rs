//! Content ids: the only part of a request that becomes a file name, so the one place they are checked.

use std::fmt;

/// Longest content id accepted (docs/architecture.md: 1 to 128 characters).
pub const MAX_ID_LEN: usize = 128;

/// A validated content id: 1..=128 bytes of `[A-Za-z0-9._-]`, not starting with `.`.
///
/// Such a string can never name a parent directory, a hidden file, a path separator or a NUL, so it
/// is safe to use as a single path component under the store.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContentId<'a>(&'a str);

/// Why a string is not a content id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidId {
    /// The id is empty.
    #[error("content id is empty")]
    Empty,
    /// The id is longer than [`MAX_ID_LEN`].
    #[error("content id is longer than {MAX_ID_LEN} characters")]
    TooLong,
    /// The id starts with a dot.
    #[error("content id starts with '.'")]
    LeadingDot,
    /// The id holds a byte outside `[A-Za-z0-9._-]`.
    #[error("content id holds a character outside [A-Za-z0-9._-]")]
    BadChar,
}

impl<'a> ContentId<'a> {
    /// Validates raw bytes (as they came off the wire) as a content id.
    pub fn parse_bytes(raw: &'a [u8]) -> Result<Self, InvalidId> {
        if raw.is_empty() {
            return Err(InvalidId::Empty);
        }
        if raw.len() > MAX_ID_LEN {
            return Err(InvalidId::TooLong);
        }
        if raw[0] == b'.' {
            return Err(InvalidId::LeadingDot);
        }
        if !raw.iter().all(|&b| is_id_byte(b)) {
            return Err(InvalidId::BadChar);
        }
        // Every byte is ASCII, checked just above.
        Ok(ContentId(
            std::str::from_utf8(raw).map_err(|_| InvalidId::BadChar)?,
        ))
    }

    /// Validates a string as a content id.
    pub fn parse(raw: &'a str) -> Result<Self, InvalidId> {
        Self::parse_bytes(raw.as_bytes())
    }

    /// The id as a string.
    pub fn as_str(&self) -> &'a str {
        self.0
    }

    /// The shard directory name: the id's first two characters (the whole id if it has one).
    pub fn shard(&self) -> &'a str {
        &self.0[..self.0.len().min(2)]
    }
}

fn is_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-'
}

impl fmt::Display for ContentId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl fmt::Debug for ContentId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentId({:?})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_design_charset() {
        for ok in [
            "a",
            "80100172_1080p.mp4",
            "A-b.c_d",
            "ab",
            "x.",
            &"z".repeat(128),
        ] {
            assert!(ContentId::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_anything_that_could_be_a_path() {
        let cases: &[(&[u8], InvalidId)] = &[
            (b"", InvalidId::Empty),
            (b".", InvalidId::LeadingDot),
            (b"..", InvalidId::LeadingDot),
            (b".hidden", InvalidId::LeadingDot),
            (b"a/b", InvalidId::BadChar),
            (b"a\\b", InvalidId::BadChar),
            (b"%2e%2e", InvalidId::BadChar),
            (b"a\0b", InvalidId::BadChar),
            (b"a b", InvalidId::BadChar),
            ("caf\u{e9}".as_bytes(), InvalidId::BadChar),
        ];
        for (raw, want) in cases {
            assert_eq!(ContentId::parse_bytes(raw), Err(*want), "{raw:?}");
        }
        assert_eq!(ContentId::parse(&"z".repeat(129)), Err(InvalidId::TooLong));
    }

    #[test]
    fn shard_is_first_two_chars() {
        assert_eq!(ContentId::parse("abcdef").unwrap().shard(), "ab");
        assert_eq!(ContentId::parse("q").unwrap().shard(), "q");
    }
}
