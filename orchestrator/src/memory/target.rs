//! [`MemoryTarget`]: the in-memory target's value, what a test can make of it (broken
//! images, unreachable nodes, versions) and read from it (objects, units, the log, the
//! availability figures), and its [`Target`] half.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::apply::record;
use super::state::{Entry, Instance, Op, Role, State, UnitState, image_of};
use crate::fleet::Fleet;
use crate::gate::Exit;
use crate::plan::{Action, Step, Wait};
use crate::port::{Readiness, Target, TargetError};
use crate::resource::{Component, ObservedResource, ObservedState, Resource, ResourceKey};

/// A fleet's lowering into a target's objects.
pub type Lowering<P> = fn(&Fleet) -> Vec<Resource<P>>;

/// A target that keeps everything in memory and answers at once.
///
/// It records applied objects as [`super::apply`] does and keeps, for each agent unit, its
/// instances: the serving one, the previous one a rollout keeps, the prepared next one. A
/// test can mark an image broken (a step's wait fails on it; its probes report an exit, so
/// a gate fails at once), set the version an image reports, and mark a node unreachable
/// (every operation on it fails with [`TargetError::unreachable`]). It keeps an event log
/// and, after every operation, how many agents had no running instance and how many
/// instances of each agent ran at once.
///
/// Every method's future is ready when first polled: no operation waits, deadlines are
/// never reached. Shared by reference; a std mutex guards the state (held only within one
/// method, never across an await).
#[derive(Debug)]
pub struct MemoryTarget<P> {
    kind: &'static str,
    state: Mutex<State>,
    /// The lowering `Target::lower` applies (none: the fleet lowers to nothing).
    lowering: Option<Lowering<P>>,
    /// The deployment's documents (lock, journal, history).
    pub(super) store: crate::state::MemoryStore,
    payload: PhantomData<fn() -> P>,
}

/// One instance of a unit, as a test sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceView {
    pub image: String,
    pub running: bool,
}

/// One unit's instances, as a test sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitView {
    pub agents: Vec<String>,
    pub serving: Option<InstanceView>,
    /// The previous instance kept to revert to.
    pub kept: Option<InstanceView>,
    /// The next instance, prepared and not started.
    pub prepared: Option<InstanceView>,
    /// Instances left running next to the serving one (a driver's mistake).
    pub strays: usize,
}

impl<P> Default for MemoryTarget<P> {
    fn default() -> Self {
        MemoryTarget::new()
    }
}

impl<P> MemoryTarget<P> {
    /// An empty target of kind `memory`.
    pub fn new() -> Self {
        MemoryTarget::with_kind("memory")
    }

    /// An empty target that calls itself `kind` (a test standing in for `docker`).
    pub fn with_kind(kind: &'static str) -> Self {
        MemoryTarget {
            kind,
            state: Mutex::new(State::default()),
            lowering: None,
            store: crate::state::MemoryStore::new(),
            payload: PhantomData,
        }
    }

    /// A target that already holds `observed` (as [`super::apply`] recorded it); every agent
    /// object is a unit serving that agent, running when it was observed running.
    pub fn from_observed(observed: Vec<ObservedResource>) -> Self {
        let target = MemoryTarget::new();
        {
            let mut state = target.lock();
            for found in observed {
                put(&mut state, found);
            }
            state.measure();
        }
        target
    }

