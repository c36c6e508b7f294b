//! ocactl: the control plane's admin CLI. Listings print a table (`table.rs`, columns in
//! `listings.rs`) or, with `--json`, the API's JSON as it came; commands that change something
//! print the API's answer as JSON (an appliance's credential is in it, once).

#![forbid(unsafe_code)]

#[path = "ocactl/listings.rs"]
mod listings;
#[path = "ocactl/maintenance.rs"]
mod maintenance;
#[path = "ocactl/s3_upload.rs"]
mod s3_upload;
#[path = "ocactl/show.rs"]
mod show;
#[path = "ocactl/sign_url.rs"]
mod sign_url;
#[path = "ocactl/steer.rs"]
mod steer;
#[path = "ocactl/table.rs"]
mod table;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use oca_protocol::accounts::{NewUser, Organisation, Role, SiteOrg};
use oca_protocol::admin::{
    Appliance, Content, Site, SiteKind, Subscriber, Title, TokenRequest, Zone,
};
use oca_protocol::prefix::Prefix;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Administers an Open Connect control plane: sites, appliances, zones, titles, content,
/// subscribers and URL-signing keys; shows what the appliances hear over BGP and how a client
/// is steered; signs content URLs. Listings print tables, or the API's JSON with --json.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Control-plane base URL.
    #[arg(long, env = "OCA_CP_URL", default_value = "http://127.0.0.1:7070")]
    url: String,
    /// PEM CA certificate(s) the control plane's certificate is checked against, besides the
    /// system's roots (which are always trusted).
    #[arg(
        long,
        visible_alias = "ca-file",
        env = "OCA_CP_CA",
        value_name = "FILE"
    )]
    ca: Option<PathBuf>,
    /// Print the API's JSON as it came (pretty) instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Admin bearer token (or OCA_CP_TOKEN).
    #[arg(
        long,
        env = "OCA_CP_TOKEN",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    token: Option<String>,
    /// File holding the admin token (the control plane writes `<db>.admin-token`).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Sites (ISP or IXP).
    #[command(subcommand, alias = "sites")]
    Site(SiteCmd),
    /// Appliances.
    #[command(subcommand, alias = "appliances")]
    Appliance(ApplianceCmd),
    /// Coverage zones: prefix → site and/or country.
    #[command(subcommand, alias = "zones")]
    Zone(ZoneCmd),
    /// Titles and where they are licensed.
    #[command(subcommand, alias = "titles")]
    Title(TitleCmd),
    /// Content files (renditions).
    #[command(subcommand)]
    Content(ContentCmd),
    /// Subscribers and their plans.
    #[command(subcommand, alias = "subscribers")]
    Subscriber(SubscriberCmd),
    /// URL-signing keys.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// What appliances hear over BGP: sessions, routes, sites that disagree.
    #[command(subcommand)]
    Bgp(BgpCmd),
    /// Partner organisations (they own sites; their users see them in the portal).
    #[command(subcommand, alias = "orgs")]
    Org(OrgCmd),
    /// Portal users.
    #[command(subcommand, alias = "users")]
    User(UserCmd),
    /// Maintenance windows: disable an appliance or a site for a while, end or cancel it.
    #[command(subcommand)]
    Maintenance(maintenance::MaintenanceCmd),
    /// The audit log: who changed what, when and why.
    Audit(maintenance::AuditCmd),
    /// Traffic history of an appliance or a site: buckets of bytes/s, connections, requests/s,
    /// bytes served (and misses, for a site), as a table, JSON or CSV.
    History(HistoryArgs),
    /// How the control plane steers a client now: the appliances it would get for a content
    /// file (or each rendition of a title), best first; --explain: every candidate and why.
    Steer(steer::SteerArgs),
    /// Prints a signed content URL for an appliance (`curl`, `wrk`), signed with a key from a
    /// keys file (as `oca-daemon --keys` reads it). Needs no admin token.
    SignUrl(sign_url::SignUrlArgs),
    /// Operational issues the live checks raised (open ones; --all: cleared ones too).
    Issues {
        /// Cleared issues too.
        #[arg(long)]
        all: bool,
        /// One appliance's only.
        #[arg(long)]
        appliance: Option<String>,
        /// One site's only.
        #[arg(long)]
        site: Option<String>,
        /// Most issues to list, newest first (default 1000).
        #[arg(long)]
        limit: Option<usize>,
    },
}

