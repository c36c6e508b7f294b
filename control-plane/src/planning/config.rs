//! Fill settings: when and how fast appliances fill, how many copies a site keeps, and how long
//! a nearer copy is waited for.

use oca_protocol::manifest::FillWindow;

/// Fill settings, from the control plane's configuration.
#[derive(Clone, Debug)]
pub struct FillConfig {
    /// When appliances may fill; none: any time.
    pub window: Option<FillWindow>,
    /// Fill bandwidth cap per appliance, bits per second; 0: none.
    pub rate_limit_bps: u64,
    /// Replicas of the most popular files in a site.
    pub copies: usize,
    /// Share of a site's planned files that count as most popular.
    pub hot_fraction: f64,
    /// Seconds to wait for a nearer copy before a farther source may be used.
    pub escalation_secs: u64,
    /// Base URL appliances reach the control plane's embedded origin at.
    pub public_url: String,
    /// S3-compatible buckets that content origins (`s3://bucket/key`) may name.
    pub s3: crate::s3::Origins,
}

/// Parses `HH:MM-HH:MM` (UTC) as a fill window.
pub fn parse_window(text: &str) -> Result<FillWindow, String> {
    let minute = |t: &str| -> Result<u16, String> {
        let (h, m) = t
            .trim()
            .split_once(':')
            .ok_or_else(|| format!("{t:?} is not HH:MM"))?;
        let (h, m): (u16, u16) = (
            h.parse().map_err(|_| format!("{t:?} is not HH:MM"))?,
            m.parse().map_err(|_| format!("{t:?} is not HH:MM"))?,
        );
        if h > 23 || m > 59 {
            return Err(format!("{t:?} is not a time of day"));
        }
        Ok(h * 60 + m)
    };
    let (a, b) = text
        .split_once('-')
        .ok_or_else(|| format!("fill window {text:?}: expected HH:MM-HH:MM (UTC)"))?;
    Ok(FillWindow {
        start_minute: minute(a)?,
        end_minute: minute(b)?,
    })
}
