//! The planner: desired resources × observed resources → an immutable [`Plan`].
//!
//! The plan decides everything: what to create, update, replace or delete, in which order
//! (waves: steps in one wave are independent and may run together), whether a replacement
//! starts the new object before removing the old one, what to wait for, how long a wait
//! may take, how long a stop waits between SIGTERM and SIGKILL, and whether a failed create
//! is removed again. A target executes it without making choices of its own.
//!
//! `infra up` hands the steps that change running agents to the rollout engine
//! ([`Plan::split_rollout`], `split`) and the rest to the executor.

mod display;
mod document;
mod split;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

pub use display::{RenderOptions, render_text};
pub use document::{PlanDocument, plan_document};

use crate::resource::{Component, FieldValue, ObservedResource, Resource, ResourceKey, RunState};

/// What happens to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    Create,
    /// Changed in place, or recreated with the same identity and data (stateless objects).
    Update,
    /// Destroyed and created again: the named fields cannot change otherwise.
    Replace,
    Delete,
}

impl Action {
    pub fn symbol(self) -> &'static str {
        match self {
            Action::Create => "+",
            Action::Update => "~",
            Action::Replace => "-/+",
            Action::Delete => "-",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Replace => "replace",
            Action::Delete => "delete",
        }
    }
}

/// One field's change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub field: String,
    pub before: Option<FieldValue>,
    pub after: Option<FieldValue>,
    pub forces_replacement: bool,
}

/// How a replacement or update of a running object proceeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Start the new object next to the old one, wait for it, then remove the old one: the
    /// old keeps serving if the new one fails (stateless agents).
    CreateBeforeDestroy,
    /// Remove the old object first (it holds a volume or a port the new one needs).
    DestroyBeforeCreate,
}

/// What a step waits for before the next wave starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    Nothing,
    /// Running and, when it has a health check, healthy.
    Healthy,
    /// Exited with code 0.
    Completed,
    /// Passed the health gate ([`crate::gate`]): agent containers, which `infra up` holds
    /// to the same gate as a rollout (running, `/health/live` 200, `/health` healthy with the
    /// image's version, for `min_healthy_time`; failing at once on an exit, a restart or an
    /// unhealthy engine check).
    Gate,
}

/// The run state differs from the desired one while the spec matches (stopped by hand).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    pub observed: String,
    pub desired: RunState,
}

/// One object's part of the plan.
#[derive(Debug, Clone)]
pub struct Step<P> {
    pub action: Action,
    pub key: ResourceKey,
    pub component: Component,
    pub stateful: bool,
    /// Update and replace: the differing fields; delete: every recorded field; create: none
    /// (see [`Step::shown_changes`]).
    pub changes: Vec<Change>,
    pub forced_by: Vec<String>,
    pub drift: Option<Drift>,
    pub wave: u32,
    pub strategy: Strategy,
    pub wait: Wait,
    /// How long stopping an object of this step waits between SIGTERM and SIGKILL: the
    /// desired object's own stop grace, else [`PlanOptions::delete_grace_ms`].
    pub grace_ms: u64,
    /// How long waiting for [`Step::wait`] may take ([`PlanOptions::wait_deadline_ms`]).
    pub deadline_ms: u64,
    /// Whether an object this step created is removed again when its wait fails (creates:
    /// the target is left as it was).
    pub discard_on_failure: bool,
    pub desired: Option<Arc<Resource<P>>>,
    /// Boxed: most steps of a large first plan are creates, which observed nothing.
    pub observed: Option<Box<ObservedResource>>,
}

impl<P> Step<P> {
    /// The changes to show: for a create, every desired field as added.
    pub fn shown_changes(&self) -> std::borrow::Cow<'_, [Change]> {
        match (&self.action, &self.desired) {
            (Action::Create, Some(resource)) => std::borrow::Cow::Owned(
                resource
                    .fields
                    .iter()
                    .map(|(k, v)| Change {
                        field: k.to_string(),
                        before: None,
                        after: Some(v.clone()),
                        forces_replacement: false,
                    })
                    .collect(),
            ),
            _ => std::borrow::Cow::Borrowed(&self.changes),
        }
    }

    /// Whether executing the step can lose data or interrupt the datahub (asks for
    /// confirmation).
    pub fn is_destructive(&self) -> bool {
        matches!(self.action, Action::Replace | Action::Delete)
            && (self.stateful || self.component == Component::Datahub)
    }
}

/// Choices made when planning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanOptions {
    /// Delete owned objects that are no longer desired.
    pub prune: bool,
    /// Also delete owned data (volumes, claims, disks) that is no longer desired.
    pub delete_data: bool,
    /// The stop grace of an object that is deleted (nothing desired says otherwise), or of
    /// one whose desired object carries none.
    pub delete_grace_ms: u64,
    /// How long a step's wait may take (`deployment.health.deadline`).
    pub wait_deadline_ms: u64,
}

