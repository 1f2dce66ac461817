//! Runs with failures: the failure actions, the failure ratio, revert failures, the progress
//! deadline.

use super::*;
use crate::rollout::{Halt, NodeState};

fn unhealthy(instance: usize, image: &str) -> (usize, String) {
    (instance, image.to_string())
}

/// The instances the machine sent any command to.
fn touched(world: &World) -> Vec<usize> {
    let mut touched: Vec<usize> = world
        .log
        .iter()
        .filter_map(|c| match c {
            Command::Stop { instance, .. } | Command::Start { instance, .. } | Command::Probe { instance } => {
                Some(*instance)
            }
            _ => None,
        })
        .collect();
    touched.sort();
    touched.dedup();
    touched
}

#[test]
fn a_failing_canary_with_rollback_leaves_the_others_untouched() {
    let mut world = World::new(specs(3, 2), Policy { canary: 1, approve: true, ..policy(2) });
    world.unhealthy.push(unhealthy(0, NEW));
    assert_eq!(world.start().run(), Status::RolledBack);
    use InstanceState::*;
    assert_eq!(world.states(), [RolledBack, Pending, Pending, Pending, Pending, Pending]);
    assert_eq!(touched(&world), [0]);
    world.assert_target_agrees();
    assert_eq!(world.rollout.failures(), 1);
    assert_eq!(world.rollout.halt(), Some(Halt::Rollback));
    let nodes: Vec<NodeState> = world.rollout.nodes().iter().map(|n| n.state).collect();
    assert_eq!(nodes, [NodeState::RolledBack, NodeState::Shipped, NodeState::Shipped]);
    let error = world.rollout.instances()[0].last_error.clone().unwrap();
    assert!(
        error.starts_with("health gate not passed within 60000 ms (last probe: GET /health reports \"unhealthy\")")
    );
}

#[test]
fn rollback_reverts_done_instances_within_max_parallel() {
    let mut world = World::new(specs(3, 2), policy(2));
    world.unhealthy.push(unhealthy(3, NEW));
    assert_eq!(world.start().run(), Status::RolledBack);
    use InstanceState::*;
    assert_eq!(world.states(), [RolledBack, RolledBack, RolledBack, RolledBack, Pending, Pending]);
    world.assert_target_agrees();
    assert_eq!(world.max_in_flight, 2);
    let instances = world.rollout.instances();
    assert!(instances[3].failed && !instances[0].failed && !instances[2].failed);
    assert_eq!(instances[0].last_error.as_deref(), Some("rolled back: 1 of 6 instances failed"));
}

#[test]
fn pause_lets_the_batch_settle_then_resume_goes_on() {
    let mut world = World::new(specs(3, 2), Policy { failure_action: FailureAction::Pause, ..policy(2) });
    world.unhealthy.push(unhealthy(1, NEW));
    assert_eq!(world.start().run(), Status::Paused);
    use InstanceState::*;
    assert_eq!(world.states(), [Done, RolledBack, Pending, Pending, Pending, Pending]);
    world.assert_target_agrees();
    assert_eq!(world.rollout.step(Event::Abort), vec![], "nothing to interrupt");

    let commands = world.rollout.resume(&[], world.now);
    assert_eq!(
        commands,
        [Command::Stop { instance: 2, grace_ms: 30_000 }, Command::Stop { instance: 3, grace_ms: 30_000 }]
    );
    world.queue.extend(commands);
    assert_eq!(world.run(), Status::RolledBack, "one instance was rolled back");
    assert_eq!(world.states(), [Done, RolledBack, Done, Done, Done, Done]);
    world.assert_target_agrees();
}

#[test]
fn pause_pauses_again_on_the_next_failure() {
    let mut world = World::new(specs(2, 2), Policy { failure_action: FailureAction::Pause, ..policy(1) });
    world.unhealthy.extend([unhealthy(0, NEW), unhealthy(2, NEW)]);
    assert_eq!(world.start().run(), Status::Paused);
    let commands = world.rollout.resume(&[], world.now);
    world.queue.extend(commands);
    assert_eq!(world.run(), Status::Paused);
    use InstanceState::*;
    assert_eq!(world.states(), [RolledBack, Done, RolledBack, Pending]);
}

#[test]
fn continue_goes_on_and_reports_the_rolled_back_instances() {
    let mut world = World::new(specs(3, 2), Policy { failure_action: FailureAction::Continue, ..policy(2) });
    world.unhealthy.extend([unhealthy(1, NEW), unhealthy(4, NEW)]);
    assert_eq!(world.start().run(), Status::RolledBack);
    use InstanceState::*;
    assert_eq!(world.states(), [Done, RolledBack, Done, Done, RolledBack, Done]);
    assert_eq!(world.rollout.failures(), 2);
    assert_eq!(world.rollout.halt(), None);
    world.assert_target_agrees();
}

