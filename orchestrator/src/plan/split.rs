//! Which steps of an `infra up` plan the rollout engine carries out instead of the executor.
//!
//! An `up` that changes agents that already run replaces them the way `update` does:
//! through the rollout machine ([`crate::rollout`]: canary, `max_parallel`, the health gate,
//! rollback on failure), so two instances of one agent never run at once and no more than
//! `max_parallel` agents are down. Everything else, including agents that are only created
//! (nothing ran before), stays with the bounded executor, so a first `up` is as fast as
//! before.
//!
//! The order the runtime uses: the executor's plan first, then the rollout. The datahub
//! and the migrate step are then current before any agent changes (as `update` does), and
//! deletes of agents no longer desired are done before the rollout starts.

use std::sync::Arc;

use super::{Action, Plan, Step};
use crate::port::Unit;
use crate::resource::Component;

impl<P> Step<P> {
    /// Whether the rollout engine replaces this step's object: an agent that exists and
    /// whose spec changed (an update or replace with changes; not a drift-only restart of
    /// a stopped container, and not a repair of fields changed by hand on an object whose
    /// recorded spec is the desired one, which the executor does by applying it again).
    pub fn is_rollout(&self) -> bool {
        let recorded_current = match (&self.observed, &self.desired) {
            (Some(observed), Some(desired)) => observed.spec_hash.as_deref() == Some(desired.spec_hash().as_str()),
            _ => false,
        };
        matches!(self.component, Component::Agent(_))
            && matches!(self.action, Action::Update | Action::Replace)
            && self.observed.is_some()
            && self.desired.is_some()
            && !self.changes.is_empty()
            && !recorded_current
    }

    /// The rollout unit of a step the rollout engine replaces: the agent on its node,
    /// becoming the desired object. `None` for any other step.
    pub fn rollout_unit(&self) -> Option<Unit<P>> {
        let Component::Agent(agent) = &self.component else { return None };
        let desired = self.desired.as_ref().filter(|_| self.is_rollout())?;
        Some(Unit { node: self.key.node.clone(), agents: vec![agent.clone()], desired: Arc::clone(desired) })
    }
}

impl<P> Plan<P> {
    /// Splits the plan into what the executor applies and the agent steps the rollout
    /// engine replaces ([`Step::is_rollout`]), both in plan order. The executor's plan keeps
    /// every other step (creates, infrastructure, the datahub and migrate steps, deletes,
    /// drift restarts), the kept data, the unchanged count and the desired resources. Run
    /// the executor's plan first, then the rollout (module doc).
    pub fn split_rollout(self) -> (Plan<P>, Vec<Step<P>>) {
        let Plan { deployment, target, steps, kept, unchanged, resources } = self;
        let (rollout, steps): (Vec<Step<P>>, Vec<Step<P>>) = steps.into_iter().partition(Step::is_rollout);
        (Plan { deployment, target, steps, kept, unchanged, resources }, rollout)
    }
}
