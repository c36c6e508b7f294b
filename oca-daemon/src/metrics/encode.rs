//! The OpenMetrics encoding of the daemon's counters: every family goes through the one
//! [`family`] helper (a descriptor, then one sample per label set), so a family's shape is
//! written once. Scrapes run on the admin listener's thread and only load atomics.

use std::fmt;
use std::sync::atomic::Ordering::Relaxed;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::admission::{Admission, Refusal};
use crate::cold::Reason;
use crate::disk_health::DiskHealth;
use crate::metrics::{
    Metrics, Timeout, TlsFailure, TlsMode, ADMITTED, DISK_BOUNDS, LATENCY_BOUNDS, REJECTIONS,
    STATUS_CLASSES,
};
use oca_protocol::signing::Rejection;

/// Renders what `collector` encodes in the Prometheus/OpenMetrics text format.
/// The build info (`oca_build_info`) and the process's figures come with it.
pub fn render(collector: impl Collector) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(collector));
    registry.register_collector(Box::new(
        oca_service::process_metrics::ProcessCollector::new("oca"),
    ));
    let mut out = String::with_capacity(4096);
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

/// Encodes one metric family: its descriptor, then one sample per `(labels, value)`. The one
/// helper every labelled family goes through.
fn family<L: EncodeLabelSet, M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = (L, M)>,
) -> fmt::Result {
    let mut fam = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in samples {
        value.encode(fam.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Encodes a counter family with one label, `label` = each of `names` with its value.
pub(crate) fn counters<const N: usize>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    names: &[&str; N],
    values: [u64; N],
) -> fmt::Result {
    let samples = names
        .iter()
        .zip(values)
        .map(|(n, v)| ([(label, *n)], ConstCounter::new(v)));
    family(enc, name, help, MetricType::Counter, samples)
}

/// Encodes a per-disk family, labelled by each disk's path.
fn per_disk<'d, M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    disks: impl Iterator<Item = (&'d str, M)>,
) -> fmt::Result {
    family(
        enc,
        name,
        help,
        kind,
        disks.map(|(path, v)| ([("disk", path)], v)),
    )
}

/// Encodes an unlabelled counter or gauge.
pub(crate) fn single<M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    value: M,
) -> fmt::Result {
    value.encode(enc.encode_descriptor(name, help, None, kind)?)
}

/// Cumulative histogram buckets from per-bucket counts (the last bucket is +Inf).
fn cumulative(bounds: &[f64], counts: impl Iterator<Item = u64>) -> (u64, Vec<(f64, u64)>) {
    let mut total = 0u64;
    let mut buckets = Vec::with_capacity(bounds.len() + 1);
    for (bound, n) in bounds.iter().chain([f64::INFINITY].iter()).zip(counts) {
        total += n;
        buckets.push((*bound, total));
    }
    (total, buckets)
}

