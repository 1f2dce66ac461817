//! The in-memory target on its own: it records what it applies as `apply` does, fails
//! waits and probes on broken images, refuses unreachable nodes, and carries a rollout that
//! the rollout machine drives through it (a hand-written loop; the target's futures are
//! ready at once, so `block_on` polls each once).

use std::collections::{BTreeSet, VecDeque};
use std::future::Future;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use super::*;
use crate::config::model::FailureAction;
use crate::plan::{self, Action, Plan, PlanOptions};
use crate::port::{Readiness, Rollouts, Target, Unit};
use crate::resource::{Component, FieldValue, Fields, Resource, ResourceKey, RunState};
use crate::rollout::{Command, Event, InstanceSpec, InstanceState, Policy, Rollout, Status};

/// Polls `future` once: every future of the in-memory target is ready at once.
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("an in-memory target operation did not complete at once"),
    }
}

fn key(node: &str, name: &str) -> ResourceKey {
    ResourceKey { node: node.into(), kind: "container".into(), name: name.into() }
}

fn resource(node: &str, name: &str, component: Component, image: &str) -> Resource<()> {
    let mut fields = Fields::new();
    fields.insert("image".into(), FieldValue::plain(image));
    let run_state = match component {
        Component::Foundation | Component::Storage => None,
        Component::Migrate => Some(RunState::Completed),
        _ => Some(RunState::Running),
    };
    Resource {
        key: key(node, name),
        stateful: component == Component::Storage,
        component,
        fields,
        replace_on: BTreeSet::new(),
        run_state,
        stop_grace_ms: Some(10_000),
        payload: (),
    }
}

/// A datahub and `agents` agents (`agent0`…) on `image`, spread over nodes `n0` and `n1`.
fn fleet(agents: usize, image: &str) -> Vec<Resource<()>> {
    let mut out = vec![resource("n0", "hub", Component::Datahub, "pg:16")];
    for i in 0..agents {
        let name = format!("agent{i}");
        out.push(resource(&format!("n{}", i % 2), &name, Component::Agent(name.clone()), image));
    }
    out
}

/// Runs `plan` through the target step by step (the executor's part, in plan order).
fn execute(target: &MemoryTarget<()>, plan: &Plan<()>) -> Vec<Readiness> {
    let mut out = Vec::new();
    for step in &plan.steps {
        block_on(target.apply(step)).expect("apply");
        let readiness = block_on(target.wait(step, Duration::from_millis(step.deadline_ms))).expect("wait");
        if readiness != Readiness::Ready && step.discard_on_failure {
            block_on(target.discard(step)).expect("discard");
        }
        out.push(readiness);
    }
    out
}

/// A target holding `fleet(agents, image)`, applied through the port.
fn deployed(agents: usize, image: &str) -> MemoryTarget<()> {
    let target = MemoryTarget::new();
    target.set_version("a:1", "1.0.0");
    target.set_version("a:2", "2.0.0");
    let plan = plan::plan("d", "memory", fleet(agents, image), &[], PlanOptions::default());
    assert!(execute(&target, &plan).iter().all(|r| *r == Readiness::Ready));
    target
}

fn policy(max_parallel: usize, canary: usize) -> Policy {
    Policy {
        max_parallel,
        canary,
        approve: false,
        min_healthy_time_ms: 10_000,
        healthy_deadline_ms: 60_000,
        progress_deadline_ms: 3_600_000,
        stop_grace_ms: 20_000,
        failure_action: FailureAction::Rollback,
        max_failure_ratio: 0.0,
    }
}

/// The rollout specs of `units`, from what the target says runs now.
fn specs(target: &MemoryTarget<()>, units: &[Unit<()>]) -> Vec<InstanceSpec> {
    units
        .iter()
        .map(|unit| {
            let current = block_on(target.current(unit)).expect("current").expect("deployed");
            let to_image = unit.desired.fields["image"].text.to_string();
            InstanceSpec {
                node: unit.node.clone(),
                agent: unit.agents[0].clone(),
                agents: if unit.agents.len() > 1 { unit.agents.clone() } else { Vec::new() },
                from_version: block_on(target.version(&unit.node, &current.image)),
                to_version: block_on(target.version(&unit.node, &to_image)),
                from_image: current.image,
                to_image,
            }
        })
        .collect()
}

