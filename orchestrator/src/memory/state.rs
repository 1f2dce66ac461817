//! What the in-memory target holds: the observed objects, each agent unit's instances,
//! what the test made of the world (broken images, unreachable nodes, versions), the event
//! log, and the availability figures it keeps as operations happen.

use std::collections::{BTreeMap, BTreeSet};

use crate::port::TargetError;
use crate::resource::{Fields, ObservedResource, ResourceKey};

/// What one instance of a unit is to the unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The instance the unit serves from (running, or stopped by hand or by a failure).
    Serving,
    /// The previous instance a rollout keeps, stopped, to revert to.
    Kept,
    /// The next instance, created from the desired object while the old one stops.
    Prepared,
    /// An instance that should not exist: a start found the serving one still running and
    /// left it there. It stays visible in the availability figures.
    Stray,
}

/// One instance of a unit: what it runs and what the target records for it.
#[derive(Debug, Clone)]
pub struct Instance {
    pub role: Role,
    pub image: String,
    pub running: bool,
    /// The object as observed while this instance is the unit's serving one.
    pub record: ObservedResource,
}

/// A unit's agents and instances.
#[derive(Debug, Clone)]
pub struct UnitState {
    pub agents: Vec<String>,
    pub instances: Vec<Instance>,
}

impl UnitState {
    pub fn find(&self, role: Role) -> Option<usize> {
        self.instances.iter().position(|i| i.role == role)
    }

    pub fn get(&self, role: Role) -> Option<&Instance> {
        self.find(role).map(|i| &self.instances[i])
    }

    pub fn take(&mut self, role: Role) -> Option<Instance> {
        self.find(role).map(|i| self.instances.remove(i))
    }
}

/// One operation the target carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Apply(crate::plan::Action),
    Wait { ready: bool },
    Discard,
    StopOld { grace_ms: u64 },
    StopNew { grace_ms: u64 },
    StartNew { image: String },
    StartPrevious { image: String },
    Probe { healthy: bool },
    Settle { done: bool },
}

/// One entry of the event log: an operation on the object `name` of `node`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub node: String,
    pub name: String,
    pub op: Op,
}

/// Everything behind the target's mutex.
#[derive(Debug, Default)]
pub struct State {
    pub objects: BTreeMap<ResourceKey, ObservedResource>,
    pub units: BTreeMap<ResourceKey, UnitState>,
    pub broken: BTreeSet<String>,
    pub versions: BTreeMap<String, String>,
    pub unreachable: BTreeSet<String>,
    /// The images each node keeps, oldest first.
    pub images: BTreeMap<String, Vec<super::KeptImage>>,
    pub log: Vec<Entry>,
    pub calls: usize,
    /// The most agents that had no running instance at once.
    pub max_agents_down: usize,
    /// Per agent, the most instances that ran at once.
    pub max_running: BTreeMap<String, usize>,
}

impl State {
    /// Fails when `node` was marked unreachable; counts the call either way.
    pub fn reach(&mut self, node: &str) -> Result<(), TargetError> {
        self.calls += 1;
        if self.unreachable.contains(node) {
            return Err(TargetError::unreachable(format!("node {node} does not answer (in-memory target)")));
        }
        Ok(())
    }

    pub fn record(&mut self, key: &ResourceKey, op: Op) {
        self.log.push(Entry { node: key.node.clone(), name: key.name.clone(), op });
    }

    /// Brings the availability figures up to date after an operation.
    pub fn measure(&mut self) {
        let mut down = 0;
        let mut running: BTreeMap<&str, usize> = BTreeMap::new();
        for unit in self.units.values() {
            let instances = unit.instances.iter().filter(|i| i.running).count();
            for agent in &unit.agents {
                *running.entry(agent).or_default() += instances;
            }
            if instances == 0 {
                down += unit.agents.len();
            }
        }
        self.max_agents_down = self.max_agents_down.max(down);
        for (agent, count) in running {
            let most = self.max_running.entry(agent.to_string()).or_default();
            *most = (*most).max(count);
        }
    }
}

/// The image an object runs: its `image` field, or (for objects without one) its spec hash.
pub fn image_of(fields: &Fields) -> String {
    match fields.get("image") {
        Some(value) => value.text.to_string(),
        None => format!("spec:{}", crate::resource::spec_hash(fields)),
    }
}
