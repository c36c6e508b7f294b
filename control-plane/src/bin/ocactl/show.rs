//! `show` and `delete`: one site, appliance or title with what belongs to it, and removing a
//! title. The admin API has list endpoints and no `GET` of a single item (and `DELETE` only for
//! titles), so a `show` fetches the list and picks the item out, then the related lists:
//! a few requests, as an operator would have made them by hand. With `--json`, the API's
//! answers as they came, each under its name (`{"appliance": ..., "inventory": [...]}`).

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{bail, Context, Result};
use control_plane::domain::maintenance::utc;
use oca_protocol::admin::{ApplianceState, Content, Site, Title, Zone};
use serde_json::{json, Value};

use crate::listings::{self, parse};
use crate::table::{age, bits_per_sec, bytes, fields, list, opt, Table};
use crate::{now, print_json, url_segment, Api};

/// The item of list `v` whose `key` is `id`, or an error naming it.
fn pick(v: &Value, key: &str, id: &str, what: &str) -> Result<Value> {
    v.as_array()
        .into_iter()
        .flatten()
        .find(|item| item[key] == id)
        .cloned()
        .with_context(|| format!("no {what} {id}"))
}

/// `ocactl appliance show ID`.
pub fn appliance(api: &Api, id: &str, json: bool) -> Result<()> {
    let state = pick(&api.get("/v1/admin/appliances")?, "id", id, "appliance")?;
    let inventory = api.get(&format!(
        "/v1/admin/appliances/{}/inventory",
        url_segment(id)
    ))?;
    if json {
        return print_json(&json!({"appliance": state, "inventory": inventory}));
    }
    let s: ApplianceState = parse(&state)?;
    let a = &s.appliance;
    let maintenance = s.maintenance.as_ref().map(|w| {
        format!(
            "window {} on {} {}, {} to {}, by {}: {}",
            w.id,
            w.target_kind.as_str(),
            w.target,
            utc(w.start),
            utc(w.end),
            w.created_by,
            w.reason
        )
    });
    print!(
        "{}",
        fields(&[
            ("id", a.id.clone()),
            ("site", a.site.clone()),
            ("url", a.url.clone()),
            ("capacity", bits_per_sec(a.capacity_bps)),
            ("status", s.status.clone()),
            ("serving", listings::serving(&s)),
            (
                "last report",
                match s.last_report {
                    Some(t) => format!("{} ({})", age(now(), Some(t)), utc(t)),
                    None => "never".into(),
                },
            ),
            ("maintenance", opt(maintenance)),
        ])
    );
    println!();
    print_inventory(api, &inventory, true)
}

/// `ocactl appliance inventory ID`.
pub fn inventory(api: &Api, id: &str, json: bool) -> Result<()> {
    let inventory = api.get(&format!(
        "/v1/admin/appliances/{}/inventory",
        url_segment(id)
    ))?;
    if json {
        return print_json(&inventory);
    }
    print_inventory(api, &inventory, false)
}

/// The inventory with each file's rendition from the catalog (`-` for a file the catalog no
/// longer lists: the appliance deletes it when its manifest drops it), after a count as a
/// heading, or, for a listing (`heading` false), with the count on standard error.
fn print_inventory(api: &Api, inventory: &Value, heading: bool) -> Result<()> {
    let ids: Vec<String> = parse(inventory)?;
    let catalog: Vec<Content> = parse(&api.get("/v1/admin/content")?)?;
    let t = Table::of(
        &["CONTENT", "TITLE", "RES", "SIZE"],
        &ids,
        |id| match catalog.iter().find(|c| &c.id == id) {
            Some(c) => vec![
                id.clone(),
                c.title.clone(),
                format!("{}p", c.resolution),
                bytes(c.size),
            ],
            None => vec![id.clone()],
        },
    );
    let total: u64 = catalog
        .iter()
        .filter(|c| ids.contains(&c.id))
        .map(|c| c.size)
        .sum();
    let count = format!(
        "inventory: {} file{}, {}",
        ids.len(),
        if ids.len() == 1 { "" } else { "s" },
        bytes(total)
    );
    if heading {
        println!("{count}");
        print!("{t}");
    } else {
        print!("{t}");
        eprintln!("{count}");
    }
    Ok(())
}

