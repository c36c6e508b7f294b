//! Maintenance windows and drain: the rules, as pure functions of borrowed windows, an
//! appliance's last report and the clock.
//!
//! # Windows
//! A window disables one appliance or a whole site from `start` to `end` (unix seconds): at
//! most [`MAX_WINDOW_SECS`] (48 hours) long, so a forgotten window cannot keep an appliance
//! out for good; [`DEFAULT_WINDOW_SECS`] (2 hours, about how long Open Connect's drain takes)
//! when no length is given. A window may be scheduled up to [`MAX_LEAD_SECS`] ahead; a start up
//! to [`START_SKEW_SECS`] in the past (the clock of the operator's machine) counts as now. Every
//! window carries a reason of 1 to [`MAX_REASON_CHARS`] characters without control characters.
//! It can be ended early while in force, or cancelled before it starts ([`check_end`]).
//!
//! # Serving state
//! Nothing runs when a window starts or ends: whether one is in force is a comparison with
//! `now` ([`in_force`]), made by steering on every decision and by the admin API on every
//! answer. While one is in force the appliance is [`ServingState::Draining`] until its last
//! report shows connections and traffic below the [`DrainThresholds`], then
//! [`ServingState::Drained`]; an appliance that stopped reporting (powered off before the
//! drain finished) counts as drained, as nobody can be playing from it unseen for long. When the
//! window ends, it is [`ServingState::Serving`] again.

use oca_protocol::admin::{MaintenanceWindow, ServingState, TargetKind, WindowPhase};
use oca_protocol::utc::Utc;

/// Longest window: an appliance is re-enabled by itself at most this long after it was
/// disabled.
pub const MAX_WINDOW_SECS: i64 = 48 * 3600;

/// A window's length when neither a duration nor an end is given.
pub const DEFAULT_WINDOW_SECS: i64 = 2 * 3600;

/// How far ahead a window may be scheduled.
pub const MAX_LEAD_SECS: i64 = 90 * 86_400;

/// A start this far in the past is taken as now (clock skew); earlier is refused.
pub const START_SKEW_SECS: i64 = 300;

/// Longest reason, in characters.
pub const MAX_REASON_CHARS: usize = 500;

/// Windows not yet over on one target (scheduled or in force) at most: bounds what the fleet
/// view keeps and what steering compares.
pub const MAX_OPEN_PER_TARGET: usize = 16;

/// Default of `drained_below_connections`.
pub const DEFAULT_DRAINED_BELOW_CONNECTIONS: u64 = 10;

/// Default of `drained_below_bps` (1 Mb/s).
pub const DEFAULT_DRAINED_BELOW_BPS: u64 = 1_000_000;

/// Why a window or a change to one is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum MaintenanceError {
    /// Neither or both of an appliance and a site.
    #[error("give either \"appliance\" or \"site\", not both")]
    Target,
    /// No reason, or only blanks.
    #[error("reason: required (1 to {MAX_REASON_CHARS} characters)")]
    NoReason,
    /// A reason over the limit.
    #[error("reason: at most {MAX_REASON_CHARS} characters, got {0}")]
    ReasonTooLong(usize),
    /// A reason with control characters (line breaks, escapes).
    #[error("reason: no control characters (line breaks, tabs, escapes)")]
    ReasonControl,
    /// A duration together with a start or an end, or only one of start and end.
    #[error("give \"duration_secs\", or \"start\" and \"end\" (unix seconds), or neither (2 hours from now)")]
    Span,
    /// End not after start.
    #[error("end ({end}) must be after start ({start})")]
    EndBeforeStart {
        /// The start asked for.
        start: i64,
        /// The end asked for.
        end: i64,
    },
    /// Longer than 48 hours.
    #[error("a window lasts at most 48 hours ({MAX_WINDOW_SECS} s); asked for {0} s")]
    TooLong(i64),
    /// Start in the past.
    #[error("start ({start}) is in the past (now {now})")]
    StartPast {
        /// The start asked for.
        start: i64,
        /// The time of the request.
        now: i64,
    },
    /// Start too far ahead.
    #[error("start is at most 90 days ahead ({MAX_LEAD_SECS} s)")]
    TooFarAhead,
    /// Too many open windows on one target.
    #[error("{0} already has {MAX_OPEN_PER_TARGET} scheduled or active windows; end one first")]
    TooMany(String),
    /// The window ran to its end, or was ended or cancelled before.
    #[error("window {0} is already over")]
    Over(i64),
}

