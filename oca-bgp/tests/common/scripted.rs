//! The speaker in this process on loopback, and a router played by the test over a plain
//! socket: for messages no real router will send.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use oca_bgp::{BgpSnapshot, Config, ImportFilter, Neighbor, SessionState, Speaker, SpeakerHandle};
use socket2::{Domain, Socket, Type};

use super::msg;

/// The router's address: loopback, but not 127.0.0.1, so that the test can also be somebody else.
pub const ROUTER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// The router's AS and identifier.
pub const ROUTER_AS: u32 = 64500;
pub const ROUTER_ID: [u8; 4] = [10, 0, 0, 1];

/// A speaker with one passive neighbour, [`ROUTER`], on its own port.
pub struct Harness {
    pub bgp: Option<SpeakerHandle>,
    pub rt: tokio::runtime::Runtime,
    pub port: u16,
}

impl Harness {
    /// The speaker with default neighbour settings (passive, bogons allowed).
    pub fn start() -> Harness {
        Harness::start_with(|_| {})
    }

    /// The speaker, its neighbour's settings changed by `f`.
    pub fn start_with(f: impl FnOnce(&mut Neighbor)) -> Harness {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let port = test_support::free_port();
        let mut n = Neighbor::new(IpAddr::V4(ROUTER), ROUTER_AS);
        n.passive = true;
        n.import = ImportFilter {
            refuse_bogons: false,
            ..ImportFilter::default()
        };
        f(&mut n);
        let config = Config {
            local_as: 64501,
            router_id: Ipv4Addr::new(10, 0, 0, 2),
            listen_addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            listen_port: port,
            graceful_restart_time: 120,
            neighbors: vec![n],
        };
        let bgp = rt.block_on(Speaker::start(config)).unwrap();
        Harness {
            bgp: Some(bgp),
            rt,
            port,
        }
    }

    pub fn snapshot(&self) -> BgpSnapshot {
        self.bgp.as_ref().unwrap().snapshot()
    }

    pub fn state(&self) -> SessionState {
        self.snapshot().sessions[0].state
    }

    /// The accepted prefixes, as text.
    pub fn prefixes(&self) -> Vec<String> {
        self.snapshot().sessions[0]
            .routes
            .iter()
            .map(|r| r.route.prefix.to_string())
            .collect()
    }

    /// A connection from `from` (any loopback address).
    pub fn connect_from(&self, from: Ipv4Addr) -> Router {
        self.try_connect_from(from, Duration::from_secs(5))
            .expect("connecting to the speaker")
    }

    /// A connection from `from`, unless it is not accepted within `within`.
    pub fn try_connect_from(&self, from: Ipv4Addr, within: Duration) -> Option<Router> {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.bind(&SocketAddr::new(IpAddr::V4(from), 0).into())
            .unwrap();
        let to = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), self.port);
        s.connect_timeout(&to.into(), within).ok()?;
        let s: TcpStream = s.into();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Some(Router { s })
    }

    /// The router connected and through OPEN, KEEPALIVE and our End-of-RIBs.
    pub fn established(&self, hold: u16) -> Router {
        let mut r = self.connect_from(ROUTER);
        r.send(&msg::router_open(ROUTER_AS, hold, ROUTER_ID, None));
        assert_eq!(r.expect_kind(), 1, "our OPEN");
        assert_eq!(r.expect_kind(), 4, "our KEEPALIVE");
        r.send(&msg::keepalive());
        assert_eq!(r.expect_kind(), 2, "our IPv4 End-of-RIB");
        assert_eq!(r.expect_kind(), 2, "our IPv6 End-of-RIB");
        super::wait_until(Duration::from_secs(5), "Established", || {
            (self.state() == SessionState::Established).then_some(())
        });
        r
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(bgp) = self.bgp.take() {
            self.rt.block_on(bgp.shutdown());
        }
    }
}

/// The router's end of a connection.
pub struct Router {
    pub s: TcpStream,
}

impl Router {
    pub fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).unwrap();
    }

    /// The next whole message, or `None` at end of stream (or after the read timeout).
    pub fn read_message(&mut self) -> Option<Vec<u8>> {
        let mut head = [0u8; 19];
        self.s.read_exact(&mut head).ok()?;
        let len = usize::from(u16::from_be_bytes([head[16], head[17]]));
        let mut m = head.to_vec();
        m.resize(len.max(19), 0);
        self.s.read_exact(&mut m[19..]).ok()?;
        Some(m)
    }

    /// The next message's type; panics at end of stream.
    pub fn expect_kind(&mut self) -> u8 {
        self.read_message().expect("a message")[18]
    }

    /// The NOTIFICATION that must come next (KEEPALIVEs skipped), then end of stream.
    pub fn expect_notification(&mut self) -> (u8, u8, Vec<u8>) {
        loop {
            let m = self
                .read_message()
                .expect("a NOTIFICATION before the close");
            if m[18] == 4 {
                continue;
            }
            assert_eq!(m[18], 3, "expected a NOTIFICATION, got type {}", m[18]);
            assert!(
                self.closed_within(Duration::from_secs(5)),
                "closed after it"
            );
            return (m[19], m[20], m[21..].to_vec());
        }
    }

    /// Whether the speaker closes the connection within `within` (KEEPALIVEs ignored).
    pub fn closed_within(&mut self, within: Duration) -> bool {
        let end = Instant::now() + within;
        let mut buf = [0u8; 4096];
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            self.s.set_read_timeout(Some(left)).unwrap();
            match self.s.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return false
                }
                Err(_) => return true,
            }
        }
    }
}
