//! Builds the fleet through the admin API: sites (IXP sites first, then the ISP sites that fill
//! from them) with their allowed prefixes, the default zone, titles, content files,
//! subscribers and their player tokens, appliances. Idempotent: what the control plane already
//! has (by id) is skipped, so a large fleet is built once per database; requests run `parallel`
//! at a time.
//!
//! An appliance's credential is shown only when it is registered, so the simulator keeps the
//! ones it was given in `<state-dir>/credentials.txt` (`id credential` per line, mode 0600); an
//! appliance that exists without a credential on file is an error (a fresh database or the
//! state directory of the run that built it).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use oca_protocol::admin::{
    Appliance, ApplianceState, Content, IssuedToken, Registered, Site, Subscriber, Title,
    TokenRequest, Zone,
};
use parking_lot::Mutex;
use reqwest::Method;
use tokio::task::JoinSet;

use crate::fleet::{self, Shape};
use crate::http::Pool;

/// Streams a limit subscriber's plan allows.
pub struct LimitSubscriber {
    /// Subscriber id (new each run: leases from an earlier run would otherwise still count).
    pub id: String,
    /// Its player token.
    pub token: String,
    /// Its `max_streams`.
    pub max_streams: u32,
}

/// What a run needs from the built fleet.
pub struct Built {
    /// Each appliance's credential, by appliance number.
    pub credentials: Vec<String>,
    /// Player tokens of the unlimited subscribers.
    pub tokens: Vec<String>,
    /// Subscribers whose stream limit the run checks.
    pub limited: Vec<LimitSubscriber>,
}

/// The country every title is licensed in and the default zone maps every client to.
pub const COUNTRY: &str = "NL";

/// Runs `f` over `items`, `n` at a time; the first error stops the rest.
pub async fn parallel<T, F, Fut>(items: Vec<T>, n: usize, f: F) -> anyhow::Result<()>
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let mut set = JoinSet::new();
    for item in items {
        while set.len() >= n.max(1) {
            set.join_next().await.expect("a task is running")??;
        }
        set.spawn(f(item));
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(())
}

fn site_body(shape: &Shape, s: u32) -> Site {
    Site {
        id: fleet::site_id(s),
        kind: fleet::kind(s),
        region: fleet::region_name(fleet::region(shape, s)),
        parent: fleet::parent(s).map(fleet::site_id),
        allowed_prefixes: shape.site_prefixes(s).map(fleet::prefix).collect(),
        org: None,
    }
}

fn content_body(i: u32) -> Content {
    let res = fleet::RESOLUTIONS[(i % 4) as usize];
    Content {
        id: fleet::content_id(i),
        title: fleet::title_id(i / 4),
        resolution: res,
        bitrate_kbps: res * 5,
        size: crate::reports::FILE_BYTES,
        sha256: "0".repeat(64),
        content_type: "video/mp4".into(),
        origin: "embedded".into(),
    }
}

/// Posts `bodies` to `path`, `parallel` at a time.
async fn post_all<B: serde::Serialize + Send + Sync + 'static>(
    pool: &Pool,
    token: &str,
    path: &'static str,
    bodies: Vec<B>,
    parallel_n: usize,
) -> anyhow::Result<()> {
    let (pool, token) = (pool.clone(), Arc::<str>::from(token));
    parallel(bodies, parallel_n, move |b| {
        let (pool, token) = (pool.clone(), token.clone());
        async move {
            pool.admin::<serde_json::Value>(Method::POST, path, &token, Some(&b))
                .await
                .map(|_| ())
        }
    })
    .await
}

fn log(quiet: bool, what: &str) {
    if !quiet {
        eprintln!("fleetsim: {what}");
    }
}

