//! Property tests of the rollout machine against a simulated target driven by a random
//! script: each byte of the script decides one thing (which answer comes next, whether a
//! stop or start fails, what a probe reports, how much time passes, whether the operator
//! presses Ctrl-C or the process is killed and resumed from its journal). When the script
//! runs out every choice is the benign one, so a run always ends.
//!
//! Units carry their agents: a case gives each unit a random weight (1 to 4 agents; a
//! one-agent unit sometimes lists no agents, as old journals do), and `max_parallel`
//! counts agents.
//!
//! Checked after every step (in `rollout_sim`): at most `max_parallel` agents in flight (or
//! one unit, when that unit alone serves more), counted by the machine and independently by
//! the simulated target (agents whose container is down);
//! every state change is a legal transition (the test's own table); a batch starts only once
//! the earlier ones settled, after the canary only with approval, and never once the failure
//! action stopped the rollout or the progress deadline passed; a cancelled instance never
//! moves forward; the failure action applies exactly when failures ÷ instances exceeds
//! `max_failure_ratio`; a gate passes only after `min_healthy_time` of good probes and
//! within `healthy_deadline`; a definite signal (exit, restart, the engine's check
//! unhealthy) fails a gate at once; at most one stop/start and one probe outstanding per instance;
//! the machine never starts a container that runs; instances at rest (`Pending`, `Done`,
//! `RolledBack`) run the image their state says.
//!
//! Checked at the end: every instance is done on the new image, rolled back healthy on the
//! old one, failed loudly, or untouched (only if the rollout did not succeed); failed and
//! cancelled instances never end done; the status matches the instances; the run ended
//! within `MAX_EVENTS` events; the same script gives the same journal.

mod rollout_sim;

use std::collections::BTreeMap;

use orchestrator::config::model::{FailureAction, UpdateSettings};
use orchestrator::rollout::{Command, Halt, InstanceSpec, InstanceState, Policy, Status};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use rollout_sim::{MAX_EVENTS, NEW, OLD, Sim};

#[derive(Debug, Clone)]
struct Case {
    nodes: usize,
    agents: usize,
    /// Agents per unit, cycled over the units; all 1 in about half the cases.
    weights: Vec<usize>,
    settings: UpdateSettings,
    versions: bool,
    script: Vec<u8>,
}

fn case() -> impl Strategy<Value = Case> {
    let parallel = prop_oneof![(1u32..5).prop_map(|n| n.to_string()), (1u32..101).prop_map(|p| format!("{p}%"))];
    let action = prop_oneof![Just(FailureAction::Rollback), Just(FailureAction::Pause), Just(FailureAction::Continue)];
    (
        (1usize..5, 1usize..5, parallel, 0u32..4, any::<bool>()),
        (prop_oneof![Just(0u64), Just(1_000), Just(3_000)], prop_oneof![Just(5_000u64), Just(20_000)]),
        (prop_oneof![Just(30_000u64), Just(120_000), Just(1_000_000)], action),
        (prop_oneof![Just(0.0f64), Just(0.3), Just(0.5), Just(1.0)], any::<bool>()),
        proptest::collection::vec(any::<u8>(), 0..600),
        prop_oneof![Just(vec![1usize]), proptest::collection::vec(0usize..5, 1..6)],
    )
        .prop_map(
            |(
                (nodes, agents, max_parallel, canary, approve),
                (min_healthy, healthy),
                (progress, action),
                (ratio, versions),
                script,
                weights,
            )| Case {
                nodes,
                agents,
                weights,
                settings: UpdateSettings {
                    max_parallel,
                    canary,
                    approve,
                    min_healthy_time: min_healthy,
                    healthy_deadline: healthy,
                    progress_deadline: progress,
                    stop_grace_period: 10_000,
                    probe_interval: 50,
                    probe_timeout: 2_000,
                    failure_action: action,
                    max_failure_ratio: ratio,
                    keep_images: 3,
                },
                versions,
                script,
            },
        )
}

fn specs(case: &Case) -> Vec<InstanceSpec> {
    let version = |v: &str| case.versions.then(|| v.to_string());
    let mut specs = Vec::new();
    for node in 0..case.nodes {
        for agent in 0..case.agents {
            // Weight 0 stands for a one-agent unit that lists no agents.
            let weight = case.weights[specs.len() % case.weights.len()];
            specs.push(InstanceSpec {
                node: format!("node{node}"),
                agent: format!("agent{agent}"),
                agents: (0..weight).map(|i| format!("agent{agent}-{i}")).collect(),
                from_image: OLD.to_string(),
                to_image: NEW.to_string(),
                from_version: version("v1"),
                to_version: version("v2"),
            });
        }
    }
    specs
}

fn simulate(case: &Case) -> (Sim, Status) {
    let specs = specs(case);
    let total_agents = specs.iter().map(InstanceSpec::weight).sum();
    let policy = Policy::from_settings(&case.settings, total_agents);
    let mut sim = Sim::new(specs, policy, case.script.clone());
    let status = sim.run();
    (sim, status)
}

