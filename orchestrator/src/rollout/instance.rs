//! One unit of rollout (what a target stops and starts as one: an agent container, or a
//! Proxmox node's agent services) being moved from one image to another, its state, and
//! the per-node view derived from the states of a node's units.
//!
//! A unit carries the agents it serves: its *weight* in the availability bound is its
//! agent count, so `max_parallel` counts agents on every target.

use serde::{Deserialize, Serialize};

use crate::gate::Gate;

/// One unit to move from `from_image` (deployed now) to `to_image`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceSpec {
    /// The node the unit runs on.
    pub node: String,
    /// The agent id (for a unit serving several agents, the one that names it).
    pub agent: String,
    /// The agent ids the unit serves; empty means `[agent]` (journals written before
    /// units carried their agents, and every one-agent unit, leave it out).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agents: Vec<String>,
    /// The image running now: what a revert returns to.
    pub from_image: String,
    /// The image to roll out.
    pub to_image: String,
    /// The version the old image reports on `/health`; checked by a revert's gate when `Some`.
    pub from_version: Option<String>,
    /// The version the new image reports on `/health`; checked by the gate when `Some`.
    pub to_version: Option<String>,
}

impl InstanceSpec {
    /// The agent ids the unit serves (`[agent]` when `agents` is empty).
    pub fn agent_ids(&self) -> Vec<&str> {
        if self.agents.is_empty() {
            vec![self.agent.as_str()]
        } else {
            self.agents.iter().map(String::as_str).collect()
        }
    }

    /// How many agents are down while the unit is in flight: what it counts against
    /// `max_parallel`.
    pub fn weight(&self) -> usize {
        self.agents.len().max(1)
    }
}

/// Where one instance is. The forward path is `Pending → Draining → Starting → Gating →
/// Done`; a failure (or a rollback or deadline cancelling the instance) leads through
/// `Reverting → RevertStarting → RevertGating` to `RolledBack`, or to `RevertFailed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    /// Not started: the old container runs untouched.
    Pending,
    /// `Stop` of the old container sent.
    Draining,
    /// `Start` on the new image sent.
    Starting,
    /// Running the new image; probing until the gate passes or its deadline expires.
    Gating,
    /// Passed the gate on the new image.
    Done,
    /// Being returned to the old image: `Stop` of the current container sent.
    Reverting,
    /// Being returned to the old image: `Start` on the old image sent.
    RevertStarting,
    /// Running the old image again; probing until the gate passes or its deadline expires.
    RevertGating,
    /// Passed the gate on the old image.
    RolledBack,
    /// The old image could not be brought back healthy either: needs a person.
    RevertFailed,
}

impl InstanceState {
    /// Whether the instance is down or in doubt: the states the availability bound counts.
    pub fn is_in_flight(self) -> bool {
        matches!(
            self,
            InstanceState::Draining
                | InstanceState::Starting
                | InstanceState::Gating
                | InstanceState::Reverting
                | InstanceState::RevertStarting
                | InstanceState::RevertGating
        )
    }

    /// Whether nothing more will happen to the instance in its batch.
    pub fn is_settled(self) -> bool {
        matches!(self, InstanceState::Done | InstanceState::RolledBack | InstanceState::RevertFailed)
    }

    /// Whether the instance is being returned to its old image.
    pub fn is_reverting(self) -> bool {
        matches!(self, InstanceState::Reverting | InstanceState::RevertStarting | InstanceState::RevertGating)
    }

    /// Whether the machine may move an instance from `self` to `next` while running.
    /// [`Rollout::resume`](super::Rollout::resume) may in addition move an in-flight instance
    /// to any other in-flight state, or a forward one back to `Pending`.
    pub fn can_become(self, next: InstanceState) -> bool {
        use InstanceState::*;
        matches!(
            (self, next),
            (Pending, Draining)
                | (Draining, Starting | Reverting | RevertStarting)
                | (Starting, Gating | Reverting)
                | (Gating, Done | Reverting)
                | (Done, Reverting)
                | (Reverting, RevertStarting | RevertFailed)
                | (RevertStarting, RevertGating | RevertFailed)
                | (RevertGating, RolledBack | RevertFailed)
        )
    }