/// Builds (or finds) the fleet of `shape`; `limit` subscribers with `limit_streams` each are
/// made for this run under the `run` tag.
#[allow(clippy::too_many_arguments)]
pub async fn build(
    pool: &Pool,
    token: &str,
    shape: &Shape,
    state_dir: &Path,
    limit: u32,
    limit_streams: u32,
    run: u64,
    parallel_n: usize,
    quiet: bool,
) -> anyhow::Result<Built> {
    let sites: Vec<Site> = pool
        .admin(Method::GET, "/v1/admin/sites", token, None::<&()>)
        .await?;
    let have: HashSet<String> = sites.into_iter().map(|s| s.id).collect();
    for kind in [
        oca_protocol::admin::SiteKind::Ixp,
        oca_protocol::admin::SiteKind::Isp,
    ] {
        let missing: Vec<Site> = (0..shape.sites)
            .filter(|&s| fleet::kind(s) == kind && !have.contains(&fleet::site_id(s)))
            .map(|s| site_body(shape, s))
            .collect();
        log(
            quiet,
            &format!("{} {} sites to create", missing.len(), kind.as_str()),
        );
        post_all(pool, token, "/v1/admin/sites", missing, parallel_n).await?;
    }
    let zones: Vec<Zone> = pool
        .admin(Method::GET, "/v1/admin/zones", token, None::<&()>)
        .await?;
    let everywhere: oca_protocol::prefix::Prefix = "0.0.0.0/0".parse().expect("a prefix");
    if !zones.iter().any(|z| z.prefix == everywhere) {
        let zone = Zone {
            prefix: everywhere,
            site: None,
            country: Some(COUNTRY.into()),
        };
        pool.admin::<Zone>(Method::POST, "/v1/admin/zones", token, Some(&zone))
            .await?;
    }

    let titles: Vec<Title> = pool
        .admin(Method::GET, "/v1/admin/titles", token, None::<&()>)
        .await?;
    let have: HashSet<String> = titles.into_iter().map(|t| t.id).collect();
    let missing: Vec<Title> = (0..shape.titles())
        .map(fleet::title_id)
        .filter(|id| !have.contains(id))
        .map(|id| Title {
            name: format!("title {id}"),
            id,
            countries: vec![COUNTRY.into()],
        })
        .collect();
    log(quiet, &format!("{} titles to create", missing.len()));
    post_all(pool, token, "/v1/admin/titles", missing, parallel_n).await?;
    let content: Vec<Content> = pool
        .admin(Method::GET, "/v1/admin/content", token, None::<&()>)
        .await?;
    let have: HashSet<String> = content.into_iter().map(|c| c.id).collect();
    let missing: Vec<Content> = (0..shape.files)
        .filter(|&i| !have.contains(&fleet::content_id(i)))
        .map(content_body)
        .collect();
    log(quiet, &format!("{} content files to create", missing.len()));
    post_all(pool, token, "/v1/admin/content", missing, parallel_n).await?;

    let subs: Vec<Subscriber> = pool
        .admin(Method::GET, "/v1/admin/subscribers", token, None::<&()>)
        .await?;
    let have: HashSet<String> = subs.into_iter().map(|s| s.id).collect();
    let mut missing: Vec<Subscriber> = (0..shape.subscribers)
        .map(|i| format!("s{i}"))
        .filter(|id| !have.contains(id))
        .map(|id| Subscriber {
            id,
            active: true,
            max_resolution: 2160,
            max_streams: 1_000_000,
        })
        .collect();
    let limit_ids: Vec<String> = (0..limit).map(|k| format!("lim{run}-{k}")).collect();
    missing.extend(limit_ids.iter().map(|id| Subscriber {
        id: id.clone(),
        active: true,
        max_resolution: 2160,
        max_streams: limit_streams,
    }));
    post_all(pool, token, "/v1/admin/subscribers", missing, parallel_n).await?;
    let all: Vec<String> = (0..shape.subscribers)
        .map(|i| format!("s{i}"))
        .chain(limit_ids.iter().cloned())
        .collect();
    let issued = issue_tokens(pool, token, all, parallel_n).await?;
    let tokens = (0..shape.subscribers)
        .map(|i| issued[&format!("s{i}")].clone())
        .collect();
    let limited = limit_ids
        .into_iter()
        .map(|id| LimitSubscriber {
            token: issued[&id].clone(),
            id,
            max_streams: limit_streams,
        })
        .collect();
    log(quiet, "subscribers and tokens ready");

    let credentials = appliances(pool, token, shape, state_dir, parallel_n, quiet).await?;
    Ok(Built {
        credentials,
        tokens,
        limited,
    })
}

