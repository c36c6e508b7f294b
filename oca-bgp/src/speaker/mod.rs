//! The speaker: every neighbour's session driven over real sockets, in the caller's tokio
//! runtime, behind one handle.
//!
//! # Use
//!
//! ```no_run
//! # async fn f(text: &str) -> Result<(), Box<dyn std::error::Error>> {
//! let config = oca_bgp::Config::from_toml(text)?;
//! let bgp = oca_bgp::Speaker::start(config).await?;   // listens, dials
//! let now = bgp.snapshot();                           // sessions and accepted routes
//! bgp.route_refresh("10.250.0.1".parse()?)?;          // "soft reset in"
//! bgp.shutdown().await;                               // Cease/2 to every neighbour
//! # Ok(()) }
//! ```
//!
//! # Tasks
//!
//! One task per listening address accepts connections and hands each to its neighbour's task by
//! source address; a connection from anyone else is closed at once, before a byte is read. One
//! task per neighbour owns its [`Session`] (behind a mutex, so that [`SpeakerHandle::snapshot`]
//! reads it without waiting on the task), its dial in progress and its connections, and loops:
//! carry out the session's actions, then wait for whichever comes first of the session's next
//! deadline, a handed-over connection, the dial, bytes on a connection, or a nudge from the
//! handle. Each connection has a writer task fed through a bounded queue, so a router that
//! stops reading cannot stall the session; a full queue or a failed write closes that
//! connection.
//!
//! The files: this one is the handle ([`Speaker::start`], [`SpeakerHandle`], the snapshot);
//! `peer.rs` is one neighbour's task (its session, dial, connections and their writers);
//! `listener.rs` is one listening address's task. The handle uses both; neither uses the handle.
//!
//! # Bounds
//!
//! Reads are at most [`READ_CHUNK`] bytes and the session keeps less than one message beyond
//! them; a session has at most two connections and one dial; each write and each final flush
//! has a deadline; a neighbour task waits at most [`SHUTDOWN_GRACE`] for its writers on the
//! way out.

mod listener;
mod peer;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use thiserror::Error;
use tokio::task::JoinHandle;

use self::listener::start_listeners;
use self::peer::{Peer, PeerHandle};
pub use self::peer::{READ_CHUNK, SHUTDOWN_GRACE};
use crate::config::{Config, ConfigError};
use crate::rib::AcceptedRoute;
use crate::session::{Counters, Negotiated, RefreshError, Session, SessionState};
use crate::transport;

/// Why the speaker could not start.
#[derive(Debug, Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listening address could not be bound.
    #[error("BGP listener on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
}

/// Why a command to a neighbour failed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CommandError {
    /// No such neighbour is configured.
    #[error("no BGP neighbour {0}")]
    UnknownNeighbor(IpAddr),
    /// The session cannot do it now.
    #[error("BGP neighbour {0}: {1}")]
    Refresh(IpAddr, RefreshError),
}

/// Everything the speaker knows, at one moment.
#[derive(Clone, Debug, Serialize)]
pub struct BgpSnapshot {
    /// Our AS.
    pub local_as: u32,
    /// Our BGP identifier.
    pub router_id: Ipv4Addr,
    /// One per configured neighbour, in configuration order.
    pub sessions: Vec<SessionSnapshot>,
}

/// One session, at one moment.
#[derive(Clone, Debug, Serialize)]
pub struct SessionSnapshot {
    /// The neighbour's address.
    pub neighbor: IpAddr,
    /// Its AS.
    pub peer_as: u32,
    /// RFC 4271 state.
    pub state: SessionState,
    /// Unix time (seconds) the state last changed.
    pub state_since_unix: u64,
    /// Routes received and held, accepted or not.
    pub prefixes_received: usize,
    /// Routes the import filter accepted.
    pub prefixes_accepted: usize,
    /// Routes kept stale through the neighbour's graceful restart.
    pub stale: usize,
    /// Times the session went down from Established.
    pub flaps: u64,
    /// Why it last went down or failed to come up; kept once it is back up, as routers show it.
    pub last_error: Option<String>,
    /// What the Established session negotiated.
    pub negotiated: Option<Negotiated>,
    /// While stale routes wait for the neighbour: seconds until they are dropped.
    pub graceful_restart_remaining_secs: Option<u64>,
    /// Established and End-of-RIB received for every negotiated family: the neighbour's whole
    /// table is in.
    pub table_complete: bool,
    /// Counts over the session's life.
    pub counters: Counters,
    /// The accepted routes, in prefix order.
    pub routes: Vec<AcceptedRoute>,
}

/// Starts the speaker.
pub struct Speaker;