/// Above these, an appliance in maintenance is still draining (`drained_below_connections`,
/// `drained_below_bps`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainThresholds {
    /// Drained when fewer client connections than this are open.
    pub below_connections: u64,
    /// Drained when it sends fewer bits per second than this.
    pub below_bps: u64,
}

impl Default for DrainThresholds {
    fn default() -> Self {
        DrainThresholds {
            below_connections: DEFAULT_DRAINED_BELOW_CONNECTIONS,
            below_bps: DEFAULT_DRAINED_BELOW_BPS,
        }
    }
}

/// What an appliance's last report said about its serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Figures {
    /// Open client connections.
    pub active_connections: u64,
    /// Bytes per second sent.
    pub bytes_per_sec: u64,
    /// When it reported, unix seconds (the control plane's own downtime not counted).
    pub at: i64,
}

/// The appliance or site a request names.
pub fn target<'a>(
    appliance: Option<&'a str>,
    site: Option<&'a str>,
) -> Result<(TargetKind, &'a str), MaintenanceError> {
    match (appliance, site) {
        (Some(a), None) => Ok((TargetKind::Appliance, a)),
        (None, Some(s)) => Ok((TargetKind::Site, s)),
        _ => Err(MaintenanceError::Target),
    }
}

/// A reason, trimmed, or why it is refused.
pub fn check_reason(reason: Option<&str>) -> Result<&str, MaintenanceError> {
    let r = reason.map(str::trim).unwrap_or_default();
    let chars = r.chars().count();
    if chars == 0 {
        Err(MaintenanceError::NoReason)
    } else if chars > MAX_REASON_CHARS {
        Err(MaintenanceError::ReasonTooLong(chars))
    } else if r.chars().any(char::is_control) {
        Err(MaintenanceError::ReasonControl)
    } else {
        Ok(r)
    }
}

/// The (start, end) a request asks for at `now`: `duration_secs` from now, or `start` and `end`,
/// or [`DEFAULT_WINDOW_SECS`] from now; checked by [`check_span`].
pub fn span(
    duration_secs: Option<i64>,
    start: Option<i64>,
    end: Option<i64>,
    now: i64,
) -> Result<(i64, i64), MaintenanceError> {
    let (start, end) = match (duration_secs, start, end) {
        (None, None, None) => (now, now + DEFAULT_WINDOW_SECS),
        (Some(d), None, None) => (now, now.saturating_add(d)),
        (None, Some(s), Some(e)) => (s, e),
        _ => return Err(MaintenanceError::Span),
    };
    check_span(start, end, now)
}

/// A window from `start` to `end` as opened at `now`: a start a little in the past becomes
/// `now`; refused when not after it, longer than 48 hours, or too far back or ahead.
pub fn check_span(start: i64, end: i64, now: i64) -> Result<(i64, i64), MaintenanceError> {
    if start < now.saturating_sub(START_SKEW_SECS) {
        return Err(MaintenanceError::StartPast { start, now });
    }
    let start = start.max(now);
    if start > now.saturating_add(MAX_LEAD_SECS) {
        return Err(MaintenanceError::TooFarAhead);
    }
    if end <= start {
        return Err(MaintenanceError::EndBeforeStart { start, end });
    }
    let length = end.saturating_sub(start);
    if length > MAX_WINDOW_SECS {
        return Err(MaintenanceError::TooLong(length));
    }
    Ok((start, end))
}

/// When a window stops being in force: its planned end, or when it was ended early.
pub fn effective_end(w: &MaintenanceWindow) -> i64 {
    w.ended_at.map_or(w.end, |at| at.min(w.end))
}

/// Whether a window is in force at `now`.
pub fn is_active(w: &MaintenanceWindow, now: i64) -> bool {
    w.start <= now && now < effective_end(w)
}

/// Where a window stands at `now`.
pub fn phase(w: &MaintenanceWindow, now: i64) -> WindowPhase {
    match w.ended_at {
        // Ended in the second it started is ended, not cancelled: it was in force.
        Some(at) if at < w.start => WindowPhase::Cancelled,
        _ if now < w.start => WindowPhase::Scheduled,
        _ if now < effective_end(w) => WindowPhase::Active,
        _ => WindowPhase::Ended,
    }
}

