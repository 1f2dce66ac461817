//! The executor's semantics against a scripted target: bounded concurrency, wave order,
//! failures, leftovers, discards and cancellation.
//!
//! The scripted target is not an in-memory deployment (that is `orchestrator::memory`, which
//! the command-level tests use): it only records what the executor asked of it and when,
//! and fails the operations a test names, which is what these properties are about.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use orchestrator::fleet::Fleet;
use orchestrator::plan::{self, Action, Plan, PlanOptions, Step};
use orchestrator::port::{Readiness, Target, TargetError};
use orchestrator::resource::{
    Component, FieldValue, Fields, ObservedResource, ObservedState, Resource, ResourceKey, RunState,
};
use targets::cancel::CancellationToken;

use super::*;

/// Records calls and the most steps in flight at once; fails what it is told to.
#[derive(Default)]
struct Scripted {
    log: RefCell<Vec<String>>,
    in_flight: Cell<usize>,
    most_in_flight: Cell<usize>,
    /// Names whose apply fails.
    refuse: BTreeSet<String>,
    /// Names whose wait reports a failure.
    unhealthy: BTreeSet<String>,
    /// Cancelled when this name is applied.
    cancel_on: Option<(String, CancellationToken)>,
}

impl Scripted {
    fn log(&self) -> Vec<String> {
        self.log.borrow().clone()
    }

    /// Lets the other steps of the wave run (each operation takes a few turns).
    async fn turns(&self) {
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
    }
}

impl Target for Scripted {
    type Payload = ();

    fn kind(&self) -> &'static str {
        "scripted"
    }

    fn lower(&self, _fleet: &Fleet) -> Vec<Resource<()>> {
        Vec::new()
    }

    async fn observe(&self) -> Result<Vec<ObservedResource>, TargetError> {
        Ok(Vec::new())
    }

    async fn apply(&self, step: &Step<()>) -> Result<(), TargetError> {
        let name = &step.key.name;
        self.in_flight.set(self.in_flight.get() + 1);
        self.most_in_flight.set(self.most_in_flight.get().max(self.in_flight.get()));
        self.log.borrow_mut().push(format!("apply {} {name}", step.action.as_str()));
        if let Some((trigger, token)) = &self.cancel_on
            && trigger == name
        {
            token.cancel();
        }
        self.turns().await;
        if step.wait == Wait::Nothing {
            self.in_flight.set(self.in_flight.get() - 1);
        }
        if self.refuse.contains(name) {
            if step.wait != Wait::Nothing {
                self.in_flight.set(self.in_flight.get() - 1);
            }
            return Err(TargetError::failed(format!("{name} refused")));
        }
        Ok(())
    }

    async fn wait(&self, step: &Step<()>, deadline: Duration) -> Result<Readiness, TargetError> {
        let name = &step.key.name;
        self.log.borrow_mut().push(format!("wait {name} {}s", deadline.as_secs()));
        self.turns().await;
        self.in_flight.set(self.in_flight.get() - 1);
        if self.unhealthy.contains(name) {
            return Ok(Readiness::Failed { reason: format!("{name} exited (1)"), logs: vec!["boom".into()] });
        }
        Ok(Readiness::Ready)
    }

    async fn discard(&self, step: &Step<()>) -> Result<(), TargetError> {
        self.log.borrow_mut().push(format!("discard {}", step.key.name));
        Ok(())
    }
}

fn key(kind: &str, name: &str) -> ResourceKey {
    ResourceKey { node: "n1".into(), kind: kind.into(), name: name.into() }
}

/// A desired object (the one place a test builds a [`Resource`]).
fn resource(kind: &str, name: &str, component: Component, value: &str) -> Resource<()> {
    let mut fields = Fields::new();
    fields.insert("image".into(), FieldValue::plain(value));
    let run_state = (kind == "container").then_some(RunState::Running);
    let stateful = component == Component::Storage;
    Resource {
        key: key(kind, name),
        component,
        stateful,
        fields,
        replace_on: BTreeSet::new(),
        run_state,
        stop_grace_ms: None,
        payload: (),
    }
}

/// What the target holds when `resource` was applied.
fn observed(resource: &Resource<()>) -> ObservedResource {
    ObservedResource {
        key: resource.key.clone(),
        component: resource.component.clone(),
        fields: Some(resource.fields.clone()),
        spec_hash: Some(resource.spec_hash()),
        state: if resource.run_state.is_some() { ObservedState::Running } else { ObservedState::Present },
        id: format!("id-{}", resource.key.name),
        stateful: resource.stateful,
        immutable: Vec::new(),
    }
}

/// A fleet: a network, a volume, the datahub and `agents` agents.
fn desired(agents: usize) -> Vec<Resource<()>> {
    let mut desired = vec![
        resource("network", "net", Component::Foundation, "-"),
        resource("volume", "data", Component::Storage, "-"),
        resource("container", "hub", Component::Datahub, "pg:16"),
    ];
    for i in 0..agents {
        desired.push(resource("container", &format!("agent-{i}"), Component::Agent(format!("a{i}")), "agent:1"));
    }
    desired
}

