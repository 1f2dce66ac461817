//! An in-memory target: applies a plan to a list of observed objects exactly as a real
//! target would record it. The planner's property tests and the golden tests build their
//! "observed" states with it.

use crate::plan::{Action, Plan};
use crate::resource::{ObservedResource, ObservedState, RunState};

/// The observed state after applying `plan` to `observed`.
pub fn apply<P>(plan: &Plan<P>, observed: &[ObservedResource]) -> Vec<ObservedResource> {
    let mut out: Vec<ObservedResource> = observed.to_vec();
    for step in &plan.steps {
        out.retain(|o| o.key != step.key);
        if step.action == Action::Delete {
            continue;
        }
        let Some(resource) = &step.desired else {
            continue;
        };
        out.push(ObservedResource {
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
        });
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}
