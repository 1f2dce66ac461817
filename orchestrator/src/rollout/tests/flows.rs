//! Runs that succeed: batches, the health gate, canary and approval, the journal.

use super::*;
use crate::config::model::UpdateSettings;
use crate::rollout::{JOURNAL_VERSION, JournalError, NodeState};

fn settings(max_parallel: &str) -> UpdateSettings {
    UpdateSettings {
        max_parallel: max_parallel.to_string(),
        canary: 0,
        approve: false,
        min_healthy_time: 10_000,
        healthy_deadline: 60_000,
        progress_deadline: 3_600_000,
        stop_grace_period: 30_000,
        probe_interval: 50,
        probe_timeout: 2_000,
        failure_action: FailureAction::Rollback,
        max_failure_ratio: 0.0,
        keep_images: 3,
    }
}

#[test]
fn happy_path_updates_every_instance_in_batches() {
    let check = |max_parallel: &str, batches: Vec<Vec<usize>>| {
        let policy = Policy::from_settings(&settings(max_parallel), 6);
        let mut world = World::new(specs(3, 2), policy.clone());
        assert_eq!(world.rollout.batches(), batches.as_slice(), "max_parallel {max_parallel}");
        assert_eq!(world.start().run(), Status::Succeeded);
        assert!(world.states().iter().all(|s| *s == InstanceState::Done));
        assert_eq!(world.max_in_flight, policy.max_parallel, "max_parallel {max_parallel}");
        world.assert_target_agrees();
        assert!(world.rollout.nodes().iter().all(|n| n.state == NodeState::Done));
        assert_eq!(world.rollout.current_batch(), batches.len());
        assert!(world.rollout.instances().iter().all(|i| i.last_error.is_none()));
    };
    check("1", (0..6).map(|i| vec![i]).collect());
    check("2", vec![vec![0, 1], vec![2, 3], vec![4, 5]]);
    check("50%", vec![vec![0, 1, 2], vec![3, 4, 5]]);
}

#[test]
fn each_instance_is_stopped_with_grace_then_started_then_probed() {
    let mut rollout = Rollout::new(specs(1, 2), policy(1), 0);
    assert_eq!(rollout.start(0), vec![Command::Stop { instance: 0, grace_ms: 30_000 }]);
    assert_eq!(
        rollout.step(Event::Stopped { instance: 0 }),
        vec![Command::Start { instance: 0, image: NEW.to_string() }]
    );
    assert_eq!(rollout.step(Event::Started { instance: 0 }), vec![Command::Probe { instance: 0 }]);
    let good = ProbeReport::healthy(Some("v2"));
    let probed = |now_ms| Event::Probed { instance: 0, now_ms, report: good.clone() };
    assert_eq!(rollout.step(probed(1_000)), vec![Command::Probe { instance: 0 }]);
    assert_eq!(rollout.step(probed(6_000)), vec![Command::Probe { instance: 0 }]);
    // Held for 10 s: done, and the next batch starts.
    assert_eq!(rollout.step(probed(11_000)), vec![Command::Stop { instance: 1, grace_ms: 30_000 }]);
    assert_eq!(rollout.instances()[0].state, InstanceState::Done);
    assert_eq!(rollout.instances()[0].gate.started_at_ms, Some(1_000));
    assert_eq!(rollout.instances()[0].gate.healthy_since_ms, Some(1_000));
}

