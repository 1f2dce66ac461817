//! The Docker Engine adapter (bollard): connect, observe what a deployment owns, apply
//! plans, build images, wait for health and for the agents' health gate.
//!
//! Every call goes through [`Engine`], which counts API calls (the no-op `up` benchmark
//! reports them) and knows which node it serves.

pub mod apply;
pub mod base_images;
pub mod build;
mod connect;
pub mod container;
pub mod exec;
pub mod gate;
pub mod health;
mod observe;
pub mod port;
pub mod ship;
pub mod tls;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

pub use bollard::Docker;
pub use connect::{ConnectError, connect, local_address};
pub use observe::{ObserveError, observe};

/// A connection to one node's engine.
#[derive(Clone)]
pub struct Engine {
    pub docker: Docker,
    /// The node this engine serves (label `io.rivetctl.node`).
    pub node: String,
    /// Where it was reached, for messages (`unix:///var/run/docker.sock`).
    pub address: String,
    /// Spoken to in plain HTTP over TCP (`insecure: true`): every run warns.
    pub plain_tcp: bool,
    calls: Arc<AtomicUsize>,
}

impl Engine {
    pub fn new(docker: Docker, node: impl Into<String>, address: impl Into<String>) -> Self {
        Engine {
            docker,
            node: node.into(),
            address: address.into(),
            plain_tcp: false,
            calls: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Counts one API call; returns the client to make it with.
    pub fn call(&self) -> &Docker {
        self.calls.fetch_add(1, Ordering::Relaxed);
        &self.docker
    }

    /// API calls made so far through this engine (and its clones).
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }
}