impl PlanOptions {
    /// Delete's stop grace unless the config says otherwise: 30 s, what Docker and
    /// Kubernetes themselves default to.
    pub const DEFAULT_DELETE_GRACE_MS: u64 = 30_000;
    /// A step's wait deadline unless the config says otherwise: 3 minutes, the default of
    /// `deployment.health.deadline`.
    pub const DEFAULT_WAIT_DEADLINE_MS: u64 = 180_000;
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            prune: true,
            delete_data: false,
            delete_grace_ms: Self::DEFAULT_DELETE_GRACE_MS,
            wait_deadline_ms: Self::DEFAULT_WAIT_DEADLINE_MS,
        }
    }
}

/// The immutable result of planning.
#[derive(Debug, Clone)]
pub struct Plan<P> {
    pub deployment: String,
    pub target: String,
    /// Steps in execution order (by wave, then by key).
    pub steps: Vec<Step<P>>,
    /// Owned data that is no longer desired and is kept (not deleted).
    pub kept: Vec<ObservedResource>,
    /// Objects that match the desired state.
    pub unchanged: usize,
    /// Every desired resource, in the order given.
    pub resources: Vec<Arc<Resource<P>>>,
}

impl<P> Plan<P> {
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Counts of steps by action.
    pub fn summary(&self) -> BTreeMap<Action, usize> {
        let mut counts = BTreeMap::new();
        for step in &self.steps {
            *counts.entry(step.action).or_insert(0) += 1;
        }
        counts
    }

    /// Steps grouped by wave, in order.
    pub fn waves(&self) -> Vec<(u32, Vec<&Step<P>>)> {
        let mut waves: BTreeMap<u32, Vec<&Step<P>>> = BTreeMap::new();
        for step in &self.steps {
            waves.entry(step.wave).or_default().push(step);
        }
        waves.into_iter().collect()
    }
}

fn wave_of(component: &Component, action: Action) -> u32 {
    match (action, component) {
        (Action::Delete, Component::Agent(_) | Component::Migrate | Component::Database) => 6,
        // After the agents it hosts: their services are stopped and removed first.
        (Action::Delete, Component::Datahub | Component::Host) => 7,
        (Action::Delete, Component::Foundation) => 8,
        (Action::Delete, Component::Storage) => 9,
        (_, Component::Foundation) => 1,
        (_, Component::Storage) => 2,
        (_, Component::Datahub) => 3,
        (_, Component::Migrate | Component::Host | Component::Database) => 4,
        (_, Component::Agent(_)) => 5,
    }
}

fn diff_fields(desired: &Resource<impl Sized>, recorded: Option<&crate::resource::Fields>) -> Vec<Change> {
    let empty = BTreeMap::new();
    let recorded = recorded.unwrap_or(&empty);
    let names: BTreeSet<&str> = desired.fields.keys().chain(recorded.keys()).map(|k| &**k).collect();
    names
        .into_iter()
        .filter_map(|name| {
            let before = recorded.get(name);
            let after = desired.fields.get(name);
            (before != after).then(|| Change {
                field: name.to_string(),
                before: before.cloned(),
                after: after.cloned(),
                forces_replacement: desired.forces_replacement(name),
            })
        })
        .collect()
}