#[test]
fn a_bad_probe_resets_the_healthy_time() {
    let mut rollout = Rollout::new(specs(1, 1), policy(1), 0);
    rollout.start(0);
    rollout.step(Event::Stopped { instance: 0 });
    rollout.step(Event::Started { instance: 0 });
    let probe = |now_ms, report| Event::Probed { instance: 0, now_ms, report };
    rollout.step(probe(0, ProbeReport::healthy(Some("v2"))));
    let degraded = ProbeReport { status: Some("degraded".to_string()), ..ProbeReport::healthy(Some("v2")) };
    rollout.step(probe(5_000, degraded));
    assert_eq!(rollout.instances()[0].gate.healthy_since_ms, None);
    assert_eq!(rollout.instances()[0].gate.last_probe_problem.as_deref(), Some("GET /health reports \"degraded\""));
    rollout.step(probe(10_000, ProbeReport::healthy(Some("v2"))));
    rollout.step(probe(15_000, ProbeReport::healthy(Some("v2"))));
    assert_eq!(rollout.instances()[0].state, InstanceState::Gating, "only 5 s healthy");
    let out = rollout.step(probe(20_000, ProbeReport::healthy(Some("v2"))));
    assert_eq!(out, vec![Command::Finish { status: Status::Succeeded }]);
}

#[test]
fn the_gate_checks_the_version_only_when_one_is_expected() {
    let report = ProbeReport::healthy(Some("v1"));
    assert_eq!(report.problem(None), None);
    assert_eq!(report.problem(Some("v2")).as_deref(), Some("GET /health reports version \"v1\", expected \"v2\""));
    assert!(ProbeReport::healthy(None).problem(Some("v2")).is_some());
    assert!(ProbeReport { live: false, ..ProbeReport::healthy(None) }.problem(None).is_some());
    assert!(ProbeReport { running: false, ..ProbeReport::healthy(None) }.problem(None).is_some());

    // The new image reports the old version: the gate never passes and the instance reverts.
    let mut specs = specs(1, 1);
    specs[0].to_image = "registry/agent:v1-rebuilt".to_string();
    let mut world = World::new(specs, policy(1));
    assert_eq!(world.start().run(), Status::RolledBack);
    let error = world.rollout.instances()[0].last_error.clone().unwrap();
    assert!(error.contains("expected \"v2\""), "{error}");
}

#[test]
fn ticks_probe_gates_without_a_probe_in_flight_and_fire_deadlines() {
    let mut rollout = Rollout::new(specs(1, 1), policy(1), 0);
    rollout.start(0);
    rollout.step(Event::Stopped { instance: 0 });
    rollout.step(Event::Started { instance: 0 });
    // A probe is in flight: a tick asks for no other, but starts the gate's clock.
    assert_eq!(rollout.step(Event::Tick { now_ms: 1_000 }), vec![]);
    assert_eq!(rollout.instances()[0].gate.started_at_ms, Some(1_000));
    // The probe never comes back; the deadline fires on a tick.
    assert_eq!(rollout.step(Event::Tick { now_ms: 61_000 }), vec![]);
    assert_eq!(rollout.step(Event::Tick { now_ms: 61_001 }), vec![Command::Stop { instance: 0, grace_ms: 30_000 }]);
    assert_eq!(rollout.instances()[0].state, InstanceState::Reverting);
    assert_eq!(
        rollout.instances()[0].last_error.as_deref(),
        Some("health gate not passed within 60000 ms (no probe answered)")
    );
    // The late answer belongs to the old gate and is ignored.
    let late = Event::Probed { instance: 0, now_ms: 62_000, report: ProbeReport::healthy(Some("v2")) };
    assert_eq!(rollout.step(late), vec![]);
    assert_eq!(
        rollout.step(Event::Stopped { instance: 0 }),
        vec![Command::Start { instance: 0, image: OLD.to_string() }]
    );
    assert_eq!(rollout.step(Event::Started { instance: 0 }), vec![Command::Probe { instance: 0 }]);
}

