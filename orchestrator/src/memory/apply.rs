//! Applying a whole plan to a list of observed objects, exactly as a real target would
//! record it. The planner's property tests and the golden tests build their "observed"
//! states with it; [`super::MemoryTarget`] records each step the same way.

use crate::plan::{Action, Plan, Step};
use crate::resource::{ObservedResource, ObservedState, Resource, RunState};

/// The observed state after applying `plan` to `observed`.
pub fn apply<P>(plan: &Plan<P>, observed: &[ObservedResource]) -> Vec<ObservedResource> {
    let mut out: Vec<ObservedResource> = observed.to_vec();
    for step in &plan.steps {
        out.retain(|o| o.key != step.key);
        out.extend(record(step));
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// What the target records for one applied step: nothing for a delete, else its desired
/// object in its desired run state.
pub(super) fn record<P>(step: &Step<P>) -> Option<ObservedResource> {
    if step.action == Action::Delete {
        return None;
    }
    step.desired.as_deref().map(observed_as_desired)
}

/// The record of `resource` applied and in its desired run state.
pub(super) fn observed_as_desired<P>(resource: &Resource<P>) -> ObservedResource {
    ObservedResource {
        key: resource.key.clone(),
        component: resource.component.clone(),
        fields: Some(resource.fields.clone()),
        spec_hash: Some(resource.spec_hash()),
        state: match resource.run_state {
            None => ObservedState::Present,
            Some(RunState::Running) => ObservedState::Running,
            Some(RunState::Completed) => ObservedState::Stopped(Some(0)),
        },
        id: format!("mem-{}", resource.key.name),
        stateful: resource.stateful,
        immutable: Vec::new(),
    }
}
