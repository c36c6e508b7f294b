//! Moments in UTC as the APIs, CSV exports, charts and `ocactl` write and read them: RFC 3339
//! with a `Z` (`2025-06-15T14:30:00Z`). The calendar arithmetic is the `time` crate's.

use std::fmt;

use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

/// A moment in UTC, from unix seconds (proleptic Gregorian calendar).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utc {
    /// Year.
    pub year: i64,
    /// Month, 1 to 12.
    pub month: u32,
    /// Day of the month, 1 to 31.
    pub day: u32,
    /// Hour, 0 to 23.
    pub hour: u32,
    /// Minute, 0 to 59.
    pub minute: u32,
    /// Second, 0 to 59.
    pub second: u32,
}

impl Utc {
    /// The date and time of `ts` (unix seconds); outside the years -9999 to 9999, the nearer
    /// end of that range (no real timestamp is there).
    pub fn of(ts: i64) -> Utc {
        let t = OffsetDateTime::from_unix_timestamp(ts).unwrap_or(if ts < 0 {
            PrimitiveDateTime::MIN.assume_utc()
        } else {
            PrimitiveDateTime::MAX.assume_utc()
        });
        Utc {
            year: i64::from(t.year()),
            month: u32::from(u8::from(t.month())),
            day: u32::from(t.day()),
            hour: u32::from(t.hour()),
            minute: u32::from(t.minute()),
            second: u32::from(t.second()),
        }
    }

    /// `YYYY-MM-DDTHH:MM[:SS]Z` as unix seconds; none for anything else (a time without its
    /// `Z` is refused rather than guessed to be UTC).
    pub fn parse(text: &str) -> Option<i64> {
        let with_seconds = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
        let without = format_description!("[year]-[month]-[day]T[hour]:[minute]Z");
        PrimitiveDateTime::parse(text, with_seconds)
            .or_else(|_| PrimitiveDateTime::parse(text, without))
            .ok()
            .map(|t| t.assume_utc().unix_timestamp())
    }
}

impl fmt::Display for Utc {
    /// RFC 3339: `2024-05-01T12:00:00Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_written_and_read_back() {
        assert_eq!(Utc::of(0).to_string(), "1970-01-01T00:00:00Z");
        assert_eq!(Utc::of(951_782_400).to_string(), "2000-02-29T00:00:00Z");
        assert_eq!(Utc::of(1_714_564_799).to_string(), "2024-05-01T11:59:59Z");
        assert_eq!(Utc::of(-1).to_string(), "1969-12-31T23:59:59Z");
        assert_eq!(Utc::of(4_102_444_800).to_string(), "2100-01-01T00:00:00Z");
        assert_eq!(Utc::of(i64::MAX).year, 9999);
        for t in [0, 951_825_600, 1_749_997_800, 4_102_444_799] {
            assert_eq!(Utc::parse(&Utc::of(t).to_string()), Some(t));
        }
        assert_eq!(Utc::parse("2025-06-15T14:30Z"), Some(1_749_997_800));
        assert_eq!(Utc::parse("2025-02-29T00:00:00Z"), None);
        assert_eq!(Utc::parse("2025-06-15T24:00:00Z"), None);
        assert_eq!(Utc::parse("2025-06-15T14:30:00"), None, "UTC only");
        assert_eq!(Utc::parse(""), None);
    }
}
