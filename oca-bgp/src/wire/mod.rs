//! The BGP message format: the one module that speaks `rustbgpd-wire`.
//!
//! Everything above this module works with the small types defined here ([`Message`], [`Open`],
//! [`Notification`], [`Route`], [`UpdateOutcome`]) and never sees the codec's own, so an upgrade
//! of the codec (pinned exactly; it breaks its API every few weeks) touches this folder alone.
//!
//! # The parts, lowest first
//!
//! | file | what it does |
//! |---|---|
//! | `types.rs` | our own small types: [`Family`], [`Prefix`] (and [`PrefixError`]), [`Origin`], [`Route`] with its shared, bounded [`PathAttributes`], and their conversions from and to the codec's |
//! | `notification.rs` | [`Notification`], its [`code`]s and [`subcode`]s, its name in logs; the codec's decode errors as NOTIFICATIONs |
//! | `encode.rs` | writing: our OPEN ([`encode_open`] from [`OpenParams`]), KEEPALIVE, ROUTE-REFRESH, End-of-RIB, [`Notification::encode`] |
//! | `framing.rs` | reading: [`next_message`] takes whole messages off a connection's buffer, header errors first, into a [`Message`] ([`Open`], a framed [`Update`], ...) |
//! | `update.rs` | [`parse_update`]: an UPDATE under RFC 7606, into an [`UpdateOutcome`] |
//!
//! Lower files never use higher ones. Every item is re-exported here, so `wire::X` is the path
//! to use for each of them.
//!
//! # Reading
//!
//! [`next_message`] takes whole messages off the front of a connection's buffer. It checks the
//! header first (RFC 4271 §6.1) and only decodes once the whole message is buffered, so a short
//! read is never mistaken for a bad length; a bad header is an error whose [`Notification`] is
//! the one to send before closing.
//!
//! An UPDATE is decoded in two steps. [`next_message`] frames it; [`parse_update`] then applies
//! RFC 7606 revised error handling and turns what is left into [`Route`]s. Its answer is an
//! [`UpdateOutcome`] (End-of-RIB, routes, or treat-as-withdraw), or the NOTIFICATION that resets
//! the session when RFC 7606 says nothing less will do (the NLRI can no longer be located).
//!
//! # Writing
//!
//! We only ever send OPEN, KEEPALIVE, NOTIFICATION, ROUTE-REFRESH and End-of-RIB markers: the
//! speaker announces nothing.

mod encode;
mod framing;
mod notification;
mod types;
mod update;

pub use self::encode::{
    encode_end_of_rib, encode_keepalive, encode_open, encode_route_refresh, OpenParams,
};
pub use self::framing::{next_message, GracefulRestart, Message, Open, Update};
pub use self::notification::{code, subcode, Notification};
pub use self::types::{Family, Origin, PathAttributes, Prefix, PrefixError, Route};
pub use self::update::{parse_update, UpdateContext, UpdateOutcome};

/// Largest message RFC 4271 allows; we never negotiate extended messages (RFC 8654).
pub const MAX_MESSAGE_LEN: usize = 4096;
/// The fixed header: marker (16 bytes), length (2), type (1).
const HEADER_LEN: usize = 19;

#[cfg(test)]
mod tests;