#[derive(Subcommand)]
enum OrgCmd {
    /// Adds an organisation.
    Add {
        id: String,
        /// Its name as the portal shows it.
        #[arg(long)]
        name: String,
    },
    /// Lists organisations.
    List,
}

#[derive(Subcommand)]
enum UserCmd {
    /// Adds a portal user. The password (12 to 1024 bytes) is read from --password-file, or
    /// else from standard input (its first line), never from the command line.
    Add {
        /// Login name, e.g. an email address.
        login: String,
        /// The partner organisation the user works for.
        #[arg(
            long,
            conflicts_with = "operator",
            required_unless_present = "operator"
        )]
        org: Option<String>,
        /// An operator, who sees every organisation.
        #[arg(long)]
        operator: bool,
        /// File whose first line is the password.
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
    /// Lists portal users.
    List,
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("of").required(true).args(["appliance", "site"])))]
struct HistoryArgs {
    /// This appliance's history.
    #[arg(long)]
    appliance: Option<String>,
    /// This site's history (`-`: misses of clients in no site).
    #[arg(long, allow_hyphen_values = true)]
    site: Option<String>,
    /// From (unix seconds; default a day before --to).
    #[arg(long)]
    from: Option<i64>,
    /// To (unix seconds, excluded; default now).
    #[arg(long)]
    to: Option<i64>,
    /// Print the server's CSV (a header row, then one row a bucket) instead of a table.
    #[arg(long, conflicts_with = "json")]
    csv: bool,
}

