//! NOTIFICATION: the error codes and subcodes we send ([`code`], [`subcode`]), the
//! [`Notification`] type, and how one is named in logs.
//!
//! A NOTIFICATION is what the session sends before closing on any error it finds, and what a
//! router sends before closing on us. [`Notification`]'s `Display` names the code and subcode as
//! the RFCs do ("6/2 (Cease: Administrative Shutdown)") and adds the RFC 9003 shutdown
//! communication when a Cease/2 or Cease/4 carries one. The codec's decode errors become
//! NOTIFICATIONs here too, with the codes the codec maps them to (RFC 4271 §6, RFC 7606).
//! Encoding one for the wire is in `encode.rs`, with everything else we send.

use std::fmt;

use rustbgpd_wire as w;

use super::types::Family;

/// NOTIFICATION error codes (RFC 4271 §4.5, RFC 7313).
pub mod code {
    /// Message Header Error.
    pub const HEADER: u8 = 1;
    /// OPEN Message Error.
    pub const OPEN: u8 = 2;
    /// UPDATE Message Error.
    pub const UPDATE: u8 = 3;
    /// Hold Timer Expired.
    pub const HOLD_TIMER: u8 = 4;
    /// Finite State Machine Error.
    pub const FSM: u8 = 5;
    /// Cease.
    pub const CEASE: u8 = 6;
    /// ROUTE-REFRESH Message Error (RFC 7313).
    pub const ROUTE_REFRESH: u8 = 7;
}

/// Subcodes we send (RFC 4271 §6, RFC 4486, RFC 6608, RFC 5492).
pub mod subcode {
    /// Header: Bad Message Length.
    pub const BAD_LENGTH: u8 = 2;
    /// OPEN: Bad Peer AS.
    pub const BAD_PEER_AS: u8 = 2;
    /// OPEN: Bad BGP Identifier.
    pub const BAD_BGP_ID: u8 = 3;
    /// OPEN: Unacceptable Hold Time.
    pub const BAD_HOLD_TIME: u8 = 6;
    /// OPEN: Unsupported Capability.
    pub const UNSUPPORTED_CAPABILITY: u8 = 7;
    /// FSM: unexpected message in OpenSent.
    pub const FSM_OPEN_SENT: u8 = 1;
    /// FSM: unexpected message in OpenConfirm.
    pub const FSM_OPEN_CONFIRM: u8 = 2;
    /// FSM: unexpected message in Established.
    pub const FSM_ESTABLISHED: u8 = 3;
    /// Cease: Maximum Number of Prefixes Reached.
    pub const MAX_PREFIXES: u8 = 1;
    /// Cease: Administrative Shutdown.
    pub const ADMIN_SHUTDOWN: u8 = 2;
    /// Cease: Connection Collision Resolution.
    pub const COLLISION: u8 = 7;
    /// ROUTE-REFRESH: Invalid Message Length.
    pub const RR_BAD_LENGTH: u8 = 1;
}

/// A NOTIFICATION: code, subcode and data (RFC 4271 §4.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    /// Error code ([`code`]).
    pub code: u8,
    /// Error subcode ([`subcode`]).
    pub subcode: u8,
    /// Diagnostic data.
    pub data: Vec<u8>,
}

impl Notification {
    /// A NOTIFICATION with data.
    pub fn new(code: u8, subcode: u8, data: Vec<u8>) -> Notification {
        Notification {
            code,
            subcode,
            data,
        }
    }

    /// Cease/1 for the family whose prefix went over `limit` (RFC 4486 §4: AFI, SAFI, limit).
    pub fn max_prefixes(family: Family, limit: u32) -> Notification {
        let (afi, safi) = family.afi_safi();
        let mut data = afi.to_be_bytes().to_vec();
        data.push(safi);
        data.extend_from_slice(&limit.to_be_bytes());
        Notification::new(code::CEASE, subcode::MAX_PREFIXES, data)
    }

    /// The shutdown communication of Cease/2 and Cease/4 (RFC 9003), when there is one.
    pub fn shutdown_message(&self) -> Option<String> {
        if self.code != code::CEASE || !matches!(self.subcode, 2 | 4) {
            return None;
        }
        let (&len, rest) = self.data.split_first()?;
        let text = rest.get(..usize::from(len))?;
        Some(String::from_utf8_lossy(text).into_owned())
    }

    fn describe(&self) -> &'static str {
        match (self.code, self.subcode) {
            (1, 1) => "Message Header Error: Connection Not Synchronized",
            (1, 2) => "Message Header Error: Bad Message Length",
            (1, 3) => "Message Header Error: Bad Message Type",
            (1, _) => "Message Header Error",
            (2, 1) => "OPEN Message Error: Unsupported Version Number",
            (2, 2) => "OPEN Message Error: Bad Peer AS",
            (2, 3) => "OPEN Message Error: Bad BGP Identifier",
            (2, 4) => "OPEN Message Error: Unsupported Optional Parameter",
            (2, 6) => "OPEN Message Error: Unacceptable Hold Time",
            (2, 7) => "OPEN Message Error: Unsupported Capability",
            (2, _) => "OPEN Message Error",
            (3, 1) => "UPDATE Message Error: Malformed Attribute List",
            (3, 2) => "UPDATE Message Error: Unrecognized Well-known Attribute",
            (3, 3) => "UPDATE Message Error: Missing Well-known Attribute",
            (3, 4) => "UPDATE Message Error: Attribute Flags Error",
            (3, 5) => "UPDATE Message Error: Attribute Length Error",
            (3, 6) => "UPDATE Message Error: Invalid ORIGIN Attribute",
            (3, 8) => "UPDATE Message Error: Invalid NEXT_HOP Attribute",
            (3, 9) => "UPDATE Message Error: Optional Attribute Error",
            (3, 10) => "UPDATE Message Error: Invalid Network Field",
            (3, 11) => "UPDATE Message Error: Malformed AS_PATH",
            (3, _) => "UPDATE Message Error",
            (4, _) => "Hold Timer Expired",
            (5, _) => "Finite State Machine Error",
            (6, 1) => "Cease: Maximum Number of Prefixes Reached",
            (6, 2) => "Cease: Administrative Shutdown",
            (6, 3) => "Cease: Peer De-configured",
            (6, 4) => "Cease: Administrative Reset",
            (6, 5) => "Cease: Connection Rejected",
            (6, 6) => "Cease: Other Configuration Change",
            (6, 7) => "Cease: Connection Collision Resolution",
            (6, 8) => "Cease: Out of Resources",
            (6, 9) => "Cease: Hard Reset",
            (6, _) => "Cease",
            (7, _) => "ROUTE-REFRESH Message Error",
            (8, _) => "Send Hold Timer Expired",
            _ => "unknown error code",
        }
    }
}

impl fmt::Display for Notification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} ({})", self.code, self.subcode, self.describe())?;
        if let Some(m) = self.shutdown_message() {
            write!(f, " {m:?}")?;
        }
        Ok(())
    }
}

/// The NOTIFICATION the codec maps one of its decode errors to.
pub(super) fn from_decode_error(e: &w::DecodeError) -> Notification {
    let (c, s, d) = e.to_notification();
    Notification::new(c.as_u8(), s, d.to_vec())
}
