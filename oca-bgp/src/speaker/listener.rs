//! Listening: one task per listening address accepts connections and hands each to its
//! neighbour's task by source address.
//!
//! A connection from an address that is not a configured neighbour is closed at once, before a
//! byte is read; so is one whose neighbour's task already has two connections waiting to be
//! taken (its inbox is full). The listening sockets carry every usable neighbour's TCP-MD5 or TCP-AO
//! key, set before `listen()` so that accepted connections inherit it (`transport.rs`). A
//! failed accept (out of descriptors and the like) pauses the loop briefly rather than spin.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::peer::{usable_auth, Inbox};
use crate::config::Config;
use crate::transport::{self, Auth, KernelSupport};

/// Binds every listening address and starts its task; an error names the address that could
/// not be bound.
pub(super) fn start_listeners(
    config: &Config,
    kernel: &KernelSupport,
    routes: Arc<HashMap<IpAddr, Inbox>>,
) -> Result<Vec<JoinHandle<()>>, (SocketAddr, io::Error)> {
    let keys: Vec<(IpAddr, Auth<'_>)> = config
        .neighbors
        .iter()
        .filter_map(|n| usable_auth(n, kernel).ok().map(|a| (n.address, a)))
        .collect();
    let mut tasks = Vec::new();
    for ip in &config.listen_addresses {
        let addr = SocketAddr::new(*ip, config.listen_port);
        let l = transport::listen(addr, &keys).map_err(|source| (addr, source))?;
        tracing::info!(%addr, "BGP listening");
        tasks.push(tokio::spawn(accept_loop(l, routes.clone())));
    }
    Ok(tasks)
}

async fn accept_loop(l: tokio::net::TcpListener, routes: Arc<HashMap<IpAddr, Inbox>>) {
    loop {
        let (stream, from) = match l.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of descriptors and the like: pause rather than spin.
                tracing::warn!(error = %e, "BGP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let from = from.ip().to_canonical();
        match routes.get(&from) {
            Some(inbox) => {
                if inbox.try_send(stream).is_err() {
                    tracing::debug!(%from, "BGP connection dropped: neighbour busy");
                }
            }
            None => tracing::info!(%from, "BGP connection from a non-neighbour closed"),
        }
    }
}