#[derive(Subcommand)]
enum BgpCmd {
    /// Each appliance's BGP sessions as last reported (state, since, prefixes, flaps, error).
    Sessions {
        /// One appliance only.
        #[arg(long)]
        appliance: Option<String>,
    },
    /// The route explorer: who hears PREFIX, with its attributes, the route steering prefers
    /// first (every route when no prefix is given).
    Routes {
        prefix: Option<Prefix>,
        /// One appliance's routes only.
        #[arg(long)]
        appliance: Option<String>,
        /// Most routes to list (default 1000).
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Sites whose appliances hear different prefixes, with the prefixes that differ.
    Inconsistent,
}

#[derive(Subcommand)]
enum SiteCmd {
    /// Adds a site.
    Add {
        id: String,
        #[arg(long, value_parser = ["isp", "ixp"])]
        kind: String,
        #[arg(long)]
        region: String,
        /// Tier site this one fills from.
        #[arg(long)]
        parent: Option<String>,
        /// A route its appliances may report (repeat); reports outside them are dropped.
        #[arg(long = "allowed-prefix", value_name = "CIDR")]
        allowed_prefixes: Vec<Prefix>,
        /// The organisation owning it.
        #[arg(long)]
        org: Option<String>,
    },
    /// Sets the organisation owning a site.
    SetOrg {
        id: String,
        /// The organisation (its users see the site in the portal).
        org: String,
    },
    /// Replaces the routes a site's appliances may report.
    Allow {
        id: String,
        /// The prefixes (none: every reported prefix is dropped).
        prefixes: Vec<Prefix>,
    },
    /// Lists sites.
    List,
    /// A site, its appliances and the coverage zones naming it.
    Show { id: String },
}

#[derive(Subcommand)]
enum ApplianceCmd {
    /// Registers an appliance and prints its credential (shown this once).
    Add {
        id: String,
        #[arg(long)]
        site: String,
        /// Public base URL, e.g. `http://oca1.isp.example`
        #[arg(long)]
        url: String,
        #[arg(long, value_name = "BITS_PER_SEC")]
        capacity_bps: u64,
    },
    /// Lists appliances with their status, serving state and last report.
    List,
    /// An appliance: its state, maintenance window and the content it reported holding.
    Show { id: String },
    /// The content an appliance reported holding.
    Inventory { id: String },
}

#[derive(Subcommand)]
enum ZoneCmd {
    /// Adds or replaces a zone.
    Add {
        prefix: Prefix,
        #[arg(long)]
        site: Option<String>,
        #[arg(long)]
        country: Option<String>,
    },
    /// Lists zones.
    List,
}

#[derive(Subcommand)]
enum TitleCmd {
    /// Adds a title.
    Add {
        id: String,
        #[arg(long)]
        name: String,
        /// Countries licensed, comma-separated ISO codes (NL,BE).
        #[arg(long, value_delimiter = ',')]
        countries: Vec<String>,
    },
    /// Lists titles.
    List,
    /// A title and its content files.
    Show { id: String },
    /// Removes a title, its licences, its content and their origin copies (appliances delete
    /// theirs when their manifests drop them). Asks first on a terminal; --yes otherwise.
    Delete {
        id: String,
        /// Do not ask.
        #[arg(long, short)]
        yes: bool,
    },
}

#[derive(Subcommand)]
enum ContentCmd {
    /// Registers a content file with its size and SHA-256, after copying FILE into the embedded
    /// origin (--origin-dir, on the control plane's machine), uploading it to an S3 bucket
    /// (--s3), or with an HTTP origin that serves it (--origin-url; FILE is then optional: the
    /// URL is read to hash it).
    Add {
        #[arg(required_unless_present = "origin_url")]
        file: Option<PathBuf>,
        #[arg(long)]
        title: String,
        /// Picture height in lines.
        #[arg(long)]
        resolution: u32,
        #[arg(long)]
        bitrate_kbps: u32,
        /// Content id (default: the file name).
        #[arg(long)]
        id: Option<String>,
        #[arg(long, default_value = "video/mp4")]
        content_type: String,
        /// The control plane's origin directory.
        #[arg(
            long,
            value_name = "DIR",
            required_unless_present_any = ["s3", "origin_url"],
            conflicts_with_all = ["s3", "origin_url"]
        )]
        origin_dir: Option<PathBuf>,
        /// Register the file as served by this HTTP(S) origin URL (no query: the control plane
        /// appends its signed query for the fill agents). Without FILE, ocactl downloads it to
        /// hash it; with FILE, it hashes FILE (the same bytes, put there by other means).
        #[arg(long, value_name = "URL", conflicts_with = "s3")]
        origin_url: Option<String>,
        /// Upload to this S3 object instead (`s3://bucket/key`; a key ending in `/` gets the
        /// content id appended) and register it as the origin.
        #[arg(long, value_name = "S3_URL", requires = "s3_config")]
        s3: Option<String>,
        /// TOML file whose `[[s3]]` tables name the bucket's endpoint and credentials (the
        /// control plane's configuration file will do).
        #[arg(long, env = "OCA_S3_CONFIG", value_name = "FILE")]
        s3_config: Option<PathBuf>,
        /// Part size of uploads, MiB: a larger file is uploaded in parts (default 64, at least 5).
        #[arg(long, value_name = "MIB", default_value_t = 64)]
        s3_part_mib: u64,
    },
    /// Lists content.
    List {
        /// One title's only.
        #[arg(long)]
        title: Option<String>,
    },
}

#[derive(Subcommand)]
enum SubscriberCmd {
    /// Adds or replaces a subscriber.
    Add {
        id: String,
        #[arg(long)]
        max_resolution: u32,
        #[arg(long)]
        max_streams: u32,
        /// Create the account inactive.
        #[arg(long)]
        inactive: bool,
    },
    /// Issues a player token for a subscriber (prints it with its expiry).
    Token {
        id: String,
        /// Lifetime in seconds (default one day, at most 30 days).
        #[arg(long)]
        ttl_secs: Option<i64>,
    },
    /// Lists subscribers.
    List,
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Makes a new current key; the previous one stays valid.
    Rotate,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ocactl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub struct Api {
    base: String,
    token: String,
    http: reqwest::blocking::Client,
}

impl Api {
    /// The client `cli` describes: its URL, its CA file besides the system's roots, its token.
    fn of(cli: &Cli) -> Result<Api> {
        let token = match (&cli.token, &cli.token_file) {
            (Some(t), _) => t.clone(),
            (None, Some(f)) => std::fs::read_to_string(f)
                .with_context(|| format!("reading {}", f.display()))?
                .trim()
                .to_string(),
            (None, None) => bail!("no admin token: give --token, OCA_CP_TOKEN or --token-file"),
        };
        let mut http = reqwest::blocking::Client::builder();
        if let Some(ca) = &cli.ca {
            let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
            for c in reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("{}: not PEM certificates", ca.display()))?
            {
                http = http.add_root_certificate(c);
            }
        }
        Ok(Api {
            base: cli.url.clone(),
            token,
            http: http.build()?,
        })
    }

