//! `ocactl content add FILE --s3 s3://bucket/key`: the file uploaded to an S3-compatible bucket
//! with SigV4-signed requests (the control plane's `s3` module signs), then registered with
//! that origin, its size and its SHA-256.
//!
//! The file is read in parts of `--s3-part-mib` (64 MiB): a file of one part is one `PUT`, a
//! larger one a multipart upload (each part's SHA-256 signed, so the store checks every byte it
//! receives); a failed multipart upload is aborted. An object already at the key is never
//! overwritten (checked with `HEAD` first), and an object this run uploaded is deleted again
//! when the control plane refuses the registration.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use control_plane::s3::sigv4::{self, canonical_query, sign_headers};
use control_plane::s3::Bucket;
use reqwest::blocking::{Client, Response};
use reqwest::Method;
use sha2::{Digest, Sha256};

/// S3's smallest part other than the last.
pub const MIN_PART_MIB: u64 = 5;

/// SHA-256 of an empty body.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Longest answer body read from the store (an error, an upload id, a completion).
const MAX_ANSWER: u64 = 1 << 20;

/// One bucket and the client that talks to it.
pub struct Store<'a> {
    bucket: &'a Bucket,
    http: Client,
}

impl<'a> Store<'a> {
    /// A client for `bucket`: 10 s to connect, 10 minutes per request (a part of 64 MiB at
    /// 1 Mbit/s still fits).
    pub fn new(bucket: &'a Bucket) -> Result<Store<'a>> {
        let http = Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(600))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Store { bucket, http })
    }

    /// Uploads `file` to `key` in parts of `part_size` bytes; returns its size and SHA-256.
    pub fn upload(&self, key: &str, file: &Path, part_size: u64) -> Result<(u64, String)> {
        if self.exists(key)? {
            bail!(
                "s3://{}/{key} already exists; not overwriting it",
                self.bucket.name
            );
        }
        let mut input =
            std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
        let mut whole = Sha256::new();
        let first = read_part(&mut input, part_size)?;
        whole.update(&first);
        if (first.len() as u64) < part_size {
            let size = first.len() as u64;
            self.put(key, &[], first)?;
            return Ok((size, oca_protocol::manifest::hex(&whole.finalize())));
        }
        let id = self.start_multipart(key)?;
        let done = self.send_parts(key, &id, first, &mut input, part_size, &mut whole);
        match done {
            Ok(size) => Ok((size, oca_protocol::manifest::hex(&whole.finalize()))),
            Err(e) => {
                let _ = self.request(Method::DELETE, key, &[("uploadId", &id)], Vec::new());
                Err(e)
            }
        }
    }

    /// Deletes `key` (after a refused registration).
    pub fn delete(&self, key: &str) -> Result<()> {
        check(
            self.request(Method::DELETE, key, &[], Vec::new())?,
            "DELETE",
        )
        .map(|_| ())
    }

    fn exists(&self, key: &str) -> Result<bool> {
        let resp = self.request(Method::HEAD, key, &[], Vec::new())?;
        match resp.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            s => bail!("HEAD s3://{}/{key}: HTTP {s}", self.bucket.name),
        }
    }

    fn put(&self, key: &str, query: &[(&str, &str)], body: Vec<u8>) -> Result<Response> {
        check(self.request(Method::PUT, key, query, body)?, "PUT")
    }

    fn start_multipart(&self, key: &str) -> Result<String> {
        let resp = self.request(Method::POST, key, &[("uploads", "")], Vec::new())?;
        let text = answer(check(resp, "CreateMultipartUpload")?)?;
        element(&text, "UploadId").context("CreateMultipartUpload: no UploadId in the answer")
    }

    /// Sends `first` and the rest of `input` as parts of `upload_id`, then completes it.
    fn send_parts(
        &self,
        key: &str,
        upload_id: &str,
        first: Vec<u8>,
        input: &mut std::fs::File,
        part_size: u64,
        whole: &mut Sha256,
    ) -> Result<u64> {
        let mut etags = Vec::new();
        let mut size = 0u64;
        let mut part = first;
        while !part.is_empty() {
            if etags.len() == 10_000 {
                bail!("more than 10,000 parts: give a larger --s3-part-mib");
            }
            size += part.len() as u64;
            let number = (etags.len() + 1).to_string();
            let query = [("partNumber", number.as_str()), ("uploadId", upload_id)];
            let resp = self.put(key, &query, part)?;
            let etag = resp
                .headers()
                .get(reqwest::header::ETAG)
                .and_then(|v| v.to_str().ok())
                .context("UploadPart: no ETag")?
                .to_string();
            etags.push(etag);
            part = read_part(input, part_size)?;
            whole.update(&part);
        }
        let mut xml = String::from("<CompleteMultipartUpload>");
        for (i, etag) in etags.iter().enumerate() {
            xml.push_str(&format!(
                "<Part><PartNumber>{}</PartNumber><ETag>{}</ETag></Part>",
                i + 1,
                escape(etag)
            ));
        }
        xml.push_str("</CompleteMultipartUpload>");
        let resp = self.request(
            Method::POST,
            key,
            &[("uploadId", upload_id)],
            xml.into_bytes(),
        )?;
        // S3 may answer 200 and still fail the completion in the body.
        let text = answer(check(resp, "CompleteMultipartUpload")?)?;
        if text.contains("<Error>") {
            bail!("CompleteMultipartUpload: {text}");
        }
        Ok(size)
    }

    /// One signed request for `key`, its body's SHA-256 signed.
    fn request(
        &self,
        method: Method,
        key: &str,
        query: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Response> {
        let at = self.bucket.address(key);
        let q = canonical_query(query);
        let url = if q.is_empty() {
            format!("{}{}", at.base, at.path)
        } else {
            format!("{}{}?{q}", at.base, at.path)
        };
        let sha = if body.is_empty() {
            EMPTY_SHA256.to_string()
        } else {
            oca_protocol::manifest::hex(&Sha256::digest(&body))
        };
        let signed = sign_headers(
            &self.bucket.signer(),
            &sigv4::Request {
                method: method.as_str(),
                host: &at.host,
                path: &at.path,
                query,
            },
            &[],
            &sha,
            oca_service::unix_now() as i64,
        );
        let mut req = self.http.request(method.clone(), &url).body(body);
        for (name, value) in signed {
            req = req.header(name, value);
        }
        req.send()
            .with_context(|| format!("{method} {}{}", at.base, at.path))
    }
}

/// The next `part_size` bytes of `input` (fewer at its end, none past it).
fn read_part(input: &mut std::fs::File, part_size: u64) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    input.by_ref().take(part_size).read_to_end(&mut buf)?;
    Ok(buf)
}

/// `resp` when it succeeded; otherwise an error with the store's code and message.
fn check(resp: Response, what: &str) -> Result<Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let text = answer(resp).unwrap_or_default();
    let code = element(&text, "Code").unwrap_or_default();
    let message = element(&text, "Message").unwrap_or_default();
    bail!("{what}: HTTP {status}: {code}: {message}")
}

/// The answer's body as text, at most [`MAX_ANSWER`] bytes.
fn answer(resp: Response) -> Result<String> {
    let mut text = String::new();
    resp.take(MAX_ANSWER).read_to_string(&mut text)?;
    Ok(text)
}

/// The text of the first `<name>` element (the store's answers are small and flat).
fn element(xml: &str, name: &str) -> Option<String> {
    let start = xml.find(&format!("<{name}>"))? + name.len() + 2;
    let end = start + xml[start..].find(&format!("</{name}>"))?;
    Some(xml[start..end].to_string())
}

/// XML text escaping for an ETag (quotes and all).
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
