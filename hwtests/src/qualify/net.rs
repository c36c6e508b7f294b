//! Network interface, link and reachability checks, from sysfs and real TCP connections.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use super::config::NetLimits;
use super::report::Check;

fn sysfs(iface: &str, attr: &str) -> Option<String> {
    std::fs::read_to_string(Path::new("/sys/class/net").join(iface).join(attr))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Interfaces to check: the configured ones, or every interface that is up except loopback.
pub fn chosen(limits: &NetLimits) -> Vec<String> {
    if !limits.interfaces.is_empty() {
        return limits.interfaces.clone();
    }
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names.retain(|n| n != "lo" && sysfs(n, "operstate").as_deref() == Some("up"));
    names
}

/// The checks of one interface: link up with carrier, speed, MTU, error counters.
fn interface(iface: &str, limits: &NetLimits) -> Vec<Check> {
    let name = |n: &str| format!("net.{n}[{iface}]");
    let Some(state) = sysfs(iface, "operstate") else {
        return vec![Check::failed(name("link"), "no such interface")];
    };
    let carrier = sysfs(iface, "carrier").as_deref() == Some("1");
    let mut out = vec![Check::verdict(
        name("link"),
        state == "up" && carrier,
        format!(
            "operstate {state}, carrier {}",
            if carrier { "yes" } else { "no" }
        ),
    )];
    let speed = sysfs(iface, "speed")
        .and_then(|s| s.parse::<i64>().ok())
        .filter(|s| *s > 0);
    out.push(match speed {
        Some(s) => Check::measured(
            name("speed"),
            s as f64,
            "Mb/s",
            Some(limits.min_speed_mbps as f64),
            None,
            String::new(),
        ),
        None if limits.allow_unknown_speed => Check::skipped(
            name("speed"),
            "the driver reports no speed (allowed by config)",
        ),
        None => Check::failed(name("speed"), "the driver reports no link speed"),
    });
    let mtu = sysfs(iface, "mtu")
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(0.0);
    out.push(Check::measured(
        name("mtu"),
        mtu,
        "bytes",
        Some(f64::from(limits.min_mtu)),
        None,
        String::new(),
    ));
    let counter = |c: &str| {
        sysfs(iface, &format!("statistics/{c}"))
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let errors = counter("rx_errors") + counter("tx_errors") + counter("rx_crc_errors");
    out.push(Check::measured(
        name("errors"),
        errors as f64,
        "",
        None,
        Some(limits.max_errors as f64),
        "rx_errors + tx_errors + rx_crc_errors since boot".into(),
    ));
    out
}

/// Every network check.
pub fn checks(limits: &NetLimits) -> Vec<Check> {
    let ifaces = chosen(limits);
    let mut out = Vec::new();
    if ifaces.is_empty() {
        out.push(Check::failed(
            "net.interfaces".into(),
            "no interface other than loopback is up",
        ));
    }
    for i in &ifaces {
        out.extend(interface(i, limits));
    }
    for target in &limits.reach {
        let name = format!("net.reach[{target}]");
        let addrs: Vec<_> = match target.to_socket_addrs() {
            Ok(a) => a.collect(),
            Err(e) => {
                out.push(Check::failed(name, format!("cannot resolve: {e}")));
                continue;
            }
        };
        let result = addrs
            .iter()
            .map(|a| TcpStream::connect_timeout(a, Duration::from_secs(3)))
            .find(Result::is_ok);
        out.push(match result {
            Some(_) => Check::verdict(name, true, "TCP connection accepted".into()),
            None => Check::failed(name, format!("no TCP connection to {target} within 3 s")),
        });
    }
    out
}
