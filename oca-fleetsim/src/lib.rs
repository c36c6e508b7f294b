//! oca-fleetsim: a whole fleet played against a real control plane (docs/fleetsim.md).
//!
//! It builds the fleet through the admin API, has every appliance report on schedule, plays
//! titles from clients all over the fleet's prefixes on an open-loop schedule, checks every
//! answer against its own model of the fleet, injects health and route changes and times how
//! long steering takes to show them, and prints what it measured.
//!
//! Modules, lowest first: `fleet` (the shape: names, numbering, prefixes, pure functions) ←
//! `model` (what each appliance holds and says, with the time of each change) ← `verify` (an
//! answer against the model) and `stats` (histograms, counters, output) ← `http` (the pools) ←
//! `setup` (the admin API), `reports` (health reports), `plays` (the play load), `events`
//! (injected changes) ← `run` (one run from start to exit code) ← `main.rs` (flags).

#![forbid(unsafe_code)]

pub mod events;
pub mod fleet;
pub mod http;
pub mod model;
pub mod plays;
pub mod reports;
pub mod run;
pub mod setup;
pub mod stats;
pub mod verify;