    /// The name used in the journal and in output.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Pending => "pending",
            InstanceState::Draining => "draining",
            InstanceState::Starting => "starting",
            InstanceState::Gating => "gating",
            InstanceState::Done => "done",
            InstanceState::Reverting => "reverting",
            InstanceState::RevertStarting => "revert_starting",
            InstanceState::RevertGating => "revert_gating",
            InstanceState::RolledBack => "rolled_back",
            InstanceState::RevertFailed => "revert_failed",
        }
    }
}

/// One instance with its state and history, as recorded in the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    /// What to move where.
    pub spec: InstanceSpec,
    /// Where it is.
    pub state: InstanceState,
    /// Its current health gate (journaled as the instance's `started_at_ms`,
    /// `healthy_since_ms`, `last_probe_problem` and `restarts_at_start`); the gate's clock
    /// starts at the first timed event after its `Started`.
    #[serde(flatten)]
    pub gate: Gate,
    /// Why the instance failed or was reverted (and why the revert failed, if it did).
    pub last_error: Option<String>,
    /// The last log lines of the container whose gate failed on a definite signal (the most
    /// recent such failure), for the report.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<String>,
    /// The instance itself failed (stop, start or gate on the new image); counted in
    /// [`Rollout::failures`](super::Rollout::failures).
    pub failed: bool,
    /// The instance must end on its old image: it failed, or a rollback or the progress
    /// deadline cancelled it.
    pub revert: bool,
    /// A `Probe` is in flight for the current gate; an answer is accepted only then. Not
    /// journaled: a resumed driver has no answers in flight.
    #[serde(skip)]
    pub(super) probe_in_flight: bool,
}

impl Instance {
    pub(super) fn new(spec: InstanceSpec) -> Instance {
        Instance {
            spec,
            state: InstanceState::Pending,
            gate: Gate::default(),
            last_error: None,
            logs: Vec::new(),
            failed: false,
            revert: false,
            probe_in_flight: false,
        }
    }

    /// The version the current gate expects, if any.
    pub(super) fn expected_version(&self) -> Option<&str> {
        if self.state.is_reverting() { self.spec.from_version.as_deref() } else { self.spec.to_version.as_deref() }
    }

    /// Adds `error` to the instance's error (keeping the first cause).
    pub(super) fn record_error(&mut self, error: String) {
        self.last_error = Some(match self.last_error.take() {
            Some(first) => format!("{first}; then {error}"),
            None => error,
        });
    }
}

/// The state of a node, derived from the states of its agents. Serializes to the snake_case
/// names used in the journal view and in JSON output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// The new image is not on the node yet. The machine never derives it: the driver ships
    /// to every node before the rollout starts, and reports this state while shipping.
    Pending,
    /// The new image is on the node; no agent of it was touched yet.
    Shipped,
    /// An agent of the node is being stopped.
    Draining,
    /// An agent of the node runs the new image and is being gated.
    Started,
    /// Every touched agent of the node passed its gate; others are still to come.
    Healthy,
    /// Every agent of the node runs the new image and passed its gate.
    Done,
    /// An agent of the node is being returned to the old image.
    RollingBack,
    /// Agents of the node were returned to the old image; the others are done or untouched.
    RolledBack,
    /// An agent of the node could not be returned to the old image.
    Failed,
}

impl NodeState {
    /// The state of a node whose agents are in `states`.
    pub fn of(states: &[InstanceState]) -> NodeState {
        use InstanceState as I;
        let any = |wanted: &[InstanceState]| states.iter().any(|s| wanted.contains(s));
        if any(&[I::RevertFailed]) {
            NodeState::Failed
        } else if states.iter().any(|s| s.is_reverting()) {
            NodeState::RollingBack
        } else if any(&[I::Draining]) {
            NodeState::Draining
        } else if any(&[I::Starting, I::Gating]) {
            NodeState::Started
        } else if any(&[I::RolledBack]) {
            NodeState::RolledBack
        } else if !states.is_empty() && states.iter().all(|s| *s == I::Done) {
            NodeState::Done
        } else if any(&[I::Done]) {
            NodeState::Healthy
        } else {
            NodeState::Shipped
        }
    }
}

/// One node's part of the rollout, for the journal's per-node view and for output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeProgress {
    /// The node's name.
    pub node: String,
    /// Its derived state.
    pub state: NodeState,
    /// Its instances, as indexes into the rollout's instances.
    pub instances: Vec<usize>,
}
