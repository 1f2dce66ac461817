//! Observing and applying: the part of the port that `infra preview`, `infra up`,
//! `infra destroy` and `status` use.

use std::time::Duration;

use super::TargetError;
use crate::fleet::Fleet;
use crate::plan::Step;
use crate::resource::{ObservedResource, Resource};

/// How waiting for a step's condition ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// The condition holds (healthy, completed, passed the gate).
    Ready,
    /// It will not hold: why, and the object's last log lines.
    Failed { reason: String, logs: Vec<String> },
}

/// A deployment target, connected.
///
/// Contract:
/// - [`Target::observe`] returns every object the deployment owns on the target (by its
///   ownership record), with the fields recorded when it was applied, sorted by key.
/// - [`Target::apply`] takes one step's object to its end state and is idempotent: a
///   repeated or resumed step, or one that finds a leftover of an interrupted run, ends in
///   the same state. It decides nothing the step does not say (order, strategy, grace
///   period, what to wait for are the plan's). It does not wait for health.
/// - [`Target::wait`] waits for `step.wait` within `deadline` and never longer.
/// - [`Target::discard`] removes what a failed create left, so the target is as before.
/// - [`Target::revert`] puts back what a failed update changed, where the target can.
#[allow(async_fn_in_trait)] // driven on one thread: no `Send` bound wanted (module doc)
pub trait Target {
    /// What a step applies: the typed object of this target (a container spec, a
    /// Kubernetes object, LXC parameters).
    type Payload;

    /// The target's name in plans and documents (`docker`, `kubernetes`, `proxmox`).
    fn kind(&self) -> &'static str;

    /// The fleet as this target's objects (its lowering, `crate::lower`).
    fn lower(&self, fleet: &Fleet) -> Vec<Resource<Self::Payload>>;

    /// Everything the deployment owns on the target.
    async fn observe(&self) -> Result<Vec<ObservedResource>, TargetError>;

    /// Applies one step (create, update, replace or delete) to its end state.
    async fn apply(&self, step: &Step<Self::Payload>) -> Result<(), TargetError>;

    /// Waits until the step's object meets `step.wait`, fails, or `deadline` passes.
    async fn wait(&self, step: &Step<Self::Payload>, deadline: Duration) -> Result<Readiness, TargetError>;

    /// Removes the object a created step left after it failed its wait.
    async fn discard(&self, step: &Step<Self::Payload>) -> Result<(), TargetError>;

    /// Puts back the object an update step changed after it failed its wait: the spec it
    /// had before, and whatever the target needs so that it heals (a StatefulSet's pod stuck
    /// on the broken revision). `Ok(Some(what was done))`, or `Ok(None)` when this target
    /// leaves a failed update as it is (the default).
    async fn revert(&self, _step: &Step<Self::Payload>) -> Result<Option<String>, TargetError> {
        Ok(None)
    }

    /// What `infra destroy` without `--volumes` does to the data it keeps (`kept`: owned,
    /// no longer desired, not deleted), as lines to show: a Proxmox VE datahub container is
    /// stopped. Nothing by default (a Docker volume needs nothing).
    async fn keep(&self, _kept: &[ObservedResource]) -> Result<Vec<String>, TargetError> {
        Ok(Vec::new())
    }

    /// The API requests applying `step` would make, as `{"method", "path", "params"}` with
    /// secrets redacted, for targets whose API is a list of requests (Proxmox VE); empty for
    /// the others (the default). `infra preview --output json` lists them per change.
    fn requests(&self, _step: &Step<Self::Payload>) -> Vec<serde_json::Value> {
        Vec::new()
    }

    /// Operations the target made so far (API calls), for benchmarks and `--output json`.
    fn calls(&self) -> usize {
        0
    }
}
