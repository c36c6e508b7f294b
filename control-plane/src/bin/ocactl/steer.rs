//! `ocactl steer CLIENT_IP (--content ID | --title T) [--explain]`: the steering decision the
//! control plane would make for a client now (`GET /v1/steer`), best first; with `--explain`,
//! every candidate appliance with the route it matched and the API's reason it was ranked where
//! it is or left out (`explain=1`).

use std::net::IpAddr;

use anyhow::{bail, Result};
use clap::Args;
use oca_protocol::admin::Content;
use oca_protocol::steering::{Explanation, MatchedRoute, RouteSource, SteerAnswer};
use serde_json::Value;

use crate::listings::parse;
use crate::table::{opt, Table};
use crate::{print_json, query, Api};

/// `ocactl steer`.
#[derive(Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["content", "title"])))]
pub struct SteerArgs {
    /// The client's address.
    client_ip: IpAddr,
    /// A content file (one rendition).
    #[arg(long, value_name = "ID")]
    content: Option<String>,
    /// Every rendition of this title, one decision each.
    #[arg(long, value_name = "TITLE")]
    title: Option<String>,
    /// Every candidate appliance and why it was ranked or left out.
    #[arg(long)]
    explain: bool,
}

/// Runs `steer`.
pub fn run(api: &Api, args: SteerArgs, json: bool) -> Result<()> {
    let ids = match (args.content, args.title) {
        (Some(c), _) => vec![c],
        (None, Some(t)) => {
            let all: Vec<Content> = parse(&api.get("/v1/admin/content")?)?;
            let mut files: Vec<Content> = all.into_iter().filter(|c| c.title == t).collect();
            if files.is_empty() {
                bail!("title {t} has no content files (ocactl content list)");
            }
            files.sort_by_key(|c| std::cmp::Reverse(c.resolution));
            files.into_iter().map(|c| c.id).collect()
        }
        (None, None) => bail!("give --content or --title"),
    };
    let mut answers = Vec::new();
    for id in &ids {
        let q = query(&[
            ("client_ip", Some(args.client_ip.to_string())),
            ("content_id", Some(id.clone())),
            ("explain", args.explain.then(|| "1".to_string())),
        ]);
        answers.push(api.get(&format!("/v1/steer{q}"))?);
    }
    if json {
        // One answer as the API gave it; a title's as a list of them.
        return match <[Value; 1]>::try_from(answers) {
            Ok([one]) => print_json(&one),
            Err(many) => print_json(&Value::Array(many)),
        };
    }
    for (n, v) in answers.iter().enumerate() {
        if n > 0 {
            println!();
        }
        let a: SteerAnswer = parse(v)?;
        print!("{}", render(&a, args.explain));
    }
    Ok(())
}

/// One decision in words, then its table.
fn render(a: &SteerAnswer, explain: bool) -> String {
    let chosen: Vec<&str> = a.appliances.iter().map(|s| s.oca_id.as_str()).collect();
    let mut out = match chosen.len() {
        0 => format!("{} for {}: no appliance\n", a.content_id, a.client_ip),
        n => format!(
            "{} for {}: {n} appliance{} ({})\n",
            a.content_id,
            a.client_ip,
            if n == 1 { "" } else { "s" },
            chosen.join(", ")
        ),
    };
    if !explain {
        if !chosen.is_empty() {
            let t = Table::of(
                &["RANK", "APPLIANCE", "SITE", "URL"],
                a.appliances.iter().enumerate(),
                |(i, s)| {
                    vec![
                        (i + 1).to_string(),
                        s.oca_id.clone(),
                        s.site.clone(),
                        s.url.clone(),
                    ]
                },
            );
            out.push_str(&t.to_string());
        }
        return out;
    }
    if a.explain.is_empty() {
        out.push_str(
            "no candidates: no appliance's route and no coverage zone covers this client, so it \
             has no site, and no tier or region to fall back to\n",
        );
        return out;
    }
    let mut rows: Vec<(usize, usize, &Explanation)> = a
        .explain
        .iter()
        .enumerate()
        .map(|(i, e)| (order(a, e), i, e))
        .collect();
    rows.sort_by_key(|(o, i, _)| (*o, *i));
    let t = Table::of(
        &["RANK", "APPLIANCE", "SITE", "ROUTE", "REASON"],
        rows,
        |(_, _, e)| {
            vec![
                rank(a, e).map_or_else(String::new, |r| r.to_string()),
                e.oca_id.clone(),
                e.site.clone(),
                opt(e.route.as_ref().map(route)),
                e.reason.clone(),
            ]
        },
    );
    out.push_str(&t.to_string());
    out
}

/// The appliance's place in the answer (1 = first), if it is in it.
fn rank(a: &SteerAnswer, e: &Explanation) -> Option<usize> {
    if !e.kept {
        return None;
    }
    a.appliances
        .iter()
        .position(|s| s.oca_id == e.oca_id)
        .map(|p| p + 1)
}

/// Rows in the order an operator reads them: the answer's appliances by rank, then eligible ones
/// past the answer's length, then the dropped ones.
fn order(a: &SteerAnswer, e: &Explanation) -> usize {
    match rank(a, e) {
        Some(r) => r,
        None if e.reason.starts_with("eligible") => usize::MAX - 1,
        None => usize::MAX,
    }
}

/// A matched route in one cell: `198.51.100.0/24 bgp via 192.0.2.1, 2 AS, igp, MED 10`.
fn route(r: &MatchedRoute) -> String {
    let source = match r.source {
        RouteSource::Bgp => "bgp",
        RouteSource::Static => "static",
        RouteSource::Zone => "zone",
    };
    let mut s = format!("{} {source}", r.prefix);
    if let Some(n) = r.neighbor {
        s.push_str(&format!(" via {n}"));
    }
    if r.source == RouteSource::Bgp {
        s.push_str(&format!(", {} AS, {}", r.as_path_len, r.origin.as_str()));
        if let Some(m) = r.med {
            s.push_str(&format!(", MED {m}"));
        }
        if let Some(l) = r.local_pref {
            s.push_str(&format!(", LOCAL_PREF {l}"));
        }
    }
    if r.stale {
        s.push_str(", stale");
    }
    s
}
