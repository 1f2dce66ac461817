//! Definite failure signals: a gate fails at once, not at its deadline, and says why.

use super::*;
use crate::gate::{EngineHealth, Exit};

fn exited(code: i64) -> EngineReport {
    EngineReport { exit: Some(Exit { code, oom_killed: false }), ..EngineReport::default() }
}

fn unhealthy_check() -> EngineReport {
    let output = "wget: server returned error: HTTP/1.1 503 Service Unavailable".to_string();
    EngineReport { health: Some(EngineHealth::Unhealthy { output }), ..EngineReport::default() }
}

#[test]
fn a_canary_that_exits_is_reverted_after_one_probe() {
    let mut world = World::new(specs(2, 1), Policy { canary: 1, ..policy(1) });
    world.signals.push((0, NEW.to_string(), exited(1)));
    assert_eq!(world.start().run(), Status::RolledBack);
    assert_eq!(world.states(), [InstanceState::RolledBack, InstanceState::Pending]);
    world.assert_target_agrees();
    let instance = &world.rollout.instances()[0];
    assert_eq!(
        instance.last_error.as_deref(),
        Some("health gate failed after 0.0 s: the container exited with code 1")
    );
    assert_eq!(instance.logs, ["registry/agent:v2: boom"]);
    // One probe of the new container, then the revert's gate (10 s of good probes): far from
    // the 60 s deadline.
    assert_eq!(world.now, 4 * PROBE_MS, "the failure did not wait for the deadline");
}

#[test]
fn an_engine_reported_unhealthy_check_fails_the_gate_and_names_it() {
    let mut world = World::new(specs(1, 1), policy(1));
    world.signals.push((0, NEW.to_string(), unhealthy_check()));
    assert_eq!(world.start().run(), Status::RolledBack);
    let error = world.rollout.instances()[0].last_error.clone().unwrap();
    assert!(error.contains("the engine's health check reports the container unhealthy (last check: wget"), "{error}");
}

#[test]
fn a_reverted_container_that_restarts_fails_the_revert_at_once() {
    let mut world = World::new(specs(1, 1), policy(1));
    world.signals.push((0, NEW.to_string(), unhealthy_check()));
    let restarting =
        EngineReport { restarting: true, exit: Some(Exit { code: 3, oom_killed: false }), restarts: 1, health: None };
    world.signals.push((0, OLD.to_string(), restarting));
    assert_eq!(world.start().run(), Status::Failed);
    assert_eq!(world.states(), [InstanceState::RevertFailed]);
    let instance = &world.rollout.instances()[0];
    let error = instance.last_error.clone().unwrap();
    assert!(
        error.contains("; then rollback failed: health gate failed after 0.0 s: the container exited with code 3"),
        "{error}"
    );
    assert_eq!(instance.logs, ["registry/agent:v1: boom"], "the logs of the latest failure");
    assert_eq!(world.now, 2 * PROBE_MS);
}

#[test]
fn an_old_restart_count_of_a_container_put_back_is_no_signal() {
    let mut world = World::new(specs(1, 1), policy(1));
    world.unhealthy.push((0, NEW.to_string()));
    world.signals.push((0, OLD.to_string(), EngineReport { restarts: 5, ..EngineReport::default() }));
    assert_eq!(world.start().run(), Status::RolledBack);
    assert!(world.rollout.instances()[0].logs.is_empty(), "the deadline failure carries no logs");
}

#[test]
fn the_journal_keeps_the_restart_baseline_and_the_logs_and_reads_older_journals() {
    let mut world = World::new(specs(2, 1), Policy { canary: 1, ..policy(1) });
    world.signals.push((0, NEW.to_string(), exited(1)));
    world.signals.push((1, OLD.to_string(), EngineReport { restarts: 2, ..EngineReport::default() }));
    world.start().run();
    let journal = world.rollout.to_journal();
    assert!(journal.contains("\"logs\": [") && journal.contains("\"restarts_at_start\": 0"), "{journal}");
    assert_eq!(Rollout::from_journal(&journal).unwrap(), world.rollout);
    // A journal written before these fields existed still reads.
    let mut value: serde_json::Value = serde_json::from_str(&journal).unwrap();
    for instance in value["instances"].as_array_mut().unwrap() {
        let instance = instance.as_object_mut().unwrap();
        instance.remove("logs");
        instance.remove("restarts_at_start");
    }
    let old = Rollout::from_journal(&value.to_string()).unwrap();
    assert!(old.instances().iter().all(|i| i.logs.is_empty() && i.gate.restarts_at_start.is_none()));
}