/// Whether a window is not over at `now` (scheduled or in force).
pub fn is_open(w: &MaintenanceWindow, now: i64) -> bool {
    matches!(phase(w, now), WindowPhase::Scheduled | WindowPhase::Active)
}

/// Whether window `w` may be ended (in force) or cancelled (scheduled) at `now`.
pub fn check_end(w: &MaintenanceWindow, now: i64) -> Result<(), MaintenanceError> {
    if is_open(w, now) {
        Ok(())
    } else {
        Err(MaintenanceError::Over(w.id))
    }
}

/// Whether a window applies to appliance `appliance` of site `site`.
pub fn covers(w: &MaintenanceWindow, appliance: &str, site: &str) -> bool {
    match w.target_kind {
        TargetKind::Appliance => w.target == appliance,
        TargetKind::Site => w.target == site,
    }
}

/// The window in force at `now` on appliance `appliance` of site `site`: of several, the one
/// ending last (it says when the appliance is back).
pub fn in_force<'a>(
    windows: impl IntoIterator<Item = &'a MaintenanceWindow>,
    appliance: &str,
    site: &str,
    now: i64,
) -> Option<&'a MaintenanceWindow> {
    windows
        .into_iter()
        .filter(|w| covers(w, appliance, site) && is_active(w, now))
        .max_by_key(|w| (effective_end(w), w.id))
}

/// The serving state of an appliance whose window in force is `window` and whose last report
/// is `last` (none: never reported), at `now`; a report older than `stale_after` counts as
/// drained.
pub fn serving_state(
    window: Option<&MaintenanceWindow>,
    last: Option<&Figures>,
    thresholds: &DrainThresholds,
    now: i64,
    stale_after: i64,
) -> ServingState {
    if window.is_none() {
        return ServingState::Serving;
    }
    match last {
        Some(f)
            if now - f.at <= stale_after
                && (f.active_connections >= thresholds.below_connections
                    || f.bytes_per_sec.saturating_mul(8) >= thresholds.below_bps) =>
        {
            ServingState::Draining
        }
        _ => ServingState::Drained,
    }
}

