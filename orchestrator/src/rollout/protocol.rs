//! What the machine and its driver say to each other: [`Command`]s out, [`Event`]s in.
//!
//! The driver's contract:
//! - Every `Stop`, `Start` and `Probe` is answered exactly once (`Stopped`/`StopFailed`,
//!   `Started`/`StartFailed`, `Probed`); the driver enforces its own timeouts and turns them
//!   into the failure event (a probe that times out is a `Probed` with `running: false` or
//!   `live: false`).
//! - Commands for one instance are executed one after another, in the order issued, so
//!   their answers arrive in that order. Commands for different instances may run
//!   concurrently and be answered in any order.
//! - `Stop` and `Start` are idempotent: stopping a stopped container succeeds; `Start`
//!   replaces the agent's stopped container with one on the given image. The machine never
//!   issues `Start` before the agent's container has been stopped.
//! - The driver writes the journal ([`Rollout::to_journal`](super::Rollout::to_journal))
//!   after each call to the machine and before executing the commands it returned, so a
//!   resumed rollout knows about every command that may have run.
//! - The driver rate-limits `Probe`s (the machine asks for the next one as soon as the
//!   previous one is answered) and sends `Tick`s now and then so deadlines fire even when
//!   nothing else happens.
//! - A probe reports what the engine says about the container (exit, restarts, its own
//!   health check) and, when that looks wrong, the container's last log lines: the gate
//!   ([`crate::gate`]) fails at once on those signals.

pub use crate::gate::ProbeReport;

/// What happened, fed back into [`Rollout::step`](super::Rollout::step). `instance` is an
/// index into the rollout's instances; events for unknown instances, or that do not fit the
/// instance's state (duplicates, answers that arrive after an `Abort`), are ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Time passes: deadlines are checked and gating instances without a probe in flight
    /// are probed.
    Tick { now_ms: u64 },
    /// The container was stopped (or was not running).
    Stopped { instance: usize },
    /// The container could not be stopped.
    StopFailed { instance: usize, reason: String },
    /// The container is running on the requested image.
    Started { instance: usize },
    /// The container could not be started.
    StartFailed { instance: usize, reason: String },
    /// The answer to a [`Command::Probe`], taken at `now_ms`.
    Probed { instance: usize, now_ms: u64, report: ProbeReport },
    /// The operator approved the rollout after the canary batch.
    Approved,
    /// The operator interrupted the rollout (Ctrl-C): no new work is issued, answers to
    /// work in flight are ignored, and [`Rollout::resume`](super::Rollout::resume) later
    /// reconciles the instances that were in flight.
    Abort,
}

impl Event {
    /// The time carried by the event, if any.
    pub fn now_ms(&self) -> Option<u64> {
        match self {
            Event::Tick { now_ms } | Event::Probed { now_ms, .. } => Some(*now_ms),
            _ => None,
        }
    }
}

/// What the driver must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Stop the agent's container: SIGTERM, then SIGKILL after `grace_ms`. Answer with
    /// `Stopped` or `StopFailed`.
    Stop { instance: usize, grace_ms: u64 },
    /// Start the agent's container on `image` (the new image, or the old one when
    /// reverting). Answer with `Started` or `StartFailed`.
    Start { instance: usize, image: String },
    /// Probe the agent's health and answer with `Probed`.
    Probe { instance: usize },
    /// The canary batch is done: wait for the operator and answer with `Approved` (or
    /// `Abort`).
    AwaitApproval,
    /// The machine issues nothing more: persist the journal and stop. `status` says why
    /// (a final status, `Paused`, `Interrupted` or `AwaitingApproval`).
    Finish { status: super::Status },
}

/// What the driver found on the target for one instance when resuming after a crash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// Index into the rollout's instances.
    pub instance: usize,
    /// The image of the agent's container, if there is one.
    pub image: Option<String>,
    /// Whether that container is running.
    pub running: bool,
}
