//! Live checks (docs/portal.md, "Live checks and operational issues"): two background tasks
//! over [`App`] and what the qualification upload does.
//!
//! - [`prober`]: every `probe_interval`, a signed 1 KiB range of a file each appliance holds,
//!   from its public URL, as a player would fetch it; `probe_failures` failures in a row make it
//!   unreachable and steering skips it (one success brings it back). Over HTTPS the peer
//!   certificate's expiry is noted.
//! - [`checker`]: every report interval, the issues open now ([`crate::domain::issues`]),
//!   reconciled with storage (raised, seen again, cleared) and counted in `cp_open_issues`.
//!
//! Both run in every replica: each probes the whole fleet and steers by what it sees itself
//! (`domain::live`); the issues they write converge, as one (kind, appliance) has at most one
//! open row whoever raised it.

pub mod checker;
pub mod prober;

use std::sync::Arc;

use oca_protocol::live::{Qualification, QualificationReport};

use crate::app::App;
use crate::domain::live::QualificationStatus;
use crate::storage::StorageError;

/// Starts the prober and the issue checker on the current tokio runtime.
pub fn spawn(app: Arc<App>, probe_client: reqwest::Client) {
    if app.live.config.probe_interval.is_zero() {
        tracing::warn!("probe_interval 0: no live probes, appliances are never found unreachable");
    } else {
        tokio::spawn(prober::run(app.clone(), probe_client));
    }
    tokio::spawn(checker::run(app));
}

impl App {
    /// Sets steering's gates from the live checks' verdicts (after one changed).
    pub fn regate(&self) {
        self.fleet_mut().set_gates(&|id| self.live.gate(id));
    }

    /// Records appliance `oca_id`'s qualification report, uploaded at `now`, as its latest;
    /// returns whether it passed.
    pub fn accept_qualification(
        &self,
        oca_id: &str,
        report: QualificationReport,
        now: i64,
    ) -> Result<bool, StorageError> {
        let passed = report.passes();
        self.store.put_qualification(&Qualification {
            oca_id: oca_id.to_string(),
            passed,
            uploaded_at: now,
            report,
        })?;
        let status = QualificationStatus {
            passed,
            uploaded_at: now,
        };
        self.live.record_qualification(oca_id, status);
        if self.live.config.require_qualification {
            self.regate();
        }
        tracing::info!(oca_id, passed, "qualification uploaded");
        Ok(passed)
    }
}
