//! Reading: whole messages off the front of a connection's buffer, and the OPEN as the session
//! needs it.
//!
//! [`next_message`] checks the header first (RFC 4271 §6.1: marker, length 19..=4096, type, and
//! the length each type must have) and only decodes once the whole message is buffered, so a
//! short read is never mistaken for a bad length. A bad header is an error whose
//! [`Notification`] is the one to send before closing: after it the byte stream can no longer be
//! trusted to be in step.
//!
//! Fixes over the codec live here: the per-type lengths are judged from the header (the codec
//! would answer some with an OPEN error), a bad KEEPALIVE length carries the length in its
//! NOTIFICATION, and a ROUTE-REFRESH longer than 23 bytes (ORF, which we never negotiate) gets
//! RFC 7313's 7/1 with the whole message as data.
//!
//! An OPEN is reduced to an [`Open`]: the AS (from the 4-octet AS capability when present), hold
//! time, identifier, the unicast families of its MP capabilities, route refresh and graceful
//! restart; capabilities we do not know are ignored (RFC 5492). An UPDATE is only framed here
//! and kept in the codec's form as an [`Update`], for `update.rs` to read.

use std::net::Ipv4Addr;

use bytes::BytesMut;
use rustbgpd_wire as w;
use serde::Serialize;

use super::notification::{code, from_decode_error, subcode, Notification};
use super::types::Family;
use super::MAX_MESSAGE_LEN;

/// The neighbour's Graceful Restart capability (RFC 4724 §3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GracefulRestart {
    /// Seconds it asks us to keep its routes after the session goes down.
    pub restart_time: u16,
    /// R bit: it has just restarted.
    pub restarting: bool,
    /// The families it keeps forwarding through a restart, with the F bit of this restart.
    pub families: Vec<(Family, bool)>,
}

/// A received OPEN, reduced to what the session needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Open {
    /// The neighbour's AS (from the 4-octet AS capability when present).
    pub asn: u32,
    /// Its proposed hold time, seconds.
    pub hold_time: u16,
    /// Its BGP identifier.
    pub router_id: Ipv4Addr,
    /// Whether it speaks 4-octet AS numbers (RFC 6793).
    pub four_octet_as: bool,
    /// The unicast families of its MP capabilities.
    pub families: Vec<Family>,
    /// Whether it sent any MP capability at all (none means IPv4 unicast alone, RFC 4760 §8).
    pub multiprotocol: bool,
    /// Whether it takes ROUTE-REFRESH (RFC 2918).
    pub route_refresh: bool,
    /// Its Graceful Restart capability.
    pub graceful_restart: Option<GracefulRestart>,
}

/// A framed UPDATE, kept in the codec's form until [`parse_update`](super::parse_update) reads it.
#[derive(Clone, Debug)]
pub struct Update(pub(super) w::UpdateMessage);

/// A whole message as received.
#[derive(Clone, Debug)]
pub enum Message {
    /// OPEN.
    Open(Open),
    /// UPDATE, still to be parsed (see [`parse_update`](super::parse_update)).
    Update(Update),
    /// NOTIFICATION.
    Notification(Notification),
    /// KEEPALIVE.
    Keepalive,
    /// ROUTE-REFRESH for this AFI and SAFI.
    RouteRefresh {
        /// AFI.
        afi: u16,
        /// SAFI.
        safi: u8,
    },
}

impl Message {
    /// The message's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Open(_) => "OPEN",
            Message::Update(_) => "UPDATE",
            Message::Notification(_) => "NOTIFICATION",
            Message::Keepalive => "KEEPALIVE",
            Message::RouteRefresh { .. } => "ROUTE-REFRESH",
        }
    }
}

