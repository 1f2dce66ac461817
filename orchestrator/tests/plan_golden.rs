//! Golden files of plans (text and JSON) for the changes people make most.

mod support;

use orchestrator::docker;
use orchestrator::memory;
use orchestrator::plan::{self, PlanOptions, RenderOptions, plan_document, render_text};
use orchestrator::resource::{ObservedResource, ObservedState};
use support::{fleet, fleet_with, golden};

const BASE: &str = r#"
deployment:
  target: docker
  datahub:
    postgres_version: "16"
  docker:
    postgres_port: 0
  agents:
    opus:
      env: { LOG_LEVEL: info }
agents:
  opus: { provider: anthropic, model: claude-opus-4 }
  grok: { provider: xai }
  gemini: { provider: google }
"#;

/// The observed state after a successful `up` of `source`.
fn deployed(source: &str) -> Vec<ObservedResource> {
    let desired = docker::resources(&fleet(source));
    let first = plan::plan("rivetos", "docker", desired, &[], PlanOptions::default());
    memory::apply(&first, &[])
}

fn check(name: &str, before: &[ObservedResource], after: &str) {
    check_with(name, before, docker::resources(&fleet(after)));
}

fn check_with(name: &str, before: &[ObservedResource], desired: Vec<docker::DockerResource>) {
    let plan = plan::plan("rivetos", "docker", desired.clone(), before, PlanOptions::default());
    golden(&format!("plan/{name}.txt"), &render_text(&plan, RenderOptions::default()));
    let json = serde_json::to_string_pretty(&plan_document(&plan, "live")).unwrap() + "\n";
    golden(&format!("plan/{name}.json"), &json);
    // Applying the plan reaches the desired state: planning again finds nothing to do.
    let after = memory::apply(&plan, before);
    let again = plan::plan("rivetos", "docker", desired, &after, PlanOptions::default());
    assert!(again.is_empty(), "{name}: second plan not empty:\n{}", render_text(&again, RenderOptions::default()));
}

#[test]
fn empty_to_full_fleet() {
    check("create", &[], BASE);
}

#[test]
fn one_agents_env_changed() {
    check("env-changed", &deployed(BASE), &BASE.replace("LOG_LEVEL: info", "LOG_LEVEL: debug"));
}

#[test]
fn agent_removed() {
    check("agent-removed", &deployed(BASE), &BASE.replace("  gemini: { provider: google }\n", ""));
}

#[test]
fn postgres_version_forces_datahub_replacement() {
    check("postgres-version", &deployed(BASE), &BASE.replace("postgres_version: \"16\"", "postgres_version: \"17\""));
}

#[test]
fn nothing_changed() {
    check("no-changes", &deployed(BASE), BASE);
}

#[test]
fn new_image_groups_identical_agent_changes() {
    let desired =
        docker::resources(&fleet_with(BASE, "2222222222222222222222222222222222222222222222222222222222222222"));
    check_with("image-changed", &deployed(BASE), desired);
}

#[test]
fn stopped_container_is_drift() {
    let mut observed = deployed(BASE);
    let agent = observed.iter_mut().find(|o| o.key.name == "rivetos-agent-grok").unwrap();
    agent.state = ObservedState::Stopped(Some(137));
    check("drift-stopped", &observed, BASE);
}

#[test]
fn removed_container_is_recreated() {
    let mut observed = deployed(BASE);
    observed.retain(|o| o.key.name != "rivetos-agent-grok");
    let plan = plan::plan("rivetos", "docker", docker::resources(&fleet(BASE)), &observed, PlanOptions::default());
    assert_eq!(plan.steps.len(), 1);
    assert_eq!(plan.steps[0].action, plan::Action::Create);
    assert_eq!(plan.steps[0].key.name, "rivetos-agent-grok");
}

#[test]
fn volumes_are_kept_unless_data_deletion_is_asked_for() {
    let observed = deployed(BASE);
    let keep = plan::plan_destroy::<()>("rivetos", "docker", &observed, false);
    assert!(keep.steps.iter().all(|s| !s.stateful));
    let kept: Vec<&str> = keep.kept.iter().map(|k| k.key.name.as_str()).collect();
    assert_eq!(kept, ["rivetos-pgdata", "rivetos-shared"]);
    let delete = plan::plan_destroy::<()>("rivetos", "docker", &observed, true);
    assert!(delete.kept.is_empty());
    assert_eq!(delete.steps.len(), observed.len());
}

#[test]
fn docker_steps_stop_with_the_containers_own_grace() {
    let source = BASE.replace("  docker:\n", "  update:\n    stop_grace_period: 12s\n  docker:\n");
    let plan = plan::plan("rivetos", "docker", docker::resources(&fleet(&source)), &[], PlanOptions::default());
    let grace = |name: &str| plan.steps.iter().find(|s| s.key.name == name).map(|s| s.grace_ms);
    assert_eq!(grace("rivetos-agent-opus"), Some(12_000));
    // The datahub is given at least 30 s to shut down cleanly.
    assert_eq!(grace("rivetos-datahub"), Some(30_000));
    assert_eq!(grace("rivetos-pgdata"), Some(PlanOptions::DEFAULT_DELETE_GRACE_MS));
    assert!(plan.steps.iter().all(|s| s.discard_on_failure && s.deadline_ms == PlanOptions::DEFAULT_WAIT_DEADLINE_MS));
}

#[test]
fn an_image_change_goes_to_the_rollout_and_the_datahub_stays_with_the_executor() {
    let desired =
        docker::resources(&fleet_with(BASE, "2222222222222222222222222222222222222222222222222222222222222222"));
    let plan = plan::plan("rivetos", "docker", desired, &deployed(BASE), PlanOptions::default());
    let (executor, rollout) = plan.split_rollout();
    let names = |steps: &[plan::Step<_>]| steps.iter().map(|s| s.key.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&rollout), ["rivetos-agent-gemini", "rivetos-agent-grok", "rivetos-agent-opus"]);
    assert_eq!(names(&executor.steps), ["rivetos-datahub", "rivetos-migrate"]);
}
