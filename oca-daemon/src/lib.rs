//! oca-daemon as a library: the appliance's HTTP byte-range server, its engines and the
//! pieces they are made of. The `oca-daemon` binary is its `main`; the fuzz targets (`fuzz/`)
//! drive the request parsers and the connection state machine through it.
//!
//! # The map
//! Lowest first; each module uses only modules above it (`../shared/tools/import-cycles`):
//!
//! ```text
//! cold.rs            the cold policy: small, hot, cached or cold; the popularity sketch
//! config.rs          the configuration file and flags
//! socket.rs          socket options, send, sendfile
//! signed_urls.rs     the keyring file, reloaded; a request's signature checked
//! disk_health.rs     disks marked failed (errors, hangs), shared by the workers
//! open_files.rs      a worker's cache of open content files
//! metrics/           counters (mod.rs) and their OpenMetrics text (encode.rs)
//! process.rs         what the whole process shares: metrics, disks, admission, ready, draining
//! http/              sans-IO HTTP: requests, ranges, responses, CORS, deciding a response
//! ktls.rs, tls.rs    rustls sessions; handing a session to kernel TLS
//! engine/contract.rs what a connection asks of an engine (Next) and what an engine offers
//! worker.rs          a worker's state: the shared parts, its clock, caches, capabilities
//! access_log/        the access log: its line (line.rs), its writer thread (writer.rs)
//! conn/              one connection: transport, lifecycle phases, body paths
//! engine/            the engines that drive connections: epoll, and io_uring (engine/uring/)
//! admin.rs           /metrics, /status, /healthz, /readyz
//! demo.rs            --demo
//! ```
//!
//! A request: the engine accepts and admits a connection, feeds its bytes to [`conn::Conn`],
//! which parses them with [`http`], answers through its transport, and asks the engine for what
//! only the engine can do (a splice, a cold read, an open off the thread) with
//! [`engine::contract::Next`]. docs/architecture.md maps behaviours to modules.

pub mod access_log;
pub mod admin;
/// The connection caps, shared with the control plane.
pub use oca_service::admission;
pub mod cold;
pub mod config;
pub mod conn;
pub mod demo;
pub mod disk_health;
pub mod engine;
pub mod http;
pub mod ktls;
pub mod metrics;
pub mod open_files;
pub mod process;
pub mod signed_urls;
pub mod socket;
pub mod tls;
pub mod worker;