#[test]
fn the_failure_action_applies_only_above_max_failure_ratio() {
    let mut world = World::new(specs(3, 2), Policy { max_failure_ratio: 0.2, ..policy(1) });
    world.unhealthy.extend([unhealthy(1, NEW), unhealthy(3, NEW)]);
    assert_eq!(world.start().run(), Status::RolledBack);
    use InstanceState::*;
    // 1 of 6 is within 20 %; the second failure exceeds it and rolls back the done ones.
    assert_eq!(world.states(), [RolledBack, RolledBack, RolledBack, RolledBack, Pending, Pending]);
    assert_eq!(world.max_in_flight, 1);
    assert_eq!(world.rollout.failures(), 2);
    world.assert_target_agrees();
}

#[test]
fn a_failed_start_is_reverted() {
    let mut world = World::new(specs(1, 2), Policy { failure_action: FailureAction::Continue, ..policy(1) });
    world.fail_start.push(unhealthy(0, NEW));
    assert_eq!(world.start().run(), Status::RolledBack);
    assert_eq!(world.states(), [InstanceState::RolledBack, InstanceState::Done]);
    assert_eq!(world.rollout.instances()[0].last_error.as_deref(), Some("starting the new image failed: exited 1"));
    world.assert_target_agrees();
}

#[test]
fn a_container_that_cannot_be_stopped_fails_the_rollout() {
    let mut world = World::new(specs(1, 2), policy(1));
    world.fail_stop.push(0);
    assert_eq!(world.start().run(), Status::Failed);
    assert_eq!(world.states(), [InstanceState::RevertFailed, InstanceState::Pending]);
    assert_eq!(
        world.rollout.instances()[0].last_error.as_deref(),
        Some(
            "stopping the old container failed: timed out; then rollback failed: stopping the container failed: timed out"
        )
    );
    assert_eq!(world.rollout.nodes()[0].state, NodeState::Failed);
}

#[test]
fn an_old_image_that_does_not_come_back_fails_the_rollout() {
    let mut world = World::new(specs(1, 1), policy(1));
    world.unhealthy.extend([unhealthy(0, NEW), unhealthy(0, OLD)]);
    assert_eq!(world.start().run(), Status::Failed);
    assert_eq!(world.states(), [InstanceState::RevertFailed]);
    let error = world.rollout.instances()[0].last_error.clone().unwrap();
    assert!(error.contains("; then rollback failed: health gate not passed"), "{error}");
}

#[test]
fn the_progress_deadline_reverts_in_flight_instances_and_fails() {
    let policy = Policy { progress_deadline_ms: 100_000, healthy_deadline_ms: 1_000_000, ..policy(2) };
    let mut world = World::new(specs(3, 2), policy);
    world.unhealthy.push(unhealthy(2, NEW));
    assert_eq!(world.start().run(), Status::Failed);
    use InstanceState::*;
    assert_eq!(world.states(), [Done, Done, RolledBack, Done, Pending, Pending]);
    assert!(world.rollout.deadline_exceeded());
    assert!(!world.rollout.instances()[2].failed, "cancelled, not failed");
    assert_eq!(world.rollout.instances()[2].last_error.as_deref(), Some("progress deadline of 100000 ms exceeded"));
    world.assert_target_agrees();
}

#[test]
fn an_instance_cancelled_while_draining_goes_straight_back() {
    let mut rollout =
        Rollout::new(specs(1, 1), Policy { progress_deadline_ms: 1_000, min_healthy_time_ms: 0, ..policy(1) }, 0);
    rollout.start(0);
    assert_eq!(rollout.step(Event::Tick { now_ms: 2_000 }), vec![]);
    assert!(rollout.deadline_exceeded());
    assert_eq!(rollout.instances()[0].state, InstanceState::Draining);
    assert_eq!(
        rollout.step(Event::Stopped { instance: 0 }),
        vec![Command::Start { instance: 0, image: OLD.to_string() }]
    );
    assert_eq!(rollout.step(Event::Started { instance: 0 }), vec![Command::Probe { instance: 0 }]);
    let probed = Event::Probed { instance: 0, now_ms: 3_000, report: ProbeReport::healthy(Some("v1")) };
    assert_eq!(rollout.step(probed), vec![Command::Finish { status: Status::Failed }]);
    assert_eq!(rollout.instances()[0].state, InstanceState::RolledBack);
}

#[test]
fn time_awaiting_approval_does_not_count_against_the_progress_deadline() {
    let policy = Policy { canary: 1, approve: true, progress_deadline_ms: 100_000, ..policy(1) };
    let mut world = World::new(specs(1, 2), policy);
    assert_eq!(world.start().run(), Status::AwaitingApproval);
    world.now += 1_000_000;
    world.step(Event::Tick { now_ms: world.now });
    world.step(Event::Approved);
    world.step(Event::Tick { now_ms: world.now });
    assert_eq!(world.run(), Status::Succeeded);
}