/// A minimal driver: executes the machine's commands one at a time, in order, against the
/// target; each probe takes 5 s. Settles every unit at the end.
fn drive(target: &MemoryTarget<()>, units: &[Unit<()>], rollout: &mut Rollout) -> Status {
    let mut queue: VecDeque<Command> = rollout.start(0).into();
    let mut now = 0;
    while let Some(command) = queue.pop_front() {
        let event = match command {
            Command::Finish { status } => {
                for (unit, instance) in units.iter().zip(rollout.instances()) {
                    block_on(target.settle(unit, instance.state == InstanceState::Done)).expect("settle");
                }
                return status;
            }
            Command::AwaitApproval => Event::Approved,
            Command::Stop { instance, grace_ms } => {
                let unit = &units[instance];
                let grace = Duration::from_millis(grace_ms);
                let result = if rollout.instances()[instance].state == InstanceState::Draining {
                    block_on(target.stop_old(unit, grace))
                } else {
                    block_on(target.stop_new(unit, grace))
                };
                match result {
                    Ok(()) => Event::Stopped { instance },
                    Err(error) => Event::StopFailed { instance, reason: error.to_string() },
                }
            }
            Command::Start { instance, image } => {
                let unit = &units[instance];
                let result = if image == rollout.instances()[instance].spec.to_image {
                    block_on(target.start_new(unit))
                } else {
                    block_on(target.start_previous(unit, &image))
                };
                match result {
                    Ok(()) => Event::Started { instance },
                    Err(error) => Event::StartFailed { instance, reason: error.to_string() },
                }
            }
            Command::Probe { instance } => {
                now += 5_000;
                let report = block_on(target.probe(&units[instance])).expect("probe");
                Event::Probed { instance, now_ms: now, report }
            }
        };
        queue.extend(rollout.step(event));
    }
    panic!("the machine stopped without a Finish: {:#?}", rollout.instances())
}

/// Plans `desired` against the target and splits off the rollout units.
fn rollout_units(target: &MemoryTarget<()>, desired: Vec<Resource<()>>) -> (Plan<()>, Vec<Unit<()>>) {
    let observed = block_on(target.observe()).expect("observe");
    let (executor, steps) = plan::plan("d", "memory", desired, &observed, PlanOptions::default()).split_rollout();
    (executor, steps.iter().map(|s| s.rollout_unit().expect("a unit")).collect())
}

fn serving(target: &MemoryTarget<()>, name: &str) -> InstanceView {
    target.unit(name).and_then(|u| u.serving).unwrap_or_else(|| panic!("{name} serves nothing"))
}

#[test]
fn applied_steps_are_recorded_as_apply_records_them() {
    let first = plan::plan("d", "memory", fleet(3, "a:1"), &[], PlanOptions::default());
    let target = deployed(3, "a:1");
    assert_eq!(block_on(target.observe()).unwrap(), apply(&first, &[]));
    assert_eq!(target.unit("agent1").unwrap().agents, ["agent1"]);
    assert_eq!(serving(&target, "agent1"), InstanceView { image: "a:1".into(), running: true });
    // Removing an agent removes its object and its unit.
    let observed = block_on(target.observe()).unwrap();
    let second = plan::plan("d", "memory", fleet(2, "a:1"), &observed, PlanOptions::default());
    assert_eq!(second.steps.len(), 1);
    execute(&target, &second);
    assert_eq!(block_on(target.observe()).unwrap(), apply(&second, &observed));
    assert!(target.unit("agent2").is_none());
    assert_eq!(target.log().iter().filter(|e| e.op == Op::Apply(Action::Delete)).count(), 1);
    assert!(target.calls() > 0);
}

