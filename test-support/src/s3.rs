//! A real S3-compatible server for tests: `s3s-fs` 0.14.1 (crates.io; `.ci/run` installs it,
//! docs/research/issue18.md §4 says why this one), on loopback, with SigV4 authentication on,
//! its objects plain files under a directory.
//!
//! When the binary is missing the tests that need it are skipped with a message, unless
//! `OCA_REQUIRE_S3=1` (set by `.ci/run`), where a missing server fails them. The binary is
//! `$OCA_S3S_FS` when set (missing if that file is), else `s3s-fs` on `PATH` or in
//! `~/.cargo/bin`.
//!
//! Its log is at debug level for `s3s`: every request is logged with its headers (so a test
//! can see the `Range` a resume sent) and every refusal with its reason.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::proc::Proc;

/// The access key the server accepts.
pub const ACCESS_KEY: &str = "oca-test-access";
/// The secret key the server accepts.
pub const SECRET_KEY: &str = "oca-test-secret-0123456789abcdef";

/// A running `s3s-fs`; stopped (and its temporary root removed) on drop.
pub struct S3Server {
    /// The process, its log.
    pub proc: Proc,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    /// The directory holding one directory per bucket.
    pub root: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

/// The `s3s-fs` binary, or none (with the reason printed) when the test should be skipped;
/// panics when it is missing and `OCA_REQUIRE_S3` is set.
pub fn binary() -> Option<PathBuf> {
    let found = match std::env::var_os("OCA_S3S_FS") {
        Some(p) => Some(PathBuf::from(p)).filter(|p| p.exists()),
        None => crate::on_path("s3s-fs")
            .then(|| PathBuf::from("s3s-fs"))
            .or_else(|| {
                let home = std::env::var_os("CARGO_HOME")
                    .map(PathBuf::from)
                    .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))?;
                Some(home.join("bin/s3s-fs")).filter(|p| p.exists())
            }),
    };
    if found.is_none() {
        let how = "cargo install s3s-fs --version 0.14.1 --features binary --locked";
        if std::env::var("OCA_REQUIRE_S3").is_ok_and(|v| !v.is_empty() && v != "0") {
            panic!("OCA_REQUIRE_S3 is set but s3s-fs is not installed: {how}");
        }
        eprintln!("skipped: s3s-fs (a real S3-compatible server) is not installed: {how}");
    }
    found
}

impl S3Server {
    /// A server on an ephemeral port with `buckets`, in a temporary directory; none when the
    /// binary is missing (see [`binary`]).
    pub fn start(buckets: &[&str]) -> Option<S3Server> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut s = S3Server::start_in(dir.path(), buckets, 0)?;
        s._dir = Some(dir);
        Some(s)
    }

    /// A server over `root` (its bucket directories created) on `port` (0: ephemeral).
    pub fn start_in(root: &Path, buckets: &[&str], port: u16) -> Option<S3Server> {
        let bin = binary()?;
        for b in buckets {
            std::fs::create_dir_all(root.join(b)).expect("creating a bucket directory");
        }
        // s3s-fs logs to stdout; Proc collects stderr.
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "exec \"$0\" \"$@\" 1>&2"])
            .arg(bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(root);
        let proc = Proc::start_logging(cmd, "s3s=debug,s3s_fs=info").expect("starting s3s-fs");
        let line = proc.wait_log("server is running at http://", Duration::from_secs(20));
        let endpoint = line[line.find("http://").expect("an address")..]
            .trim()
            .to_string();
        Some(S3Server {
            proc,
            endpoint,
            root: root.to_path_buf(),
            _dir: None,
        })
    }

    /// The file holding object `key` of `bucket`.
    pub fn object(&self, bucket: &str, key: &str) -> PathBuf {
        self.root.join(bucket).join(key)
    }

    /// An `[[s3]]` table for `bucket` on this server, its secret written to
    /// `dir/<bucket>.secret` (mode 0600); `extra` lines are added to the table.
    pub fn config_table(&self, bucket: &str, dir: &Path, extra: &str) -> String {
        table(&self.endpoint, bucket, dir, extra)
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        self.proc.log()
    }
}

/// An `[[s3]]` table for `bucket` at `endpoint` (a server not started yet), its secret
/// written to `dir/<bucket>.secret` (mode 0600); `extra` lines are added to the table.
pub fn table(endpoint: &str, bucket: &str, dir: &Path, extra: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let secret = dir.join(format!("{bucket}.secret"));
    std::fs::write(&secret, format!("{SECRET_KEY}\n")).expect("writing the secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
    format!(
        "[[s3]]\nbucket = \"{bucket}\"\nendpoint = \"{endpoint}\"\naccess_key_id = \"{ACCESS_KEY}\"\n\
         secret_key_file = \"{}\"\n{extra}\n",
        secret.display()
    )
}
