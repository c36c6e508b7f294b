//! `ocactl maintenance` and `ocactl audit`: disable an appliance or a site for a while, end or
//! cancel that, list windows, read the audit log. Tables for people, `--json` (ocactl's global
//! flag) for scripts.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use control_plane::domain::maintenance::{parse_utc, utc};
use oca_protocol::admin::{AuditEntry, EndMaintenance, MaintenanceRequest, MaintenanceWindow};
use serde_json::Value;

use crate::table::Table;
use crate::{print_json, print_table, query, Api};

#[derive(Subcommand)]
pub enum MaintenanceCmd {
    /// Disables an appliance or a whole site: now for --for (default 2h), or from --from until
    /// --until; at most 48 hours.
    Start {
        #[command(flatten)]
        target: Target,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
        /// How long from now: 90s, 30m, 2h, 1h30m, 2d (at most 48h).
        #[arg(long = "for", value_name = "DURATION", conflicts_with_all = ["from", "until"])]
        duration: Option<String>,
        /// Start: `YYYY-MM-DDTHH:MM[:SS]Z`, unix seconds, or +DURATION from now (default now).
        #[arg(long, value_name = "TIME", requires = "until")]
        from: Option<String>,
        /// End, as --from.
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
    },
    /// Lists windows scheduled or in force (--all: ended ones too, newest first).
    List {
        #[arg(long)]
        all: bool,
        /// Most windows to list (default 100, at most 1000).
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Ends a window in force now (the appliance serves again), or cancels a scheduled one.
    End {
        /// The window id.
        id: i64,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
}

/// An appliance or a site.
#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct Target {
    /// The appliance to disable.
    #[arg(long)]
    appliance: Option<String>,
    /// The site whose appliances to disable.
    #[arg(long)]
    site: Option<String>,
}

/// `ocactl audit`: the audit log.
#[derive(Args)]
pub struct AuditCmd {
    /// Only entries on this appliance or site (an id, or appliance:ID / site:ID).
    #[arg(long)]
    target: Option<String>,
    /// Most entries to list (default 100, at most 1000).
    #[arg(long)]
    limit: Option<usize>,
}

/// Runs a `maintenance` subcommand; `json`: the API's answers as JSON (`--json`).
pub fn run(api: &Api, cmd: MaintenanceCmd, json: bool) -> Result<()> {
    match cmd {
        MaintenanceCmd::Start {
            target,
            reason,
            duration,
            from,
            until,
        } => {
            let now = now();
            let (duration_secs, start, end) = match (duration, from, until) {
                (Some(d), _, _) => (Some(parse_duration(&d)?), None, None),
                (None, from, Some(until)) => {
                    let start = from.map_or(Ok(now), |f| parse_time(&f, now))?;
                    (None, Some(start), Some(parse_time(&until, now)?))
                }
                (None, _, None) => (None, None, None),
            };
            let req = MaintenanceRequest {
                appliance: target.appliance,
                site: target.site,
                reason: Some(reason),
                duration_secs,
                start,
                end,
            };
            let w = api.post("/v1/admin/maintenance", &req)?;
            show_window(w, json)
        }
        MaintenanceCmd::List { all, limit } => {
            let q = query(&[
                ("all", all.then(|| "1".to_string())),
                ("limit", limit.map(|l| l.to_string())),
            ]);
            let v = api.get(&format!("/v1/admin/maintenance{q}"))?;
            if json {
                return print_json(&v);
            }
            let windows: Vec<MaintenanceWindow> = serde_json::from_value(v)?;
            print_table(Table::of(
                &["ID", "TARGET", "PHASE", "START", "END", "BY", "REASON"],
                &windows,
                |w| {
                    vec![
                        w.id.to_string(),
                        format!("{}:{}", w.target_kind.as_str(), w.target),
                        phase(w),
                        utc(w.start),
                        utc(w.ended_at.map_or(w.end, |e| e.min(w.end))),
                        w.created_by.clone(),
                        w.reason.clone(),
                    ]
                },
            ));
            Ok(())
        }
        MaintenanceCmd::End { id, reason } => {
            let body = EndMaintenance {
                reason: Some(reason),
            };
            let w = api.post(&format!("/v1/admin/maintenance/{id}/end"), &body)?;
            show_window(w, json)
        }
    }
}

/// Runs `audit`.
pub fn audit(api: &Api, cmd: AuditCmd, json: bool) -> Result<()> {
    let q = query(&[
        ("target", cmd.target),
        ("limit", cmd.limit.map(|l| l.to_string())),
    ]);
    let v = api.get(&format!("/v1/admin/audit{q}"))?;
    if json {
        return print_json(&v);
    }
    let entries: Vec<AuditEntry> = serde_json::from_value(v)?;
    print_table(Table::of(
        &["AT", "ACTOR", "ACTION", "TARGET", "REASON"],
        &entries,
        |e| {
            vec![
                utc(e.at),
                e.actor.clone(),
                e.action.clone(),
                e.target.clone(),
                e.details["reason"].as_str().unwrap_or("").to_string(),
            ]
        },
    ));
    Ok(())
}

fn show_window(v: Value, json: bool) -> Result<()> {
    if json {
        return print_json(&v);
    }
    let w: MaintenanceWindow = serde_json::from_value(v)?;
    let target = format!("{} {}", w.target_kind.as_str(), w.target);
    match (&w.ended_by, w.ended_at) {
        (Some(by), Some(at)) => println!(
            "window {}: {target}: {} at {} by {by}: {}",
            w.id,
            phase(&w),
            utc(at),
            w.end_reason.as_deref().unwrap_or("")
        ),
        _ => println!(
            "window {}: {target} disabled from {} until {} ({}): {}",
            w.id,
            utc(w.start),
            utc(w.end),
            phase(&w),
            w.reason
        ),
    }
    Ok(())
}

fn phase(w: &MaintenanceWindow) -> String {
    w.phase
        .and_then(|p| serde_json::to_value(p).ok())
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn now() -> i64 {
    oca_service::unix_now() as i64
}

/// `90s`, `30m`, `2h`, `1h30m`, `2d` as seconds.
pub fn parse_duration(text: &str) -> Result<i64> {
    let bad = || format!("{text:?} is not a duration (90s, 30m, 2h, 1h30m, 2d)");
    let mut total: i64 = 0;
    let mut digits = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => bail!(bad()),
        };
        let n: i64 = digits.parse().with_context(bad)?;
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .with_context(bad)?;
        digits.clear();
    }
    if !digits.is_empty() || total == 0 {
        bail!(bad());
    }
    Ok(total)
}

/// `YYYY-MM-DDTHH:MM[:SS]Z`, unix seconds, or `+DURATION` from `now`.
pub fn parse_time(text: &str, now: i64) -> Result<i64> {
    if let Some(d) = text.strip_prefix('+') {
        return Ok(now + parse_duration(d)?);
    }
    if let Ok(secs) = text.parse::<i64>() {
        return Ok(secs);
    }
    parse_utc(text).with_context(|| {
        format!("{text:?} is not a time (2025-06-01T22:00Z, unix seconds, or +2h from now)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_times_parse() {
        assert_eq!(parse_duration("90s").unwrap(), 90);
        assert_eq!(parse_duration("1h30m").unwrap(), 5400);
        assert_eq!(parse_duration("2d").unwrap(), 172_800);
        for bad in ["", "2", "h", "2x", "0s", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_time("+2h", 100).unwrap(), 7300);
        assert_eq!(parse_time("1700000000", 0).unwrap(), 1_700_000_000);
        assert_eq!(parse_time("1970-01-01T01:00Z", 0).unwrap(), 3600);
        assert!(parse_time("tomorrow", 0).is_err());
    }
}
