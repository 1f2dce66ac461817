//! What a finished machine records: current on `Done`, rejected on failure, revert, or a
//! rollout rolled back before it reached the node; nothing for unfinished or config-only work.

use orchestrator::config::model::FailureAction;
use orchestrator::rollout::{InstanceSpec, Policy, Rollout};

use super::*;

fn spec(node: &str, agent: &str, from: &str, to: &str) -> InstanceSpec {
    InstanceSpec {
        node: node.into(),
        agent: agent.into(),
        agents: Vec::new(),
        from_image: from.into(),
        to_image: to.into(),
        from_version: Some("1.0.0".into()),
        to_version: Some("2.0.0".into()),
    }
}

/// A machine whose instances are in `states` (state, failed) and whose status is `status`.
fn machine(specs: Vec<InstanceSpec>, status: &str, states: &[(&str, bool)]) -> Rollout {
    let policy = Policy {
        max_parallel: 1,
        canary: 1,
        approve: false,
        min_healthy_time_ms: 1000,
        healthy_deadline_ms: 10_000,
        progress_deadline_ms: 100_000,
        stop_grace_ms: 1000,
        failure_action: FailureAction::Rollback,
        max_failure_ratio: 0.0,
    };
    let mut journal: serde_json::Value = serde_json::from_str(&Rollout::new(specs, policy, 0).to_journal()).unwrap();
    journal["status"] = status.into();
    for (i, (state, failed)) in states.iter().enumerate() {
        journal["instances"][i]["state"] = (*state).into();
        journal["instances"][i]["failed"] = (*failed).into();
        if *failed {
            journal["instances"][i]["last_error"] = "the health gate expired".into();
        }
    }
    Rollout::from_journal(&journal.to_string()).unwrap()
}

fn summary(machine: &Rollout) -> Vec<(String, bool, Option<String>)> {
    outcomes(machine).into_iter().map(|o| (o.node, o.current, o.rejected)).collect()
}

fn three_nodes() -> Vec<InstanceSpec> {
    vec![spec("n1", "a1", "img:1", "img:2"), spec("n2", "b1", "img:1", "img:2"), spec("n3", "c1", "img:1", "img:2")]
}

#[test]
fn a_failed_canary_rejects_the_image_on_every_node_of_the_rollout() {
    let m = machine(three_nodes(), "rolled_back", &[("rolled_back", true), ("pending", false), ("pending", false)]);
    let got = summary(&m);
    assert_eq!(got[0], ("n1".into(), false, Some("a1: the health gate expired".into())));
    assert_eq!(got[1].2.as_deref(), Some("its rollout was rolled back before it reached this node"));
    assert_eq!(got[2].0, "n3");
    assert!(!got[2].1 && got[2].2.is_some());
}

#[test]
fn a_resumed_rollout_records_every_node_done_including_those_done_before_the_kill() {
    let m = machine(three_nodes(), "succeeded", &[("done", false), ("done", false), ("done", false)]);
    let every: Vec<(String, bool, Option<String>)> = ["n1", "n2", "n3"].map(|n| (n.to_string(), true, None)).into();
    assert_eq!(summary(&m), every);
}

#[test]
fn agents_reverted_because_another_failed_reject_the_image_too() {
    let specs = vec![spec("n1", "a1", "img:1", "img:2"), spec("n1", "a2", "img:1", "img:2")];
    let m = machine(specs, "rolled_back", &[("rolled_back", false), ("rolled_back", true)]);
    assert_eq!(summary(&m), [("n1".into(), false, Some("a2: the health gate expired".into()))]);
    let specs = vec![spec("n1", "a1", "img:1", "img:2"), spec("n2", "b1", "img:1", "img:2")];
    let m = machine(specs, "rolled_back", &[("rolled_back", false), ("rolled_back", true)]);
    assert_eq!(summary(&m)[0].2.as_deref(), Some("rolled back by its rollout after another agent failed"));
}

#[test]
fn an_unfinished_rollout_records_only_what_passed_and_what_failed() {
    let m = machine(three_nodes(), "interrupted", &[("done", false), ("gating", false), ("pending", false)]);
    assert_eq!(summary(&m), [("n1".into(), true, None)]);
    let m = machine(three_nodes(), "paused", &[("rolled_back", true), ("pending", false), ("pending", false)]);
    assert_eq!(summary(&m), [("n1".into(), false, Some("a1: the health gate expired".into()))]);
}

#[test]
fn a_config_only_change_says_nothing_about_the_image() {
    let specs = vec![spec("n1", "a1", "img:1", "img:1")];
    let m = machine(specs, "rolled_back", &[("rolled_back", true)]);
    assert!(outcomes(&m).is_empty());
}
