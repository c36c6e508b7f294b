//! What the live checks know, in memory: each appliance's probe results (how many probes in a
//! row failed, the last error, its certificate's expiry) and whether its latest qualification
//! passed, and the one rule both feed into steering: why an appliance is kept out of it
//! ([`LiveChecks::gate`]).
//!
//! Each control-plane replica probes every appliance itself and keeps its results here, not in
//! storage: steering decides from what this replica sees, and with several replicas each one
//! reaches the same verdict within `probe_failures` intervals without a shared write per
//! probe (10,000 appliances every 10 s would be 1,000 writes a second for nothing). What is
//! shared is the outcome: the issues, in storage. Qualifications are written to storage on
//! upload and mirrored here (loaded at start).

use std::collections::HashMap;
use std::time::Duration;

use oca_protocol::live::Qualification;
use parking_lot::Mutex;

/// Live-check settings.
#[derive(Clone, Debug)]
pub struct LiveConfig {
    /// Time between two probes of one appliance.
    pub probe_interval: Duration,
    /// Probes in a row that must fail before an appliance is unreachable.
    pub probe_failures: u32,
    /// Probes in flight at once.
    pub probe_concurrency: usize,
    /// Connect plus total deadline of one probe.
    pub probe_timeout: Duration,
    /// Steering skips appliances whose latest qualification did not pass or is missing.
    pub require_qualification: bool,
    /// Seconds a planned file may be missing from an appliance before it is behind plan.
    pub fill_behind_secs: i64,
    /// Seconds a cleared issue is kept before it is deleted.
    pub issue_retention_secs: i64,
}

impl Default for LiveConfig {
    fn default() -> LiveConfig {
        LiveConfig {
            probe_interval: Duration::from_secs(10),
            probe_failures: 2,
            probe_concurrency: 32,
            probe_timeout: Duration::from_secs(3),
            require_qualification: false,
            fill_behind_secs: 6 * 3600,
            issue_retention_secs: 30 * 86_400,
        }
    }
}

/// One appliance's probe history.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProbeState {
    /// Probes in a row that failed (0 after a success).
    pub failures: u32,
    /// Why the last failed probe failed.
    pub last_error: Option<String>,
    /// Unix seconds of the last probe.
    pub last_probe: i64,
    /// Unix seconds of the last successful probe.
    pub last_ok: Option<i64>,
    /// Unix seconds its TLS certificate expires, from the last HTTPS probe that got one.
    pub cert_not_after: Option<i64>,
}

/// How one probe went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// It answered the signed range; with the certificate's expiry over HTTPS.
    Ok {
        /// Unix seconds the peer certificate expires.
        cert_not_after: Option<i64>,
    },
    /// It did not, and why.
    Failed(String),
}

/// An appliance's latest qualification, as steering and the issue checks need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QualificationStatus {
    /// Whether it passed.
    pub passed: bool,
    /// Unix seconds it was uploaded.
    pub uploaded_at: i64,
}

/// Probe results and qualifications, shared by the prober, the issue checker, the
/// qualification upload and steering's gate.
pub struct LiveChecks {
    /// Settings.
    pub config: LiveConfig,
    probes: Mutex<HashMap<String, ProbeState>>,
    qualifications: Mutex<HashMap<String, QualificationStatus>>,
}

impl LiveChecks {
    /// Empty, with `config`, knowing the qualifications on record.
    pub fn new(config: LiveConfig, on_record: &[Qualification]) -> LiveChecks {
        let q = on_record
            .iter()
            .map(|q| {
                let s = QualificationStatus {
                    passed: q.passed,
                    uploaded_at: q.uploaded_at,
                };
                (q.oca_id.clone(), s)
            })
            .collect();
        LiveChecks {
            config,
            probes: Mutex::new(HashMap::new()),
            qualifications: Mutex::new(q),
        }
    }

