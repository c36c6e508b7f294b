//! control-plane: the cloud side of Open Connect: catalog, appliances, health intake, steering,
//! fill planning and playback. The `control-plane` binary (`main.rs`) serves it; `ocactl`
//! administers it over HTTP with [`oca_protocol::admin`]'s types.
//!
//! # The map
//! Layers, lowest first; each module uses only modules above it in this list, never one below
//! (`/work/shared/tools/import-cycles` checks it):
//!
//! ```text
//! storage/             what is kept across restarts, behind the Storage trait
//!   mod.rs             the interface: one trait per area, its rows and errors; no SQL
//!   migrations.rs      the schema of both engines, one ordered list
//!   changes.rs         the change feed: what other replicas committed, for the views
//!   leases.rs          the stream-lease rule both engines apply
//!   sqlite/            the SQLite engine: connections, migrations, one file per area
//!   postgres/          the PostgreSQL engine: its threads and connections, migrations, one
//!                      file per area
//! domain/              what the control plane knows, over storage; no HTTP
//!   catalog.rs         titles, renditions, subscribers in memory (CatalogView)
//!   accounts.rs        portal users: passwords, sessions, who may see which site
//!   credentials.rs     bearer secrets: made once, kept hashed, compared in constant time
//!   history.rs         traffic history: ranges, misses by site, retention
//!   intake.rs          who may report, which reported routes are kept
//!   login_limits.rs    failed portal logins by address and login name
//!   maintenance.rs     maintenance windows and drain: spans, reasons, serving state
//!   issues.rs          operational issues: the rules, from facts to the open set
//!   live.rs            probe results and qualifications in memory; steering's gate
//!   player_tokens.rs   signed, expiring player tokens
//!   popularity.rs      decayed play counts per title
//!   routes.rs          route preference: the part of BGP's decision process steering uses
//!   streams.rs         concurrent-stream leases, group-committed
//!   url_keys.rs        per-site URL-signing keyrings
//! s3/                  S3-compatible origins: the [[s3]] buckets, s3:// locations, SigV4
//!                      (presigned GETs for manifests, signed headers for ocactl's uploads)
//! lpm.rs               longest-prefix-match table
//! fleet/               the fleet model in memory: sites, appliances, routes, holdings (Snapshot)
//! routing.rs           what the fleet hears, for operators: BGP sessions, route explorer,
//!                      inconsistent sites
//! steering.rs          the steering algorithm over the fleet model
//! server/              the listener: accept loop, connection caps, timeouts, the drain,
//!                      readiness (no routes)
//! metrics.rs           the counters, Prometheus text
//! planning/            fill: site plans, the planner's cache, manifests, fill settings
//! play.rs              a play: admission, licensing, renditions, signed URLs, the lease
//! app.rs               the composition root: App holds all of the above; the clock
//! services/            operations the admin API and the portal share, by an actor at `now`
//!   maintenance.rs     disable, end, list windows; the audit log; serving states
//! live/                live checks over App: the prober, the issue checker, qualifications
//! follower.rs          other replicas' commits into this replica's views, from the feed
//! http/                the HTTP API: router, handlers by audience, errors in one place
//! portal/              the partner portal: sessions, CSRF, pages, its scoped API, SVG charts
//! main.rs              configuration and start (binary)
//! bin/ocactl.rs        the admin CLI (binary)
//! ```
//!
//! Requests go down the list and data comes back up: a handler in [`http`] reads the request,
//! asks [`app::App`], which borrows the views and storage to the domain function, whose typed
//! error [`http::error`] turns into a status and body.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod app;
pub mod domain;
pub mod fleet;
pub mod follower;
pub mod http;
pub mod live;
pub mod lpm;
pub mod metrics;
pub mod planning;
pub mod play;
pub mod portal;
pub mod routing;
pub mod s3;
pub mod server;
pub mod services;
pub mod settings;
pub mod steering;
pub mod storage;