#[test]
fn a_broken_image_fails_its_wait_and_a_failed_create_is_discarded() {
    let target = MemoryTarget::new();
    target.set_broken("a:9", true);
    let plan = plan::plan("d", "memory", fleet(1, "a:9"), &[], PlanOptions::default());
    let readiness = execute(&target, &plan);
    assert_eq!(readiness[0], Readiness::Ready, "the datahub is fine");
    let Readiness::Failed { reason, logs } = &readiness[1] else { panic!("{readiness:?}") };
    assert!(reason.contains("exited with code 1") && logs[0].contains("a:9"), "{reason} {logs:?}");
    let names: Vec<String> = target.objects().into_iter().map(|o| o.key.name).collect();
    assert_eq!(names, ["hub"], "the failed agent was discarded");
    assert!(target.log().iter().any(|e| e.name == "agent0" && e.op == Op::Discard));
}

#[test]
fn an_unreachable_node_refuses_every_operation() {
    let target = deployed(2, "a:1");
    target.set_unreachable("n1", true);
    assert!(block_on(target.observe()).unwrap_err().is_unreachable());
    let (_, units) = rollout_units_with_reachable(&target, "n1");
    let unit = units.iter().find(|u| u.node == "n1").expect("an n1 unit");
    assert!(block_on(target.probe(unit)).unwrap_err().is_unreachable());
    assert!(block_on(target.stop_old(unit, Duration::from_secs(1))).unwrap_err().is_unreachable());
    assert!(block_on(target.current(unit)).unwrap_err().is_unreachable());
    let n0 = units.iter().find(|u| u.node == "n0").expect("an n0 unit");
    assert!(block_on(target.probe(n0)).unwrap().running, "other nodes still answer");
    target.set_unreachable("n1", false);
    assert!(block_on(target.probe(unit)).unwrap().running);
}

/// Plans the image change with `node` reachable for the observation, then marks it again.
fn rollout_units_with_reachable(target: &MemoryTarget<()>, node: &str) -> (Plan<()>, Vec<Unit<()>>) {
    target.set_unreachable(node, false);
    let out = rollout_units(target, fleet(2, "a:2"));
    target.set_unreachable(node, true);
    out
}

#[test]
fn the_machine_rolls_a_new_image_through_the_target() {
    let target = deployed(4, "a:1");
    let (executor, units) = rollout_units(&target, fleet(4, "a:2"));
    assert!(executor.is_empty());
    assert_eq!(units.len(), 4);
    let mut rollout = Rollout::new(specs(&target, &units), policy(2, 1), 0);
    assert_eq!(rollout.instances()[0].spec.to_version.as_deref(), Some("2.0.0"));
    target.reset_figures();
    assert_eq!(drive(&target, &units, &mut rollout), Status::Succeeded);
    for unit in &units {
        let view = target.unit(&unit.desired.key.name).unwrap();
        assert_eq!(view.serving, Some(InstanceView { image: "a:2".into(), running: true }));
        assert_eq!((view.kept, view.prepared, view.strays), (None, None, 0), "settled");
    }
    assert!(target.agents_that_ran_twice().is_empty());
    assert!(target.max_agents_down() <= 2, "{} agents down", target.max_agents_down());
    assert_eq!(target.max_agents_down(), 2, "two at a time after the canary");
    // The stops used the policy's grace, and the target converged: nothing left to plan.
    assert!(target.log().iter().any(|e| e.op == Op::StopOld { grace_ms: 20_000 }));
    let observed = block_on(target.observe()).unwrap();
    assert!(plan::plan("d", "memory", fleet(4, "a:2"), &observed, PlanOptions::default()).is_empty());
}

