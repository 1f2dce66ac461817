//! The factory: from a fleet to its connected target, handed to the runtime as a value
//! implementing the port ([`orchestrator::port::Port`]). The runtime names no adapter type:
//! it passes a [`Visit`]or, which is called with whichever adapter the fleet's target needs.

use std::path::Path;

use orchestrator::config::Target as TargetKind;
use orchestrator::fleet::Fleet;
use orchestrator::port::{Port, TargetError};

/// What the runtime does with a connected target: called once with the adapter.
#[allow(async_fn_in_trait)] // driven on one thread (see `orchestrator::port`)
pub trait Visit {
    type Output;

    async fn visit<T: Port>(self, target: &T) -> Self::Output;
}

/// How to open a target.
#[derive(Debug, Clone, Copy)]
pub struct OpenOptions<'a> {
    /// The config's directory: relative paths in it (SSH keys, known_hosts, TLS files) are
    /// relative to this.
    pub config_dir: &'a Path,
    /// Connect to these nodes only (`update --node`); `None`: every node of the fleet. The
    /// primary node (state store) is always connected.
    pub nodes: Option<&'a [String]>,
}

/// Connects to the fleet's target and runs `visitor` with it.
pub async fn open<V: Visit>(fleet: &Fleet, options: &OpenOptions<'_>, visitor: V) -> Result<V::Output, TargetError> {
    match fleet.target {
        TargetKind::Docker => {
            let _ = (options, visitor);
            Err(TargetError::failed("the Docker adapter is being wired to the port (issue 8)"))
        }
        other => Err(TargetError::failed(format!("applying to the {} target is not implemented yet", other.as_str()))
            .with_hint("`rivetctl infra preview --out DIR` renders its manifests/parameters for you to apply")),
    }
}
