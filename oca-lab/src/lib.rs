//! A small, real Open Connect deployment on one machine: the control plane with its SQLite file
//! and embedded origin, generated sample content, and per site the appliances (oca-daemon plus
//! fill-agent) of a topology file; the same launcher runs the end-to-end tests.
//!
//! How to read it, in the order a lab comes up:
//!
//! - [`topology`]: the topology file ([`Topology`]): sites, appliances per site, each site's
//!   link speed and client prefixes, and how much content to generate. [`DEFAULT_TOPOLOGY`] is
//!   the built-in one.
//! - `network` (crate-private): with [`Options::netns`], a network namespace per site joined
//!   to the host by a veth pair, its addresses and route, and tc shaping both directions; torn
//!   down when the lab goes.
//! - [`process`]: a process of the lab ([`Proc`]) with its log file, waited on until its log
//!   says it listens, killed when dropped.
//! - [`bgp`]: an ISP site's router: BIRD's configuration and the `[bgp]` table of each of its
//!   appliances' fill agents ([`SiteRouter`]), BIRD running in the site's namespace ([`Bird`]),
//!   and whether this machine and fill agent can do BGP at all.
//! - [`cargo`]: the nested `cargo build` of the binaries the lab starts, its progress shown as
//!   it runs and the compiler's messages in the error ([`BuildFailed`]) when it fails.
//! - [`progress`]: the lines the lab shows while it builds and fills (per appliance: files and
//!   bytes held of those planned, [`FillProgress`]), redrawn on a terminal, plain elsewhere.
//! - [`lab`]: [`Lab::start`] builds the binaries, starts the control plane over HTTPS (one
//!   process on SQLite, or replicas on PostgreSQL behind HAProxy: [`ControlPlanes`]),
//!   populates it (sites with their allowed prefixes, zones, a subscriber with a player token,
//!   titles and their content in the embedded origin), starts each ISP site's router where it
//!   can (else gives the appliances their client prefixes as static prefixes) and each
//!   [`Appliance`] (daemon, then agent). The [`Lab`] then
//!   waits for fills, prints status, stops and restarts parts, and kills everything on drop.
//! - [`portal`]: the partner portal's logins: an operator, and per ISP site an organisation
//!   owning it with a partner user, random passwords in `<dir>/portal-logins` ([`Portal`]).
//! - [`chaos`]: [`Lab::chaos`] plays under load while appliances are killed, links cut and
//!   control-plane replicas killed ([`Disruptions`]), one disruption at a time, and sums up
//!   what the players saw in a [`ChaosReport`];
//!   [`Lab::block_content_port`] makes one appliance unreachable from outside while it reports.
//!
//! The `oca-lab` binary (`main.rs`) is this crate with a command line; `tests/e2e.rs` drives the
//! same [`Lab`].

pub mod bgp;
pub mod cargo;
pub mod chaos;
pub mod lab;
mod network;
pub mod portal;
pub mod process;
pub mod progress;
pub mod topology;

pub use bgp::{Announced, Bird, SiteRouter};
pub use chaos::{ChaosReport, Disruptions};
pub use lab::{https_client, usable_dir, Appliance, ControlPlanes, Lab, Options};
pub use portal::{Login, Portal};
pub use process::Proc;
pub use progress::{BuildFailed, FillProgress};
pub use topology::{ContentSpec, SiteSpec, Topology, DEFAULT_TOPOLOGY};

/// Deterministic bytes of a generated content file (what the lab writes to the origin).
pub use test_support::content_bytes;