/// The fleet's first plan.
fn first_plan(agents: usize) -> Plan<()> {
    plan::plan("d", "scripted", desired(agents), &[], SEVEN_SECONDS)
}

/// Plans whose steps wait up to 7 s (the executor takes each step's deadline from it).
const SEVEN_SECONDS: PlanOptions = PlanOptions {
    prune: true,
    delete_data: false,
    delete_grace_ms: PlanOptions::DEFAULT_DELETE_GRACE_MS,
    wait_deadline_ms: 7000,
};

const OPTIONS: ExecuteOptions = ExecuteOptions { max_parallel: 2 };

/// Runs `plan` on `target` and returns the report (or error) with the events.
async fn run(
    target: &Scripted,
    plan: &Plan<()>,
    options: ExecuteOptions,
    cancel: &CancellationToken,
) -> (Result<ExecuteReport, TargetError>, Vec<(String, &'static str, String)>) {
    let events = RefCell::new(Vec::new());
    let emit = |e: StepEvent| events.borrow_mut().push((e.key.name, e.status.as_str(), e.detail));
    let result = execute(target, plan, &options, &(), cancel, &emit).await;
    (result, events.into_inner())
}

fn names(keys: &[ResourceKey]) -> Vec<&str> {
    keys.iter().map(|k| k.name.as_str()).collect()
}

#[tokio::test]
async fn waves_run_in_order_and_no_more_than_max_parallel_steps_at_once() {
    let target = Scripted::default();
    let plan = first_plan(5);
    let (result, events) = run(&target, &plan, OPTIONS, &CancellationToken::new()).await;
    let report = result.unwrap();
    assert_eq!(target.most_in_flight.get(), 2, "bounded by max_parallel");
    let done: Vec<&str> = report.done.iter().map(|(k, _, _)| k.name.as_str()).collect();
    assert_eq!(done, ["net", "data", "hub", "agent-0", "agent-1", "agent-2", "agent-3", "agent-4"], "plan order");
    let log = target.log();
    let position = |line: &str| log.iter().position(|l| l == line).unwrap_or_else(|| panic!("{line}: {log:#?}"));
    assert!(position("apply create net") < position("apply create data"));
    assert!(position("wait hub 7s") < position("apply create agent-0"), "the datahub is healthy first: {log:#?}");
    // Every agent's step waited with the given deadline, and the whole wave ran in parallel.
    assert_eq!(log.iter().filter(|l| l.starts_with("wait agent-") && l.ends_with(" 7s")).count(), 5);
    let hub: Vec<(&str, &str)> =
        events.iter().filter(|(n, _, _)| n == "hub").map(|(_, s, d)| (*s, d.as_str())).collect();
    assert_eq!(hub[..2], [("started", "starting"), ("waiting", "waiting for health")]);
    assert_eq!(hub[2].0, "done");
    assert!(hub[2].1.starts_with("create in "), "{hub:?}");
    assert!(events.contains(&("net".into(), "started", "creating network".into())), "{events:#?}");
}

#[tokio::test]
async fn one_step_at_a_time_with_max_parallel_one() {
    let target = Scripted::default();
    let options = ExecuteOptions { max_parallel: 1 };
    run(&target, &first_plan(4), options, &CancellationToken::new()).await.0.unwrap();
    assert_eq!(target.most_in_flight.get(), 1);
    let unbounded = Scripted::default();
    let options = ExecuteOptions { max_parallel: 100 };
    run(&unbounded, &first_plan(4), options, &CancellationToken::new()).await.0.unwrap();
    assert_eq!(unbounded.most_in_flight.get(), 4, "the agents' wave together");
}

#[tokio::test]
async fn a_create_that_fails_its_wait_is_discarded_and_later_waves_are_skipped() {
    let target = Scripted { unhealthy: ["hub".to_string()].into(), ..Scripted::default() };
    let (result, events) = run(&target, &first_plan(2), OPTIONS, &CancellationToken::new()).await;
    let report = result.unwrap();
    assert_eq!(
        report.failures,
        [StepFailure { key: key("container", "hub"), reason: "hub exited (1)".into(), logs: vec!["boom".into()] }]
    );
    assert!(target.log().contains(&"discard hub".to_string()), "{:#?}", target.log());
    assert_eq!(names(&report.skipped), ["agent-0", "agent-1"]);
    assert!(!target.log().iter().any(|l| l.contains("agent-")), "no agent step started: {:#?}", target.log());
    assert!(events.contains(&("hub".into(), "failed", "hub exited (1)".into())));
}

#[tokio::test]
async fn a_changed_object_that_fails_its_wait_is_not_discarded() {
    let old = resource("container", "hub", Component::Datahub, "pg:15");
    let new = resource("container", "hub", Component::Datahub, "pg:16");
    let plan = plan::plan("d", "scripted", vec![new], &[observed(&old)], SEVEN_SECONDS);
    assert_eq!(plan.steps[0].action, Action::Update);
    let target = Scripted { unhealthy: ["hub".to_string()].into(), ..Scripted::default() };
    let report = run(&target, &plan, OPTIONS, &CancellationToken::new()).await.0.unwrap();
    assert_eq!(report.failures.len(), 1);
    assert_eq!(target.log(), ["apply update hub", "wait hub 7s"], "nothing is discarded");
}

#[tokio::test]
async fn a_refused_delete_is_left_over_and_the_other_steps_and_waves_still_run() {
    let present: Vec<Resource<()>> = vec![
        resource("network", "net", Component::Foundation, "-"),
        resource("volume", "data", Component::Storage, "-"),
        resource("container", "agent-0", Component::Agent("a0".into()), "agent:1"),
        resource("container", "agent-1", Component::Agent("a1".into()), "agent:1"),
    ];
    let found: Vec<ObservedResource> = present.iter().map(observed).collect();
    let plan = plan::plan_destroy::<()>("d", "scripted", &found, true);
    let target = Scripted { refuse: ["agent-0".to_string()].into(), ..Scripted::default() };
    let (result, events) = run(&target, &plan, OPTIONS, &CancellationToken::new()).await;
    let report = result.unwrap();
    assert_eq!(
        report.left,
        [Leftover { key: key("container", "agent-0"), reason: "agent-0 refused".into(), hint: None }]
    );
    let done: Vec<&str> = report.done.iter().map(|(k, _, _)| k.name.as_str()).collect();
    assert_eq!(done, ["agent-1", "net", "data"], "later waves ran: {:#?}", target.log());
    assert!(report.failures.is_empty() && report.skipped.is_empty());
    assert!(events.contains(&("agent-1".into(), "started", "removing".into())));
}

#[tokio::test]
async fn a_step_the_target_refuses_ends_the_execution_after_its_wave() {
    let target = Scripted { refuse: ["agent-0".to_string()].into(), ..Scripted::default() };
    // A removal after the agents' wave, which must not start.
    let gone = resource("container", "old", Component::Agent("old".into()), "agent:0");
    let plan = plan::plan("d", "scripted", desired(2), &[observed(&gone)], SEVEN_SECONDS);
    let (result, _) = run(&target, &plan, OPTIONS, &CancellationToken::new()).await;
    assert_eq!(result.unwrap_err(), TargetError::failed("agent-0 refused"));
    let log = target.log();
    assert!(log.contains(&"wait agent-1 7s".to_string()), "the wave's other step finished: {log:#?}");
    assert!(!log.iter().any(|l| l.contains("old")), "no later wave: {log:#?}");
}

#[tokio::test]
async fn once_cancelled_no_step_starts_and_the_steps_in_flight_finish() {
    let cancel = CancellationToken::new();
    let target = Scripted { cancel_on: Some(("agent-1".into(), cancel.clone())), ..Scripted::default() };
    let report = run(&target, &first_plan(5), OPTIONS, &cancel).await.0.unwrap();
    let done: Vec<&str> = report.done.iter().map(|(k, _, _)| k.name.as_str()).collect();
    assert_eq!(done, ["net", "data", "hub", "agent-0", "agent-1"], "the two in flight finished");
    assert_eq!(names(&report.not_started), ["agent-2", "agent-3", "agent-4"]);
    assert!(!target.log().iter().any(|l| l.contains("agent-2")), "{:#?}", target.log());
}

#[tokio::test]
async fn a_cancelled_execution_starts_no_wave() {
    let cancel = CancellationToken::new();
    cancel.cancel();
    let target = Scripted::default();
    let plan = first_plan(1);
    let report = run(&target, &plan, OPTIONS, &cancel).await.0.unwrap();
    assert_eq!(report.not_started.len(), plan.steps.len());
    assert!(target.log().is_empty());
    let by_wave: BTreeMap<u32, usize> = plan.waves().iter().map(|(w, s)| (*w, s.len())).collect();
    assert_eq!(by_wave.values().sum::<usize>(), 4);
}

/// Fails every call after the first `allowed` (a lock lost to another run).
struct LosesLock {
    allowed: usize,
    calls: Cell<usize>,
}

impl BeforeStep for LosesLock {
    async fn before_step(&self) -> Result<(), TargetError> {
        self.calls.set(self.calls.get() + 1);
        if self.calls.get() > self.allowed {
            return Err(TargetError::failed("this run lost the lock of deployment \"d\""));
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_run_that_lost_its_lock_starts_no_further_step() {
    let target = Scripted::default();
    let plan = first_plan(3);
    let lock = LosesLock { allowed: 3, calls: Cell::new(0) };
    let cancel = CancellationToken::new();
    let options = ExecuteOptions { max_parallel: 1 };
    let err = execute(&target, &plan, &options, &lock, &cancel, &|_| {}).await.unwrap_err();
    assert!(err.message.contains("lost the lock"), "{err:?}");
    let applied: Vec<String> = target.log().into_iter().filter(|l| l.starts_with("apply ")).collect();
    assert_eq!(applied, ["apply create net", "apply create data", "apply create hub"], "nothing after the loss");
}
