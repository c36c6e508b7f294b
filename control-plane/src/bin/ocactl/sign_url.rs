//! `ocactl sign-url`: a signed content URL (oca_protocol::signing) made with a key of a keys
//! file, so an operator can `curl` or `wrk` a real appliance. The keys file is the one an
//! appliance serves with (`oca-daemon --keys`, written by its fill-agent from the control
//! plane's health replies): `{"keys": [{"id": ..., "secret": ...}, ...]}`, current key first.
//!
//! Offline: it needs no admin token and makes no request. The admin API has no endpoint that
//! hands out URL-signing keys (they reach appliances only in the health reply, under an
//! appliance's credential), so there is no `--from-control-plane`; see docs/control-plane.md.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use control_plane::domain::maintenance::utc;
use oca_protocol::keys::Keyring;
use oca_protocol::signing::{signed_query, Scope};
use serde_json::json;

use crate::maintenance::{parse_duration, parse_time};
use crate::print_json;
use crate::table::span;

/// `ocactl sign-url`.
#[derive(Args)]
pub struct SignUrlArgs {
    /// A content id (`t1_1080p.mp4`), a path (`/c/t1_1080p.mp4`) or a whole URL
    /// (`http://oca1.isp.example/c/t1_1080p.mp4`; a signature it carries is replaced).
    target: String,
    /// Keys file (`{"keys": [{"id", "secret"}, ...]}`, as `oca-daemon --keys` reads it).
    #[arg(long, env = "OCA_KEY_FILE", value_name = "FILE")]
    key_file: PathBuf,
    /// Sign with this key of the file (default its current one, the first).
    #[arg(long, value_name = "ID")]
    key_id: Option<String>,
    /// How long the URL stays valid: 90s, 30m, 1h, 2d.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "1h",
        conflicts_with = "expires_at"
    )]
    expires_in: String,
    /// Expiry as a time instead: `YYYY-MM-DDTHH:MM[:SS]Z` or unix seconds (a past one makes
    /// a URL appliances refuse, for testing).
    #[arg(long, value_name = "TIME")]
    expires_at: Option<String>,
    /// What the URL allows: `play` (players) or `fill` (appliance-to-appliance
    /// and origin fills).
    #[arg(long, value_enum, default_value_t = SignScope::Play)]
    scope: SignScope,
    /// The appliance's base URL, e.g. `http://oca1.isp.example`, put before `/c/<id>` when the
    /// target is a content id (without it, the path and query are printed).
    #[arg(long, value_name = "URL")]
    base: Option<String>,
}

/// `--scope`.
#[derive(Clone, Copy, ValueEnum)]
pub enum SignScope {
    /// A player fetching content.
    Play,
    /// An appliance filling from a peer, a tier or the origin.
    Fill,
}

impl From<SignScope> for Scope {
    fn from(s: SignScope) -> Scope {
        match s {
            SignScope::Play => Scope::Play,
            SignScope::Fill => Scope::Fill,
        }
    }
}

/// Runs `sign-url`: the URL on standard output (alone, for `curl "$(ocactl sign-url ...)"`),
/// the key, scope and expiry on standard error.
pub fn run(args: SignUrlArgs, json: bool) -> Result<()> {
    let text = std::fs::read_to_string(&args.key_file)
        .with_context(|| format!("reading {}", args.key_file.display()))?;
    let ring = Keyring::from_json(&text)
        .with_context(|| format!("{}: not a keys file", args.key_file.display()))?;
    let key = match &args.key_id {
        None => ring.current(),
        Some(id) => ring.get(id).with_context(|| {
            let ids: Vec<&str> = ring.keys().iter().map(|k| k.id()).collect();
            format!(
                "{} has no key {id:?} (it has {})",
                args.key_file.display(),
                ids.join(", ")
            )
        })?,
    };
    let now = oca_service::unix_now() as i64;
    let expires = match &args.expires_at {
        Some(t) => parse_time(t, now)?,
        None => now + parse_duration(&args.expires_in)?,
    };
    let expires = u64::try_from(expires).context("the expiry is before 1970")?;
    let (prefix, content_id) = split_target(&args.target, args.base.as_deref())?;
    let scope = Scope::from(args.scope);
    let url = format!(
        "{prefix}?{}",
        signed_query(key, &content_id, expires, scope)
    );
    if json {
        return print_json(&json!({
            "url": url,
            "content_id": content_id,
            "key_id": key.id(),
            "scope": scope.as_str(),
            "expires": expires,
        }));
    }
    println!("{url}");
    let left = expires as i64 - now;
    let when = if left >= 0 {
        format!("in {}", span(left as u64))
    } else {
        format!("{} ago: appliances refuse it", span(left.unsigned_abs()))
    };
    eprintln!(
        "key {}, scope {}, expires {} ({when})",
        key.id(),
        scope.as_str(),
        utc(expires as i64)
    );
    Ok(())
}

/// The URL without its query, and the content id it names.
fn split_target(target: &str, base: Option<&str>) -> Result<(String, String)> {
    let (prefix, id) = if target.contains("://") {
        if base.is_some() {
            bail!("--base goes with a content id, not a whole URL");
        }
        let mut url = reqwest::Url::parse(target).with_context(|| format!("{target:?}"))?;
        url.set_query(None);
        url.set_fragment(None);
        let id = url
            .path_segments()
            .and_then(|mut s| s.next_back())
            .unwrap_or_default()
            .to_string();
        (url.to_string(), id)
    } else {
        let path = target.split(['?', '#']).next().unwrap_or_default();
        let id = path.rsplit('/').next().unwrap_or_default().to_string();
        let path = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/c/{path}")
        };
        let prefix = match base {
            Some(b) => format!("{}{path}", b.trim_end_matches('/')),
            None => path,
        };
        (prefix, id)
    };
    oca_store::ContentId::parse(&id)
        .map_err(|e| anyhow::anyhow!("{id:?} is not a content id: {e}"))?;
    if prefix.split(['/', '\\']).any(|s| s == "." || s == "..") {
        bail!("{target:?}: a path with . or .. segments would not reach the file it signs");
    }
    Ok((prefix, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_name_their_content() {
        let split = |t: &str, b: Option<&str>| split_target(t, b).unwrap();
        assert_eq!(
            split("t1_1080p.mp4", None),
            ("/c/t1_1080p.mp4".into(), "t1_1080p.mp4".into())
        );
        assert_eq!(
            split("t1_1080p.mp4", Some("http://oca1:8080/")),
            (
                "http://oca1:8080/c/t1_1080p.mp4".into(),
                "t1_1080p.mp4".into()
            )
        );
        assert_eq!(
            split("http://oca1/c/t1.mp4?e=1&k=k1&s=x", None),
            ("http://oca1/c/t1.mp4".into(), "t1.mp4".into())
        );
        assert_eq!(
            split("/origin/t1.mp4", Some("http://cp:7070")),
            ("http://cp:7070/origin/t1.mp4".into(), "t1.mp4".into())
        );
        assert!(split_target("http://oca1/c/", None).is_err());
        assert!(split_target("/c/../t1.mp4", None).is_err());
        assert!(split_target("http://oca1/c/t1.mp4", Some("http://x")).is_err());
    }
}
