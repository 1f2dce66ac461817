//! The one plan executor: runs a [`Plan`]'s waves on any [`Target`] of the port, with
//! bounded concurrency, progress events and cancellation, and makes no choices the plan has
//! not made.
//!
//! Semantics (those `infra up` and `infra destroy` had on Docker):
//! - Waves run in order; the steps of one wave run together, at most
//!   [`ExecuteOptions::max_parallel`] at once (a step counts from its apply until its wait
//!   ends).
//! - A step is applied ([`Target::apply`]), then waited for ([`Target::wait`]) unless the plan
//!   says it waits for nothing, within the step's deadline. A step that does not become ready
//!   is a [`StepFailure`]; a step the plan marks `discard_on_failure` (a create) is discarded
//!   ([`Target::discard`]) so the target is as before. After a wave with a failure no later wave starts (their steps are `skipped`).
//! - A delete the target refuses is a [`Leftover`]: it does not stop the other steps nor the
//!   later waves (so `destroy --volumes` still removes the data it can).
//! - Any other error of the target (a create it refuses, a node that does not answer) ends
//!   the execution after the steps of its wave finished, with that error.
//! - Once `cancel` is cancelled no step starts (`not_started`); the steps in flight run to
//!   their end state.
//! - Before each step, [`BeforeStep`] renews the deployment's lock; when another run took it,
//!   no further step starts and the execution ends with that error.
//!
//! Everything runs in the caller's task (the port's futures are not `Send`): the steps of a
//! wave are polled together by [`futures_util::stream::StreamExt::buffer_unordered`].

use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use orchestrator::plan::{Action, Plan, Step, Wait};
use orchestrator::port::{Readiness, Target, TargetError};
use orchestrator::resource::ResourceKey;
use targets::cancel::CancellationToken;

/// Settings of one execution. How long a step's wait may take, how long a delete waits
/// before it kills and whether a failed create is removed come from the plan's steps.
#[derive(Debug, Clone, Copy)]
pub struct ExecuteOptions {
    /// Steps of a wave that run at once (`deployment.apply.max_parallel`); at least 1.
    pub max_parallel: usize,
}

/// What the executor does before each step starts: renew the deployment's lock (an error
/// stops the execution before that step: another run holds the lock now).
#[allow(async_fn_in_trait)] // driven on one thread (see `orchestrator::port`)
pub trait BeforeStep {
    async fn before_step(&self) -> Result<(), TargetError>;
}

/// Nothing before each step (tests, and commands that hold no lock).
impl BeforeStep for () {
    async fn before_step(&self) -> Result<(), TargetError> {
        Ok(())
    }
}

impl<S: orchestrator::port::StateStore> BeforeStep for crate::session::Held<'_, S> {
    async fn before_step(&self) -> Result<(), TargetError> {
        self.renew_step().await
    }
}

/// How far a step got, for progress output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepStatus {
    Started,
    Waiting,
    Done,
    Failed,
}

impl StepStatus {
    /// The word in progress lines and `--output json` events (docs/output.md).
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Started => "started",
            StepStatus::Waiting => "waiting",
            StepStatus::Done => "done",
            StepStatus::Failed => "failed",
        }
    }
}

/// Something that happened to one step's object.
#[derive(Debug, Clone)]
pub struct StepEvent {
    pub key: ResourceKey,
    pub status: StepStatus,
    /// What happens (`starting`, `waiting for health`, `create in 1.2s`, a failure's reason).
    pub detail: String,
}

/// A step whose object did not become ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepFailure {
    pub key: ResourceKey,
    pub reason: String,
    /// The object's last log lines.
    pub logs: Vec<String>,
}

/// An object a delete step could not remove: it is still there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    pub key: ResourceKey,
    /// The target's own words (`network x has active endpoints`).
    pub reason: String,
    /// What to do about it, when the target knows (`docker network disconnect -f x web`).
    pub hint: Option<String>,
}

/// What an execution did.
#[derive(Debug, Default)]
pub struct ExecuteReport {
    /// Steps that completed, in plan order, with how long each took.
    pub done: Vec<(ResourceKey, Action, Duration)>,
    pub failures: Vec<StepFailure>,
    /// Objects that delete steps could not remove (the other steps still ran).
    pub left: Vec<Leftover>,
    /// Steps not started because an earlier wave failed.
    pub skipped: Vec<ResourceKey>,
    /// Steps not started because a stop was requested (Ctrl-C).
    pub not_started: Vec<ResourceKey>,
}

/// How one step ended.
enum Outcome {
    Done(Duration),
    Failed(StepFailure),
    Left(Leftover),
    Error(TargetError),
    NotStarted,
}

