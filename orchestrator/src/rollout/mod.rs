//! The rollout state machine: moves units of rollout (agent containers, or what a target
//! stops and starts as one) to a new image in batches, each instance behind a health gate,
//! and returns failed ones to their old image.
//!
//! It is a deterministic reconciler. The runtime's async driver executes the [`Command`]s
//! that [`Rollout::start`], [`Rollout::step`] and [`Rollout::resume`] return and feeds the
//! outcomes back as [`Event`]s; the machine makes every decision and the driver none. Time
//! is what the events say it is. The [`Rollout`] value is the whole state and, serialized,
//! the journal the driver writes after every step (the datahub, its migrations and shipping
//! the images to the nodes happen before the machine starts; it is about agents only, and
//! treats every node as shipped).
//!
//! An instance is one unit: it carries the agents it serves ([`InstanceSpec::agents`]; one
//! agent for a container, several for a Proxmox node running several agent services), and
//! weighs that many agents. Everything about availability counts agents, not units.
//!
//! One instance, forward: `Pending` --batch starts--> `Draining` (Stop old) --Stopped-->
//! `Starting` (Start new) --Started--> `Gating` (probes) --good probes held for
//! `min_healthy_time`--> `Done`.
//!
//! One instance, back: a failure (StopFailed, StartFailed, gate not passed within
//! `healthy_deadline` of the start) or a cancellation (a rollback, the progress deadline)
//! sends it to `Reverting` (Stop the current container) --Stopped--> `RevertStarting`
//! (Start old) --Started--> `RevertGating` (same gate, old version) --> `RolledBack`; any
//! failure on this path ends in `RevertFailed`. An instance cancelled while its Stop or
//! Start is in flight waits for the answer first (a `Draining` one that stopped goes
//! straight to `RevertStarting`).
//!
//! The rollout: batches run one after another (canary first: the first unit, or the first
//! units whose agents fit in `canary`); a batch starts when the previous one is settled, and
//! holds consecutive units whose agents sum to at most `max_parallel` (a unit serving more
//! agents goes alone). At most `max_parallel` agents are in flight at any moment, reverts
//! included, or one unit when that unit alone serves more ([`Rollout::availability_bound`]).
//! When failures ÷ instances exceeds `max_failure_ratio`,
//! `failure_action` applies: `rollback` cancels the in-flight instances and reverts every
//! `Done` one, `pause` lets the batch settle and then stops with `Paused`, `continue` goes
//! on. Exceeding `progress_deadline` cancels the in-flight instances and ends `Failed`.

mod instance;
mod machine;
mod policy;
mod protocol;
mod resume;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

pub use instance::{Instance, InstanceSpec, InstanceState, NodeProgress, NodeState};
pub use policy::Policy;
pub use protocol::{Command, Event, Observed, ProbeReport};

/// The version of the journal format written by [`Rollout::to_journal`].
pub const JOURNAL_VERSION: u32 = 1;

/// Where the rollout as a whole is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Work is in progress.
    Running,
    /// The canary batch settled; waiting for [`Event::Approved`].
    AwaitingApproval,
    /// The failure action `pause` applied and the batch settled; [`Rollout::resume`]
    /// continues with the next batch.
    Paused,
    /// Interrupted by [`Event::Abort`]; [`Rollout::resume`] continues.
    Interrupted,
    /// Final: every instance runs the new image and passed its gate.
    Succeeded,
    /// Final: instances were returned to the old image, and all of those passed the gate.
    RolledBack,
    /// Final: an instance could not be returned to its old image, or the progress deadline
    /// was exceeded.
    Failed,
}

impl Status {
    /// Whether the rollout is over and nothing can resume it.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Succeeded | Status::RolledBack | Status::Failed)
    }
}

/// Why the rollout stopped starting new batches because of failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Halt {
    /// `failure_action: pause` applied.
    Pause,
    /// `failure_action: rollback` applied: every updated instance is being reverted.
    Rollback,
}

/// A rollout in progress: its policy, instances, batches and status.
///
/// This is the journal format, versioned by [`JOURNAL_VERSION`]: it derives `Serialize` and
/// `Deserialize` deliberately, and a change to its fields is a change of that format.
/// Only the machine's own methods change it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    journal_version: u32,
    policy: Policy,
    instances: Vec<Instance>,
    /// Instance indexes: the canary batch first (if any), then batches of at most
    /// `max_parallel` agents.
    batches: Vec<Vec<usize>>,
    current_batch: usize,
    status: Status,
    started_at_ms: u64,
    /// The latest time an event carried.
    clock_ms: u64,
    /// Time spent `Running`, counted against the progress deadline.
    running_ms: u64,
    failures: usize,
    halt: Option<Halt>,
    deadline_exceeded: bool,
    approved: bool,
}

/// A journal that cannot be read back.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Not JSON of the expected shape.
    #[error("the rollout journal is malformed")]
    Malformed(#[source] serde_json::Error),
    /// Written by a different version of rivetctl.
    #[error("the rollout journal has format version {found}; this rivetctl reads version {expected}")]
    Version { found: u32, expected: u32 },
    /// Refers to instances it does not have.
    #[error("the rollout journal is inconsistent: {detail}")]
    Inconsistent { detail: String },
}