    /// The same target lowering fleets with `lowering` (a real target's, e.g. Docker's).
    pub fn with_lowering(mut self, lowering: Lowering<P>) -> Self {
        self.lowering = Some(lowering);
        self
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks `image` broken (or good again): waits on it fail, its probes report an exit.
    pub fn set_broken(&self, image: &str, broken: bool) {
        let mut state = self.lock();
        if broken {
            state.broken.insert(image.to_string());
        } else {
            state.broken.remove(image);
        }
    }

    /// Sets the version `image` reports on `/health` (and [`crate::port::Rollouts::version`]).
    pub fn set_version(&self, image: &str, version: &str) {
        self.lock().versions.insert(image.to_string(), version.to_string());
    }

    /// Marks `node` unreachable (or reachable again).
    pub fn set_unreachable(&self, node: &str, unreachable: bool) {
        let mut state = self.lock();
        if unreachable {
            state.unreachable.insert(node.to_string());
        } else {
            state.unreachable.remove(node);
        }
    }

    /// Stops an agent's serving instance by hand (drift).
    pub fn stop_by_hand(&self, name: &str) {
        let mut state = self.lock();
        let keys: Vec<ResourceKey> = state.objects.keys().filter(|k| k.name == name).cloned().collect();
        for key in keys {
            if let Some(object) = state.objects.get_mut(&key) {
                object.state = ObservedState::Stopped(Some(137));
            }
            if let Some(unit) = state.units.get_mut(&key) {
                unit.instances.iter_mut().filter(|i| i.role == Role::Serving).for_each(|i| i.running = false);
            }
        }
        state.measure();
    }

    /// Every operation so far, in order.
    pub fn log(&self) -> Vec<Entry> {
        self.lock().log.clone()
    }

    /// The objects the target holds now, sorted by key (what `observe` returns).
    pub fn objects(&self) -> Vec<ObservedResource> {
        self.lock().objects.values().cloned().collect()
    }

    /// The unit whose object is named `name`, if the target has one.
    pub fn unit(&self, name: &str) -> Option<UnitView> {
        let state = self.lock();
        let unit = state.units.iter().find(|(k, _)| k.name == name).map(|(_, u)| u)?;
        let view = |role| unit.get(role).map(|i| InstanceView { image: i.image.clone(), running: i.running });
        Some(UnitView {
            agents: unit.agents.clone(),
            serving: view(Role::Serving),
            kept: view(Role::Kept),
            prepared: view(Role::Prepared),
            strays: unit.instances.iter().filter(|i| i.role == Role::Stray).count(),
        })
    }

    /// The most agents that had no running instance at once, so far.
    pub fn max_agents_down(&self) -> usize {
        self.lock().max_agents_down
    }

    /// Per agent, the most instances of it that ran at once, so far.
    pub fn max_running_instances(&self) -> BTreeMap<String, usize> {
        self.lock().max_running.clone()
    }

    /// The agents of which two instances or more ran at once, so far (should be none).
    pub fn agents_that_ran_twice(&self) -> Vec<String> {
        self.lock().max_running.iter().filter(|(_, n)| **n > 1).map(|(a, _)| a.clone()).collect()
    }

    /// Forgets the availability figures (after setting a scene up).
    pub fn reset_figures(&self) {
        let mut state = self.lock();
        state.max_agents_down = 0;
        state.max_running.clear();
        state.measure();
    }
}

/// Records `found` as the object at its key; an agent object becomes its unit's serving
/// instance (the unit's other instances are gone: the object was applied to its end state).
fn put(state: &mut State, found: ObservedResource) {
    if let Component::Agent(agent) = &found.component {
        let fields = found.fields.clone().unwrap_or_default();
        let instance = Instance {
            role: Role::Serving,
            image: image_of(&fields),
            running: found.state == ObservedState::Running,
            record: found.clone(),
        };
        let unit = state
            .units
            .entry(found.key.clone())
            .or_insert_with(|| UnitState { agents: vec![agent.clone()], instances: Vec::new() });
        unit.instances = vec![instance];
    }
    state.objects.insert(found.key.clone(), found);
}

impl<P> Target for MemoryTarget<P> {
    type Payload = P;

    fn kind(&self) -> &'static str {
        self.kind
    }

    fn lower(&self, fleet: &Fleet) -> Vec<Resource<P>> {
        self.lowering.map(|lower| lower(fleet)).unwrap_or_default()
    }

    async fn observe(&self) -> Result<Vec<ObservedResource>, TargetError> {
        let mut state = self.lock();
        state.calls += 1;
        if let Some(node) = state.unreachable.iter().next() {
            return Err(TargetError::unreachable(format!("node {node} does not answer (in-memory target)")));
        }
        Ok(state.objects.values().cloned().collect())
    }

    async fn apply(&self, step: &Step<P>) -> Result<(), TargetError> {
        let mut state = self.lock();
        state.reach(&step.key.node)?;
        state.record(&step.key, Op::Apply(step.action));
        match record(step) {
            Some(found) => put(&mut state, found),
            None if step.action == Action::Delete => {
                state.objects.remove(&step.key);
                state.units.remove(&step.key);
            }
            None => return Err(TargetError::failed(format!("{} has no desired object to apply", step.key))),
        }
        state.measure();
        Ok(())
    }

    async fn wait(&self, step: &Step<P>, _deadline: Duration) -> Result<Readiness, TargetError> {
        let mut state = self.lock();
        state.reach(&step.key.node)?;
        let readiness = match (step.wait, state.objects.get(&step.key)) {
            (Wait::Nothing, _) => Readiness::Ready,
            (_, None) => Readiness::Failed { reason: format!("{} does not exist", step.key), logs: Vec::new() },
            (_, Some(found)) => {
                let image = image_of(&found.fields.clone().unwrap_or_default());
                if state.broken.contains(&image) {
                    exit_broken(&mut state, &step.key);
                    Readiness::Failed { reason: format!("exited with code 1 on {image}"), logs: broken_logs(&image) }
                } else {
                    Readiness::Ready
                }
            }
        };
        state.record(&step.key, Op::Wait { ready: readiness == Readiness::Ready });
        state.measure();
        Ok(readiness)
    }

    async fn discard(&self, step: &Step<P>) -> Result<(), TargetError> {
        let mut state = self.lock();
        state.reach(&step.key.node)?;
        state.record(&step.key, Op::Discard);
        state.objects.remove(&step.key);
        state.units.remove(&step.key);
        state.measure();
        Ok(())
    }

    fn calls(&self) -> usize {
        self.lock().calls
    }
}

/// A broken image's process ended: the object and its serving instance show the exit.
pub(super) fn exit_broken(state: &mut State, key: &ResourceKey) {
    if let Some(found) = state.objects.get_mut(key) {
        found.state = ObservedState::Stopped(Some(1));
    }
    if let Some(unit) = state.units.get_mut(key) {
        unit.instances.iter_mut().filter(|i| i.role == Role::Serving).for_each(|i| i.running = false);
    }
}

/// The exit a broken image reports.
pub(super) fn broken_exit() -> Exit {
    Exit { code: 1, oom_killed: false }
}

/// The last log lines of a broken image's instance.
pub(super) fn broken_logs(image: &str) -> Vec<String> {
    vec![format!("{image}: fatal: the image is marked broken")]
}
