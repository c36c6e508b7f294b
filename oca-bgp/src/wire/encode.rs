//! Writing: every message we send, as bytes ready for the socket.
//!
//! We only ever send OPEN, KEEPALIVE, NOTIFICATION, ROUTE-REFRESH and End-of-RIB markers: the
//! speaker announces nothing. Our OPEN ([`encode_open`]) carries version 4, our AS (AS_TRANS
//! 23456 in the 2-byte field when it does not fit, RFC 6793 §4.1), the hold time, our router id,
//! and the capabilities MP for each family, route refresh, 4-octet AS, and graceful restart with
//! R=0, N=0, our restart time and no address-family tuples: RFC 4724 §3 reads that as "I keep no
//! forwarding state, but I do the receiving speaker's part". Every message fits in
//! [`MAX_MESSAGE_LEN`](super::MAX_MESSAGE_LEN): NOTIFICATION data too long for one is cut.

use std::net::Ipv4Addr;

use bytes::Bytes;
use rustbgpd_wire as w;

use super::notification::Notification;
use super::types::Family;
use super::{HEADER_LEN, MAX_MESSAGE_LEN};

/// What we put in our OPEN.
#[derive(Clone, Debug)]
pub struct OpenParams {
    /// Our AS.
    pub local_as: u32,
    /// Our hold time, seconds.
    pub hold_time: u16,
    /// Our BGP identifier.
    pub router_id: Ipv4Addr,
    /// The families we take.
    pub families: Vec<Family>,
    /// The restart time our Graceful Restart capability states, seconds (12 bits).
    pub restart_time: u16,
}

/// Our OPEN: MP for each family, route refresh, 4-octet AS, and Graceful Restart with no
/// family tuples (RFC 4724 §3: we keep no forwarding state, but do the receiving speaker's part).
pub fn encode_open(p: &OpenParams) -> Vec<u8> {
    let mut caps: Vec<w::Capability> = p
        .families
        .iter()
        .map(|f| {
            let (afi, safi) = f.to_codec();
            w::Capability::MultiProtocol { afi, safi }
        })
        .collect();
    caps.push(w::Capability::RouteRefresh);
    caps.push(w::Capability::FourOctetAs { asn: p.local_as });
    caps.push(w::Capability::GracefulRestart {
        restart_state: false,
        notification: false,
        restart_time: p.restart_time.min(0x0fff),
        families: Vec::new(),
    });
    let open = w::OpenMessage {
        version: 4,
        // RFC 6793 §4.1: AS_TRANS when our AS does not fit two octets.
        my_as: u16::try_from(p.local_as).unwrap_or(23456),
        hold_time: p.hold_time,
        bgp_identifier: p.router_id,
        capabilities: caps,
    };
    encode(&w::Message::Open(open))
}

/// A KEEPALIVE.
pub fn encode_keepalive() -> Vec<u8> {
    encode(&w::Message::Keepalive)
}

/// A ROUTE-REFRESH asking the neighbour to send `family` again (RFC 2918).
pub fn encode_route_refresh(family: Family) -> Vec<u8> {
    let (afi, safi) = family.to_codec();
    encode(&w::Message::RouteRefresh(w::RouteRefreshMessage::new(
        afi, safi,
    )))
}

/// Our End-of-RIB for `family` (RFC 4724 §2): an empty UPDATE for IPv4 unicast, an UPDATE
/// holding only an empty MP_UNREACH_NLRI for any other family.
pub fn encode_end_of_rib(family: Family) -> Vec<u8> {
    let path_attributes = match family {
        Family::Ipv4Unicast => Bytes::new(),
        // Written out: the codec's MP_UNREACH_NLRI builder wants every family's NLRI lists.
        Family::Ipv6Unicast => Bytes::from_static(&[0x80, 15, 3, 0, 2, 1]),
    };
    encode(&w::Message::Update(w::UpdateMessage {
        withdrawn_routes: Bytes::new(),
        path_attributes,
        nlri: Bytes::new(),
    }))
}

impl Notification {
    /// The message on the wire; data too long for one message is cut to fit.
    pub fn encode(&self) -> Vec<u8> {
        let mut data = self.data.clone();
        data.truncate(MAX_MESSAGE_LEN - HEADER_LEN - 2);
        let n = w::NotificationMessage::new(
            w::NotificationCode::from_u8(self.code),
            self.subcode,
            Bytes::from(data),
        );
        encode(&w::Message::Notification(n))
    }
}

fn encode(m: &w::Message) -> Vec<u8> {
    // Our messages are a few dozen bytes and NOTIFICATION data is cut to fit: never too long.
    w::encode_message(m).map_or_else(|_| Vec::new(), |b| b.to_vec())
}
