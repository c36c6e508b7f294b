//! Live checks and operational issues (docs/portal.md, "Live checks and operational issues"):
//! the issues the control plane raises and clears about appliances, and the qualification
//! report (`oca-qualify --json`) the fill agent uploads.

use serde::{Deserialize, Serialize};

/// How bad an issue is.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Traffic is (or soon will be) affected: act now.
    Critical,
    /// Something degrades or will: act soon.
    Warning,
    /// Worth knowing.
    Info,
}

impl Severity {
    /// The name in the API, storage and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }

    /// The severity named `s`.
    pub fn parse(s: &str) -> Option<Severity> {
        [Severity::Critical, Severity::Warning, Severity::Info]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// What an issue is about.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub enum IssueKind {
    /// The control plane's prober cannot fetch from its public URL.
    Unreachable,
    /// No health report for 3 report intervals.
    Silent,
    /// Its last report marks a disk failed.
    DiskFailed,
    /// Its last report has BGP, and a session is not established or no route is heard.
    BgpDown,
    /// Files planned for it long ago are still not in its inventory.
    FillBehind,
    /// Its TLS certificate expires within 14 days (critical once expired).
    CertExpiring,
    /// Its latest qualification failed, or none was uploaded.
    Qualification,
}

impl IssueKind {
    /// Every kind, for metrics that show zero too.
    pub const ALL: [IssueKind; 7] = [
        IssueKind::Unreachable,
        IssueKind::Silent,
        IssueKind::DiskFailed,
        IssueKind::BgpDown,
        IssueKind::FillBehind,
        IssueKind::CertExpiring,
        IssueKind::Qualification,
    ];

    /// The name in the API, storage and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            IssueKind::Unreachable => "unreachable",
            IssueKind::Silent => "silent",
            IssueKind::DiskFailed => "disk_failed",
            IssueKind::BgpDown => "bgp_down",
            IssueKind::FillBehind => "fill_behind",
            IssueKind::CertExpiring => "cert_expiring",
            IssueKind::Qualification => "qualification",
        }
    }

    /// The kind named `s`.
    pub fn parse(s: &str) -> Option<IssueKind> {
        IssueKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// An operational issue, open (`cleared_at` none) or cleared.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Its number, unique in this control plane.
    pub id: i64,
    /// What it is about.
    pub kind: IssueKind,
    /// How bad it is (the latest seen while it was open).
    pub severity: Severity,
    /// The appliance.
    pub oca_id: String,
    /// The appliance's site.
    pub site: String,
    /// Unix seconds it was first raised.
    pub first_seen: i64,
    /// Unix seconds it was last seen by a check.
    pub last_seen: i64,
    /// Unix seconds it was cleared; none while open.
    pub cleared_at: Option<i64>,
    /// What was seen, in words (the latest).
    pub message: String,
}

/// One check of a qualification run, as `oca-qualify --json` writes it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct QualifyCheck {
    /// Dotted name, e.g. `disk.seq_read[/srv/oca/disk0]`.
    pub name: String,
    /// `pass`, `fail` or `skip`.
    pub status: String,
    /// Measured value, when there is a number.
    #[serde(default)]
    pub value: Option<f64>,
    /// Its unit.
    #[serde(default)]
    pub unit: String,
    /// The threshold, as text.
    #[serde(default)]
    pub threshold: String,
    /// What was seen, or why it failed.
    #[serde(default)]
    pub detail: String,
}

/// The report `oca-qualify --json` writes (hwtests/src/qualify/report.rs), uploaded by the fill
/// agent to `POST /v1/appliances/<id>/qualification`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct QualificationReport {
    /// Whether every check passed (skipped ones count as passed).
    pub passed: bool,
    /// The host it ran on.
    #[serde(default)]
    pub host: String,
    /// The kernel it ran on.
    #[serde(default)]
    pub kernel: String,
    /// Each check.
    #[serde(default)]
    pub checks: Vec<QualifyCheck>,
}

impl QualificationReport {
    /// Whether it passes: it says so and no check failed (a report claiming `passed` beside a
    /// failed check does not).
    pub fn passes(&self) -> bool {
        self.passed && self.checks.iter().all(|c| c.status != "fail")
    }
}

/// An appliance's latest qualification as the control plane keeps it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Qualification {
    /// The appliance.
    pub oca_id: String,
    /// Whether it passed.
    pub passed: bool,
    /// Unix seconds it was uploaded.
    pub uploaded_at: i64,
    /// The report as uploaded.
    pub report: QualificationReport,
}

/// The answer to a qualification upload.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct QualificationAccepted {
    /// Whether it passed ([`QualificationReport::passes`]).
    pub passed: bool,
    /// Unix seconds it was recorded.
    pub uploaded_at: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in IssueKind::ALL {
            assert_eq!(IssueKind::parse(k.as_str()), Some(k));
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
        }
        for s in [Severity::Critical, Severity::Warning, Severity::Info] {
            assert_eq!(Severity::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn a_failed_check_fails_a_report_that_claims_to_pass() {
        let text = r#"{"passed": true, "host": "h", "kernel": "k", "checks": [
            {"name": "disk.seq_read[/d0]", "status": "fail", "value": 10.0, "unit": "MB/s",
             "threshold": ">= 1000", "detail": "slow"}]}"#;
        let r: QualificationReport = serde_json::from_str(text).unwrap();
        assert!(!r.passes());
        let ok: QualificationReport = serde_json::from_str(
            r#"{"passed": true, "checks": [{"name": "x", "status": "skip"}]}"#,
        )
        .unwrap();
        assert!(ok.passes());
    }
}
