//! Each target's lowering: the target-neutral [`Fleet`](crate::fleet::Fleet) and that
//! target's settings → the resources the target applies, the planner diffs and the
//! renderers print.
//!
//! Every lowering has the same shape, `resources(fleet, settings) -> Vec<Resource<Object>>`,
//! pure and deterministic, and is the one place where that target's choices are made: object
//! names, how an agent reaches the datahub, security defaults, what forces a replacement.
//! Renderers (`targets/src/render`) and adapters only print or apply what it decided.
//!
//! - [`docker`]: networks, volumes and containers per node (typed [`docker::DockerObject`]).
//! - [`kubernetes`]: the objects of `kubectl apply` (`serde_json::Value` built in code).
//! - [`proxmox`]: the datahub's LXC container and one per node for its agents (the parameters
//!   of `POST /nodes/{node}/lxc`).
//!
//! Adding a target is one module here with the same entry point, plus its adapter.

pub mod docker;
pub mod kubernetes;
pub mod proxmox;