/// Takes the next whole message off the front of `buf`: `Ok(None)` until one is buffered; an
/// error is the NOTIFICATION to send before closing.
pub fn next_message(buf: &mut BytesMut) -> Result<Option<Message>, Notification> {
    let len = match w::peek_message_length(buf, MAX_MESSAGE_LEN as u16) {
        Ok(None) => return Ok(None),
        Ok(Some(len)) => usize::from(len),
        Err(e) => return Err(from_decode_error(&e)),
    };
    check_type_length(buf[18], len, buf)?;
    if buf.len() < len {
        return Ok(None);
    }
    let mut one = buf.split_to(len).freeze();
    let raw = one.clone();
    match w::decode_message(&mut one, MAX_MESSAGE_LEN as u16) {
        Ok(m) => Ok(Some(from_codec_message(m))),
        Err(w::DecodeError::InvalidKeepaliveLength { length }) => Err(bad_length(length)),
        Err(e) => {
            tracing::debug!(error = %e, len = raw.len(), "undecodable message");
            Err(from_decode_error(&e))
        }
    }
}

/// RFC 4271 §6.1: a length wrong for the message's type is a header error, judged from the
/// header alone (before the body is even buffered).
fn check_type_length(kind: u8, len: usize, buf: &[u8]) -> Result<(), Notification> {
    let ok = match kind {
        1 => len >= 29,
        2 => len >= 23,
        3 => len >= 21,
        4 => len == 19,
        5 => len >= 23,
        _ => true,
    };
    if !ok {
        return Err(bad_length(len as u16));
    }
    // RFC 7313 §5: a ROUTE-REFRESH longer than 23 bytes (ORF, which we never negotiate) is its
    // own error, with the whole message as data.
    if kind == 5 && len > 23 {
        let whole = buf.get(..len).unwrap_or(buf).to_vec();
        return Err(Notification::new(
            code::ROUTE_REFRESH,
            subcode::RR_BAD_LENGTH,
            whole,
        ));
    }
    Ok(())
}

fn bad_length(length: u16) -> Notification {
    Notification::new(
        code::HEADER,
        subcode::BAD_LENGTH,
        length.to_be_bytes().to_vec(),
    )
}

fn from_codec_message(m: w::Message) -> Message {
    match m {
        w::Message::Open(o) => Message::Open(from_codec_open(&o)),
        w::Message::Update(u) => Message::Update(Update(u)),
        w::Message::Notification(n) => Message::Notification(Notification::new(
            n.code.as_u8(),
            n.subcode,
            n.data.to_vec(),
        )),
        w::Message::RouteRefresh(rr) => Message::RouteRefresh {
            afi: rr.afi_raw,
            safi: rr.safi_raw,
        },
        // Keepalive, and whatever a later codec adds (never produced for the types we frame).
        _ => Message::Keepalive,
    }
}

fn from_codec_open(o: &w::OpenMessage) -> Open {
    let mut open = Open {
        asn: o.four_byte_as(),
        hold_time: o.hold_time,
        router_id: o.bgp_identifier,
        four_octet_as: false,
        families: Vec::new(),
        multiprotocol: false,
        route_refresh: false,
        graceful_restart: None,
    };
    for cap in &o.capabilities {
        match cap {
            w::Capability::FourOctetAs { .. } => open.four_octet_as = true,
            w::Capability::MultiProtocol { afi, safi } => {
                open.multiprotocol = true;
                if let Some(f) = Family::from_codec(*afi, *safi) {
                    if !open.families.contains(&f) {
                        open.families.push(f);
                    }
                }
            }
            w::Capability::RouteRefresh => open.route_refresh = true,
            w::Capability::GracefulRestart {
                restart_state,
                restart_time,
                families,
                ..
            } => {
                open.graceful_restart = Some(GracefulRestart {
                    restart_time: *restart_time,
                    restarting: *restart_state,
                    families: families
                        .iter()
                        .filter_map(|f| {
                            Family::from_codec(f.afi, f.safi).map(|x| (x, f.forwarding_preserved))
                        })
                        .collect(),
                });
            }
            // RFC 5492: capabilities we do not know are ignored.
            _ => {}
        }
    }
    open
}
