//! oca-qualify: qualifies an appliance before it takes traffic (turn-up). Disks (io_uring
//! O_DIRECT bandwidth and IOPS), store filesystems and mounts, kernel TLS, network interfaces
//! and an end-to-end wrk load run over the stores, each held to a threshold from the config.
//! Prints a table, optionally writes JSON, and exits 0 only when every check passes.

use std::process::ExitCode;

use clap::Parser;
use hwtests::qualify::cli::{Cli, Group};
use hwtests::qualify::{self, report, Check, Config};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("oca-qualify: {e:#}");
            return ExitCode::from(2);
        }
    };
    let wanted = |g: Group| cli.only.is_empty() || cli.only.contains(&g);
    let daemon = cli.daemon.as_deref();
    let mut checks: Vec<Check> = Vec::new();
    let mut group = |g: Group, label: &str, run: &dyn Fn() -> Vec<Check>| {
        if wanted(g) {
            eprintln!("oca-qualify: {label}...");
            checks.extend(run());
        }
    };
    group(Group::Fs, "store filesystems", &|| {
        qualify::fs::checks(&cfg.stores, &cfg.filesystems)
    });
    group(Group::Disk, "disks (io_uring, O_DIRECT)", &|| {
        cfg.stores
            .iter()
            .flat_map(|s| qualify::disk::checks(s, &cfg.disk))
            .collect()
    });
    group(Group::Ktls, "kernel TLS", &|| {
        qualify::ktls::checks(&cfg.ktls, daemon)
    });
    group(Group::Net, "network", &|| {
        qualify::net::checks(&cfg.network)
    });
    group(Group::Load, "load (wrk)", &|| {
        qualify::load::checks(&cfg.stores, &cfg.load, daemon)
    });
    print!("{}", report::table(&checks));
    if let Some(path) = &cli.json {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let json = report::json(&checks, host.trim(), kernel.trim());
        let text = serde_json::to_string_pretty(&json).unwrap_or_default() + "\n";
        let written = if path.as_os_str() == "-" {
            print!("{text}");
            Ok(())
        } else {
            std::fs::write(path, text)
        };
        if let Err(e) = written {
            eprintln!("oca-qualify: writing {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if report::passed(&checks) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
