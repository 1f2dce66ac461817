//! The deployment's own documents on the target: the lock, the rollout journal and the
//! revision history. Every write is a compare-and-swap on the document's generation, so
//! two runners never overwrite each other unseen; the lock is built on that (`crate::state`).

/// One stored document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// Increases with every write; what a compare-and-swap compares.
    pub generation: u64,
    pub body: String,
}

/// Why a state operation did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The document is not at the generation the write expected: someone else wrote it.
    #[error("state document \"{name}\" was changed by another run (expected generation {expected:?}, found {found:?})")]
    Conflict { name: String, expected: Option<u64>, found: Option<u64> },
    /// The target failed or does not answer.
    #[error(transparent)]
    Target(#[from] super::TargetError),
}

/// Where a deployment's documents live on its target (Docker: labelled volumes on the
/// primary node; Kubernetes: a Lease and a ConfigMap; Proxmox: the datahub node).
#[allow(async_fn_in_trait)] // see `super::Target`
pub trait StateStore {
    /// Where the documents are, for messages (`volumes rivetctl-state-* on node hub`).
    fn location(&self) -> String;

    /// Every document of the deployment, by name.
    async fn load(&self) -> Result<std::collections::BTreeMap<String, Document>, StateError>;

    /// Writes `body` as document `name` if it is at generation `expected` (`None`: it must
    /// not exist); returns the new generation.
    async fn store(&self, name: &str, expected: Option<u64>, body: &str) -> Result<u64, StateError>;

    /// Removes document `name` if it is at generation `expected`.
    async fn remove(&self, name: &str, expected: u64) -> Result<(), StateError>;

    /// Removes every document of the deployment (`infra destroy --volumes`).
    async fn destroy(&self) -> Result<(), StateError>;
}
