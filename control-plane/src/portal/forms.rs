//! The maintenance forms of the appliance and site pages: their fields as posted (kept as typed,
//! so a refused form comes back with the user's input) and how they become a window's span.
//!
//! Disabling now takes a duration: one of [`DURATIONS`] from a select, or a number of hours
//! typed in, which wins when given. Scheduling takes a start and an end from HTML
//! `datetime-local` inputs, which carry no zone: they are read as UTC, and the page says so.

use serde::Deserialize;

use crate::domain::maintenance as rules;

/// The durations the form offers (seconds, label); two hours first, the default.
pub const DURATIONS: [(i64, &str); 7] = [
    (7_200, "2 hours"),
    (3_600, "1 hour"),
    (14_400, "4 hours"),
    (28_800, "8 hours"),
    (43_200, "12 hours"),
    (86_400, "24 hours"),
    (172_800, "48 hours"),
];

/// The disable form's fields, as typed.
#[derive(Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct DisableForm {
    /// Why.
    #[serde(default)]
    pub reason: String,
    /// `now` (a duration from now) or `scheduled` (start and end).
    #[serde(default)]
    pub when: String,
    /// Seconds, from [`DURATIONS`].
    #[serde(default)]
    pub duration: String,
    /// Hours typed in (decimals allowed): replaces `duration` when given.
    #[serde(default)]
    pub hours: String,
    /// Scheduled start, `YYYY-MM-DDTHH:MM[:SS]`, UTC.
    #[serde(default)]
    pub start: String,
    /// Scheduled end, likewise.
    #[serde(default)]
    pub end: String,
}

impl DisableForm {
    /// Whether the form asks for a scheduled window.
    pub fn scheduled(&self) -> bool {
        self.when == "scheduled"
    }

    /// Whether `secs` is the duration selected (two hours when none is).
    pub fn selected(&self, secs: &i64) -> bool {
        match self.duration.parse::<i64>() {
            Ok(d) => d == *secs,
            Err(_) => *secs == rules::DEFAULT_WINDOW_SECS,
        }
    }
}

/// The end form's field.
#[derive(Deserialize, Clone, Debug, Default)]
pub struct EndForm {
    /// Why.
    #[serde(default)]
    pub reason: String,
}

/// A `datetime-local` value read as UTC.
fn utc_field(name: &str, text: &str) -> Result<i64, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("{name}: required for a scheduled window"));
    }
    rules::parse_utc(&format!("{text}Z"))
        .ok_or_else(|| format!("{name}: {text:?} is not a date and time (YYYY-MM-DDTHH:MM, UTC)"))
}

/// Seconds from the duration fields.
fn duration(form: &DisableForm) -> Result<i64, String> {
    let hours = form.hours.trim();
    if !hours.is_empty() {
        return match hours.parse::<f64>() {
            Ok(h) if h.is_finite() && h > 0.0 && h <= 1e6 => Ok((h * 3600.0).round() as i64),
            _ => Err(format!("hours: {hours:?} is not a number of hours above 0")),
        };
    }
    match form.duration.trim() {
        "" => Ok(rules::DEFAULT_WINDOW_SECS),
        d => d
            .parse::<i64>()
            .map_err(|_| format!("duration: {d:?} is not one of the durations offered")),
    }
}

/// The (start, end) the form asks for at `now`, checked by the domain's rules (at most 48
/// hours, not in the past); the message says what is wrong, for the page.
pub fn span(form: &DisableForm, now: i64) -> Result<(i64, i64), String> {
    let (start, end) = if form.scheduled() {
        (
            utc_field("start", &form.start)?,
            utc_field("end", &form.end)?,
        )
    } else {
        (now, now.saturating_add(duration(form)?))
    };
    rules::check_span(start, end, now).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_750_000_000; // 2025-06-15T15:06:40Z

    fn form(pairs: &[(&str, &str)]) -> DisableForm {
        serde_urlencoded::from_str(&serde_urlencoded::to_string(pairs).unwrap()).unwrap()
    }

    #[test]
    fn now_for_a_duration_or_hours_typed_in() {
        assert_eq!(span(&form(&[]), NOW), Ok((NOW, NOW + 7_200)), "default 2 h");
        let f = form(&[("when", "now"), ("duration", "14400"), ("csrf", "x")]);
        assert_eq!(span(&f, NOW), Ok((NOW, NOW + 14_400)));
        let f = form(&[("duration", "14400"), ("hours", "1.5")]);
        assert_eq!(span(&f, NOW), Ok((NOW, NOW + 5_400)), "hours win");
        let f = form(&[("hours", "49")]);
        assert!(span(&f, NOW).unwrap_err().contains("at most 48 hours"));
        for bad in ["0", "-1", "x", "NaN", "inf"] {
            assert!(span(&form(&[("hours", bad)]), NOW)
                .unwrap_err()
                .starts_with("hours:"));
        }
    }

    #[test]
    fn scheduled_reads_utc() {
        let f = form(&[
            ("when", "scheduled"),
            ("start", "2025-06-16T22:00"),
            ("end", "2025-06-17T02:30"),
        ]);
        assert_eq!(span(&f, NOW), Ok((1_750_111_200, 1_750_127_400)));
        let f = form(&[("when", "scheduled"), ("start", "2025-06-16T22:00")]);
        assert_eq!(
            span(&f, NOW).unwrap_err(),
            "end: required for a scheduled window"
        );
        let f = form(&[
            ("when", "scheduled"),
            ("start", "2025-06-16T22:00"),
            ("end", "2025-06-19T22:00"),
        ]);
        assert!(span(&f, NOW).unwrap_err().contains("at most 48 hours"));
        let f = form(&[("when", "scheduled"), ("start", "tomorrow"), ("end", "x")]);
        assert!(span(&f, NOW)
            .unwrap_err()
            .starts_with("start: \"tomorrow\""));
    }

    #[test]
    fn the_selected_duration_is_kept() {
        assert!(form(&[]).selected(&7_200));
        assert!(form(&[("duration", "86400")]).selected(&86_400));
        assert!(!form(&[("duration", "86400")]).selected(&7_200));
    }
}