/// Encodes every family of the process: the counters in `m`, the disks' health and what the
/// connection caps refused.
pub fn encode(
    m: &Metrics,
    health: &DiskHealth,
    admission: &Admission,
    mut enc: DescriptorEncoder,
) -> fmt::Result {
    let enc = &mut enc;
    use MetricType::{Counter, Gauge};
    counters(
        enc,
        "oca_requests",
        "Responses sent, by status class",
        "class",
        &STATUS_CLASSES,
        m.sum_each(|w| &w.requests),
    )?;
    single(
        enc,
        "oca_sent_bytes",
        "Bytes sent to clients (heads and bodies)",
        Counter,
        ConstCounter::new(m.sum(|w| &w.bytes_sent)),
    )?;
    single(
        enc,
        "oca_fill_sent_bytes",
        "Bytes sent to peer appliances filling from this one (fill-signed requests; also in oca_sent_bytes)",
        Counter,
        ConstCounter::new(m.sum(|w| &w.fill_bytes)),
    )?;
    single(
        enc,
        "oca_connections_accepted",
        "Connections accepted",
        Counter,
        ConstCounter::new(m.sum(|w| &w.accepted)),
    )?;
    counters(
        enc,
        "oca_connections_rejected",
        "Connections refused before any state was made for them (503 on plain HTTP), by the cap they met",
        "reason",
        &Refusal::NAMES,
        admission.rejected(),
    )?;
    single(
        enc,
        "oca_responses_truncated",
        "Responses cut short: file shrank or could not be read",
        Counter,
        ConstCounter::new(m.sum(|w| &w.truncated)),
    )?;
    single(
        enc,
        "oca_connections_dropped",
        "Connections dropped after an unexpected internal error",
        Counter,
        ConstCounter::new(m.sum(|w| &w.dropped)),
    )?;
    counters(
        enc,
        "oca_timeouts",
        "Connections closed by a timeout",
        "kind",
        &Timeout::NAMES,
        m.sum_each(|w| &w.timeouts),
    )?;
    counters(
        enc,
        "oca_url_admitted",
        "Content requests let in, by the scope of their signature (unsigned: --allow-unsigned)",
        "scope",
        &ADMITTED,
        m.sum_each(|w| &w.admitted),
    )?;
    counters(
        enc,
        "oca_url_rejections",
        "Content requests refused with 403, by what was wrong with the signature",
        "reason",
        &REJECTIONS.map(Rejection::as_str),
        m.sum_each(|w| &w.sig_rejected),
    )?;
    counters(
        enc,
        "oca_tls_handshakes",
        "TLS handshakes completed, by where the connection's records are then encrypted",
        "mode",
        &TlsMode::NAMES,
        m.sum_each(|w| &w.tls_handshakes),
    )?;
    counters(
        enc,
        "oca_tls_handshake_failures",
        "TLS handshakes that failed, by reason",
        "reason",
        &TlsFailure::NAMES,
        m.sum_each(|w| &w.tls_failures),
    )?;
    counters(
        enc,
        "oca_tls_sent_bytes",
        "Application bytes sent on TLS connections, by where they were encrypted",
        "mode",
        &TlsMode::NAMES,
        m.sum_each(|w| &w.tls_sent),
    )?;
    counters(
        enc,
        "oca_tls_key_updates",
        "Peer TLS 1.3 KeyUpdates on kernel-TLS connections: applied, or closed (kernel without rekey)",
        "result",
        &["rekeyed", "closed"],
        m.sum_each(|w| &w.key_updates),
    )?;
    single(
        enc,
        "oca_active_connections",
        "Open client connections",
        Gauge,
        ConstGauge::new(m.active_connections()),
    )?;
    single(
        enc,
        "oca_connected_clients",
        "Clients (IPv4 addresses, IPv6 /64s) with open connections, when max_connections_per_client is on",
        Gauge,
        ConstGauge::new(admission.clients() as i64),
    )?;
    per_disk(
        enc,
        "oca_disk_read_errors",
        "Read errors per store disk",
        Counter,
        health.each().map(|d| (d.path, ConstCounter::new(d.errors))),
    )?;
    per_disk(
        enc,
        "oca_disk_hangs",
        "Operations on the disk that did not complete within disk_timeout (the disk is then marked failed)",
        Counter,
        health.each().map(|d| (d.path, ConstCounter::new(d.hangs))),
    )?;
    per_disk(
        enc,
        "oca_disk_failed",
        "1 when the disk returned I/O errors or hung and its files are no longer served",
        Gauge,
        health
            .each()
            .map(|d| (d.path, ConstGauge::new(i64::from(d.failed)))),
    )?;
    per_disk(
        enc,
        "oca_cold_read_bytes",
        "Bytes read from the disk with O_DIRECT by the cold path",
        Counter,
        m.disks.iter().map(|d| {
            (
                d.path.as_str(),
                ConstCounter::new(d.read_bytes.load(Relaxed)),
            )
        }),
    )?;
    per_disk(
        enc,
        "oca_cold_queue_waits",
        "Direct reads that waited for the disk's queue or a free buffer",
        Counter,
        m.disks
            .iter()
            .map(|d| (d.path.as_str(), ConstCounter::new(d.queued.load(Relaxed)))),
    )?;
    {
        let mut fam = enc.encode_descriptor(
            "oca_disk_read_seconds",
            "Latency of the cold path's direct reads, per disk",
            None,
            MetricType::Histogram,
        )?;
        for d in &m.disks {
            let (count, buckets) =
                cumulative(&DISK_BOUNDS, d.reads.iter().map(|r| r.load(Relaxed)));
            let sum = d.read_ns.load(Relaxed) as f64 / 1e9;
            fam.encode_family(&[("disk", d.path.as_str())])?
                .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }
    }
    {
        let parts = m.sum_each(|w| &w.body_parts);
        let samples = Reason::ALL.iter().zip(parts).map(|(r, n)| {
            let path = if r.is_cold() { "cold" } else { "page_cache" };
            ([("path", path), ("reason", r.name())], ConstCounter::new(n))
        });
        family(
            enc,
            "oca_body_parts",
            "File parts of responses by path (page_cache or cold) and the reason it was chosen",
            Counter,
            samples,
        )?;
    }
    counters(
        enc,
        "oca_cold_sends",
        "Send operations of the cold path, zero-copy (SendZc) or copied",
        "send",
        &["zero_copy", "copy"],
        m.sum_each(|w| &w.cold_sends),
    )?;
    counters(
        enc,
        "oca_cold_reads_ahead",
        "Direct reads of a long part's next buffer made while the current one was sent, by whether the next chunk used them",
        "used",
        &["yes", "no"],
        m.sum_each(|w| &w.cold_ahead),
    )?;
    counters(
        enc,
        "oca_cold_fallbacks",
        "Parts moved from the cold path to the page cache midway: a reader too slow to keep a shared buffer (cold.min_send_kib), or a wait for a buffer or the disk past cold.wait_timeout",
        "reason",
        &["slow_reader", "wait_timeout"],
        m.sum_each(|w| &w.cold_fallbacks),
    )?;
    family(
        enc,
        "oca_engine",
        "The I/O engine and body path in use",
        Gauge,
        [(
            [("engine", m.engine), ("body_path", m.body_path)],
            ConstGauge::new(1i64),
        )],
    )?;
    let (count, buckets) = cumulative(
        &LATENCY_BOUNDS,
        m.sum_each(|w| &w.latency_buckets).into_iter(),
    );
    let sum = m.sum(|w| &w.latency_sum_ns) as f64 / 1e9;
    enc.encode_descriptor(
        "oca_response_seconds",
        "Time from a complete request head to the last byte handed to the kernel",
        None,
        MetricType::Histogram,
    )?
    .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn every_label_family_renders_with_its_names() {
        #[derive(Debug)]
        struct All(Metrics, DiskHealth, std::sync::Arc<Admission>);
        impl Collector for All {
            fn encode(&self, enc: DescriptorEncoder) -> fmt::Result {
                encode(&self.0, &self.1, &self.2, enc)
            }
        }
        let m = Metrics::new(2, vec!["/d0".into()], "uring", "auto");
        m.worker(1).tls_failure(TlsFailure::KtlsSetup);
        m.worker(0).timeout(Timeout::Send);
        m.worker(0).response(206, Duration::from_millis(3));
        let health = DiskHealth::new(vec!["/d0".into()], 2);
        health.error(0);
        let text = render(All(m, health, std::sync::Arc::new(Admission::new(10, 0))));
        for line in [
            "oca_tls_handshake_failures_total{reason=\"ktls_setup\"} 1",
            "oca_timeouts_total{kind=\"send\"} 1",
            "oca_requests_total{class=\"2xx\"} 1",
            "oca_disk_failed{disk=\"/d0\"} 1",
            "oca_disk_read_errors_total{disk=\"/d0\"} 1",
            "oca_engine{engine=\"uring\",body_path=\"auto\"} 1",
            "oca_response_seconds_count 1",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