#[test]
fn a_broken_image_fails_the_canary_at_once_and_is_rolled_back() {
    let target = deployed(4, "a:1");
    target.set_broken("a:2", true);
    let (_, units) = rollout_units(&target, fleet(4, "a:2"));
    let mut rollout = Rollout::new(specs(&target, &units), policy(2, 1), 0);
    target.reset_figures();
    assert_eq!(drive(&target, &units, &mut rollout), Status::RolledBack);
    let started: Vec<String> =
        target.log().into_iter().filter(|e| matches!(e.op, Op::StartNew { .. })).map(|e| e.name).collect();
    assert_eq!(started, [units[0].desired.key.name.clone()], "only the canary started the new image");
    let probes_of_canary = target.log().iter().filter(|e| matches!(e.op, Op::Probe { .. })).count();
    assert_eq!(rollout.instances()[0].state, InstanceState::RolledBack);
    assert!(rollout.instances()[0].logs[0].contains("marked broken"));
    assert!(probes_of_canary <= 4, "the exit failed the gate at its first probe: {probes_of_canary} probes");
    for unit in &units {
        assert_eq!(serving(&target, &unit.desired.key.name), InstanceView { image: "a:1".into(), running: true });
    }
    assert!(target.agents_that_ran_twice().is_empty());
    assert_eq!(target.max_agents_down(), 1);
    // Back exactly where it was: planning the old fleet finds nothing to do.
    let observed = block_on(target.observe()).unwrap();
    assert!(plan::plan("d", "memory", fleet(4, "a:1"), &observed, PlanOptions::default()).is_empty());
}

#[test]
fn a_unit_serving_several_agents_counts_them_all() {
    let target = deployed(3, "a:1");
    let (_, mut units) = rollout_units(&target, fleet(3, "a:2"));
    // agent0 stands for a node running three agent services.
    units[0].agents = vec!["s0".into(), "s1".into(), "s2".into()];
    let mut rollout = Rollout::new(specs(&target, &units), policy(2, 0), 0);
    assert_eq!(rollout.batches(), [vec![0], vec![1, 2]]);
    target.reset_figures();
    assert_eq!(drive(&target, &units, &mut rollout), Status::Succeeded);
    assert_eq!(target.max_agents_down(), 3, "the heavy unit went alone");
    assert_eq!(target.max_running_instances().get("s1"), Some(&1));
    assert_eq!(target.unit("agent0").unwrap().agents, ["s0", "s1", "s2"]);
}

#[test]
fn the_figures_catch_two_instances_of_one_agent() {
    let target = deployed(1, "a:1");
    let (_, units) = rollout_units(&target, fleet(1, "a:2"));
    // A driver that starts the new instance without stopping the old one.
    block_on(target.start_new(&units[0])).unwrap();
    assert_eq!(target.agents_that_ran_twice(), ["agent0"]);
    assert_eq!(target.unit("agent0").unwrap().strays, 1);
    block_on(target.settle(&units[0], true)).unwrap();
    assert_eq!(target.unit("agent0").unwrap().strays, 0);
}

#[test]
fn stop_old_keeps_the_previous_instance_and_prepares_the_next() {
    let target = deployed(1, "a:1");
    let (_, units) = rollout_units(&target, fleet(1, "a:2"));
    let unit = &units[0];
    block_on(target.stop_old(unit, Duration::from_secs(20))).unwrap();
    let view = target.unit("agent0").unwrap();
    assert_eq!(view.serving, None);
    assert_eq!(view.kept, Some(InstanceView { image: "a:1".into(), running: false }));
    assert_eq!(view.prepared, Some(InstanceView { image: "a:2".into(), running: false }));
    assert_eq!(target.max_agents_down(), 1);
    // Stopping again is harmless; the current instance is still the kept one.
    block_on(target.stop_old(unit, Duration::from_secs(20))).unwrap();
    let current = block_on(target.current(unit)).unwrap().unwrap();
    assert_eq!((current.image.as_str(), current.running), ("a:1", false));
    block_on(target.start_new(unit)).unwrap();
    block_on(target.stop_new(unit, Duration::from_secs(20))).unwrap();
    block_on(target.start_previous(unit, "a:1")).unwrap();
    let view = target.unit("agent0").unwrap();
    assert_eq!(view.serving, Some(InstanceView { image: "a:1".into(), running: true }));
    assert_eq!(view.kept, None, "the previous instance itself came back");
    assert!(target.agents_that_ran_twice().is_empty());
}
