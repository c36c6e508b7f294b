//! tls-check: an HTTPS round trip against oca-daemon that checks every byte, for kernel-TLS
//! qualification (in a VM with Debian's kernel, or on a new appliance).
//!
//! ```text
//! tls-check make-store DIR                      # writes the check files into a store
//! tls-check run ADDR CA_PEM ADMIN_ADDR          # downloads, verifies, prints a VERDICT line
//! ```
//!
//! `run` fetches the check files over TLS 1.3 (each cipher) and TLS 1.2, refreshes the TLS 1.3
//! keys in the middle of a long download (resuming with Range if the server closes, as a player
//! would), then reads the daemon's metrics and `/proc/net/tls_stat` to say whether the kernel
//! did the records. Exit status 0 only when every byte matched and kTLS carried the TLS 1.3
//! connections.

use std::path::Path;

use anyhow::{bail, Result};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["make-store", dir] => hwtests::tls_round_trip::make_store(Path::new(dir)),
        ["run", addr, ca, admin] => run(addr, ca, admin),
        _ => {
            eprintln!("usage: tls-check make-store DIR | tls-check run ADDR CA_PEM ADMIN_ADDR");
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        println!("VERDICT FAIL {e:#}");
        std::process::exit(1);
    }
}

fn run(addr: &str, ca: &str, admin: &str) -> Result<()> {
    use hwtests::tls_round_trip as rt;
    let r = rt::run(addr.parse()?, rt::roots(Path::new(ca))?, admin)?;
    println!(
        "tls-check: handshakes ktls={} userspace={}; /proc/net/tls_stat TlsTxSw={} TlsRxSw={}",
        r.ktls_handshakes, r.userspace_handshakes, r.tls_stat_tx, r.tls_stat_rx
    );
    if !r.kernel_carried() {
        bail!(
            "kernel TLS did not carry the TLS 1.3 connections (ktls={}, TlsTxSw={})",
            r.ktls_handshakes,
            r.tls_stat_tx
        );
    }
    println!(
        "VERDICT PASS bytes={} ktls_handshakes={} userspace_handshakes={} tls_stat_tx={} tls_stat_rx={} key_update=\"{}\"",
        r.bytes, r.ktls_handshakes, r.userspace_handshakes, r.tls_stat_tx, r.tls_stat_rx, r.key_update
    );
    Ok(())
}
