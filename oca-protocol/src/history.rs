//! Traffic history: what `GET /v1/admin/history/{appliances,sites}/<id>` answers, as JSON
//! ([`History`]) or as CSV ([`History::to_csv`], the same figures, one row a bucket).
//!
//! A bucket is a fixed span of the control plane's clock (`bucket_secs`, 300 by default) and
//! holds what the appliances' health reports received in it said: the mean and the peak of
//! bytes per second and of open connections, the mean of requests per second, and the bytes
//! served (each report's bytes per second times the seconds it covers, at most one report
//! interval). A site's bucket sums its appliances' buckets and adds the steering misses of
//! clients whose own site it is. Buckets without reports are absent, not zero: a gap.

use serde::{Deserialize, Serialize};

pub use crate::utc::Utc;

/// What a history is of.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HistoryOf {
    /// One appliance.
    Appliance,
    /// A site: the sum of its appliances.
    Site,
}

impl HistoryOf {
    /// The word used in paths and file names.
    pub fn as_str(self) -> &'static str {
        match self {
            HistoryOf::Appliance => "appliance",
            HistoryOf::Site => "site",
        }
    }
}

/// A traffic history over `[from, to)`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct History {
    /// Appliance or site.
    pub of: HistoryOf,
    /// Its id.
    pub id: String,
    /// First second asked for (unix seconds); the bucket holding it is the first one.
    pub from: i64,
    /// End of the range (unix seconds, excluded).
    pub to: i64,
    /// Seconds a bucket spans.
    pub bucket_secs: u64,
    /// Registered capacity, bits per second (a site: the sum of its appliances').
    pub capacity_bps: u64,
    /// Bytes served over the range: the sum of the buckets' `total_bytes`.
    pub total_bytes: u64,
    /// The buckets that have reports (or misses), oldest first.
    pub buckets: Vec<HistoryBucket>,
}

/// One bucket of a history.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct HistoryBucket {
    /// Its first second (unix seconds), a multiple of `bucket_secs`.
    pub start: i64,
    /// Health reports received in it (a site: over all its appliances).
    pub reports: u64,
    /// Mean of the reported bytes per second (a site: the sum of its appliances' means).
    pub bytes_per_sec_mean: u64,
    /// Highest reported bytes per second (a site: the sum of its appliances' peaks, an upper
    /// bound of the site's own peak).
    pub bytes_per_sec_peak: u64,
    /// Mean of the reported open connections.
    pub connections_mean: u64,
    /// Most open connections reported.
    pub connections_peak: u64,
    /// Mean of the reported requests per second.
    pub requests_per_sec_mean: u64,
    /// Bytes served in the bucket: each report's bytes per second times the seconds since the
    /// appliance's report before it (at most one report interval).
    pub total_bytes: u64,
    /// Steering decisions for clients of this site where no appliance held the content (sites
    /// only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_misses: Option<u64>,
    /// Steering decisions for clients of this site where holders existed but none was usable
    /// (sites only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_misses: Option<u64>,
}

/// The CSV export's header row.
pub const CSV_HEADER: &str = "start,start_utc,reports,bytes_per_sec_mean,bytes_per_sec_peak,\
connections_mean,connections_peak,requests_per_sec_mean,total_bytes,content_misses,health_misses";

impl History {
    /// The buckets as CSV: [`CSV_HEADER`], then one row a bucket (misses empty for an
    /// appliance). Every field is a number or a timestamp, so nothing needs quoting.
    pub fn to_csv(&self) -> String {
        let mut out = String::with_capacity(64 * (self.buckets.len() + 1));
        out.push_str(CSV_HEADER);
        out.push_str("\r\n");
        let opt = |v: Option<u64>| v.map(|n| n.to_string()).unwrap_or_default();
        for b in &self.buckets {
            out.push_str(&format!(
                "{},{},{},{},{},{},{},{},{},{},{}\r\n",
                b.start,
                Utc::of(b.start),
                b.reports,
                b.bytes_per_sec_mean,
                b.bytes_per_sec_peak,
                b.connections_mean,
                b.connections_peak,
                b.requests_per_sec_mean,
                b.total_bytes,
                opt(b.content_misses),
                opt(b.health_misses),
            ));
        }
        out
    }

    /// A file name for the CSV export: `<of>-<id>-<from>-<to>.csv`, the id reduced to
    /// `[A-Za-z0-9._-]` so it is safe in a `Content-Disposition` header.
    pub fn csv_file_name(&self) -> String {
        let id: String = self
            .id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!("{}-{id}-{}-{}.csv", self.of.as_str(), self.from, self.to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_has_a_header_and_a_row_per_bucket() {
        let h = History {
            of: HistoryOf::Site,
            id: "isp a/1".into(),
            from: 0,
            to: 600,
            bucket_secs: 300,
            capacity_bps: 1,
            total_bytes: 30,
            buckets: vec![HistoryBucket {
                start: 300,
                reports: 2,
                bytes_per_sec_mean: 1,
                bytes_per_sec_peak: 2,
                connections_mean: 3,
                connections_peak: 4,
                requests_per_sec_mean: 5,
                total_bytes: 30,
                content_misses: Some(6),
                health_misses: Some(7),
            }],
        };
        assert_eq!(
            h.to_csv(),
            format!("{CSV_HEADER}\r\n300,1970-01-01T00:05:00Z,2,1,2,3,4,5,30,6,7\r\n")
        );
        assert_eq!(h.csv_file_name(), "site-isp_a_1-0-600.csv");
    }
}