    fn call<B: Serialize>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<Value> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base.trim_end_matches('/')))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .with_context(|| format!("reaching the control plane at {}", self.base))?;
        let status = resp.status();
        let value: Value = resp.json().unwrap_or(Value::Null);
        if !status.is_success() {
            let code = value["code"].as_str().unwrap_or("error");
            let msg = value["message"].as_str().unwrap_or("");
            bail!("{status}: {code}: {msg}");
        }
        Ok(value)
    }

    /// A GET answered with text (CSV), errors as [`Api::call`] reports them.
    fn get_text(&self, path: &str) -> Result<String> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base.trim_end_matches('/')))
            .bearer_auth(&self.token)
            .send()
            .with_context(|| format!("reaching the control plane at {}", self.base))?;
        let status = resp.status();
        let text = resp.text()?;
        if !status.is_success() {
            let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let code = value["code"].as_str().unwrap_or("error");
            let msg = value["message"].as_str().unwrap_or("");
            bail!("{status}: {code}: {msg}");
        }
        Ok(text)
    }

    fn get(&self, path: &str) -> Result<Value> {
        self.call::<()>(reqwest::Method::GET, path, None)
    }

    fn post<B: Serialize>(&self, path: &str, body: &B) -> Result<Value> {
        self.call(reqwest::Method::POST, path, Some(body))
    }

    fn put<B: Serialize>(&self, path: &str, body: &B) -> Result<Value> {
        self.call(reqwest::Method::PUT, path, Some(body))
    }

    fn delete(&self, path: &str) -> Result<Value> {
        self.call::<()>(reqwest::Method::DELETE, path, None)
    }
}