/// Why steering leaves out an appliance under window `w`: its end and reason.
pub fn note(w: &MaintenanceWindow) -> String {
    format!("maintenance until {}: {}", utc(effective_end(w)), w.reason)
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc(secs: i64) -> String {
    Utc::of(secs).to_string()
}

/// `YYYY-MM-DDTHH:MM[:SS]Z` (UTC) as unix seconds.
pub fn parse_utc(text: &str) -> Option<i64> {
    Utc::parse(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_750_000_000;
    const STALE: i64 = 30;

    fn window(kind: TargetKind, target: &str, start: i64, end: i64) -> MaintenanceWindow {
        MaintenanceWindow {
            id: 1,
            target_kind: kind,
            target: target.into(),
            start,
            end,
            reason: "disk swap".into(),
            created_by: "admin-token".into(),
            created: NOW,
            ended_by: None,
            ended_at: None,
            end_reason: None,
            phase: None,
        }
    }

    fn busy(at: i64) -> Figures {
        Figures {
            active_connections: 500,
            bytes_per_sec: 1_000_000_000,
            at,
        }
    }

    fn quiet(at: i64) -> Figures {
        Figures {
            active_connections: 3,
            bytes_per_sec: 1_000,
            at,
        }
    }

    fn state(ws: &[MaintenanceWindow], last: Option<&Figures>, now: i64) -> ServingState {
        let w = in_force(ws, "a1", "isp-a", now);
        serving_state(w, last, &DrainThresholds::default(), now, STALE)
    }

    #[test]
    fn serving_draining_drained_and_back_to_serving_when_the_window_ends() {
        let ws = [window(TargetKind::Appliance, "a1", NOW, NOW + 3600)];
        assert_eq!(
            state(&ws, Some(&busy(NOW - 5)), NOW - 1),
            ServingState::Serving
        );
        assert_eq!(state(&ws, Some(&busy(NOW)), NOW), ServingState::Draining);
        assert_eq!(
            state(&ws, Some(&quiet(NOW + 600)), NOW + 601),
            ServingState::Drained
        );
        // Busy again (a report during the window): draining again.
        assert_eq!(
            state(&ws, Some(&busy(NOW + 700)), NOW + 701),
            ServingState::Draining
        );
        assert_eq!(
            state(&ws, Some(&busy(NOW + 3599)), NOW + 3600),
            ServingState::Serving
        );
    }

    #[test]
    fn drained_needs_both_connections_and_traffic_below_the_thresholds() {
        let ws = [window(TargetKind::Appliance, "a1", NOW, NOW + 3600)];
        let t = DrainThresholds {
            below_connections: 10,
            below_bps: 1_000_000,
        };
        let at = |c, b| {
            let f = Figures {
                active_connections: c,
                bytes_per_sec: b,
                at: NOW,
            };
            serving_state(in_force(&ws, "a1", "s", NOW), Some(&f), &t, NOW, STALE)
        };
        assert_eq!(at(9, 124_999), ServingState::Drained);
        assert_eq!(at(10, 0), ServingState::Draining);
        // 125,000 bytes/s is 1 Mb/s: not below it.
        assert_eq!(at(0, 125_000), ServingState::Draining);
    }

    #[test]
    fn silent_or_never_reported_counts_as_drained() {
        let ws = [window(TargetKind::Appliance, "a1", NOW, NOW + 3600)];
        assert_eq!(state(&ws, None, NOW), ServingState::Drained);
        assert_eq!(
            state(&ws, Some(&busy(NOW - STALE - 1)), NOW),
            ServingState::Drained
        );
        assert_eq!(
            state(&ws, Some(&busy(NOW - STALE)), NOW),
            ServingState::Draining
        );
    }

    #[test]
    fn a_scheduled_window_starts_and_ends_by_itself() {
        let ws = [window(TargetKind::Appliance, "a1", NOW + 2, NOW + 4)];
        let phases: Vec<_> = (0..6).map(|t| phase(&ws[0], NOW + t)).collect();
        use WindowPhase::*;
        assert_eq!(phases, [Scheduled, Scheduled, Active, Active, Ended, Ended]);
        let states: Vec<_> = (0..6)
            .map(|t| state(&ws, Some(&busy(NOW + t)), NOW + t))
            .collect();
        use ServingState::*;
        assert_eq!(
            states,
            [Serving, Serving, Draining, Draining, Serving, Serving]
        );
    }

    #[test]
    fn a_site_window_covers_its_appliances_only() {
        let ws = [window(TargetKind::Site, "isp-a", NOW, NOW + 10)];
        assert!(in_force(&ws, "a1", "isp-a", NOW).is_some());
        assert!(in_force(&ws, "a2", "isp-a", NOW).is_some());
        assert!(in_force(&ws, "b1", "isp-b", NOW).is_none());
        // An appliance window names the appliance, not a site of the same name.
        let ws = [window(TargetKind::Appliance, "isp-a", NOW, NOW + 10)];
        assert!(in_force(&ws, "a1", "isp-a", NOW).is_none());
    }

    #[test]
    fn of_two_windows_in_force_the_later_end_is_shown() {
        let mut long = window(TargetKind::Site, "isp-a", NOW, NOW + 100);
        long.id = 2;
        let ws = [window(TargetKind::Appliance, "a1", NOW, NOW + 10), long];
        assert_eq!(in_force(&ws, "a1", "isp-a", NOW).unwrap().id, 2);
    }

    #[test]
    fn ended_early_re_enables_and_cancelled_never_starts() {
        let mut w = window(TargetKind::Appliance, "a1", NOW, NOW + 3600);
        w.ended_at = Some(NOW + 60);
        assert!(is_active(&w, NOW + 59));
        assert!(!is_active(&w, NOW + 60));
        assert_eq!(phase(&w, NOW + 60), WindowPhase::Ended);
        assert_eq!(check_end(&w, NOW + 61), Err(MaintenanceError::Over(1)));
        let mut s = window(TargetKind::Appliance, "a1", NOW + 100, NOW + 200);
        assert_eq!(check_end(&s, NOW), Ok(()));
        s.ended_at = Some(NOW);
        assert_eq!(phase(&s, NOW), WindowPhase::Cancelled);
        assert!(!is_active(&s, NOW + 150));
        assert_eq!(phase(&s, NOW + 150), WindowPhase::Cancelled);
        let mut at_once = window(TargetKind::Appliance, "a1", NOW, NOW + 3600);
        at_once.ended_at = Some(NOW);
        assert_eq!(phase(&at_once, NOW), WindowPhase::Ended);
    }

    #[test]
    fn windows_are_capped_at_48_hours() {
        assert_eq!(
            span(Some(MAX_WINDOW_SECS), None, None, NOW),
            Ok((NOW, NOW + MAX_WINDOW_SECS))
        );
        assert_eq!(
            span(Some(MAX_WINDOW_SECS + 1), None, None, NOW),
            Err(MaintenanceError::TooLong(MAX_WINDOW_SECS + 1))
        );
        assert_eq!(
            span(
                None,
                Some(NOW + 10),
                Some(NOW + 10 + MAX_WINDOW_SECS + 1),
                NOW
            ),
            Err(MaintenanceError::TooLong(MAX_WINDOW_SECS + 1))
        );
        assert!(span(Some(i64::MAX), None, None, NOW).is_err());
    }

    #[test]
    fn spans_default_to_two_hours_and_refuse_nonsense() {
        assert_eq!(
            span(None, None, None, NOW),
            Ok((NOW, NOW + DEFAULT_WINDOW_SECS))
        );
        assert_eq!(
            span(None, Some(NOW + 2), Some(NOW + 4), NOW),
            Ok((NOW + 2, NOW + 4))
        );
        // A start slightly in the past is now; further back is refused.
        assert_eq!(
            span(None, Some(NOW - 5), Some(NOW + 5), NOW),
            Ok((NOW, NOW + 5))
        );
        assert!(matches!(
            span(None, Some(NOW - 3600), Some(NOW + 5), NOW),
            Err(MaintenanceError::StartPast { .. })
        ));
        assert!(matches!(
            span(None, Some(NOW + 5), Some(NOW + 5), NOW),
            Err(MaintenanceError::EndBeforeStart { .. })
        ));
        assert_eq!(
            span(Some(0), None, None, NOW).unwrap_err(),
            MaintenanceError::EndBeforeStart {
                start: NOW,
                end: NOW
            }
        );
        assert_eq!(
            span(Some(60), Some(NOW), None, NOW),
            Err(MaintenanceError::Span)
        );
        assert_eq!(
            span(None, Some(NOW), None, NOW),
            Err(MaintenanceError::Span)
        );
        assert_eq!(
            span(
                None,
                Some(NOW + MAX_LEAD_SECS + 1),
                Some(NOW + MAX_LEAD_SECS + 2),
                NOW
            ),
            Err(MaintenanceError::TooFarAhead)
        );
    }

    #[test]
    fn reasons_are_required_bounded_and_single_line() {
        assert_eq!(check_reason(Some("  disk swap ")), Ok("disk swap"));
        assert_eq!(check_reason(None), Err(MaintenanceError::NoReason));
        assert_eq!(check_reason(Some("   ")), Err(MaintenanceError::NoReason));
        let long = "é".repeat(MAX_REASON_CHARS);
        assert!(check_reason(Some(&long)).is_ok());
        assert_eq!(
            check_reason(Some(&format!("{long}x"))),
            Err(MaintenanceError::ReasonTooLong(MAX_REASON_CHARS + 1))
        );
        assert_eq!(
            check_reason(Some("a\nb")),
            Err(MaintenanceError::ReasonControl)
        );
        assert_eq!(target(Some("a"), None), Ok((TargetKind::Appliance, "a")));
        assert_eq!(target(None, Some("s")), Ok((TargetKind::Site, "s")));
        assert_eq!(target(Some("a"), Some("s")), Err(MaintenanceError::Target));
        assert_eq!(target(None, None), Err(MaintenanceError::Target));
    }

    #[test]
    fn utc_text_round_trips() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_825_600), "2000-02-29T12:00:00Z");
        for t in [0, 951_825_600, NOW, 4_102_444_799, -86_400] {
            assert_eq!(parse_utc(&utc(t)), Some(t));
        }
        assert_eq!(parse_utc("2025-06-15T14:30Z"), Some(1_749_997_800));
        assert_eq!(parse_utc("2025-02-29T00:00:00Z"), None);
        assert_eq!(parse_utc("2025-06-15T24:00:00Z"), None);
        assert_eq!(parse_utc("2025-06-15T14:30:00"), None, "UTC only");
        assert_eq!(
            note(&window(TargetKind::Appliance, "a1", 0, 7200)),
            "maintenance until 1970-01-01T02:00:00Z: disk swap"
        );
    }
}
