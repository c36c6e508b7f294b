//! The appliance's BGP speaker: it holds a session with each of the ISP's routers, takes the
//! routes they announce and announces nothing.
//!
//! In Open Connect the ISP decides which clients an appliance serves by what it announces to
//! the appliance over BGP. This crate is that receiving end: RFC 4271 sessions with 4-octet AS
//! (RFC 6793), IPv4 and IPv6 unicast (RFC 4760), route refresh (RFC 2918), graceful restart as
//! a receiving speaker (RFC 4724), revised UPDATE error handling (RFC 7606), a per-session
//! import filter and prefix limit, and TCP-MD5 where the kernel has it. It runs inside the fill
//! agent's tokio runtime, which reports what it hears to the control plane (docs/bgp.md says
//! why there, and how the parts fit).
//!
//! # The parts, lowest first
//!
//! | module | what it is |
//! |---|---|
//! | [`wire`] | the message format: framing, decoding under RFC 7606, our small types ([`Route`], [`Notification`]); the only user of the codec crate |
//! | [`rib`] | one session's Adj-RIB-In: routes by prefix, the import filter, stale marks |
//! | [`session`] | one neighbour's RFC 4271 state machine, sans-IO: events and an [`std::time::Instant`] in, actions out |
//! | [`config`] | the configuration (serde), resolved into each session's settings |
//! | [`transport`] | TCP: listener, dial, TCP-MD5 and TCP-AO keys |
//! | [`speaker`] | the tokio tasks that drive every session over real sockets, and the handle: [`Speaker::start`], [`SpeakerHandle::snapshot`], [`SpeakerHandle::route_refresh`], [`SpeakerHandle::shutdown`] |
//!
//! Lower modules never use higher ones.

#![warn(missing_docs)]

pub mod config;
pub mod rib;
pub mod session;
pub mod speaker;
pub mod transport;
pub mod wire;

/// Messages built byte by byte, shared with the integration tests.
#[cfg(test)]
#[path = "../tests/common/msg.rs"]
mod test_msg;

pub use config::{Config, ConfigError, Neighbor};
pub use rib::{AcceptedRoute, ImportFilter};
pub use session::SessionState;
pub use speaker::{BgpSnapshot, CommandError, SessionSnapshot, Speaker, SpeakerHandle, StartError};
pub use wire::{Family, Notification, Origin, PathAttributes, Prefix, PrefixError, Route};
