//! oca-daemon as a library: the appliance's HTTP byte-range server, its engines and the
//! pieces they are made of. The `oca-daemon` binary is its `main`; the fuzz targets (`fuzz/`)
//! drive the request parsers and the connection state machine through it.

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