/// Plans the changes that take `observed` to `desired`. The plan keeps the desired resources
/// (shared by its steps, not copied).
pub fn plan<P>(
    deployment: &str,
    target: &str,
    desired: Vec<Resource<P>>,
    observed: &[ObservedResource],
    options: PlanOptions,
) -> Plan<P> {
    let desired: Vec<Arc<Resource<P>>> = desired.into_iter().map(Arc::new).collect();
    let by_key: BTreeMap<&ResourceKey, &ObservedResource> = observed.iter().map(|o| (&o.key, o)).collect();
    let wanted: BTreeSet<&ResourceKey> = desired.iter().map(|d| &d.key).collect();
    let mut steps = Vec::new();
    let mut unchanged = 0;
    for resource in &desired {
        let wait = match resource.run_state {
            Some(RunState::Running) if matches!(resource.component, Component::Agent(_)) => Wait::Gate,
            Some(RunState::Running) => Wait::Healthy,
            Some(RunState::Completed) => Wait::Completed,
            None => Wait::Nothing,
        };
        let strategy = if matches!(resource.component, Component::Agent(_)) && !resource.stateful {
            Strategy::CreateBeforeDestroy
        } else {
            Strategy::DestroyBeforeCreate
        };
        let base = |action, changes: Vec<Change>, forced_by, drift, observed: Option<&ObservedResource>| Step {
            action,
            key: resource.key.clone(),
            component: resource.component.clone(),
            stateful: resource.stateful,
            changes,
            forced_by,
            drift,
            wave: wave_of(&resource.component, action),
            strategy,
            wait,
            grace_ms: resource.stop_grace_ms.unwrap_or(options.delete_grace_ms),
            deadline_ms: options.wait_deadline_ms,
            discard_on_failure: action == Action::Create,
            desired: Some(Arc::clone(resource)),
            observed: observed.cloned().map(Box::new),
        };
        match by_key.get(&resource.key) {
            // A create's fields are the desired resource's; they are not copied into changes.
            None => steps.push(base(Action::Create, Vec::new(), Vec::new(), None, None)),
            Some(found) => {
                let mut changes = diff_fields(resource, found.fields.as_ref());
                for change in &mut changes {
                    change.forces_replacement |= found.refuses_change(&change.field);
                }
                let drift = (!found.state.satisfies(resource.run_state)).then(|| Drift {
                    observed: found.state.describe(),
                    desired: resource.run_state.unwrap_or(RunState::Running),
                });
                let mut forced_by: Vec<String> =
                    changes.iter().filter(|c| c.forces_replacement).map(|c| c.field.clone()).collect();
                // The target refuses a change in place that no recorded field names (a
                // field rivetctl does not record): the server's own field name forces it.
                if forced_by.is_empty() && !changes.is_empty() {
                    forced_by = found.immutable.clone();
                }
                if changes.is_empty() && drift.is_none() {
                    unchanged += 1;
                } else if !forced_by.is_empty() {
                    steps.push(base(Action::Replace, changes, forced_by, drift, Some(found)));
                } else {
                    steps.push(base(Action::Update, changes, Vec::new(), drift, Some(found)));
                }
            }
        }
    }
    let mut kept = Vec::new();
    for found in observed.iter().filter(|o| !wanted.contains(&o.key)) {
        if !options.prune || (found.stateful && !options.delete_data) {
            if found.stateful {
                kept.push(found.clone());
            }
            continue;
        }
        steps.push(delete_step(found, &options));
    }
    steps.sort_by(|a, b| (a.wave, &a.key).cmp(&(b.wave, &b.key)));
    Plan { deployment: deployment.to_string(), target: target.to_string(), steps, kept, unchanged, resources: desired }
}

fn delete_step<P>(found: &ObservedResource, options: &PlanOptions) -> Step<P> {
    let changes = found
        .fields
        .iter()
        .flatten()
        .map(|(k, v)| Change { field: k.to_string(), before: Some(v.clone()), after: None, forces_replacement: false })
        .collect();
    Step {
        action: Action::Delete,
        key: found.key.clone(),
        component: found.component.clone(),
        stateful: found.stateful,
        changes,
        forced_by: Vec::new(),
        drift: None,
        wave: wave_of(&found.component, Action::Delete),
        strategy: Strategy::DestroyBeforeCreate,
        wait: Wait::Nothing,
        grace_ms: options.delete_grace_ms,
        deadline_ms: options.wait_deadline_ms,
        discard_on_failure: false,
        desired: None,
        observed: Some(Box::new(found.clone())),
    }
}

/// Plans removing everything the deployment owns; data only with `delete_data`. Objects
/// are stopped with [`PlanOptions::DEFAULT_DELETE_GRACE_MS`] (see [`plan_destroy_with`]).
pub fn plan_destroy<P>(deployment: &str, target: &str, observed: &[ObservedResource], delete_data: bool) -> Plan<P> {
    let options = PlanOptions { delete_data, ..PlanOptions::default() };
    plan_destroy_with(deployment, target, observed, options)
}

/// Plans removing everything the deployment owns: data only with `options.delete_data`,
/// objects stopped with `options.delete_grace_ms`.
pub fn plan_destroy_with<P>(
    deployment: &str,
    target: &str,
    observed: &[ObservedResource],
    options: PlanOptions,
) -> Plan<P> {
    let delete_data = options.delete_data;
    let mut steps = Vec::new();
    let mut kept = Vec::new();
    for found in observed {
        if found.stateful && !delete_data {
            kept.push(found.clone());
        } else {
            steps.push(delete_step(found, &options));
        }
    }
    steps.sort_by(|a, b| (a.wave, &a.key).cmp(&(b.wave, &b.key)));
    Plan {
        deployment: deployment.to_string(),
        target: target.to_string(),
        steps,
        kept,
        unchanged: 0,
        resources: Vec::new(),
    }
}