/// Prints JSON, pretty.
fn print_json(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Prints a table.
fn print_table(t: table::Table) {
    print!("{t}");
}

/// Prints a listing: the API's JSON as it came with `--json`, otherwise the table `table` makes
/// of it.
fn listing(json: bool, v: Value, table: impl FnOnce(&Value) -> Result<table::Table>) -> Result<()> {
    if json {
        print_json(&v)
    } else {
        print_table(table(&v)?);
        Ok(())
    }
}

/// [`listing`] with a note (more rows than listed, a summary), on standard error so the table
/// stays the only thing on standard output.
fn listing_noted(
    json: bool,
    v: Value,
    table: impl FnOnce(&Value) -> Result<(table::Table, Option<String>)>,
) -> Result<()> {
    if json {
        return print_json(&v);
    }
    let (t, note) = table(&v)?;
    print_table(t);
    if let Some(n) = note {
        eprintln!("{n}");
    }
    Ok(())
}

fn now() -> i64 {
    oca_service::unix_now() as i64
}

fn run(cli: Cli) -> Result<()> {
    let json = cli.json;
    // Offline: no token, no request.
    let cli = match cli.command {
        Command::SignUrl(args) => return sign_url::run(args, json),
        _ => cli,
    };
    let api = Api::of(&cli)?;
    let out = match cli.command {
        Command::SignUrl(_) => unreachable!("handled above"),
        Command::Site(SiteCmd::Add {
            id,
            kind,
            region,
            parent,
            allowed_prefixes,
            org,
        }) => {
            let kind: SiteKind = kind.parse()?;
            api.post(
                "/v1/admin/sites",
                &Site {
                    id,
                    kind,
                    region,
                    parent,
                    allowed_prefixes,
                    org,
                },
            )?
        }
        Command::Site(SiteCmd::Allow { id, prefixes }) => {
            api.put(&format!("/v1/admin/sites/{id}/allowed_prefixes"), &prefixes)?
        }
        Command::Site(SiteCmd::List) => {
            return listing(json, api.get("/v1/admin/sites")?, listings::sites)
        }
        Command::Site(SiteCmd::Show { id }) => return show::site(&api, &id, json),
        Command::Appliance(ApplianceCmd::Add {
            id,
            site,
            url,
            capacity_bps,
        }) => api.post(
            "/v1/admin/appliances",
            &Appliance {
                id,
                site,
                url,
                capacity_bps,
            },
        )?,
        Command::Appliance(ApplianceCmd::List) => {
            return listing(json, api.get("/v1/admin/appliances")?, |v| {
                listings::appliances(v, now())
            })
        }
        Command::Appliance(ApplianceCmd::Show { id }) => return show::appliance(&api, &id, json),
        Command::Appliance(ApplianceCmd::Inventory { id }) => {
            return show::inventory(&api, &id, json)
        }
        Command::Zone(ZoneCmd::Add {
            prefix,
            site,
            country,
        }) => api.post(
            "/v1/admin/zones",
            &Zone {
                prefix,
                site,
                country,
            },
        )?,
        Command::Zone(ZoneCmd::List) => {
            return listing(json, api.get("/v1/admin/zones")?, listings::zones)
        }
        Command::Title(TitleCmd::Add {
            id,
            name,
            countries,
        }) => api.post(
            "/v1/admin/titles",
            &Title {
                id,
                name,
                countries,
            },
        )?,
        Command::Title(TitleCmd::List) => {
            return listing(json, api.get("/v1/admin/titles")?, listings::titles)
        }
        Command::Title(TitleCmd::Show { id }) => return show::title(&api, &id, json),
        Command::Title(TitleCmd::Delete { id, yes }) => {
            return show::delete_title(&api, &id, yes, json)
        }
        Command::Content(ContentCmd::Add {
            file,
            title,
            resolution,
            bitrate_kbps,
            id,
            content_type,
            origin_dir,
            origin_url,
            s3,
            s3_config,
            s3_part_mib,
        }) => {
            let rendition = Content {
                id: String::new(),
                title,
                resolution,
                bitrate_kbps,
                size: 0,
                sha256: String::new(),
                content_type,
                origin: "embedded".into(),
            };
            match (file, s3, s3_config, origin_dir, origin_url) {
                (file, _, _, _, Some(url)) => {
                    add_content_url(&api, file.as_deref(), id, &url, rendition)?
                }
                (Some(file), Some(s3), Some(config), _, None) => {
                    let upload = S3Upload {
                        target: &s3,
                        config: &config,
                        part_mib: s3_part_mib,
                    };
                    add_content_s3(&api, &file, id, &upload, rendition)?
                }
                (Some(file), _, _, Some(dir), None) => {
                    add_content(&api, &file, id, &dir, rendition)?
                }
                _ => bail!(
                    "give FILE with --origin-dir, or with --s3 and --s3-config; or --origin-url"
                ),
            }
        }
        Command::Content(ContentCmd::List { title }) => {
            let v = api.get("/v1/admin/content")?;
            let v = match title {
                Some(t) => Value::Array(
                    v.as_array()
                        .into_iter()
                        .flatten()
                        .filter(|c| c["title"] == t.as_str())
                        .cloned()
                        .collect(),
                ),
                None => v,
            };
            return listing(json, v, |v| Ok(listings::content(listings::parse(v)?)));
        }
        Command::Subscriber(SubscriberCmd::Add {
            id,
            max_resolution,
            max_streams,
            inactive,
        }) => api.post(
            "/v1/admin/subscribers",
            &Subscriber {
                id,
                active: !inactive,
                max_resolution,
                max_streams,
            },
        )?,
        Command::Subscriber(SubscriberCmd::Token { id, ttl_secs }) => api.post(
            &format!("/v1/admin/subscribers/{id}/tokens"),
            &TokenRequest { ttl_secs },
        )?,
        Command::Subscriber(SubscriberCmd::List) => {
            return listing(
                json,
                api.get("/v1/admin/subscribers")?,
                listings::subscribers,
            )
        }
        Command::Keys(KeysCmd::Rotate) => {
            api.post("/v1/admin/keys/rotate", &serde_json::Map::new())?
        }
        Command::Bgp(BgpCmd::Sessions { appliance }) => {
            let q = query(&[("oca_id", appliance)]);
            return listing(json, api.get(&format!("/v1/admin/bgp/sessions{q}"))?, |v| {
                listings::bgp_sessions(v, now())
            });
        }
        Command::Bgp(BgpCmd::Routes {
            prefix,
            appliance,
            limit,
        }) => {
            let q = query(&[
                ("prefix", prefix.map(|p| p.to_string())),
                ("oca_id", appliance),
                ("limit", limit.map(|l| l.to_string())),
            ]);
            return listing_noted(
                json,
                api.get(&format!("/v1/admin/bgp/routes{q}"))?,
                listings::bgp_routes,
            );
        }
        Command::Bgp(BgpCmd::Inconsistent) => {
            return listing_noted(
                json,
                api.get("/v1/admin/bgp/inconsistent")?,
                listings::bgp_inconsistent,
            )
        }
        Command::Site(SiteCmd::SetOrg { id, org }) => api.put(
            &format!("/v1/admin/sites/{id}/org"),
            &SiteOrg { org: Some(org) },
        )?,
        Command::Org(OrgCmd::Add { id, name }) => {
            api.post("/v1/admin/orgs", &Organisation { id, name })?
        }
        Command::Org(OrgCmd::List) => {
            return listing(json, api.get("/v1/admin/orgs")?, listings::orgs)
        }
        Command::User(UserCmd::Add {
            login,
            org,
            operator,
            password_file,
        }) => {
            let user = NewUser {
                login,
                role: if operator {
                    Role::Operator
                } else {
                    Role::Partner
                },
                org,
                password: read_password(password_file.as_deref())?,
            };
            api.post("/v1/admin/users", &user)?
        }
        Command::User(UserCmd::List) => {
            return listing(json, api.get("/v1/admin/users")?, listings::users)
        }
        Command::Maintenance(cmd) => return maintenance::run(&api, cmd, json),
        Command::Audit(cmd) => return maintenance::audit(&api, cmd, json),
        Command::History(args) => return history(&api, args, json),
        Command::Steer(args) => return steer::run(&api, args, json),
        Command::Issues {
            all,
            appliance,
            site,
            limit,
        } => {
            let q = query(&[
                ("open", (!all).then(|| "1".to_string())),
                ("appliance", appliance),
                ("site", site),
                ("limit", limit.map(|l| l.to_string())),
            ]);
            return listing(json, api.get(&format!("/v1/admin/issues{q}"))?, |v| {
                listings::issues(v, now())
            });
        }
    };
    print_json(&out)
}

/// A password from the first line of `file`, or of standard input: never from the command
/// line, which other users of the machine can read.
fn read_password(file: Option<&Path>) -> Result<String> {
    let text = match file {
        Some(f) => {
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
        }
        None => {
            let mut line = String::new();
            // One line, bounded: a terminal ends it with Enter, a pipe with its newline.
            std::io::BufRead::read_line(&mut std::io::stdin().lock().take(4096), &mut line)
                .context("reading the password from standard input")?;
            line
        }
    };
    let password = text.lines().next().unwrap_or_default().to_string();
    if password.is_empty() {
        bail!("no password: give --password-file or the password on standard input");
    }
    Ok(password)
}

/// `ocactl history`: a table of the buckets (a summary on standard error), the API's JSON with
/// `--json`, or the server's CSV as it came with `--csv`.
fn history(api: &Api, args: HistoryArgs, json: bool) -> Result<()> {
    let (of, id) = match (args.appliance, args.site) {
        (Some(a), _) => ("appliances", a),
        (None, Some(s)) => ("sites", s),
        (None, None) => bail!("give --appliance or --site"),
    };
    let q = query(&[
        ("from", args.from.map(|v| v.to_string())),
        ("to", args.to.map(|v| v.to_string())),
        ("format", args.csv.then(|| "csv".to_string())),
    ]);
    let id = url_segment(&id);
    let path = format!("/v1/admin/history/{of}/{id}{q}");
    if args.csv {
        print!("{}", api.get_text(&path)?);
        return Ok(());
    }
    listing_noted(json, api.get(&path)?, |v| {
        let (t, summary) = listings::history(&listings::parse(v)?);
        Ok((t, Some(summary)))
    })
}

/// `s` as one URL path segment (percent-encoded).
pub fn url_segment(s: &str) -> String {
    let mut url = reqwest::Url::parse("http://segment/").expect("a valid URL");
    url.path_segments_mut()
        .expect("an http URL has a path")
        .push(s);
    url.path().trim_start_matches('/').to_string()
}

/// A query string (`?a=1&b=2`, percent-encoded: prefixes carry `/` and `:`) of the pairs
/// given a value; empty when none is.
pub fn query(pairs: &[(&str, Option<String>)]) -> String {
    let given: Vec<(&str, &str)> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (*k, v)))
        .collect();
    if given.is_empty() {
        return String::new();
    }
    let mut url = reqwest::Url::parse("http://query/").expect("a valid URL");
    url.query_pairs_mut().extend_pairs(given);
    format!("?{}", url.query().unwrap_or_default())
}

