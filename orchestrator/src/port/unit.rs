//! The rollout operations on one unit: the part of the port that the rollout driver
//! (`update`, `rollback`, and `infra up` when it changes running agents) uses.
//!
//! The rollout machine (`crate::rollout`) decides; these operations carry its commands out
//! on one unit. Each is idempotent, so a resumed rollout can repeat one safely.

use std::sync::Arc;
use std::time::Duration;

use super::TargetError;
use crate::gate::ProbeReport;
use crate::resource::Resource;

/// What a target stops and starts as one. A unit carries its agents, so that
/// `max_parallel` counts agents even where one unit serves several (a Proxmox node running
/// several agent services).
#[derive(Debug)]
pub struct Unit<P> {
    pub node: String,
    /// The agent ids the unit serves, sorted.
    pub agents: Vec<String>,
    /// What the unit should become (the new revision's desired object).
    pub desired: Arc<Resource<P>>,
}

impl<P> Unit<P> {
    /// One unit per agent object among `desired` (its component is an agent) that `keep`
    /// accepts: the unit of targets that run each agent as one object.
    pub fn per_agent(desired: &[Arc<Resource<P>>], keep: impl Fn(&Resource<P>) -> bool) -> Vec<Unit<P>> {
        desired
            .iter()
            .filter(|resource| keep(resource))
            .filter_map(|resource| match &resource.component {
                crate::resource::Component::Agent(id) => Some(Unit {
                    node: resource.key.node.clone(),
                    agents: vec![id.clone()],
                    desired: Arc::clone(resource),
                }),
                _ => None,
            })
            .collect()
    }
}

impl<P> Clone for Unit<P> {
    fn clone(&self) -> Self {
        Unit { node: self.node.clone(), agents: self.agents.clone(), desired: Arc::clone(&self.desired) }
    }
}

/// What runs now for a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    /// The image (or revision reference) it runs.
    pub image: String,
    /// The spec hash recorded on it.
    pub spec_hash: Option<String>,
    /// The source revision recorded on it.
    pub revision: Option<String>,
    pub running: bool,
}

/// The rollout operations of a target.
#[allow(async_fn_in_trait)] // see `super::Target`
pub trait Rollouts: super::Target {
    /// The units that serve the agents among `desired` (one per agent container on Docker;
    /// one per node's agent services on Proxmox), in the order given.
    fn units(&self, desired: &[Arc<Resource<Self::Payload>>]) -> Vec<Unit<Self::Payload>>;

    /// `resource` running `image` instead (a rollback's target, a resumed rollout's).
    fn with_image(&self, resource: &Resource<Self::Payload>, image: &str) -> Resource<Self::Payload>;

    /// What runs now for `unit` (its current instance, or the previous one a rollout keeps),
    /// or `None` when it is not deployed.
    async fn current(&self, unit: &Unit<Self::Payload>) -> Result<Option<Current>, TargetError>;

    /// The version an image says it holds (what `GET /health` should report), if known.
    async fn version(&self, node: &str, image: &str) -> Option<String>;

    /// Stops the running (old) instance with SIGTERM and `grace`, keeping it to revert to;
    /// the target may prepare the new instance meanwhile (creating it is not downtime).
    async fn stop_old(&self, unit: &Unit<Self::Payload>, grace: Duration) -> Result<(), TargetError>;

    /// Stops and removes the new instance (it failed, or the rollout is reverting).
    async fn stop_new(&self, unit: &Unit<Self::Payload>, grace: Duration) -> Result<(), TargetError>;

    /// Starts the new instance from `unit.desired`.
    async fn start_new(&self, unit: &Unit<Self::Payload>) -> Result<(), TargetError>;

    /// Puts the previous instance back exactly as it was (or, when it is gone, the desired
    /// one on `image`) and starts it.
    async fn start_previous(&self, unit: &Unit<Self::Payload>, image: &str) -> Result<(), TargetError>;

    /// One health probe of the unit's instance.
    async fn probe(&self, unit: &Unit<Self::Payload>) -> Result<ProbeReport, TargetError>;

    /// After the rollout finished: drops what it kept for the unit (the previous instance
    /// when `done`, a prepared instance that never started).
    async fn settle(&self, unit: &Unit<Self::Payload>, done: bool) -> Result<(), TargetError>;
}
