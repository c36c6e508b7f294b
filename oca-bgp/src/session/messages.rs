//! Bytes in: whole messages taken off a connection's buffer, and each one sent to its
//! transition by the connection's state.
//!
//! [`Session::received`] takes bytes in any chunks; the connection's buffer keeps less than one
//! message between calls. A header error ends the connection with its NOTIFICATION. Each whole
//! message then goes by (connection state, message type):
//!
//! | state | message | what happens |
//! |---|---|---|
//! | any | NOTIFICATION | logged (with RFC 9003 shutdown text), the connection ends |
//! | OpenSent | OPEN | checked and negotiated (`open.rs`) |
//! | OpenConfirm | KEEPALIVE | Established (`open.rs`) |
//! | Established | KEEPALIVE | the hold timer restarts |
//! | Established | UPDATE | the hold timer restarts; routes (`routes.rs`) |
//! | Established | ROUTE-REFRESH | ignored: we announce nothing |
//! | anything else | | FSM Error with RFC 6608's subcodes: 5/1 in OpenSent, 5/2 in OpenConfirm, 5/3 in Established |
//!
//! Reading stops at the first message after which the connection is gone.

use std::time::Instant;

use super::conn::{ConnId, ConnState, End};
use super::Session;
use crate::wire::{self, code, subcode, Message, Notification};

impl Session {
    /// Bytes arrived on connection `id`, in any chunks.
    pub fn received(&mut self, id: ConnId, bytes: &[u8], now: Instant) {
        let Some(c) = self.conn_mut(id) else {
            return;
        };
        c.buf.extend_from_slice(bytes);
        while let Some(c) = self.conn_mut(id) {
            match wire::next_message(&mut c.buf) {
                Ok(None) => break,
                Ok(Some(m)) => {
                    if !self.handle(id, m, now) {
                        break;
                    }
                }
                Err(n) => {
                    self.end(id, End::Sent(n), now);
                    break;
                }
            }
        }
        debug_assert!(self
            .conn_mut(id)
            .is_none_or(|c| c.buf.len() < wire::MAX_MESSAGE_LEN));
        self.update_state(now);
    }

    /// One message on connection `id`; whether the connection is still open.
    fn handle(&mut self, id: ConnId, m: Message, now: Instant) -> bool {
        let Some(c) = self.conn_mut(id) else {
            return false;
        };
        let state = c.state;
        match (state, m) {
            (_, Message::Notification(n)) => {
                self.end(id, End::Received(n), now);
                false
            }
            (ConnState::OpenSent, Message::Open(open)) => self.on_open(id, &open, now),
            (ConnState::OpenConfirm, Message::Keepalive) => {
                self.establish(id, now);
                true
            }
            (ConnState::Established, Message::Keepalive) => {
                c.heard(now);
                true
            }
            (ConnState::Established, Message::Update(u)) => {
                c.heard(now);
                self.on_update(id, &u, now)
            }
            (ConnState::Established, Message::RouteRefresh { afi, safi }) => {
                // No Adj-RIB-Out: there is nothing to send again.
                tracing::debug!(neighbor = %self.cfg.peer_addr, afi, safi, "ROUTE-REFRESH ignored");
                true
            }
            (state, m) => {
                let sub = match state {
                    ConnState::OpenSent => subcode::FSM_OPEN_SENT,
                    ConnState::OpenConfirm => subcode::FSM_OPEN_CONFIRM,
                    ConnState::Established => subcode::FSM_ESTABLISHED,
                };
                tracing::debug!(neighbor = %self.cfg.peer_addr, message = m.name(), ?state, "unexpected message");
                self.end(
                    id,
                    End::Sent(Notification::new(code::FSM, sub, vec![])),
                    now,
                );
                false
            }
        }
    }
}
