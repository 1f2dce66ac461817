//! What the plan decides for the executor (grace, deadline, discarding a failed create) and
//! how `infra up` splits it between the executor and the rollout engine.

use std::collections::BTreeSet;

use super::*;
use crate::resource::{FieldValue, Fields, ObservedState};

/// A desired object named `name` with one field `image = image`.
fn resource(name: &str, component: Component, image: &str, stop_grace_ms: Option<u64>) -> Resource<()> {
    let mut fields = Fields::new();
    fields.insert("image".into(), FieldValue::plain(image));
    fields.insert("volume".into(), FieldValue::plain("data"));
    let run_state = match component {
        Component::Foundation | Component::Storage => None,
        Component::Migrate => Some(RunState::Completed),
        _ => Some(RunState::Running),
    };
    Resource {
        key: ResourceKey { node: "hub".into(), kind: "container".into(), name: name.into() },
        stateful: component == Component::Storage,
        component,
        fields,
        replace_on: BTreeSet::from(["volume".to_string()]),
        run_state,
        stop_grace_ms,
        payload: (),
    }
}

fn agent(name: &str, image: &str) -> Resource<()> {
    resource(name, Component::Agent(name.to_string()), image, Some(10_000))
}

fn observed_after(desired: Vec<Resource<()>>) -> Vec<ObservedResource> {
    crate::memory::apply(&plan("d", "mem", desired, &[], PlanOptions::default()), &[])
}

fn step<'a>(plan: &'a Plan<()>, name: &str) -> &'a Step<()> {
    plan.steps.iter().find(|s| s.key.name == name).unwrap_or_else(|| panic!("no step for {name}"))
}

#[test]
fn defaults_are_the_ones_targets_used_to_choose() {
    let options = PlanOptions::default();
    assert_eq!(options.delete_grace_ms, 30_000);
    assert_eq!(options.wait_deadline_ms, 180_000);
    assert!(options.prune && !options.delete_data);
}

#[test]
fn steps_carry_grace_deadline_and_discard() {
    let observed = observed_after(vec![agent("old", "a:1"), agent("gone", "a:1")]);
    let desired = vec![
        resource("net", Component::Foundation, "-", None),
        resource("hub", Component::Datahub, "pg:16", Some(45_000)),
        agent("new", "a:1"),
        agent("old", "a:2"),
    ];
    let options = PlanOptions { delete_grace_ms: 7_000, wait_deadline_ms: 42_000, ..PlanOptions::default() };
    let plan = plan("d", "mem", desired, &observed, options);
    let check = |name: &str, action: Action, grace_ms: u64, discard: bool| {
        let step = step(&plan, name);
        assert_eq!(step.action, action, "{name}");
        assert_eq!(step.grace_ms, grace_ms, "{name}: grace");
        assert_eq!(step.deadline_ms, 42_000, "{name}: deadline");
        assert_eq!(step.discard_on_failure, discard, "{name}: discard on failure");
    };
    check("net", Action::Create, 7_000, true);
    check("hub", Action::Create, 45_000, true);
    check("new", Action::Create, 10_000, true);
    check("old", Action::Update, 10_000, false);
    check("gone", Action::Delete, 7_000, false);
}

#[test]
fn destroy_plans_stop_with_the_delete_grace() {
    let observed = observed_after(vec![agent("a", "a:1"), resource("data", Component::Storage, "-", None)]);
    let plan: Plan<()> = plan_destroy("d", "mem", &observed, false);
    assert_eq!(plan.steps.len(), 1, "the volume is kept");
    assert_eq!((plan.steps[0].grace_ms, plan.steps[0].discard_on_failure), (30_000, false));
    let options = PlanOptions { delete_data: true, delete_grace_ms: 3_000, ..PlanOptions::default() };
    let plan: Plan<()> = plan_destroy_with("d", "mem", &observed, options);
    assert_eq!(plan.steps.len(), 2);
    assert!(plan.steps.iter().all(|s| s.grace_ms == 3_000 && s.action == Action::Delete));
}

