//! ocactl: the control plane's admin CLI.

#![forbid(unsafe_code)]

#[path = "ocactl/maintenance.rs"]
mod maintenance;
#[path = "ocactl/s3_upload.rs"]
mod s3_upload;

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
/// subscribers and URL-signing keys, and shows what the appliances hear over BGP.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Control-plane base URL.
    #[arg(long, env = "OCA_CP_URL", default_value = "http://127.0.0.1:7070")]
    url: String,
    /// PEM CA certificate the control plane's certificate is checked against, besides the
    /// system's roots.
    #[arg(long, env = "OCA_CP_CA", value_name = "FILE")]
    ca: Option<PathBuf>,
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
    #[command(subcommand)]
    Site(SiteCmd),
    /// Appliances.
    #[command(subcommand)]
    Appliance(ApplianceCmd),
    /// Coverage zones: prefix → site and/or country.
    #[command(subcommand)]
    Zone(ZoneCmd),
    /// Titles and where they are licensed.
    #[command(subcommand)]
    Title(TitleCmd),
    /// Content files (renditions).
    #[command(subcommand)]
    Content(ContentCmd),
    /// Subscribers and their plans.
    #[command(subcommand)]
    Subscriber(SubscriberCmd),
    /// URL-signing keys.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// What appliances hear over BGP: sessions, routes, sites that disagree.
    #[command(subcommand)]
    Bgp(BgpCmd),
    /// Partner organisations (they own sites; their users see them in the portal).
    #[command(subcommand)]
    Org(OrgCmd),
    /// Portal users.
    #[command(subcommand)]
    User(UserCmd),
    /// Maintenance windows: disable an appliance or a site for a while, end or cancel it.
    #[command(subcommand)]
    Maintenance(maintenance::MaintenanceCmd),
    /// The audit log: who changed what, when and why.
    Audit(maintenance::AuditCmd),
    /// Traffic history of an appliance or a site: buckets of bytes/s, connections, requests/s,
    /// bytes served (and misses, for a site), as JSON or CSV.
    History(HistoryArgs),
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
    /// Print CSV (a header row, then one row a bucket) instead of JSON.
    #[arg(long)]
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
    /// Lists appliances.
    List,
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
}

#[derive(Subcommand)]
enum ContentCmd {
    /// Copies FILE into the embedded origin (--origin-dir) or uploads it to an S3 bucket
    /// (--s3), and registers it with its size and SHA-256.
    Add {
        file: PathBuf,
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
            required_unless_present = "s3",
            conflicts_with = "s3"
        )]
        origin_dir: Option<PathBuf>,
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
    List,
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

struct Api {
    base: String,
    token: String,
    http: reqwest::blocking::Client,
}

impl Api {
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
}

fn run(cli: Cli) -> Result<()> {
    let token = match (cli.token, &cli.token_file) {
        (Some(t), _) => t,
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
    let api = Api {
        base: cli.url,
        token,
        http: http.build()?,
    };
    let out = match cli.command {
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
        Command::Site(SiteCmd::List) => api.get("/v1/admin/sites")?,
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
        Command::Appliance(ApplianceCmd::List) => api.get("/v1/admin/appliances")?,
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
        Command::Zone(ZoneCmd::List) => api.get("/v1/admin/zones")?,
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
        Command::Title(TitleCmd::List) => api.get("/v1/admin/titles")?,
        Command::Content(ContentCmd::Add {
            file,
            title,
            resolution,
            bitrate_kbps,
            id,
            content_type,
            origin_dir,
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
            match (s3, s3_config, origin_dir) {
                (Some(s3), Some(config), _) => {
                    let upload = S3Upload {
                        target: &s3,
                        config: &config,
                        part_mib: s3_part_mib,
                    };
                    add_content_s3(&api, &file, id, &upload, rendition)?
                }
                (_, _, Some(dir)) => add_content(&api, &file, id, &dir, rendition)?,
                _ => bail!("give --origin-dir, or --s3 with --s3-config"),
            }
        }
        Command::Content(ContentCmd::List) => api.get("/v1/admin/content")?,
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
        Command::Subscriber(SubscriberCmd::List) => api.get("/v1/admin/subscribers")?,
        Command::Keys(KeysCmd::Rotate) => {
            api.post("/v1/admin/keys/rotate", &serde_json::Map::new())?
        }
        Command::Bgp(BgpCmd::Sessions { appliance }) => {
            let q = query(&[("oca_id", appliance)]);
            api.get(&format!("/v1/admin/bgp/sessions{q}"))?
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
            api.get(&format!("/v1/admin/bgp/routes{q}"))?
        }
        Command::Bgp(BgpCmd::Inconsistent) => api.get("/v1/admin/bgp/inconsistent")?,
        Command::Site(SiteCmd::SetOrg { id, org }) => api.put(
            &format!("/v1/admin/sites/{id}/org"),
            &SiteOrg { org: Some(org) },
        )?,
        Command::Org(OrgCmd::Add { id, name }) => {
            api.post("/v1/admin/orgs", &Organisation { id, name })?
        }
        Command::Org(OrgCmd::List) => api.get("/v1/admin/orgs")?,
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
        Command::User(UserCmd::List) => api.get("/v1/admin/users")?,
        Command::Maintenance(cmd) => return maintenance::run(&api, cmd),
        Command::Audit(cmd) => return maintenance::audit(&api, cmd),
        Command::History(args) => return history(&api, args),
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
            api.get(&format!("/v1/admin/issues{q}"))?
        }
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
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

/// `ocactl history`: prints the history as JSON, or the server's CSV as it came.
fn history(api: &Api, args: HistoryArgs) -> Result<()> {
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
    } else {
        let h: oca_protocol::history::History = serde_json::from_value(api.get(&path)?)?;
        println!("{}", serde_json::to_string_pretty(&h)?);
    }
    Ok(())
}

/// `s` as one URL path segment (percent-encoded).
fn url_segment(s: &str) -> String {
    let mut url = reqwest::Url::parse("http://segment/").expect("a valid URL");
    url.path_segments_mut()
        .expect("an http URL has a path")
        .push(s);
    url.path().trim_start_matches('/').to_string()
}

/// A query string (`?a=1&b=2`, percent-encoded: prefixes carry `/` and `:`) of the pairs
/// given a value; empty when none is.
fn query(pairs: &[(&str, Option<String>)]) -> String {
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

fn copy_hashing(src: &Path, dst: &Path) -> Result<(u64, String)> {
    let mut input = std::fs::File::open(src)?;
    let mut output = std::fs::File::create(dst)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        std::io::Write::write_all(&mut output, &buf[..n])?;
        size += n as u64;
    }
    output.sync_all()?;
    let digest = hasher.finalize();
    Ok((size, oca_protocol::manifest::hex(&digest)))
}
