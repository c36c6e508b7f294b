//! Planning: what each appliance should hold and where it fills it from (docs/architecture.md, "Fill manifest").
//!
//! - [`site_plan`]: the placement algorithm: a site's storage filled in popularity order,
//!   files spread over its appliances by weighted rendezvous hashing ([`site_plan::SitePlan`]).
//! - [`planner`]: the [`planner::Planner`] caches site plans and the popularity ranking, and
//!   remembers first plans and bad sources.
//! - [`manifest`]: one appliance's manifest from its site's plan: sources best first, signed,
//!   with the escalation delays.
//! - [`config`]: the fill settings ([`config::FillConfig`]).

pub mod config;
pub mod manifest;
pub mod planner;
pub mod site_plan;
