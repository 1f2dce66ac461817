//! The target port: what every target (Docker, Kubernetes, Proxmox, the in-memory one)
//! implements, and all the runtime knows of a target.
//!
//! - [`Target`]: observe the objects a deployment owns, apply one plan step to its end
//!   state, wait for a step's condition within a deadline.
//! - [`Rollouts`]: the rollout operations on one [`Unit`] (what the target stops and starts
//!   as one: a container, a Kubernetes workload, a Proxmox node's agent services): prepare,
//!   stop the old instance keeping it, start the new one, probe it, put back exactly the
//!   previous revision, and settle once the rollout is over.
//! - [`Artifacts`]: the fleet's images (built from source, provided where units run, kept
//!   for rollbacks) and the details `status` shows.
//! - [`StateStore`]: the deployment's own documents (lock, rollout journal, revision
//!   history), kept on the target with compare-and-swap writes so every operator of the
//!   fleet sees the same ones.
//!
//! The traits use native `async fn`: the runtime drives them on one thread, with no
//! `Send` bound on the futures. No I/O type appears here: errors are [`TargetError`]s
//! that say whether the target answered.
//!
//! Architecture invariant: the runtime names no adapter type; it gets a value implementing
//! these traits from `targets`' factory, or the in-memory target in its tests.

mod artifacts;
mod error;
pub mod state;
mod target;
mod unit;

pub use artifacts::{Artifacts, Details, ImageEvent, ImageFacts, ImageRequest, Provide, StoredImage};
pub use error::{ErrorKind, TargetError};
pub use state::{Document, StateError, StateStore};
pub use target::{Readiness, Target};
pub use unit::{Current, Rollouts, Unit};

/// Everything a target implements: what the runtime's commands are generic over.
pub trait Port: Target + Rollouts + Artifacts {
    /// Where the deployment's documents live on this target.
    type Store: StateStore;

    /// The deployment's state store (on the primary node: the one holding the datahub,
    /// else the first).
    fn store(&self) -> &Self::Store;
}