/// Hashes and copies the file into the origin directory (via a temporary name, fsync, rename, so
/// the origin never serves a partial file), then registers `rendition` with its id, size and
/// hash; a refused registration removes the copy it made.
fn add_content(
    api: &Api,
    file: &Path,
    id: Option<String>,
    origin_dir: &Path,
    mut rendition: Content,
) -> Result<Value> {
    let id = content_id(file, id)?;
    let dest = origin_dir.join(&id);
    if dest.exists() {
        bail!("{} already exists in the origin", dest.display());
    }
    let tmp = origin_dir.join(format!(".{id}.part"));
    let copied = copy_hashing(file, &tmp);
    if copied.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    let (size, sha256) = copied
        .with_context(|| format!("copying {} into {}", file.display(), origin_dir.display()))?;
    std::fs::rename(&tmp, &dest)?;
    // The rename is durable only once the directory is: a crash must not lose a file the
    // catalog is about to list.
    if let Err(e) = std::fs::File::open(origin_dir).and_then(|d| d.sync_all()) {
        let _ = std::fs::remove_file(&dest);
        return Err(e).with_context(|| format!("syncing {}", origin_dir.display()));
    }
    rendition.id = id;
    rendition.size = size;
    rendition.sha256 = sha256;
    match api.post("/v1/admin/content", &rendition) {
        Ok(v) => Ok(v),
        Err(e) => {
            let _ = std::fs::remove_file(&dest);
            Err(e)
        }
    }
}

