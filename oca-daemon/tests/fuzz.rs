//! The fuzz targets (`fuzz/`, cargo-fuzz with libFuzzer) run for a short, bounded time on every
//! test run, each from its committed corpus: a parser change that crashes, loops or breaks an
//! invariant on a known input, or a new one found in seconds, fails here. The long runs are
//! `fuzz/run.sh` (docs/fuzzing.md). Needs cargo-fuzz (`cargo install cargo-fuzz --locked`; CI
//! installs it); skips without it unless OCA_REQUIRE_VM is set.

use std::path::PathBuf;
use std::process::Command;

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn cargo() -> Command {
    let mut c = test_support::cargo();
    c.current_dir(fuzz_dir())
        // Stable toolchain: cargo fuzz's nightly flags are let through.
        .env("RUSTC_BOOTSTRAP", "1")
        // Its own target directory: the outer cargo holds the workspace's.
        .env("CARGO_TARGET_DIR", fuzz_dir().join("target"))
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    c
}

#[test]
fn every_fuzz_target_runs_clean_for_a_while() {
    let have = cargo()
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        assert!(
            std::env::var_os("OCA_REQUIRE_VM").is_none(),
            "cargo-fuzz is not installed (cargo install cargo-fuzz --locked)"
        );
        eprintln!("skipped: cargo-fuzz is not installed (cargo install cargo-fuzz --locked)");
        return;
    }
    let secs: u64 = std::env::var("OCA_FUZZ_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let list = cargo().args(["fuzz", "list"]).output().unwrap();
    let targets: Vec<String> = String::from_utf8(list.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert!(targets.len() >= 6, "fuzz targets: {targets:?}");
    // Unoptimised (debug assertions and ASan still on): on a two-core CI machine the optimised
    // build took 225 s and this one 123 s, which matters more to a 10-second smoke run than
    // executions per second; the long runs (fuzz/run.sh) are optimised.
    let build = cargo().args(["fuzz", "build", "--dev"]).output().unwrap();
    assert!(
        build.status.success(),
        "building the fuzz targets:\n{}",
        String::from_utf8_lossy(&build.stderr)
    );
    // Two at a time: libFuzzer runs one thread, and CI has two cores.
    for pair in targets.chunks(2) {
        std::thread::scope(|s| {
            let runs: Vec<_> = pair
                .iter()
                .map(|t| s.spawn(move || (t, run_target(t, secs))))
                .collect();
            for run in runs {
                let (t, out) = run.join().unwrap();
                check_run(t, &out);
            }
        });
    }
}

/// Runs one target from its committed corpus for `secs`; new inputs go to a scratch directory.
fn run_target(t: &str, secs: u64) -> std::process::Output {
    let scratch = tempfile::tempdir().unwrap();
    cargo()
        .args(["fuzz", "run", "--dev", t])
        .arg(scratch.path())
        .arg(fuzz_dir().join("corpus").join(t))
        .arg("--")
        .arg(format!("-max_total_time={secs}"))
        .arg("-rss_limit_mb=4096")
        .output()
        .unwrap()
}

/// Fails with the end of the target's log unless it ran clean; prints its last stats line.
fn check_run(t: &str, out: &std::process::Output) {
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "fuzz target {t} failed:\n{}",
        log.lines()
            .rev()
            .take(60)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    let line = log.lines().rev().find(|l| l.contains("DONE")).unwrap_or("");
    eprintln!("{t}: {line}");
}
