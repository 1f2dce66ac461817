//! Units that serve several agents: batches, the availability bound and rollbacks count
//! agents, not units.

use super::*;

/// The agents in flight after each command `world` executes, until it finishes.
fn run_counting(world: &mut World) -> (Status, usize) {
    world.start();
    let mut most = world.rollout.in_flight();
    loop {
        if let Some(status) = world.step_one() {
            return (status, most.max(world.rollout.in_flight()));
        }
        most = most.max(world.rollout.in_flight());
    }
}

#[test]
fn batches_and_the_bound_count_agents() {
    let mut world = World::new(units(&[2, 2, 3, 1, 1]), Policy { canary: 1, ..policy(4) });
    assert_eq!(world.rollout.batches(), [vec![0], vec![1], vec![2, 3], vec![4]]);
    let (status, most) = run_counting(&mut world);
    assert_eq!(status, Status::Succeeded);
    assert_eq!(most, 4, "units 2 and 3 (3 + 1 agents) ran together, nothing more");
    // The canary went first and alone.
    let stops: Vec<usize> =
        world.log.iter().filter(|c| matches!(c, Command::Stop { .. })).map(command_instance).collect();
    assert_eq!(stops, vec![0, 1, 2, 3, 4]);
    world.assert_target_agrees();
}

#[test]
fn a_unit_heavier_than_max_parallel_goes_alone() {
    let mut world = World::new(units(&[1, 5, 1]), policy(2));
    assert_eq!(world.rollout.batches(), [vec![0], vec![1], vec![2]]);
    assert_eq!(world.rollout.availability_bound(), 5);
    let (status, most) = run_counting(&mut world);
    assert_eq!(status, Status::Succeeded);
    assert_eq!(most, 5);
    assert_eq!(world.max_in_flight, 5);
}

#[test]
fn a_rollback_reverts_done_units_within_the_agent_bound() {
    // Units of 2 agents, max_parallel 4: two units per batch. Unit 4 fails its start; the
    // four done units are reverted two at a time.
    let mut world = World::new(units(&[2, 2, 2, 2, 2, 2]), policy(4));
    world.fail_start.push((4, NEW.to_string()));
    let (status, most) = run_counting(&mut world);
    assert_eq!(status, Status::RolledBack);
    assert!(most <= 4, "{most} agents in flight");
    let states = world.states();
    assert_eq!(&states[..5], [InstanceState::RolledBack; 5]);
    assert_eq!(states[5], InstanceState::RolledBack, "unit 5 started with unit 4 and was cancelled");
    world.assert_target_agrees();
}

#[test]
fn agents_default_to_the_agent_and_old_journals_load() {
    let spec = &specs(1, 1)[0];
    assert_eq!(spec.agent_ids(), vec!["agent0"]);
    assert_eq!(spec.weight(), 1);
    let rollout = Rollout::new(specs(1, 1), policy(1), 0);
    let journal = rollout.to_journal();
    assert!(!journal.contains("\"agents\""), "one-agent units keep the journal as it was: {journal}");
    assert_eq!(Rollout::from_journal(&journal).unwrap(), rollout);
    let several = Rollout::new(units(&[3]), policy(1), 0);
    let back = Rollout::from_journal(&several.to_journal()).unwrap();
    assert_eq!(back.instances()[0].spec.agent_ids(), vec!["unit0-agent0", "unit0-agent1", "unit0-agent2"]);
    assert_eq!(back.in_flight(), 0);
}

fn command_instance(command: &Command) -> usize {
    match command {
        Command::Stop { instance, .. } | Command::Start { instance, .. } | Command::Probe { instance } => *instance,
        other => panic!("{other:?} has no instance"),
    }
}
