//! Interrupting a rollout in every in-flight state and resuming it from what runs.

use super::*;
use crate::rollout::{Halt, Observed};

/// What the driver finds for instance 0 after the interruption.
#[derive(Debug, Clone, Copy)]
enum Found {
    NewRunning,
    OldRunning,
    Stopped,
    NotObserved,
}

/// A rollout of two instances (one at a time) with instance 0 driven into `state`.
fn interrupted_in(state: InstanceState) -> Rollout {
    let mut rollout = Rollout::new(specs(1, 2), policy(1), 0);
    let script: Vec<Event> = vec![
        Event::Stopped { instance: 0 },
        Event::Started { instance: 0 },
        Event::Tick { now_ms: 1 },
        Event::Tick { now_ms: 60_002 },
        Event::Stopped { instance: 0 },
        Event::Started { instance: 0 },
    ];
    rollout.start(0);
    let mut script = script.into_iter();
    while rollout.instances()[0].state != state {
        rollout.step(script.next().expect("the script reaches every in-flight state"));
    }
    assert_eq!(rollout.step(Event::Abort), vec![Command::Finish { status: Status::Interrupted }]);
    assert_eq!(rollout.status(), Status::Interrupted);
    // Answers that arrive after the interruption are ignored.
    let before = rollout.clone();
    rollout.step(Event::Stopped { instance: 0 });
    rollout.step(Event::Started { instance: 0 });
    assert_eq!(rollout, before);
    rollout
}

#[test]
fn resume_reconciles_every_in_flight_state_with_what_runs() {
    use Found::*;
    use InstanceState::*;
    let stop = Command::Stop { instance: 0, grace_ms: 30_000 };
    let probe = Command::Probe { instance: 0 };
    let start_new = Command::Start { instance: 0, image: NEW.to_string() };
    let start_old = Command::Start { instance: 0, image: OLD.to_string() };
    let cases = [
        (Draining, NewRunning, Gating, &probe, Status::Succeeded),
        (Draining, OldRunning, Draining, &stop, Status::Succeeded),
        (Draining, Stopped, Starting, &start_new, Status::Succeeded),
        (Draining, NotObserved, Draining, &stop, Status::Succeeded),
        (Starting, NewRunning, Gating, &probe, Status::Succeeded),
        (Starting, OldRunning, Draining, &stop, Status::Succeeded),
        (Starting, Stopped, Starting, &start_new, Status::Succeeded),
        (Starting, NotObserved, Draining, &stop, Status::Succeeded),
        (Gating, NewRunning, Gating, &probe, Status::Succeeded),
        (Gating, OldRunning, Draining, &stop, Status::Succeeded),
        (Gating, Stopped, Starting, &start_new, Status::Succeeded),
        (Gating, NotObserved, Draining, &stop, Status::Succeeded),
        (Reverting, NewRunning, Reverting, &stop, Status::RolledBack),
        (Reverting, OldRunning, RevertGating, &probe, Status::RolledBack),
        (Reverting, Stopped, RevertStarting, &start_old, Status::RolledBack),
        (Reverting, NotObserved, Reverting, &stop, Status::RolledBack),
        (RevertStarting, NewRunning, Reverting, &stop, Status::RolledBack),
        (RevertStarting, OldRunning, RevertGating, &probe, Status::RolledBack),
        (RevertStarting, Stopped, RevertStarting, &start_old, Status::RolledBack),
        (RevertStarting, NotObserved, Reverting, &stop, Status::RolledBack),
        (RevertGating, NewRunning, Reverting, &stop, Status::RolledBack),
        (RevertGating, OldRunning, RevertGating, &probe, Status::RolledBack),
        (RevertGating, Stopped, RevertStarting, &start_old, Status::RolledBack),
        (RevertGating, NotObserved, Reverting, &stop, Status::RolledBack),
    ];
    for (state, found, expected_state, expected_command, expected_status) in cases {
        let case = format!("{state:?} with {found:?}");
        let mut rollout = interrupted_in(state);
        let (container, observed) = match found {
            NewRunning => ((NEW, true), vec![Observed { instance: 0, image: Some(NEW.to_string()), running: true }]),
            OldRunning => ((OLD, true), vec![Observed { instance: 0, image: Some(OLD.to_string()), running: true }]),
            Stopped => ((NEW, false), vec![Observed { instance: 0, image: Some(NEW.to_string()), running: false }]),
            NotObserved => ((OLD, true), vec![]),
        };
        let commands = rollout.resume(&observed, 100_000);
        assert_eq!(commands, vec![expected_command.clone()], "{case}");
        assert_eq!(rollout.instances()[0].state, expected_state, "{case}");
        assert_eq!(rollout.status(), Status::Running, "{case}");

        // The resumed rollout runs to the end against a target in that condition.
        let mut world = World::new(specs(1, 2), policy(1));
        world.rollout = rollout;
        world.now = 100_000;
        world.containers[0] = (container.0.to_string(), container.1);
        world.queue.extend(commands);
        assert_eq!(world.run(), expected_status, "{case}");
        world.assert_target_agrees();
    }
}

#[test]
fn a_cancelled_instance_resumes_on_the_way_back() {
    // Instance 1 fails its gate while 0 is still draining: the rollback cancels 0.
    let mut rollout = Rollout::new(specs(1, 2), policy(2), 0);
    rollout.start(0);
    rollout.step(Event::Stopped { instance: 1 });
    rollout.step(Event::Started { instance: 1 });
    rollout.step(Event::Tick { now_ms: 1 });
    rollout.step(Event::Tick { now_ms: 60_002 });
    assert_eq!(rollout.halt(), Some(Halt::Rollback));
    assert_eq!(rollout.instances()[0].state, InstanceState::Draining);
    assert!(rollout.instances()[0].revert);
    rollout.step(Event::Abort);
    let old_running = |instance| Observed { instance, image: Some(OLD.to_string()), running: true };
    let commands = rollout.resume(&[old_running(0), old_running(1)], 100_000);
    assert_eq!(commands, [Command::Probe { instance: 0 }, Command::Probe { instance: 1 }]);
    assert_eq!(rollout.instances()[0].state, InstanceState::RevertGating);
}

#[test]
fn resume_during_a_rollback_goes_on_reverting_done_instances() {
    let mut world = World::new(specs(2, 2), policy(1));
    world.unhealthy.push((2, NEW.to_string()));
    world.start();
    // Run until the rollback started reverting a done instance, then interrupt.
    while world.rollout.instances()[1].state != InstanceState::Reverting {
        assert_eq!(world.step_one(), None, "the rollback never reached instance 1");
    }
    world.rollout.step(Event::Abort);
    world.queue.clear();
    let observed: Vec<Observed> = world
        .containers
        .iter()
        .enumerate()
        .map(|(instance, (image, running))| Observed { instance, image: Some(image.clone()), running: *running })
        .collect();
    let commands = world.rollout.resume(&observed, world.now + 1_000);
    world.queue.extend(commands);
    assert_eq!(world.run(), Status::RolledBack);
    use InstanceState::*;
    assert_eq!(world.states(), [RolledBack, RolledBack, RolledBack, Pending]);
    world.assert_target_agrees();
}

#[test]
fn a_finished_rollout_only_repeats_its_end() {
    let mut world = World::new(specs(1, 1), policy(1));
    assert_eq!(world.start().run(), Status::Succeeded);
    let before = world.rollout.clone();
    assert_eq!(world.rollout.resume(&[], 5), vec![Command::Finish { status: Status::Succeeded }]);
    assert_eq!(world.rollout.step(Event::Abort), vec![]);
    assert_eq!(world.rollout, before);
}