async fn issue_tokens(
    pool: &Pool,
    token: &str,
    subscribers: Vec<String>,
    parallel_n: usize,
) -> anyhow::Result<HashMap<String, String>> {
    let out = Arc::new(Mutex::new(HashMap::new()));
    let (pool2, token2, out2) = (pool.clone(), Arc::<str>::from(token), out.clone());
    parallel(subscribers, parallel_n, move |id| {
        let (pool, token, out) = (pool2.clone(), token2.clone(), out2.clone());
        async move {
            let req = TokenRequest {
                ttl_secs: Some(7 * 86400),
            };
            let path = format!("/v1/admin/subscribers/{id}/tokens");
            let t: IssuedToken = pool.admin(Method::POST, &path, &token, Some(&req)).await?;
            out.lock().insert(id, t.token);
            Ok(())
        }
    })
    .await?;
    let map = std::mem::take(&mut *out.lock());
    Ok(map)
}

fn read_credentials(path: &Path) -> anyhow::Result<HashMap<String, String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(id, c)| (id.to_string(), c.trim().to_string()))
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HashMap::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn write_credentials(path: &Path, creds: &HashMap<String, String>) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    let mut ids: Vec<_> = creds.iter().collect();
    ids.sort();
    for (id, c) in ids {
        writeln!(f, "{id} {c}")?;
    }
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

async fn appliances(
    pool: &Pool,
    token: &str,
    shape: &Shape,
    state_dir: &Path,
    parallel_n: usize,
    quiet: bool,
) -> anyhow::Result<Vec<String>> {
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    let path = state_dir.join("credentials.txt");
    let known = read_credentials(&path)?;
    let listed: Vec<ApplianceState> = pool
        .admin(Method::GET, "/v1/admin/appliances", token, None::<&()>)
        .await?;
    let have: HashSet<String> = listed.into_iter().map(|a| a.appliance.id).collect();
    let ids: Vec<String> = (0..shape.appliances())
        .map(|a| fleet::oca_id(shape.oca(a)))
        .collect();
    if let Some(lost) = ids
        .iter()
        .find(|id| have.contains(*id) && !known.contains_key(*id))
    {
        bail!(
            "appliance {lost} exists but its credential is not in {}: use the state directory \
             of the run that built this fleet, or a fresh database",
            path.display()
        );
    }
    let missing: Vec<u32> = (0..shape.appliances())
        .filter(|&a| !have.contains(&ids[a as usize]))
        .collect();
    log(quiet, &format!("{} appliances to register", missing.len()));
    let creds = Arc::new(Mutex::new(known));
    let (pool2, token2, creds2, shape2) =
        (pool.clone(), Arc::<str>::from(token), creds.clone(), *shape);
    let registered = parallel(missing, parallel_n, move |a| {
        let (pool, token, creds) = (pool2.clone(), token2.clone(), creds2.clone());
        let o = shape2.oca(a);
        async move {
            let body = Appliance {
                id: fleet::oca_id(o),
                site: fleet::site_id(o.site),
                url: fleet::oca_url(o),
                capacity_bps: 100_000_000_000,
            };
            let r: Registered = pool
                .admin(Method::POST, "/v1/admin/appliances", &token, Some(&body))
                .await?;
            creds.lock().insert(body.id, r.credential);
            Ok(())
        }
    })
    .await;
    // Whatever was registered is kept, even when a later registration failed.
    let creds = std::mem::take(&mut *creds.lock());
    write_credentials(&path, &creds)?;
    registered?;
    Ok(ids.iter().map(|id| creds[id].clone()).collect())
}
