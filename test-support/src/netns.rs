//! What the tests that build network namespaces (BGP peers, the lab's routers) share: whether
//! they can run here, and running a setup command that must succeed.

use std::process::{Command, Output};

/// Why a test needing root, `ip` and `tools` cannot run here, if it cannot.
pub fn unavailable(tools: &[&str]) -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (network namespaces need it)".into());
    }
    tools
        .iter()
        .chain(&["ip"])
        .find(|t| !crate::on_path(t))
        .map(|t| {
            format!("{t} is not installed (.ci/run installs it: bird2, gobgpd, iproute2, iptables)")
        })
}

/// Whether to skip `test` for want of root, `ip` or `tools`, saying why; where the tests must
/// run (`OCA_REQUIRE_VM`, set by CI as root) a missing piece fails it instead.
pub fn skip_without(test: &str, tools: &[&str]) -> bool {
    let Some(why) = unavailable(tools) else {
        return false;
    };
    assert!(
        std::env::var_os("OCA_REQUIRE_VM").is_none(),
        "cannot run {test}: {why}"
    );
    eprintln!("skipped: {why}");
    true
}

/// Runs a setup command, failing the test with its stderr when it fails.
pub fn run(args: &[&str]) -> Output {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
