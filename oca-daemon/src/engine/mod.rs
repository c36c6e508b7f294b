//! The I/O engines: one worker thread per core, each with its own listeners and event loop,
//! driving the connections (`conn`) the same way through one contract.
//!
//! - [`contract`]: what a connection asks of its engine ([`contract::Next`]) and what an engine
//!   declares it can do ([`contract::Capabilities`]);
//! - [`policy`]: what both engines do the same way (admission at accept, accept errors, the
//!   tick, draining, the panic guard);
//! - [`uring`]: io_uring, the engine of choice: completions, splice, off-thread opens and the
//!   cold (O_DIRECT) pipeline;
//! - [`epoll`]: the fallback where io_uring is unavailable: readiness and sendfile only;
//! - [`cold_io`], [`mapping`]: the cold path's buffers and queues, and the memory they live in.
//!
//! [`choose`] probes io_uring once at start and picks the engine; [`spawn`] starts the workers.
//! The engines are an enum ([`Engine`]), not trait objects: the choice is made once per
//! process, and each worker runs one engine's loop with no indirection per event.

pub mod cold_io;
pub mod contract;
pub mod epoll;
pub mod mapping;
pub mod policy;
pub mod uring;

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::config::{BodyPath, EngineChoice};
use crate::worker::{Shared, WorkerCtx};

/// How often workers check timeouts, draining and liveness.
pub const TICK: Duration = Duration::from_millis(250);

/// The engine that runs.
#[derive(Clone, Debug)]
pub enum Engine {
    /// io_uring, with what the kernel offers.
    Uring(uring::Support),
    /// epoll + sendfile.
    Epoll,
}

impl Engine {
    /// Name used in logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Engine::Uring(_) => "uring",
            Engine::Epoll => "epoll",
        }
    }

    /// How file bytes reach sockets under this engine.
    pub fn body_path(&self) -> BodyPath {
        match self {
            Engine::Uring(s) => s.body_path,
            Engine::Epoll => BodyPath::Sendfile,
        }
    }
}

/// Picks the engine: probes io_uring and logs why it is or is not used.
pub fn choose(choice: EngineChoice, body_path: BodyPath) -> Result<Engine> {
    if choice == EngineChoice::Epoll {
        tracing::info!(
            engine = "epoll",
            reason = "forced by configuration",
            "engine selected"
        );
        return Ok(Engine::Epoll);
    }
    match uring::probe(body_path) {
        Ok(support) => {
            tracing::info!(engine = "uring", opcodes = %support.describe(), "engine selected");
            Ok(Engine::Uring(support))
        }
        Err(reason) if choice == EngineChoice::Auto => {
            tracing::warn!(engine = "epoll", reason = %reason, "io_uring unavailable, falling back");
            Ok(Engine::Epoll)
        }
        Err(reason) => bail!("--engine uring: {reason}"),
    }
}

/// What a worker thread starts with.
pub struct Worker {
    /// The worker's own SO_REUSEPORT listener.
    pub listener: OwnedFd,
    /// Its HTTPS listener, when one is configured.
    pub tls_listener: Option<OwnedFd>,
    /// Its context.
    pub ctx: WorkerCtx,
}

/// Starts one worker per listener; `on_fail` runs if a worker's loop fails.
pub fn spawn(
    engine: &Engine,
    listeners: Vec<(OwnedFd, Option<OwnedFd>)>,
    shared: Arc<Shared>,
    on_fail: Arc<dyn Fn() + Send + Sync>,
) -> Result<Vec<JoinHandle<()>>> {
    let mut handles = Vec::with_capacity(listeners.len());
    for (index, (listener, tls_listener)) in listeners.into_iter().enumerate() {
        let shared = shared.clone();
        let engine = engine.clone();
        let on_fail = on_fail.clone();
        let handle = std::thread::Builder::new()
            .name(format!("oca-worker-{index}"))
            .spawn(move || {
                // Built on its own thread: the context holds per-worker, non-Send state.
                let worker = Worker {
                    listener,
                    tls_listener,
                    ctx: WorkerCtx::new(shared, index),
                };
                let result = match engine {
                    Engine::Uring(support) => uring::run(worker, &support),
                    Engine::Epoll => epoll::run(worker),
                };
                if let Err(e) = result {
                    tracing::error!(worker = index, error = %e, "worker failed");
                    on_fail();
                }
            })?;
        handles.push(handle);
    }
    Ok(handles)
}