/// Where `content add --s3` uploads to, and with which settings.
struct S3Upload<'a> {
    target: &'a str,
    config: &'a Path,
    part_mib: u64,
}

/// Uploads the file to the S3 object `upload.target` names, then registers `rendition` with that
/// origin, its size and hash; a refused registration deletes the object it uploaded.
fn add_content_s3(
    api: &Api,
    file: &Path,
    id: Option<String>,
    upload: &S3Upload<'_>,
    mut rendition: Content,
) -> Result<Value> {
    use control_plane::s3::{config, Location};
    let id = content_id(file, id)?;
    let origin = if upload.target.ends_with('/') {
        format!("{}{id}", upload.target)
    } else {
        upload.target.to_string()
    };
    let loc = Location::parse(&origin)?;
    let text = std::fs::read_to_string(upload.config)
        .with_context(|| format!("reading {}", upload.config.display()))?;
    let tables =
        config::tables_of(&text).with_context(|| format!("{}", upload.config.display()))?;
    let origins = config::load(&tables)?;
    let bucket = origins.bucket(loc.bucket).with_context(|| {
        format!(
            "{} has no [[s3]] table for bucket {:?}",
            upload.config.display(),
            loc.bucket
        )
    })?;
    if upload.part_mib < s3_upload::MIN_PART_MIB {
        bail!("--s3-part-mib must be at least {}", s3_upload::MIN_PART_MIB);
    }
    let store = s3_upload::Store::new(bucket)?;
    let (size, sha256) = store.upload(loc.key, file, upload.part_mib << 20)?;
    rendition.id = id;
    rendition.size = size;
    rendition.sha256 = sha256;
    rendition.origin = origin.clone();
    api.post("/v1/admin/content", &rendition).inspect_err(|_| {
        if let Err(e) = store.delete(loc.key) {
            eprintln!("ocactl: the registration failed and {origin} could not be deleted: {e:#}");
        }
    })
}