/// `ocactl site show ID`.
pub fn site(api: &Api, id: &str, json: bool) -> Result<()> {
    let site = pick(&api.get("/v1/admin/sites")?, "id", id, "site")?;
    let appliances: Vec<Value> = parse::<Vec<Value>>(&api.get("/v1/admin/appliances")?)?
        .into_iter()
        .filter(|a| a["site"] == id)
        .collect();
    let zones: Vec<Value> = parse::<Vec<Value>>(&api.get("/v1/admin/zones")?)?
        .into_iter()
        .filter(|z| z["site"] == id)
        .collect();
    if json {
        return print_json(&json!({"site": site, "appliances": appliances, "zones": zones}));
    }
    let s: Site = parse(&site)?;
    print!(
        "{}",
        fields(&[
            ("id", s.id.clone()),
            ("kind", s.kind.as_str().into()),
            ("region", s.region.clone()),
            ("parent", opt(s.parent.clone())),
            ("org", opt(s.org.clone())),
            ("allowed prefixes", list(&s.allowed_prefixes)),
        ])
    );
    let apps = Value::Array(appliances);
    println!();
    println!("appliances: {}", apps.as_array().map_or(0, Vec::len));
    print!("{}", listings::appliances(&apps, now())?);
    let zones: Vec<Zone> = parse(&Value::Array(zones))?;
    println!();
    println!("coverage zones: {}", zones.len());
    print!(
        "{}",
        Table::of(&["PREFIX", "COUNTRY"], zones, |z| vec![
            z.prefix.to_string(),
            opt(z.country)
        ])
    );
    Ok(())
}

/// A title's content files, as the catalog lists them.
fn title_content(api: &Api, id: &str) -> Result<Vec<Value>> {
    Ok(parse::<Vec<Value>>(&api.get("/v1/admin/content")?)?
        .into_iter()
        .filter(|c| c["title"] == id)
        .collect())
}

/// `ocactl title show ID`.
pub fn title(api: &Api, id: &str, json: bool) -> Result<()> {
    let title = pick(&api.get("/v1/admin/titles")?, "id", id, "title")?;
    let content = title_content(api, id)?;
    if json {
        return print_json(&json!({"title": title, "content": content}));
    }
    let t: Title = parse(&title)?;
    let files: Vec<Content> = parse(&Value::Array(content))?;
    let total: u64 = files.iter().map(|c| c.size).sum();
    print!(
        "{}",
        fields(&[
            ("id", t.id),
            ("name", t.name),
            ("countries", list(t.countries)),
        ])
    );
    println!();
    println!(
        "content: {} file{}, {}",
        files.len(),
        if files.len() == 1 { "" } else { "s" },
        bytes(total)
    );
    print!("{}", listings::content(files));
    Ok(())
}

/// `ocactl title delete ID [--yes]`: says what goes, asks on a terminal (refuses without
/// `--yes` elsewhere: a script that forgot it deletes nothing), then deletes.
pub fn delete_title(api: &Api, id: &str, yes: bool, json: bool) -> Result<()> {
    if !yes {
        pick(&api.get("/v1/admin/titles")?, "id", id, "title")?;
        let files = title_content(api, id)?.len();
        let what = format!(
            "title {id}, its licences and its {files} content file{} with their origin copies",
            if files == 1 { "" } else { "s" }
        );
        if !std::io::stdin().is_terminal() {
            bail!("would delete {what}: give --yes to delete without asking");
        }
        eprint!("delete {what}? [y/N] ");
        std::io::stderr().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            bail!("not deleted");
        }
    }
    api.delete(&format!("/v1/admin/titles/{}", url_segment(id)))?;
    if !json {
        println!("deleted title {id}");
    }
    Ok(())
}