impl Rollout {
    /// A rollout of `specs`, in the order given (the driver orders them by node, in config
    /// order, then by agent id), created at `now_ms`. Nothing happens until [`Rollout::start`].
    pub fn new(specs: Vec<InstanceSpec>, policy: Policy, now_ms: u64) -> Rollout {
        let weights: Vec<usize> = specs.iter().map(InstanceSpec::weight).collect();
        let batches = policy.batches_of(&weights);
        Rollout {
            journal_version: JOURNAL_VERSION,
            policy,
            instances: specs.into_iter().map(Instance::new).collect(),
            batches,
            current_batch: 0,
            status: Status::Running,
            started_at_ms: now_ms,
            clock_ms: now_ms,
            running_ms: 0,
            failures: 0,
            halt: None,
            deadline_exceeded: false,
            approved: false,
        }
    }

    /// The policy the rollout runs with.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Every instance with its state.
    pub fn instances(&self) -> &[Instance] {
        &self.instances
    }

    /// The batches, as instance indexes (for `--dry-run` and progress output).
    pub fn batches(&self) -> &[Vec<usize>] {
        &self.batches
    }

    /// The index of the batch in progress (`batches().len()` once all are through).
    pub fn current_batch(&self) -> usize {
        self.current_batch
    }

    /// Where the rollout is.
    pub fn status(&self) -> Status {
        self.status
    }

    /// When the rollout was created.
    pub fn started_at_ms(&self) -> u64 {
        self.started_at_ms
    }

    /// How many instances failed on the new image.
    pub fn failures(&self) -> usize {
        self.failures
    }

    /// Whether failures stopped new batches, and how.
    pub fn halt(&self) -> Option<Halt> {
        self.halt
    }

    /// Whether the progress deadline was exceeded.
    pub fn deadline_exceeded(&self) -> bool {
        self.deadline_exceeded
    }

    /// How many agents are in flight: the weights of the units in flight (the
    /// availability bound applies to this number).
    pub fn in_flight(&self) -> usize {
        self.instances.iter().filter(|i| i.state.is_in_flight()).map(|i| i.spec.weight()).sum()
    }

    /// How many units are in flight.
    pub fn units_in_flight(&self) -> usize {
        self.instances.iter().filter(|i| i.state.is_in_flight()).count()
    }

    /// The most agents the rollout may have in flight at once: `max_parallel`, or the
    /// weight of its heaviest unit when that is larger (such a unit goes alone).
    pub fn availability_bound(&self) -> usize {
        let heaviest = self.instances.iter().map(|i| i.spec.weight()).max().unwrap_or(0);
        self.policy.max_parallel.max(1).max(heaviest)
    }

    /// Whether `index` may go in flight now without breaking the availability bound: its
    /// weight fits beside the agents in flight, or nothing is in flight (a unit heavier
    /// than `max_parallel` goes alone).
    pub(super) fn has_room_for(&self, index: usize) -> bool {
        let in_flight = self.in_flight();
        in_flight == 0 || in_flight + self.instances[index].spec.weight() <= self.policy.max_parallel.max(1)
    }

    /// The nodes in the order their first instance appears, each with its derived state.
    pub fn nodes(&self) -> Vec<NodeProgress> {
        let mut nodes: Vec<NodeProgress> = Vec::new();
        for (index, instance) in self.instances.iter().enumerate() {
            match nodes.iter_mut().find(|n| n.node == instance.spec.node) {
                Some(node) => node.instances.push(index),
                None => nodes.push(NodeProgress {
                    node: instance.spec.node.clone(),
                    state: NodeState::Shipped,
                    instances: vec![index],
                }),
            }
        }
        for node in &mut nodes {
            let states: Vec<InstanceState> = node.instances.iter().map(|&i| self.instances[i].state).collect();
            node.state = NodeState::of(&states);
        }
        nodes
    }

    /// The journal: this rollout as pretty-printed JSON.
    pub fn to_journal(&self) -> String {
        serde_json::to_string_pretty(self).expect("a rollout always serializes")
    }

    /// Reads a journal written by [`Rollout::to_journal`].
    pub fn from_journal(text: &str) -> Result<Rollout, JournalError> {
        let rollout: Rollout = serde_json::from_str(text).map_err(JournalError::Malformed)?;
        if rollout.journal_version != JOURNAL_VERSION {
            return Err(JournalError::Version { found: rollout.journal_version, expected: JOURNAL_VERSION });
        }
        let total = rollout.instances.len();
        let mut seen = vec![false; total];
        for &index in rollout.batches.iter().flatten() {
            if index >= total || std::mem::replace(&mut seen[index], true) {
                return Err(JournalError::Inconsistent {
                    detail: format!("batch entry {index} is not a distinct instance of {total}"),
                });
            }
        }
        if seen.contains(&false) {
            return Err(JournalError::Inconsistent { detail: "an instance is in no batch".to_string() });
        }
        Ok(rollout)
    }
}