/// What a step is doing when it starts, for progress output.
fn started_detail<P>(step: &Step<P>) -> String {
    match step.action {
        Action::Delete => "removing".into(),
        Action::Update if step.changes.is_empty() && step.observed.is_some() => "starting (was stopped)".into(),
        Action::Create if step.wait != Wait::Nothing => "starting".into(),
        Action::Create => format!("creating {}", step.key.kind),
        Action::Update => "updating".into(),
        Action::Replace => "replacing".into(),
    }
}

/// Applies one step and waits for it.
async fn run_step<T: Target>(target: &T, step: &Step<T::Payload>, emit: &dyn Fn(StepEvent)) -> Outcome {
    let event = |status, detail: String| emit(StepEvent { key: step.key.clone(), status, detail });
    let started = Instant::now();
    event(StepStatus::Started, started_detail(step));
    if let Err(err) = target.apply(step).await {
        event(StepStatus::Failed, err.message.clone());
        if step.action == Action::Delete {
            return Outcome::Left(Leftover { key: step.key.clone(), reason: err.message, hint: err.hint });
        }
        return Outcome::Error(err);
    }
    match step.wait {
        Wait::Nothing => {}
        Wait::Completed => event(StepStatus::Waiting, "running to completion".into()),
        Wait::Healthy | Wait::Gate => event(StepStatus::Waiting, "waiting for health".into()),
    }
    let readiness = match step.wait {
        Wait::Nothing => Readiness::Ready,
        _ => match target.wait(step, Duration::from_millis(step.deadline_ms)).await {
            Ok(readiness) => readiness,
            Err(err) => {
                event(StepStatus::Failed, err.message.clone());
                return Outcome::Error(err);
            }
        },
    };
    match readiness {
        Readiness::Ready => {
            let elapsed = started.elapsed();
            event(StepStatus::Done, format!("{} in {:.1}s", step.action.as_str(), elapsed.as_secs_f64()));
            Outcome::Done(elapsed)
        }
        Readiness::Failed { mut reason, logs } => {
            // A new object that never became ready is removed: the target stays as it was.
            if step.discard_on_failure
                && let Err(err) = target.discard(step).await
            {
                reason = format!("{reason}; removing it again failed: {}", err.message);
            }
            // An updated one is put back where the target can.
            if step.action == Action::Update {
                match target.revert(step).await {
                    Ok(Some(done)) => reason = format!("{reason}; rolled back: {done}"),
                    Ok(None) => {}
                    Err(err) => reason = format!("{reason}; rolling it back failed: {}", err.message),
                }
            }
            event(StepStatus::Failed, reason.clone());
            Outcome::Failed(StepFailure { key: step.key.clone(), reason, logs })
        }
    }
}

/// Executes `plan` on `target`, emitting events (see the module doc for the semantics).
///
/// `Err` when the target failed a step other than a delete (after the other steps of that
/// wave ended); failed waits, leftovers and interruptions are in the report.
pub async fn execute<T: Target>(
    target: &T,
    plan: &Plan<T::Payload>,
    options: &ExecuteOptions,
    before: &impl BeforeStep,
    cancel: &CancellationToken,
    emit: &dyn Fn(StepEvent),
) -> Result<ExecuteReport, TargetError> {
    let mut report = ExecuteReport::default();
    let max_parallel = options.max_parallel.max(1);
    for (_, steps) in plan.waves() {
        if !report.failures.is_empty() {
            report.skipped.extend(steps.iter().map(|s| s.key.clone()));
            continue;
        }
        if cancel.is_cancelled() {
            report.not_started.extend(steps.iter().map(|s| s.key.clone()));
            continue;
        }
        // A step is started only when a slot is free, and only if no stop was requested.
        let runs = steps.iter().enumerate().map(|(index, step)| async move {
            if cancel.is_cancelled() {
                return (index, Outcome::NotStarted);
            }
            if let Err(err) = before.before_step().await {
                return (index, Outcome::Error(err));
            }
            (index, run_step(target, step, emit).await)
        });
        let mut outcomes: Vec<(usize, Outcome)> = stream::iter(runs).buffer_unordered(max_parallel).collect().await;
        outcomes.sort_by_key(|(index, _)| *index);
        let mut first_error = None;
        for (index, outcome) in outcomes {
            let step = steps[index];
            match outcome {
                Outcome::Done(elapsed) => report.done.push((step.key.clone(), step.action, elapsed)),
                Outcome::Failed(failure) => report.failures.push(failure),
                Outcome::Left(left) => report.left.push(left),
                Outcome::NotStarted => report.not_started.push(step.key.clone()),
                Outcome::Error(err) => {
                    first_error.get_or_insert(err);
                }
            }
        }
        if let Some(err) = first_error {
            return Err(err);
        }
    }
    Ok(report)
}

#[cfg(test)]
#[path = "execute_tests.rs"]
mod tests;
