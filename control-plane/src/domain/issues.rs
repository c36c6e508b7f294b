//! Operational issues: from what is known about each appliance now (its last report, the
//! prober's results, its fill progress, its qualification) to the set of issues that are open.
//! A pure function ([`current`]); the checker (`live/checker.rs`) gathers the facts each
//! interval and reconciles the result with storage, which raises, keeps and clears them.
//!
//! The rules (docs/portal.md, "Live checks and operational issues"):
//!
//! | kind | raised when | severity |
//! |---|---|---|
//! | `unreachable` | `probe_failures` probes in a row failed | critical |
//! | `silent` | no report for 3 intervals (never reported: info) | critical |
//! | `disk_failed` | the last report marks a disk failed | warning |
//! | `bgp_down` | the last report has `bgp` and a session is not established, or no route | warning |
//! | `fill_behind` | a file planned for it `fill_behind_secs` ago or more is not in its inventory | warning |
//! | `cert_expiring` | its certificate expires within 14 days (expired: critical) | warning |
//! | `qualification` | its latest qualification failed, or none was uploaded | warning |
//!
//! A silent appliance's last report is old news: its disks, sessions and fill are not judged
//! until it reports again.

use oca_protocol::health::{BgpSession, BgpState, DiskReport, DiskState};
use oca_protocol::live::{IssueKind, Severity};

use crate::domain::live::{ProbeState, QualificationStatus};
use crate::storage::live::Observed;

/// A certificate expiring within this many seconds raises `cert_expiring`.
pub const CERT_WARNING_SECS: i64 = 14 * 86_400;

/// Thresholds of the rules.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    /// Seconds of silence after which an appliance is silent (3 report intervals).
    pub stale_after: i64,
    /// Probes in a row that must fail before an appliance is unreachable.
    pub probe_failures: u32,
}

/// How far an appliance's fill is behind its plan.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FillLag {
    /// Files planned for it (of those checked).
    pub planned: usize,
    /// Of those, files missing from its inventory although planned in its site long enough
    /// ago (`fill_behind_secs`).
    pub overdue: usize,
    /// When the oldest of the overdue files was first planned in its site.
    pub oldest: Option<i64>,
}

/// What is known about one appliance.
pub struct Facts<'a> {
    /// Its id.
    pub oca_id: &'a str,
    /// Its site.
    pub site: &'a str,
    /// Unix seconds of its last report, downtime not counted (0: never).
    pub last_report: i64,
    /// Disks of its last report.
    pub disks: &'a [DiskReport],
    /// BGP sessions of its last report and the number of routes kept; none without `bgp`.
    pub bgp: Option<(&'a [BgpSession], usize)>,
    /// The prober's results; none before its first probe.
    pub probe: Option<&'a ProbeState>,
    /// Its fill against plan; none when not judged (no plan yet).
    pub fill: Option<FillLag>,
    /// Its latest qualification; none when none was uploaded.
    pub qualification: Option<&'a QualificationStatus>,
}

