//! The rivetctl domain: pure, synchronous, deterministic, no I/O.
//!
//! - [`config`]: `rivet.config.yaml` from text to a checked, typed model.
//! - [`fleet`]: the desired state of a deployment, independent of the target.
//! - [`resource`]: managed objects as flat, diffable fields with a spec hash.
//! - [`lower`]: each target's lowering of the fleet into the resources it applies (Docker
//!   networks, volumes and containers; Kubernetes objects; Proxmox LXC containers), all
//!   with the same shape; [`docker`] is [`lower::docker`].
//! - [`plan`]: desired × observed → an immutable plan, and how to print it.
//! - [`gate`]: the health gate of an agent container (pending, passed, failed and why),
//!   shared by the rollout and `infra up`.
//! - [`rollout`]: the rolling-update state machine (batches, health gates, rollback); its
//!   state is the update journal.
//! - [`port`]: the traits every target implements (observe, apply, wait, rollout
//!   operations on one unit, the state store); the runtime knows targets only through them.
//! - [`memory`]: an in-memory target for tests.
//! - [`state`]: the deployment's lock, journal and history on its target, above the
//!   state store port: the lock decision and an in-memory store.
//!
//! Architecture invariant: this crate depends on no I/O crate (no tokio, bollard, kube,
//! russh, hyper, reqwest); clocks and randomness are passed in.

pub mod config;
pub mod digest;
pub use lower::docker;
pub mod fleet;
pub mod gate;
pub mod lower;
pub mod memory;
pub mod mesh;
pub mod plan;
mod pool;
pub mod port;
pub mod resource;
pub mod rollout;
pub mod state;
