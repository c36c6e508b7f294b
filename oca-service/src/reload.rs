//! `SIGHUP`: what a service does with a configuration file edited under it.
//!
//! Each service rereads its file (with the flags it was started with), applies what it can
//! apply while running (certificates and keys, reread from their files), and names every other
//! setting that changed as needing a restart, instead of silently running on the old value. A
//! file that no longer parses or checks is refused whole: the service keeps running as it was
//! and says why. [`changed_keys`] compares the two configurations in the form `--print-config`
//! writes, so every key a service knows is compared and none is forgotten when one is added.
//!
//! systemd sees the reload as `RELOADING=1` then `READY=1` ([`crate::systemd::reloading`]).

use std::collections::BTreeMap;

/// Says what a reread configuration changed against the running one, and tells systemd the
/// reload is over. `reread` is the file under the service's flags as `--print-config` writes
/// it, or why it was refused (the service then runs on as it was).
pub fn conclude(service: &str, running: &str, reread: anyhow::Result<String>) {
    match reread {
        Ok(reread) => {
            let changed = changed_keys(running, &reread);
            if changed.is_empty() {
                tracing::info!("SIGHUP: configuration unchanged");
            } else {
                tracing::warn!(keys = ?changed, "SIGHUP: settings changed in the configuration apply at a restart (systemctl restart {service}); running with the old ones");
            }
        }
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "SIGHUP: configuration refused; running as before");
        }
    }
    crate::systemd::ready("reloaded");
}

/// The keys (dotted for tables, e.g. `limits.max_ranges`) whose values differ between two
/// configurations written as TOML; sorted. A file that does not parse counts as every key.
pub fn changed_keys(running: &str, reread: &str) -> Vec<String> {
    let (a, b) = (flatten(running), flatten(reread));
    let mut keys: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// Every leaf of `text` by its dotted path; arrays (of values or of tables) are leaves.
fn flatten(text: &str) -> BTreeMap<String, toml::Value> {
    fn walk(prefix: &str, table: &toml::Table, out: &mut BTreeMap<String, toml::Value>) {
        for (k, v) in table {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                toml::Value::Table(t) => walk(&path, t, out),
                v => {
                    out.insert(path, v.clone());
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    if let Ok(t) = text.parse::<toml::Table>() {
        walk("", &t, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_keys_that_differ_are_named_with_their_tables() {
        let running = "listen = \"0.0.0.0:80\"\nworkers = 4\n[limits]\nmax_ranges = 16\n\
                       [[s3]]\nbucket = \"a\"\n";
        let reread = "listen = \"0.0.0.0:80\"\nworkers = 8\nkeys = \"/k\"\n[limits]\n\
                      max_ranges = 4\n[[s3]]\nbucket = \"b\"\n";
        assert_eq!(
            changed_keys(running, reread),
            ["keys", "limits.max_ranges", "s3", "workers"]
        );
        assert!(changed_keys(running, running).is_empty());
    }
}