    /// Records a probe of `oca_id` at `now`; returns whether it changed the appliance's
    /// reachability (so steering's gates must be recomputed).
    pub fn record_probe(&self, oca_id: &str, outcome: ProbeOutcome, now: i64) -> bool {
        let k = self.config.probe_failures.max(1);
        let mut probes = self.probes.lock();
        let s = probes.entry(oca_id.to_string()).or_default();
        let was = s.failures >= k;
        s.last_probe = now;
        match outcome {
            ProbeOutcome::Ok { cert_not_after } => {
                s.failures = 0;
                s.last_ok = Some(now);
                if cert_not_after.is_some() {
                    s.cert_not_after = cert_not_after;
                }
            }
            ProbeOutcome::Failed(e) => {
                s.failures = s.failures.saturating_add(1);
                s.last_error = Some(e);
            }
        }
        was != (s.failures >= k)
    }

    /// Records appliance `oca_id`'s latest qualification.
    pub fn record_qualification(&self, oca_id: &str, status: QualificationStatus) {
        self.qualifications
            .lock()
            .insert(oca_id.to_string(), status);
    }

    /// The probe history of `oca_id`, if it was probed.
    pub fn probe(&self, oca_id: &str) -> Option<ProbeState> {
        self.probes.lock().get(oca_id).cloned()
    }

    /// The latest qualification of `oca_id`, if any.
    pub fn qualification(&self, oca_id: &str) -> Option<QualificationStatus> {
        self.qualifications.lock().get(oca_id).cloned()
    }

    /// Forgets appliances no longer in the fleet (`keep` says who is).
    pub fn retain(&self, keep: &dyn Fn(&str) -> bool) {
        self.probes.lock().retain(|id, _| keep(id));
    }

    /// The last error of `oca_id` when it is unreachable: `probe_failures` probes in a row
    /// failed.
    pub fn unreachable(&self, oca_id: &str) -> Option<String> {
        let k = self.config.probe_failures.max(1);
        let probes = self.probes.lock();
        let s = probes.get(oca_id)?;
        (s.failures >= k).then(|| s.last_error.clone().unwrap_or_default())
    }

    /// Why steering must skip `oca_id`, none when the live checks do not object: unreachable
    /// from the control plane, or (with `require_qualification`) not qualified.
    pub fn gate(&self, oca_id: &str) -> Option<String> {
        if let Some(e) = self.unreachable(oca_id) {
            return Some(format!("unreachable from the control plane: {e}"));
        }
        if !self.config.require_qualification {
            return None;
        }
        match self.qualification(oca_id) {
            Some(q) if q.passed => None,
            Some(q) => Some(format!(
                "not qualified: its latest qualification (uploaded at {}) failed",
                q.uploaded_at
            )),
            None => Some("not qualified: no qualification uploaded".to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(require: bool) -> LiveChecks {
        LiveChecks::new(
            LiveConfig {
                require_qualification: require,
                ..LiveConfig::default()
            },
            &[],
        )
    }

    #[test]
    fn unreachable_after_k_failures_and_back_after_one_success() {
        let l = live(false);
        assert!(!l.record_probe("a", ProbeOutcome::Failed("refused".into()), 1));
        assert_eq!(l.gate("a"), None);
        assert!(l.record_probe("a", ProbeOutcome::Failed("timed out".into()), 2));
        assert_eq!(
            l.gate("a").unwrap(),
            "unreachable from the control plane: timed out"
        );
        assert!(!l.record_probe("a", ProbeOutcome::Failed("timed out".into()), 3));
        let ok = ProbeOutcome::Ok {
            cert_not_after: Some(99),
        };
        assert!(l.record_probe("a", ok, 4));
        assert_eq!(l.gate("a"), None);
        assert_eq!(l.probe("a").unwrap().cert_not_after, Some(99));
    }

    #[test]
    fn qualification_gates_only_when_required() {
        let l = live(false);
        assert_eq!(l.gate("a"), None);
        let l = live(true);
        assert!(l.gate("a").unwrap().contains("no qualification"));
        let failed = QualificationStatus {
            passed: false,
            uploaded_at: 7,
        };
        l.record_qualification("a", failed);
        assert!(l.gate("a").unwrap().contains("failed"));
        let passed = QualificationStatus {
            passed: true,
            uploaded_at: 8,
        };
        l.record_qualification("a", passed);
        assert_eq!(l.gate("a"), None);
    }
}
