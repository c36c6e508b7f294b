//! One download from one source into the part file: the answer's head checked before a byte
//! of its body is read, the body received (rate-capped, paced) and handed in blocks to a thread
//! that hashes and writes it, and the whole file's SHA-256 and size checked.

use std::io::Write;
use std::time::Instant;

use oca_protocol::manifest::{ManifestEntry, Source};
use oca_store::ContentId;
use sha2::{Digest, Sha256};

use crate::fill::pace::{Limits, Pace};
use crate::shared::Shared;

/// Why a download from a source did not produce the file.
pub enum Failure {
    /// The source failed: reason, and whether the part holds bad bytes.
    Source(String, bool),
    /// Our disk failed.
    Disk(std::io::Error),
}

fn refused(reason: &str) -> Failure {
    Failure::Source(reason.to_string(), false)
}

/// The host a URL names, for logs: the rest may carry a signature.
pub fn host(url: &str) -> &str {
    url.split("://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or("")
}

/// Downloads (or resumes) `entry` from `source` into `part`; returns the bytes in the part.
pub async fn fetch(
    shared: &Shared,
    client: &reqwest::Client,
    source: &Source,
    entry: &ManifestEntry,
    store_disk: &oca_store::Disk,
    id: ContentId<'_>,
    limits: Limits,
) -> Result<u64, Failure> {
    // tmp/<id>.part, resolved beneath the disk: a symlink planted as tmp/ names nothing.
    let mut file = store_disk.open_part(id).map_err(Failure::Disk)?;
    let mut have = file.metadata().map_err(Failure::Disk)?.len();
    if have > entry.size {
        file.set_len(0).map_err(Failure::Disk)?;
        have = 0;
    }
    let mut hasher = Sha256::new();
    if have > 0 {
        hash_prefix(&file, have, &mut hasher).map_err(Failure::Disk)?;
    }
    if have < entry.size {
        // Identity only: the bytes hashed and stored are the file's, never an encoding of it.
        let mut req = client
            .get(&source.url)
            .header(reqwest::header::ACCEPT_ENCODING, "identity");
        if have > 0 {
            req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
        }
        let resp = tokio::time::timeout(limits.stall, req.send())
            .await
            .map_err(|_| refused("stall"))?
            .map_err(|e| {
                // The reason (refused, unreachable, a certificate not trusted) is the operator's
                // to see; the report carries only the short one.
                let chain = crate::control_plane::chain(&e);
                tracing::warn!(id = %entry.content_id, url_host = host(&source.url), error = chain, "cannot reach the fill source");
                refused("connect")
            })?;
        if check_head(&resp, have, entry.size)? == 0 && have > 0 {
            // The source ignored the range: start over with its whole answer.
            file.set_len(0).map_err(Failure::Disk)?;
            have = 0;
            hasher = Sha256::new();
        } else if have > 0 {
            tracing::info!(id = %entry.content_id, from = have, "resuming with Range");
        }
        // SHA-256 and the disk on their own thread: the network side only receives (the two
        // overlap on two cores). It hands over blocks of about 1 MiB: a thread wake-up per
        // socket-sized chunk cost more CPU than the copy that gathers them.
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let writer =
            tokio::task::spawn_blocking(move || -> std::io::Result<(std::fs::File, Sha256)> {
                let mut out = file;
                while let Some(block) = rx.blocking_recv() {
                    let block: bytes::Bytes = block;
                    hasher.update(&block);
                    out.write_all(&block)?;
                }
                Ok((out, hasher))
            });
        let counted = shared.metrics.fill_bytes_from(source.kind);
        let received = receive(shared, resp, tx, entry.size, &mut have, limits, &counted).await;
        let (f, h) = writer
            .await
            .map_err(|_| Failure::Disk(std::io::Error::other("writer thread failed")))?
            .map_err(Failure::Disk)?;
        received?;
        file = f;
        hasher = h;
    }
    if have != entry.size {
        // Short: keep what arrived for the next source to resume.
        return Err(refused("short"));
    }
    let digest = oca_protocol::manifest::hex(&hasher.finalize());
    if !digest.eq_ignore_ascii_case(&entry.sha256) {
        return Err(Failure::Source("hash_mismatch".into(), true));
    }
    file.sync_all().map_err(Failure::Disk)?;
    Ok(have)
}

/// Checks a source's answer before a byte of its body is read; returns the offset its body
/// starts at. Refused: a redirect (`http_3xx`), another status than 200, or 206 to a resume
/// (`http_<status>`); a 206 whose Content-Range does not continue the part exactly
/// (`content_range`); a body in an encoding (`content_encoding`); a Content-Length other than
/// the bytes expected (`length_mismatch`).
fn check_head(resp: &reqwest::Response, have: u64, size: u64) -> Result<u64, Failure> {
    let status = resp.status().as_u16();
    let headers = resp.headers();
    let start = match status {
        300..=399 => return Err(refused("http_3xx")),
        206 if have > 0 => {
            let range = headers
                .get(reqwest::header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok());
            if range != Some(format!("bytes {have}-{}/{size}", size - 1).as_str()) {
                return Err(refused("content_range"));
            }
            have
        }
        200 => 0,
        s => return Err(Failure::Source(format!("http_{s}"), false)),
    };
    let encoded = headers
        .get_all(reqwest::header::CONTENT_ENCODING)
        .iter()
        .any(|v| {
            !v.to_str()
                .is_ok_and(|e| e.trim().eq_ignore_ascii_case("identity"))
        });
    if encoded {
        return Err(refused("content_encoding"));
    }
    let length = headers
        .get(reqwest::header::CONTENT_LENGTH)
        .map(|v| v.to_str().ok().and_then(|l| l.trim().parse::<u64>().ok()));
    if length.is_some_and(|l| l != Some(size - start)) {
        return Err(refused("length_mismatch"));
    }
    Ok(start)
}

/// Bytes gathered before they go to the hashing and writing thread.
const BLOCK: usize = 1 << 20;

/// Receives the body into `tx` in blocks of about [`BLOCK`] (rate-capped, held to the stall
/// timeout, the minimum rate and the deadline), counting into `have` what the writer was
/// handed.
async fn receive(
    shared: &Shared,
    mut resp: reqwest::Response,
    tx: tokio::sync::mpsc::Sender<bytes::Bytes>,
    size: u64,
    have: &mut u64,
    limits: Limits,
    counted: &prometheus_client::metrics::counter::Counter,
) -> Result<(), Failure> {
    let mut block = bytes::BytesMut::new();
    let mut received = *have;
    let mut pace = Pace::new(limits, size - *have);
    loop {
        let chunk = match tokio::time::timeout(pace.patience(), resp.chunk()).await {
            Err(_) => Err(pace.timed_out()),
            Ok(Err(_)) => Err("io"),
            Ok(Ok(c)) => Ok(c),
        };
        let chunk = match chunk {
            Ok(c) => c,
            Err(reason) => {
                // What did arrive is kept for the next source to resume from.
                hand_over(&tx, &mut block, have).await;
                return Err(refused(reason));
            }
        };
        let Some(chunk) = chunk else {
            hand_over(&tx, &mut block, have).await;
            return Ok(());
        };
        received += chunk.len() as u64;
        if received > size {
            return Err(Failure::Source("size_mismatch".into(), true));
        }
        counted.inc_by(chunk.len() as u64);
        if let Err(reason) = pace.arrived(chunk.len() as u64) {
            block.extend_from_slice(&chunk);
            hand_over(&tx, &mut block, have).await;
            return Err(refused(reason));
        }
        let waited = Instant::now();
        shared.bucket.take(chunk.len()).await;
        let handed = if block.is_empty() && chunk.len() >= BLOCK / 4 {
            let n = chunk.len() as u64;
            let sent = tx.send(chunk).await.is_ok();
            if sent {
                *have += n;
            }
            sent
        } else {
            if block.capacity() == 0 {
                block.reserve(BLOCK);
            }
            block.extend_from_slice(&chunk);
            block.len() < BLOCK || hand_over(&tx, &mut block, have).await
        };
        pace.ours(waited.elapsed());
        if !handed {
            return Ok(()); // The writer stopped: its error is the one to report.
        }
    }
}

/// Sends the gathered block to the writer; false when the writer has stopped.
async fn hand_over(
    tx: &tokio::sync::mpsc::Sender<bytes::Bytes>,
    block: &mut bytes::BytesMut,
    have: &mut u64,
) -> bool {
    if block.is_empty() {
        return true;
    }
    let b = block.split().freeze();
    let n = b.len() as u64;
    if tx.send(b).await.is_err() {
        return false;
    }
    *have += n;
    true
}

fn hash_prefix(part: &std::fs::File, len: u64, hasher: &mut Sha256) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < len {
        let want = buf.len().min((len - at) as usize);
        let n = part.read_at(&mut buf[..want], at)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        hasher.update(&buf[..n]);
        at += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(status: u16, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut b = http::Response::builder().status(status);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        reqwest::Response::from(b.body(Vec::<u8>::new()).unwrap())
    }

    fn reason(r: Result<u64, Failure>) -> String {
        match r {
            Ok(start) => format!("ok {start}"),
            Err(Failure::Source(reason, _)) => reason,
            Err(Failure::Disk(e)) => format!("disk {e}"),
        }
    }

    /// Status, headers, bytes already in the part, and the verdict.
    type Case<'a> = (u16, &'a [(&'a str, &'a str)], u64, &'a str);

    #[test]
    fn answers_that_do_not_continue_the_part_are_refused_before_the_body() {
        let cases: &[Case] = &[
            (200, &[("content-length", "100")], 0, "ok 0"),
            (200, &[("content-length", "100")], 40, "ok 0"),
            (200, &[], 0, "ok 0"),
            (
                206,
                &[
                    ("content-range", "bytes 40-99/100"),
                    ("content-length", "60"),
                ],
                40,
                "ok 40",
            ),
            (
                206,
                &[("content-range", "bytes 0-99/100")],
                40,
                "content_range",
            ),
            (
                206,
                &[("content-range", "bytes 40-99/101")],
                40,
                "content_range",
            ),
            (
                206,
                &[("content-range", "bytes 40-98/100")],
                40,
                "content_range",
            ),
            (206, &[], 40, "content_range"),
            (206, &[("content-range", "bytes 0-99/100")], 0, "http_206"),
            (200, &[("content-length", "101")], 0, "length_mismatch"),
            (
                206,
                &[
                    ("content-range", "bytes 40-99/100"),
                    ("content-length", "100"),
                ],
                40,
                "length_mismatch",
            ),
            (200, &[("content-encoding", "gzip")], 0, "content_encoding"),
            (200, &[("content-encoding", "identity")], 0, "ok 0"),
            (
                302,
                &[("location", "http://127.0.0.1:9180/metrics")],
                0,
                "http_3xx",
            ),
            (404, &[], 0, "http_404"),
        ];
        for (status, headers, have, want) in cases {
            let got = reason(check_head(&head(*status, headers), *have, 100));
            assert_eq!(&got, want, "{status} {headers:?} at {have}");
        }
    }
}

#[cfg(test)]
mod speed {
    /// `cargo test --release -p fill-agent sha256_speed -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn sha256_speed() {
        use sha2::Digest;
        let b = vec![7u8; 256 << 20];
        let t = std::time::Instant::now();
        let d = sha2::Sha256::digest(&b);
        println!(
            "sha2 crate: {:.0} MB/s {:x?}",
            256.0 / t.elapsed().as_secs_f64(),
            &d[..2]
        );
    }
}
