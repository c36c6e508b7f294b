//! The `[[s3]]` tables of the configuration file (the control plane's, and the file `ocactl
//! content add --s3-config` reads): one per bucket.
//!
//! ```toml
//! [[s3]]
//! bucket = "titles"
//! endpoint = "https://s3.eu-west-1.amazonaws.com"   # scheme and host[:port], no path
//! region = "eu-west-1"                               # default us-east-1
//! access_key_id = "AKIA..."
//! secret_key_file = "/etc/oca/s3-titles.secret"      # readable by nobody else
//! path_style = false                                 # default true (self-hosted stores)
//! url_lifetime_secs = 604800                         # default and maximum: 7 days
//! ```
//!
//! The secret key file is refused when others may read it (any of the mode's last three bits)
//! and warned about when its group may: the key can read every title in the bucket.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{check_bucket, sigv4, Bucket, Origins};

/// One `[[s3]]` table.
#[derive(Deserialize, serde::Serialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct BucketConfig {
    /// The bucket, as `s3://<bucket>/...` origins name it.
    pub bucket: String,
    /// `http(s)://host[:port]` of the S3 API.
    pub endpoint: String,
    /// Signing region (default `us-east-1`, what most self-hosted stores expect).
    pub region: Option<String>,
    /// Access key id.
    pub access_key_id: String,
    /// File holding the secret access key (one line).
    pub secret_key_file: PathBuf,
    /// Path-style addressing (default true): `endpoint/bucket/key` works on every
    /// S3-compatible store; false: `bucket.endpoint/key` (AWS's virtual-hosted style).
    pub path_style: Option<bool>,
    /// `X-Amz-Expires` of presigned URLs, 1 to 604800 seconds (default 604800).
    pub url_lifetime_secs: Option<u32>,
}