#[test]
fn canary_with_approval_waits_for_the_operator() {
    let mut world = World::new(specs(3, 2), Policy { canary: 1, approve: true, ..policy(2) });
    assert_eq!(world.rollout.batches(), &[vec![0], vec![1, 2], vec![3, 4], vec![5]]);
    assert_eq!(world.start().run(), Status::AwaitingApproval);
    assert!(world.awaiting_approval);
    assert_eq!(world.states()[0], InstanceState::Done);
    assert!(world.states()[1..].iter().all(|s| *s == InstanceState::Pending));
    // Ticks while waiting change nothing; Ctrl-C keeps the rollout awaiting approval.
    assert_eq!(world.step(Event::Tick { now_ms: 10_000_000 }), vec![]);
    assert_eq!(world.rollout.step(Event::Abort), vec![Command::Finish { status: Status::AwaitingApproval }]);
    assert_eq!(world.rollout.resume(&[], 20_000_000), vec![Command::AwaitApproval]);
    world.step(Event::Approved);
    assert_eq!(world.run(), Status::Succeeded);
    world.assert_target_agrees();
}

#[test]
fn canary_without_approval_goes_straight_on() {
    let mut world = World::new(specs(2, 2), Policy { canary: 1, ..policy(3) });
    assert_eq!(world.rollout.batches(), &[vec![0], vec![1, 2, 3]]);
    assert_eq!(world.start().run(), Status::Succeeded);
    assert_eq!(world.max_in_flight, 3);
}

#[test]
fn an_empty_rollout_succeeds_at_once() {
    let mut rollout = Rollout::new(Vec::new(), policy(1), 0);
    assert_eq!(rollout.start(0), vec![Command::Finish { status: Status::Succeeded }]);
    assert_eq!(rollout.start(0), vec![]);
}

#[test]
fn node_states_follow_their_agents() {
    use InstanceState as I;
    assert_eq!(NodeState::of(&[I::Pending, I::Pending]), NodeState::Shipped);
    assert_eq!(NodeState::of(&[I::Draining, I::Pending]), NodeState::Draining);
    assert_eq!(NodeState::of(&[I::Gating, I::Done]), NodeState::Started);
    assert_eq!(NodeState::of(&[I::Done, I::Pending]), NodeState::Healthy);
    assert_eq!(NodeState::of(&[I::Done, I::Done]), NodeState::Done);
    assert_eq!(NodeState::of(&[I::RevertGating, I::Done]), NodeState::RollingBack);
    assert_eq!(NodeState::of(&[I::RolledBack, I::Done]), NodeState::RolledBack);
    assert_eq!(NodeState::of(&[I::RevertFailed, I::RolledBack]), NodeState::Failed);

    let mut rollout = Rollout::new(specs(2, 2), policy(1), 0);
    rollout.start(0);
    let nodes = rollout.nodes();
    assert_eq!(
        nodes.iter().map(|n| (n.node.as_str(), n.state)).collect::<Vec<_>>(),
        [("node0", NodeState::Draining), ("node1", NodeState::Shipped)]
    );
    assert_eq!(nodes[1].instances, vec![2, 3]);
}

#[test]
fn the_journal_round_trips_and_is_checked() {
    let mut world = World::new(specs(2, 2), Policy { canary: 1, approve: true, ..policy(2) });
    world.start().run();
    let journal = world.rollout.to_journal();
    assert!(journal.contains("\"journal_version\": 1"), "{journal}");
    assert!(journal.contains("\"failure_action\": \"rollback\""), "{journal}");
    assert!(journal.contains("\"status\": \"awaiting_approval\""), "{journal}");
    assert_eq!(Rollout::from_journal(&journal).unwrap(), world.rollout);

    let newer = journal.replace("\"journal_version\": 1", "\"journal_version\": 2");
    assert!(matches!(
        Rollout::from_journal(&newer),
        Err(JournalError::Version { found: 2, expected: JOURNAL_VERSION })
    ));
    assert!(matches!(Rollout::from_journal("{"), Err(JournalError::Malformed(_))));
    let mut value: serde_json::Value = serde_json::from_str(&journal).unwrap();
    value["batches"][0] = serde_json::json!([0, 9]);
    let broken = Rollout::from_journal(&value.to_string()).unwrap_err();
    assert_eq!(
        broken.to_string(),
        "the rollout journal is inconsistent: batch entry 9 is not a distinct instance of 4"
    );
}