/// The content id: given, or the file's name.
fn content_id(file: &Path, id: Option<String>) -> Result<String> {
    let id = match id {
        Some(id) => id,
        None => file
            .file_name()
            .and_then(|n| n.to_str())
            .context("the file name is not UTF-8; give --id")?
            .to_string(),
    };
    oca_store::ContentId::parse(&id).map_err(|e| anyhow::anyhow!("{id:?}: {e}"))?;
    Ok(id)
}

/// Copies `src` to `dst`, synced: its size and SHA-256.
fn copy_hashing(src: &Path, dst: &Path) -> Result<(u64, String)> {
    let input = std::fs::File::open(src)?;
    let mut output = std::fs::File::create(dst)?;
    let hashed = hash_stream(input, &mut output)?;
    output.sync_all()?;
    Ok(hashed)
}

/// Reads `input` to its end, writing it to `output`: its size and SHA-256 (hex).
fn hash_stream(mut input: impl Read, mut output: impl std::io::Write) -> Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        output.write_all(&buf[..n])?;
        size += n as u64;
    }
    let digest = hasher.finalize();
    Ok((size, oca_protocol::manifest::hex(&digest)))
}

/// Registers `rendition` as served by the HTTP origin at `url`, with the size and SHA-256 of
/// `file`, or without one, of what `url` serves (read once, kept nowhere): no file has to be on
/// the control plane's machine or on this one.
fn add_content_url(
    api: &Api,
    file: Option<&Path>,
    id: Option<String>,
    url: &str,
    mut rendition: Content,
) -> Result<Value> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("--origin-url {url:?}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        bail!("--origin-url {url}: http:// or https:// only");
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        bail!(
            "--origin-url {url}: no query or fragment: the control plane appends its signed \
             query (?e=&k=&s=) to it for the fill agents"
        );
    }
    let id = match (id, file) {
        (None, None) => {
            let last = parsed
                .path_segments()
                .and_then(|mut s| s.next_back())
                .unwrap_or_default()
                .to_string();
            content_id(Path::new(&last), Some(last.clone()))
                .context("the URL's last segment is not a content id; give --id")?
        }
        (id, Some(f)) => content_id(f, id)?,
        (Some(id), None) => content_id(Path::new(""), Some(id))?,
    };
    let (size, sha256) = match file {
        Some(f) => hash_stream(
            std::fs::File::open(f).with_context(|| format!("reading {}", f.display()))?,
            std::io::sink(),
        )?,
        None => {
            let resp = api
                .http
                .get(url)
                // The client's default (30 s) is for API calls; a rendition takes longer.
                .timeout(std::time::Duration::from_secs(24 * 3600))
                .send()
                .with_context(|| format!("reading {url}"))?;
            let status = resp.status();
            if !status.is_success() {
                bail!(
                    "GET {url}: {status}; ocactl reads the origin unsigned: when it wants the \
                     control plane's signature, give FILE (the same bytes) to hash instead"
                );
            }
            hash_stream(resp, std::io::sink()).with_context(|| format!("reading {url}"))?
        }
    };
    rendition.id = id;
    rendition.size = size;
    rendition.sha256 = sha256;
    rendition.origin = url.to_string();
    api.post("/v1/admin/content", &rendition)
}