impl Speaker {
    /// Validates `config`, probes the kernel for TCP-MD5 and TCP-AO, binds the listeners and
    /// starts every session. Call it inside a tokio runtime with the time and net drivers.
    pub async fn start(config: Config) -> Result<SpeakerHandle, StartError> {
        config.validate()?;
        let kernel = transport::probe();
        tracing::info!(md5 = ?kernel.md5, tcp_ao = ?kernel.tcp_ao, "TCP authentication support");
        let now = Instant::now();
        let mut peers = Vec::new();
        let mut routes = HashMap::new();
        for (i, n) in config.neighbors.iter().enumerate() {
            let (peer, inbox) = Peer::new(&config, n, &kernel, seed(i), now);
            routes.insert(n.address, inbox);
            peers.push(peer);
        }
        let listeners = start_listeners(&config, &kernel, Arc::new(routes))
            .map_err(|(addr, source)| StartError::Listen { addr, source })?;
        let peers = peers.into_iter().map(Peer::spawn).collect();
        Ok(SpeakerHandle {
            local_as: config.local_as,
            router_id: config.router_id,
            peers,
            listeners,
        })
    }
}

/// The running speaker. Dropping it aborts every task at once (no Cease); call
/// [`SpeakerHandle::shutdown`] to say goodbye properly.
pub struct SpeakerHandle {
    local_as: u32,
    router_id: Ipv4Addr,
    peers: Vec<PeerHandle>,
    listeners: Vec<JoinHandle<()>>,
}

impl SpeakerHandle {
    /// Every session and its accepted routes, now.
    pub fn snapshot(&self) -> BgpSnapshot {
        BgpSnapshot {
            local_as: self.local_as,
            router_id: self.router_id,
            sessions: self
                .peers
                .iter()
                .map(|p| session_snapshot(&p.shared.session()))
                .collect(),
        }
    }

    /// Asks `neighbor` to send its routes again (ROUTE-REFRESH, RFC 2918).
    pub fn route_refresh(&self, neighbor: IpAddr) -> Result<(), CommandError> {
        let p = self
            .peers
            .iter()
            .find(|p| p.shared.addr == neighbor)
            .ok_or(CommandError::UnknownNeighbor(neighbor))?;
        p.shared
            .session()
            .route_refresh()
            .map_err(|e| CommandError::Refresh(neighbor, e))?;
        p.shared.nudge.notify_one();
        Ok(())
    }

    /// Sends Cease/2 (Administrative Shutdown) to every neighbour, closes everything and waits
    /// (at most [`SHUTDOWN_GRACE`] or so) for it to be sent.
    pub async fn shutdown(mut self) {
        for l in &self.listeners {
            l.abort();
        }
        for p in &self.peers {
            p.shared.stopping.store(true, Ordering::SeqCst);
            p.shared.session().stop(Instant::now());
            p.shared.nudge.notify_one();
        }
        let tasks: Vec<JoinHandle<()>> = self
            .peers
            .iter_mut()
            .filter_map(|p| p.task.take())
            .collect();
        let all = async {
            for t in tasks {
                let _ = t.await;
            }
        };
        if tokio::time::timeout(SHUTDOWN_GRACE + Duration::from_secs(1), all)
            .await
            .is_err()
        {
            tracing::warn!("BGP shutdown: some sessions did not finish in time");
        }
    }
}

impl Drop for SpeakerHandle {
    fn drop(&mut self) {
        for l in &self.listeners {
            l.abort();
        }
        for p in &self.peers {
            if let Some(t) = &p.task {
                t.abort();
            }
        }
    }
}

fn session_snapshot(s: &Session) -> SessionSnapshot {
    let now = Instant::now();
    let unix_now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let since = unix_now.saturating_sub(now.saturating_duration_since(s.state_since()));
    let cfg = s.config();
    SessionSnapshot {
        neighbor: cfg.peer_addr,
        peer_as: cfg.peer_as,
        state: s.state(),
        state_since_unix: since.as_secs(),
        prefixes_received: s.rib().received(),
        prefixes_accepted: s.rib().accepted(),
        stale: s.rib().stale(),
        flaps: s.flaps(),
        last_error: s.last_error().map(str::to_string),
        negotiated: s.negotiated().cloned(),
        graceful_restart_remaining_secs: s
            .restart_deadline()
            .map(|d| d.saturating_duration_since(now).as_secs()),
        table_complete: s.table_complete(),
        counters: s.counters(),
        routes: s.rib().accepted_routes().collect(),
    }
}

/// Spreads the neighbours' retry jitter apart.
fn seed(i: usize) -> u64 {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    t ^ ((i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}
