//! The qualification upload: the report `oca-qualify --json` wrote (`qualification_file`) goes
//! to the control plane (`POST /v1/appliances/<id>/qualification`, the appliance's credential)
//! at the first report and whenever it changes, so the control plane can raise a
//! `qualification` issue and, with `require_qualification`, keep an unqualified appliance out
//! of steering (docs/portal.md, "Live checks and operational issues").
//!
//! The file is looked at after each report: unchanged size and modification time cost one
//! `stat`; otherwise it is read (at most [`MAX_REPORT`] bytes), and uploaded when its SHA-256
//! differs from the one last taken. A failed upload is tried again after the next report; a
//! missing file is normal (not qualified yet) and says nothing; a file that is not a report is
//! logged once per change and not sent.

use std::path::Path;
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use oca_protocol::live::{QualificationAccepted, QualificationReport};
use sha2::{Digest, Sha256};

use crate::config::Config;

/// Largest report read and sent (the control plane takes 256 KiB).
pub const MAX_REPORT: u64 = 256 << 10;

/// What was last seen of the file and last taken by the control plane.
#[derive(Default)]
pub struct Uploads {
    /// Size and modification time when last looked at.
    seen: Option<(u64, SystemTime)>,
    /// SHA-256 of the content the control plane took last.
    taken: Option<[u8; 32]>,
}

impl Uploads {
    /// Uploads the report when it changed since the last upload the control plane took.
    pub async fn sync(&mut self, cfg: &Config, client: &reqwest::Client) {
        let path = &cfg.qualification_file;
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        let stamp = (
            meta.len(),
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        );
        if self.seen == Some(stamp) {
            return;
        }
        self.seen = Some(stamp);
        let body = match read(path) {
            Ok(b) => b,
            Err(e) => {
                // Said once: looked at again when the file changes.
                tracing::warn!(file = %path.display(), error = format!("{e:#}"), "qualification report not sent");
                return;
            }
        };
        let hash: [u8; 32] = Sha256::digest(&body).into();
        if self.taken == Some(hash) {
            return;
        }
        match upload(cfg, client, body).await {
            Ok(r) => {
                tracing::info!(file = %path.display(), passed = r.passed, "qualification report uploaded");
                self.taken = Some(hash);
            }
            Err(e) => {
                // Looked at again after the next report.
                self.seen = None;
                tracing::warn!(
                    error = format!("{e:#}"),
                    "uploading the qualification report"
                );
            }
        }
    }
}

/// The file's bytes, when they are a qualification report of at most [`MAX_REPORT`] bytes.
fn read(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut body = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_REPORT + 1)
        .read_to_end(&mut body)?;
    if body.len() as u64 > MAX_REPORT {
        bail!("larger than {MAX_REPORT} bytes");
    }
    serde_json::from_slice::<QualificationReport>(&body)
        .context("not an oca-qualify --json report")?;
    Ok(body)
}

async fn upload(
    cfg: &Config,
    client: &reqwest::Client,
    body: Vec<u8>,
) -> Result<QualificationAccepted> {
    let url = format!(
        "{}/v1/appliances/{}/qualification",
        cfg.control_plane, cfg.oca_id
    );
    let resp = client
        .post(&url)
        .bearer_auth(&cfg.credential)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = resp.status();
    let text = resp.bytes().await?;
    if !status.is_success() {
        bail!(
            "control plane answered {status}: {}",
            String::from_utf8_lossy(&text)
        );
    }
    serde_json::from_slice(&text).context("the control plane's answer")
}