/// Why the `[[s3]]` tables cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A table is wrong; the message names the bucket and the key.
    #[error("[[s3]] bucket {bucket:?}: {why}")]
    Invalid {
        /// The table's bucket.
        bucket: String,
        /// What is wrong.
        why: String,
    },
    /// The secret key file cannot be read.
    #[error("[[s3]] bucket {bucket:?}: reading secret_key_file {path}: {source}")]
    Secret {
        /// The table's bucket.
        bucket: String,
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Checks every table and reads its secret.
pub fn load(tables: &[BucketConfig]) -> Result<Origins, ConfigError> {
    let mut buckets: Vec<Bucket> = Vec::with_capacity(tables.len());
    for t in tables {
        let invalid = |why: String| ConfigError::Invalid {
            bucket: t.bucket.clone(),
            why,
        };
        check_bucket(&t.bucket).map_err(|e| invalid(e.to_string()))?;
        if buckets.iter().any(|b| b.name == t.bucket) {
            return Err(invalid("configured twice".into()));
        }
        let (scheme, endpoint_host) = endpoint(&t.endpoint).map_err(invalid)?;
        let lifetime = t.url_lifetime_secs.unwrap_or(sigv4::MAX_EXPIRES_SECS);
        if !(1..=sigv4::MAX_EXPIRES_SECS).contains(&lifetime) {
            return Err(invalid(format!(
                "url_lifetime_secs must be 1 to {} (7 days, S3's maximum), got {lifetime}",
                sigv4::MAX_EXPIRES_SECS
            )));
        }
        if t.access_key_id.is_empty() || t.access_key_id.bytes().any(|b| !b.is_ascii_graphic()) {
            return Err(invalid("access_key_id must be printable ASCII".into()));
        }
        buckets.push(Bucket {
            name: t.bucket.clone(),
            scheme,
            endpoint_host,
            path_style: t.path_style.unwrap_or(true),
            region: t.region.clone().unwrap_or_else(|| "us-east-1".into()),
            access_key_id: t.access_key_id.clone(),
            secret_key: read_secret(&t.bucket, &t.secret_key_file)?,
            url_lifetime_secs: lifetime,
            day_key: Default::default(),
        });
    }
    Ok(Origins::new(buckets))
}

/// The `[[s3]]` tables of a TOML file whose other keys are not ours to check (the control
/// plane's own file, read by `ocactl`).
pub fn tables_of(toml_text: &str) -> Result<Vec<BucketConfig>, toml::de::Error> {
    #[derive(Deserialize)]
    struct Only {
        #[serde(default)]
        s3: Vec<BucketConfig>,
    }
    let only: Only = toml::from_str(toml_text)?;
    Ok(only.s3)
}

/// `(scheme, host[:port])` of an endpoint URL without path, query or credentials.
fn endpoint(text: &str) -> Result<(String, String), String> {
    let url = reqwest::Url::parse(text).map_err(|e| format!("endpoint {text:?}: {e}"))?;
    let plain = matches!(url.scheme(), "http" | "https")
        && url.username().is_empty()
        && url.password().is_none()
        && url.path() == "/"
        && url.query().is_none()
        && url.fragment().is_none();
    let host = url.host_str().filter(|_| plain).ok_or_else(|| {
        format!("endpoint {text:?}: expected http(s)://host[:port] with nothing after it")
    })?;
    let host = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    Ok((url.scheme().to_string(), host))
}

/// The secret in `path`: refused when others may read the file, a warning when its group may.
fn read_secret(bucket: &str, path: &Path) -> Result<String, ConfigError> {
    let failed = |source: std::io::Error| ConfigError::Secret {
        bucket: bucket.to_string(),
        path: path.display().to_string(),
        source,
    };
    let mode = std::fs::metadata(path)
        .map_err(failed)?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o007 != 0 {
        return Err(ConfigError::Invalid {
            bucket: bucket.to_string(),
            why: format!(
                "secret_key_file {} has mode {mode:o}: others may read it; chmod 600 (or 640 for a group)",
                path.display()
            ),
        });
    }
    if mode & 0o070 != 0 {
        tracing::warn!(bucket, file = %path.display(), mode = format!("{mode:o}"), "the S3 secret key file is readable by its group");
    }
    let text = std::fs::read_to_string(path).map_err(failed)?;
    let secret = text.trim();
    if secret.is_empty() || secret.contains(char::is_whitespace) {
        return Err(ConfigError::Invalid {
            bucket: bucket.to_string(),
            why: format!("secret_key_file {}: one line, the key", path.display()),
        });
    }
    Ok(secret.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(dir: &Path, endpoint: &str, mode: u32) -> BucketConfig {
        let secret = dir.join("secret");
        std::fs::write(&secret, "sk-example\n").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(mode)).unwrap();
        BucketConfig {
            bucket: "titles".into(),
            endpoint: endpoint.into(),
            region: None,
            access_key_id: "AK".into(),
            secret_key_file: secret,
            path_style: None,
            url_lifetime_secs: None,
        }
    }

    #[test]
    fn a_table_loads_with_its_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let o = load(&[table(dir.path(), "http://127.0.0.1:9000", 0o600)]).unwrap();
        let b = o.bucket("titles").unwrap();
        assert_eq!(
            (b.scheme.as_str(), b.endpoint_host.as_str()),
            ("http", "127.0.0.1:9000")
        );
        assert!(b.path_style);
        assert_eq!(b.region, "us-east-1");
        assert_eq!(b.secret_key, "sk-example");
        assert_eq!(b.url_lifetime_secs, 604_800);
        let https = load(&[table(dir.path(), "https://s3.example:443", 0o640)]).unwrap();
        assert_eq!(https.bucket("titles").unwrap().endpoint_host, "s3.example");
    }

    #[test]
    fn bad_tables_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let world = load(&[table(dir.path(), "http://h", 0o604)]).unwrap_err();
        assert!(world.to_string().contains("others may read it"), "{world}");
        for bad in [
            "ftp://h",
            "http://h/prefix",
            "http://u:p@h",
            "http://h?x=1",
            "h:9000",
        ] {
            let e = load(&[table(dir.path(), bad, 0o600)]).unwrap_err();
            assert!(e.to_string().contains("endpoint"), "{bad}: {e}");
        }
        let mut t = table(dir.path(), "http://h", 0o600);
        t.url_lifetime_secs = Some(604_801);
        assert!(load(&[t.clone()])
            .unwrap_err()
            .to_string()
            .contains("url_lifetime_secs"));
        t.url_lifetime_secs = None;
        let twice = load(&[t.clone(), t]).unwrap_err();
        assert!(twice.to_string().contains("twice"), "{twice}");
    }

    #[test]
    fn only_the_s3_tables_of_a_larger_file_are_read() {
        let text = "listen = \"127.0.0.1:1\"\n[live]\nprobe_interval = 0\n\
                    [[s3]]\nbucket = \"titles\"\nendpoint = \"http://h\"\naccess_key_id = \"AK\"\nsecret_key_file = \"/x\"\n";
        let t = tables_of(text).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].bucket, "titles");
    }
}