#[test]
fn split_rollout_takes_only_changed_running_agents() {
    let before = vec![
        resource("hub", Component::Datahub, "pg:16", Some(30_000)),
        resource("migrate", Component::Migrate, "a:1", Some(10_000)),
        agent("changed", "a:1"),
        agent("replaced", "a:1"),
        agent("stopped", "a:1"),
        agent("stopped-changed", "a:1"),
        agent("same", "a:1"),
        agent("removed", "a:1"),
    ];
    let mut observed = observed_after(before);
    for found in &mut observed {
        if found.key.name.starts_with("stopped") {
            found.state = ObservedState::Stopped(Some(137));
        }
    }
    let mut replaced = agent("replaced", "a:2");
    replaced.fields.insert("volume".into(), FieldValue::plain("other"));
    let desired = vec![
        resource("hub", Component::Datahub, "pg:17", Some(30_000)),
        resource("migrate", Component::Migrate, "a:2", Some(10_000)),
        agent("changed", "a:2"),
        replaced,
        agent("stopped", "a:1"),
        agent("stopped-changed", "a:2"),
        agent("same", "a:1"),
        agent("created", "a:2"),
    ];
    let plan = plan("d", "mem", desired, &observed, PlanOptions::default());
    let all: Vec<String> = plan.steps.iter().map(|s| s.key.name.clone()).collect();
    let unchanged = plan.unchanged;
    let (executor, rollout) = plan.split_rollout();
    let names = |steps: &[Step<()>]| steps.iter().map(|s| s.key.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&rollout), ["changed", "replaced", "stopped-changed"]);
    assert_eq!(names(&executor.steps), ["hub", "migrate", "created", "stopped", "removed"]);
    assert_eq!(step(&executor, "stopped").action, Action::Update, "a drift-only restart stays");
    assert!(step(&executor, "stopped").changes.is_empty());
    assert_eq!(executor.unchanged, unchanged);
    assert_eq!(executor.resources.len(), 8);
    // Nothing lost, nothing doubled, plan order kept within each part.
    let mut both: Vec<String> = names(&executor.steps).into_iter().chain(names(&rollout)).collect();
    both.sort();
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(both, sorted);
    assert!(executor.steps.windows(2).all(|w| (w[0].wave, &w[0].key) <= (w[1].wave, &w[1].key)));

    let unit = rollout[1].rollout_unit().expect("a rollout step has a unit");
    assert_eq!((unit.node.as_str(), unit.agents.as_slice()), ("hub", ["replaced".to_string()].as_slice()));
    assert_eq!(unit.desired.fields["image"].text.as_ref(), "a:2");
    assert!(step(&executor, "created").rollout_unit().is_none());
}

#[test]
fn a_first_up_has_nothing_for_the_rollout() {
    let plan = plan("d", "mem", vec![agent("a", "a:1"), agent("b", "a:1")], &[], PlanOptions::default());
    let (executor, rollout) = plan.split_rollout();
    assert!(rollout.is_empty());
    assert_eq!(executor.steps.len(), 2);
}

#[test]
fn a_field_the_target_refuses_to_change_forces_a_replace_named_by_it() {
    let mut observed = observed_after(vec![resource("config", Component::Foundation, "a:1", None)]);
    let changed = || vec![resource("config", Component::Foundation, "a:2", None)];
    // As recorded, `image` changes in place.
    let update = plan("d", "mem", changed(), &observed, PlanOptions::default());
    assert_eq!(step(&update, "config").action, Action::Update);
    // The target says `image` cannot change in place: a replace forced by it.
    observed[0].immutable = vec!["image".to_string()];
    let replace = plan("d", "mem", changed(), &observed, PlanOptions::default());
    let config = step(&replace, "config");
    assert_eq!(config.action, Action::Replace);
    assert_eq!(config.forced_by, ["image"]);
    assert!(config.changes.iter().all(|c| c.forces_replacement));
    // A field rivetctl does not record (`data`, made immutable by hand): the server's name.
    observed[0].immutable = vec!["data".to_string()];
    let replace = plan("d", "mem", changed(), &observed, PlanOptions::default());
    assert_eq!(step(&replace, "config").action, Action::Replace);
    assert_eq!(step(&replace, "config").forced_by, ["data"]);
    // Nothing changes: the refusal alone changes nothing.
    let unchanged = plan(
        "d",
        "mem",
        vec![resource("config", Component::Foundation, "a:1", None)],
        &observed,
        PlanOptions::default(),
    );
    assert!(unchanged.steps.is_empty());
}