/// The issues open now for `fleet` at `now`, each (kind, appliance) at most once.
pub fn current(fleet: &[Facts<'_>], rules: &Rules, now: i64) -> Vec<Observed> {
    let mut out = Vec::new();
    for f in fleet {
        let mut raise = |kind: IssueKind, severity: Severity, message: String| {
            out.push(Observed {
                kind,
                severity,
                oca_id: f.oca_id.to_string(),
                site: f.site.to_string(),
                message,
            });
        };
        if let Some(p) = f
            .probe
            .filter(|p| p.failures >= rules.probe_failures.max(1))
        {
            let e = p.last_error.as_deref().unwrap_or("no answer");
            raise(
                IssueKind::Unreachable,
                Severity::Critical,
                format!(
                    "{} probes in a row failed from the control plane, the last: {e}",
                    p.failures
                ),
            );
        }
        if let Some((kind, severity, message)) = cert(f.probe, now) {
            raise(kind, severity, message);
        }
        if let Some((severity, message)) = qualification(f.qualification) {
            raise(IssueKind::Qualification, severity, message);
        }
        if f.last_report == 0 {
            raise(
                IssueKind::Silent,
                Severity::Info,
                "never reported since it was registered".into(),
            );
            continue;
        }
        let silence = now - f.last_report;
        if silence > rules.stale_after {
            raise(
                IssueKind::Silent,
                Severity::Critical,
                format!(
                    "no health report for {silence} s (last at {})",
                    f.last_report
                ),
            );
            continue;
        }
        let failed: Vec<&str> = f
            .disks
            .iter()
            .filter(|d| d.state == DiskState::Failed)
            .map(|d| d.path.as_str())
            .collect();
        if !failed.is_empty() {
            raise(
                IssueKind::DiskFailed,
                Severity::Warning,
                format!(
                    "{} of {} disks failed: {}",
                    failed.len(),
                    f.disks.len(),
                    failed.join(", ")
                ),
            );
        }
        if let Some(message) = f.bgp.and_then(|(s, routes)| bgp(s, routes)) {
            raise(IssueKind::BgpDown, Severity::Warning, message);
        }
        if let Some(lag) = f.fill.filter(|l| l.overdue > 0) {
            let since = lag.oldest.map_or(0, |t| (now - t) / 3600);
            raise(
                IssueKind::FillBehind,
                Severity::Warning,
                format!(
                    "{} of {} planned files not filled, the oldest planned {since} h ago",
                    lag.overdue, lag.planned
                ),
            );
        }
    }
    out
}

/// The certificate issue, if any.
fn cert(probe: Option<&ProbeState>, now: i64) -> Option<(IssueKind, Severity, String)> {
    let not_after = probe?.cert_not_after?;
    if not_after <= now {
        let message = format!("its TLS certificate expired at {not_after}");
        return Some((IssueKind::CertExpiring, Severity::Critical, message));
    }
    let left = not_after - now;
    (left <= CERT_WARNING_SECS).then(|| {
        let message = format!(
            "its TLS certificate expires in {} days (at {not_after})",
            left / 86_400
        );
        (IssueKind::CertExpiring, Severity::Warning, message)
    })
}

/// The qualification issue, if any.
fn qualification(q: Option<&QualificationStatus>) -> Option<(Severity, String)> {
    match q {
        None => Some((Severity::Warning, "no qualification uploaded".into())),
        Some(q) if !q.passed => Some((
            Severity::Warning,
            format!(
                "its latest qualification (uploaded at {}) failed",
                q.uploaded_at
            ),
        )),
        Some(_) => None,
    }
}

/// What is wrong with an appliance's BGP, if anything.
fn bgp(sessions: &[BgpSession], routes: usize) -> Option<String> {
    let down: Vec<String> = sessions
        .iter()
        .filter(|s| s.state != BgpState::Established)
        .map(|s| match &s.last_error {
            Some(e) => format!("{} (AS{}): {:?}, {e}", s.neighbor, s.peer_as, s.state),
            None => format!("{} (AS{}): {:?}", s.neighbor, s.peer_as, s.state),
        })
        .collect();
    if !down.is_empty() {
        return Some(format!(
            "{} of {} BGP sessions not established: {}",
            down.len(),
            sessions.len(),
            down.join("; ")
        ));
    }
    (routes == 0).then(|| format!("{} BGP sessions, no route heard", sessions.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000;
    const RULES: Rules = Rules {
        stale_after: 30,
        probe_failures: 2,
    };
    const PASSED: QualificationStatus = QualificationStatus {
        passed: true,
        uploaded_at: 1,
    };

    fn healthy() -> Facts<'static> {
        Facts {
            oca_id: "a",
            site: "s",
            last_report: NOW - 5,
            disks: &[],
            bgp: None,
            probe: None,
            fill: None,
            qualification: Some(&PASSED),
        }
    }

    fn kinds(f: Facts<'_>) -> Vec<(IssueKind, Severity)> {
        current(&[f], &RULES, NOW)
            .into_iter()
            .map(|o| (o.kind, o.severity))
            .collect()
    }

    fn disk(state: DiskState) -> DiskReport {
        DiskReport {
            path: "/d0".into(),
            state,
            capacity_bytes: 1,
            used_bytes: 0,
        }
    }

    fn session(state: BgpState) -> BgpSession {
        serde_json::from_value(serde_json::json!({
            "neighbor": "192.0.2.1", "peer_as": 64500, "state": state, "since": 0,
            "prefixes_received": 0, "prefixes_accepted": 0, "flaps": 0
        }))
        .unwrap()
    }

    #[test]
    fn a_healthy_appliance_has_no_issue() {
        assert_eq!(kinds(healthy()), []);
    }

    #[test]
    fn unreachable_after_k_failures() {
        let one = ProbeState {
            failures: 1,
            last_error: Some("connection refused".into()),
            ..ProbeState::default()
        };
        assert_eq!(
            kinds(Facts {
                probe: Some(&one),
                ..healthy()
            }),
            []
        );
        let two = ProbeState { failures: 2, ..one };
        let issues = current(
            &[Facts {
                probe: Some(&two),
                ..healthy()
            }],
            &RULES,
            NOW,
        );
        assert_eq!(issues[0].kind, IssueKind::Unreachable);
        assert_eq!(issues[0].severity, Severity::Critical);
        assert!(issues[0].message.contains("connection refused"));
    }

    #[test]
    fn silent_after_three_intervals_and_info_when_never_reported() {
        let silent = Facts {
            last_report: NOW - 31,
            disks: &[],
            ..healthy()
        };
        assert_eq!(kinds(silent), [(IssueKind::Silent, Severity::Critical)]);
        let never = Facts {
            last_report: 0,
            ..healthy()
        };
        assert_eq!(kinds(never), [(IssueKind::Silent, Severity::Info)]);
    }

    #[test]
    fn a_failed_disk_but_not_a_full_one() {
        let disks = [disk(DiskState::Ok), disk(DiskState::Full)];
        assert_eq!(
            kinds(Facts {
                disks: &disks,
                ..healthy()
            }),
            []
        );
        let disks = [disk(DiskState::Ok), disk(DiskState::Failed)];
        assert_eq!(
            kinds(Facts {
                disks: &disks,
                ..healthy()
            }),
            [(IssueKind::DiskFailed, Severity::Warning)]
        );
        let stale = Facts {
            disks: &disks,
            last_report: NOW - 100,
            ..healthy()
        };
        assert_eq!(
            kinds(stale),
            [(IssueKind::Silent, Severity::Critical)],
            "a silent appliance's disks are not judged"
        );
    }

    #[test]
    fn bgp_session_down_or_no_routes() {
        let up = [session(BgpState::Established)];
        assert_eq!(
            kinds(Facts {
                bgp: Some((&up, 3)),
                ..healthy()
            }),
            []
        );
        assert_eq!(
            kinds(Facts {
                bgp: Some((&up, 0)),
                ..healthy()
            }),
            [(IssueKind::BgpDown, Severity::Warning)]
        );
        let down = [session(BgpState::Established), session(BgpState::Active)];
        let issues = current(
            &[Facts {
                bgp: Some((&down, 3)),
                ..healthy()
            }],
            &RULES,
            NOW,
        );
        assert_eq!(issues[0].kind, IssueKind::BgpDown);
        assert!(
            issues[0].message.contains("1 of 2"),
            "{}",
            issues[0].message
        );
    }

    #[test]
    fn fill_behind_only_with_overdue_files() {
        let on_time = FillLag {
            planned: 10,
            overdue: 0,
            oldest: None,
        };
        assert_eq!(
            kinds(Facts {
                fill: Some(on_time),
                ..healthy()
            }),
            []
        );
        let late = FillLag {
            planned: 10,
            overdue: 3,
            oldest: Some(NOW - 7 * 3600),
        };
        let issues = current(
            &[Facts {
                fill: Some(late),
                ..healthy()
            }],
            &RULES,
            NOW,
        );
        assert_eq!(issues[0].kind, IssueKind::FillBehind);
        assert!(
            issues[0].message.contains("3 of 10"),
            "{}",
            issues[0].message
        );
        assert!(issues[0].message.contains("7 h"), "{}", issues[0].message);
    }

    #[test]
    fn certificate_expiring_then_expired() {
        let far = ProbeState {
            cert_not_after: Some(NOW + 90 * 86_400),
            ..ProbeState::default()
        };
        assert_eq!(
            kinds(Facts {
                probe: Some(&far),
                ..healthy()
            }),
            []
        );
        let soon = ProbeState {
            cert_not_after: Some(NOW + 5 * 86_400),
            ..ProbeState::default()
        };
        assert_eq!(
            kinds(Facts {
                probe: Some(&soon),
                ..healthy()
            }),
            [(IssueKind::CertExpiring, Severity::Warning)]
        );
        let gone = ProbeState {
            cert_not_after: Some(NOW - 1),
            ..ProbeState::default()
        };
        assert_eq!(
            kinds(Facts {
                probe: Some(&gone),
                ..healthy()
            }),
            [(IssueKind::CertExpiring, Severity::Critical)]
        );
    }

    #[test]
    fn qualification_failed_or_missing() {
        let failed = QualificationStatus {
            passed: false,
            uploaded_at: 3,
        };
        assert_eq!(
            kinds(Facts {
                qualification: Some(&failed),
                ..healthy()
            }),
            [(IssueKind::Qualification, Severity::Warning)]
        );
        assert_eq!(
            kinds(Facts {
                qualification: None,
                ..healthy()
            }),
            [(IssueKind::Qualification, Severity::Warning)]
        );
    }
}