/// Runs many generated cases and counts what happened in them.
fn outcomes(cases: usize) -> (BTreeMap<String, usize>, usize) {
    let mut runner = TestRunner::deterministic();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut max_events = 0;
    for _ in 0..cases {
        let case = case().new_tree(&mut runner).expect("a case").current();
        let (sim, status) = simulate(&case);
        max_events = max_events.max(sim.events);
        let mut note = |what: String| *seen.entry(what).or_default() += 1;
        note(format!("status {status:?}"));
        sim.states().iter().for_each(|s| note(format!("instance {s:?}")));
        if sim.signal_failures > 0 {
            note("failed on a signal".to_string());
        }
        if sim.interruptions > 0 {
            note("interrupted".to_string());
        }
        if sim.rollout.deadline_exceeded() {
            note("deadline exceeded".to_string());
        }
        if let Some(halt) = sim.rollout.halt() {
            note(format!("halt {halt:?}"));
        }
        if sim.rollout.instances().iter().any(|i| i.state == InstanceState::RolledBack && !i.failed) {
            note("done instance rolled back".to_string());
        }
        if sim.max_agents_down > sim.rollout.policy().max_parallel {
            note("a unit heavier than max_parallel went alone".to_string());
        }
        if sim.max_units_down > 1 && sim.max_agents_down > sim.max_units_down {
            note("several multi-agent units down at once".to_string());
        }
    }
    (seen, max_events)
}

/// The generator is not vacuous: every outcome the properties talk about happens.
#[test]
fn the_generated_runs_reach_every_outcome() {
    let (seen, max_events) = outcomes(2_048);
    let wanted = [
        "status Succeeded",
        "status RolledBack",
        "status Failed",
        "status Paused",
        "instance Pending",
        "instance Done",
        "instance RolledBack",
        "instance RevertFailed",
        "interrupted",
        "failed on a signal",
        "deadline exceeded",
        "halt Rollback",
        "halt Pause",
        "done instance rolled back",
        "a unit heavier than max_parallel went alone",
        "several multi-agent units down at once",
    ];
    for what in wanted {
        assert!(seen.get(what).copied().unwrap_or(0) > 0, "no generated run had {what}: {seen:#?}");
    }
    assert!(max_events < MAX_EVENTS);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn rollouts_keep_availability_and_end_on_a_known_revision(case in case()) {
        let (sim, status) = simulate(&case);
        let rollout = &sim.rollout;
        prop_assert_eq!(rollout.status(), status);
        let states = sim.states();
        for (index, instance) in rollout.instances().iter().enumerate() {
            let container = &sim.containers[index];
            match instance.state {
                InstanceState::Done => {
                    prop_assert!(!instance.failed && !instance.revert, "instance {} done after failing", index);
                    prop_assert!(container.running && container.image == NEW && container.last_probe_good);
                }
                InstanceState::RolledBack => {
                    prop_assert!(container.running && container.image == OLD && container.last_probe_good);
                }
                InstanceState::RevertFailed => prop_assert!(instance.last_error.is_some()),
                InstanceState::Pending => {
                    prop_assert!(status != Status::Succeeded);
                    prop_assert!(!instance.failed && !instance.revert);
                    prop_assert!(container.running && container.image == OLD);
                }
                other => prop_assert!(false, "instance {} ended {:?}", index, other),
            }
            if instance.failed {
                prop_assert!(matches!(instance.state, InstanceState::RolledBack | InstanceState::RevertFailed));
            }
        }
        let all_done = states.iter().all(|s| *s == InstanceState::Done);
        prop_assert_eq!(status == Status::Succeeded, all_done);
        let revert_failed = states.contains(&InstanceState::RevertFailed);
        if status.is_final() {
            prop_assert_eq!(status == Status::Failed, revert_failed || rollout.deadline_exceeded());
        }
        if rollout.halt() == Some(Halt::Rollback) {
            prop_assert!(!states.contains(&InstanceState::Done), "done instances left after a rollback");
        }
        match status {
            Status::Failed => {}
            Status::RolledBack => {
                prop_assert!(!revert_failed && !rollout.deadline_exceeded());
                prop_assert!(states.contains(&InstanceState::RolledBack));
            }
            Status::Paused => {
                prop_assert_eq!(rollout.policy().failure_action, FailureAction::Pause);
                prop_assert!(states.contains(&InstanceState::Pending));
            }
            Status::Succeeded => prop_assert_eq!(rollout.failures(), 0),
            other => prop_assert!(false, "ended {:?}", other),
        }
        for queue in &sim.queues {
            prop_assert!(queue.iter().all(|c| matches!(c, Command::Probe { .. })), "work left: {:?}", queue);
        }
    }

    #[test]
    fn rollouts_are_deterministic(case in case()) {
        let (first, _) = simulate(&case);
        let (second, _) = simulate(&case);
        prop_assert_eq!(first.rollout.to_journal(), second.rollout.to_journal());
        prop_assert_eq!(first.events, second.events);
    }
}
