//! Ctrl-C (SIGINT) at several points of `infra up` and `infra destroy`, against the real
//! Docker Engine: the command stops after the steps in flight, exits 130, leaves no agent
//! half-replaced, and a second `infra up` converges (finishing a rollout the first left).
//! Two signals abort at once.
//!
//! The signals are sent when a progress line appears on the child's stderr. SIGTERM (how
//! CI cancels) behaves as the first Ctrl-C.

mod support;

use std::time::Duration;

use support::describe;
use support::docker::{TestFleet, docker, docker_status};
use support::watch::Watched;

const AGENTS: &[&str] = &["grok", "opus"];
const STOPPING: &str = "stopping after the steps in flight (Ctrl-C again to abort)";
const INTERRUPTED: i32 = 130;

/// No agent is missing while its `-rivetctl-next` exists; with `whole`, every agent that
/// exists runs (created and started, never one without the other).
fn assert_no_half_state(fleet: &TestFleet, whole: bool) {
    let containers = fleet.containers();
    for id in AGENTS {
        let name = fleet.agent(id);
        let next = format!("{name}-rivetctl-next");
        if containers.contains_key(&next) {
            assert!(containers.contains_key(&name), "agent {id} is missing while {next} exists: {containers:#?}");
            assert!(!whole, "{next} was left behind: {containers:#?}");
        }
        if let (true, Some(container)) = (whole, containers.get(&name)) {
            assert_eq!(container.state, "running", "agent {id}: {containers:#?}");
        }
    }
}

/// The line of a progress event about `name` whose detail starts with `detail`.
fn event(name: &str, detail: &str) -> impl Fn(&str) -> bool {
    let wanted = format!("{name}: {detail}");
    move |line: &str| line.contains(&wanted)
}

/// Sends `signal` to `up --yes` once `trigger` matches; returns its output after it ended.
fn interrupt_up(fleet: &TestFleet, signal: i32, what: &str, trigger: impl Fn(&str) -> bool) -> std::process::Output {
    let mut up = Watched::spawn(fleet.command(&["infra", "up", "--yes"]));
    up.wait_for(what, Duration::from_secs(180), trigger);
    up.signal(signal);
    let (output, _) = up.finish(Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(INTERRUPTED), "{}", describe(&output));
    assert!(stderr.contains(STOPPING), "{stderr}");
    assert!(stderr.contains("error: interrupted"), "{stderr}");
    output
}

/// The image reference `infra preview` plans for the agents.
fn agent_image(fleet: &TestFleet) -> String {
    let preview = fleet.expect(&["--output", "json", "infra", "preview", "--offline"], 0);
    let plan: serde_json::Value = serde_json::from_slice(&preview.stdout).unwrap();
    plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["component"] == "agent")
        .flat_map(|c| c["fields"].as_array().unwrap().iter())
        .find(|f| f["field"] == "image")
        .and_then(|f| f["after"].as_str())
        .expect("an agent image in the plan")
        .to_string()
}

#[test]
fn ctrl_c_during_the_image_build_tags_nothing_and_up_converges() {
    let fleet = TestFleet::new("int-build");
    // A build step that takes a while, unique to this fleet (its own content hash and tag).
    let dockerfile = fleet.dir.path().join("containers/agent/Dockerfile");
    let text = std::fs::read_to_string(&dockerfile).unwrap();
    let slow = format!("RUN echo {} && sleep 20", fleet.name);
    std::fs::write(&dockerfile, text.replace("USER 10001:10001", &format!("{slow}\nUSER 10001:10001"))).unwrap();
    let image = agent_image(&fleet);

    let mut up = Watched::spawn(fleet.command(&["infra", "up", "--yes"]));
    let line = up.wait_for("for the slow build step", Duration::from_secs(120), |line| line.contains(&slow));
    up.interrupt();
    assert!(line.contains(&format!("image {image}: Step")), "the planned image is the one being built: {line}");
    let (output, waited) = up.finish(Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(INTERRUPTED), "{}", describe(&output));
    assert!(stderr.contains(STOPPING) && stderr.contains("was cancelled"), "{stderr}");
    assert!(waited < Duration::from_secs(15), "the build was not cancelled: the exit took {waited:?}");
    assert!(!docker_status(&["image", "inspect", &image]).status.success(), "{image} was tagged");
    assert!(fleet.containers().is_empty(), "nothing was applied");

    fleet.expect(&["infra", "up", "--yes"], 0);
    fleet.assert_healthy(AGENTS);
}

#[test]
fn ctrl_c_while_agents_are_created_finishes_them_and_up_has_nothing_left() {
    let fleet = TestFleet::new("int-create");
    // The agents' steps start in plan order (grok, then opus): once opus starts, both are in
    // flight. (On grok's line, opus could see the stop request before it starts.)
    interrupt_up(&fleet, libc::SIGINT, "for the agents being created", event(&fleet.agent("opus"), "starting"));
    // The agents' wave was in flight: it ran to its end.
    assert_no_half_state(&fleet, true);
    fleet.assert_healthy(AGENTS);
    let again = fleet.expect(&["infra", "up", "--yes"], 0);
    assert!(String::from_utf8_lossy(&again.stdout).contains("No changes"), "{}", describe(&again));
}

/// SIGTERM (how CI cancels a job) stops the same way as Ctrl-C.
#[test]
fn sigterm_before_the_agents_starts_none_of_them() {
    let fleet = TestFleet::new("int-hub");
    let hub = format!("{}-datahub", fleet.name);
    let output = interrupt_up(&fleet, libc::SIGTERM, "for the datahub being created", event(&hub, "starting"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not started") && stderr.contains(&fleet.agent("opus")), "{stderr}");
    let containers = fleet.containers();
    assert!(AGENTS.iter().all(|id| !containers.contains_key(&fleet.agent(id))), "{containers:#?}");
    let hub = &containers[&format!("{}-datahub", fleet.name)];
    assert_eq!(hub.state, "running", "the datahub's step ran to its end");

    fleet.expect(&["infra", "up", "--yes"], 0);
    fleet.assert_healthy(AGENTS);
}

/// An env change of opus that also slows its health answers (the replacement takes a while).
fn change_opus(fleet: &TestFleet) {
    fleet.edit(|text| {
        text.replace("env: { LOG_LEVEL: info }", "env: { LOG_LEVEL: debug, RIVETOS_TEST_RESPONSE_DELAY: \"1\" }")
    });
}

/// The rollout's progress line of agent `id` entering `state` (`local/opus: gating`).
fn rollout_event(id: &str, state: &str) -> impl Fn(&str) -> bool {
    let wanted = format!("local/{id}: {state}");
    move |line: &str| line.contains(&wanted)
}

/// Leftovers of a rollout (`-rivetctl-prev`, `-rivetctl-next`) of the fleet's agents.
fn rollout_leftovers(fleet: &TestFleet) -> Vec<String> {
    fleet.containers().into_keys().filter(|n| n.ends_with("-rivetctl-prev") || n.ends_with("-rivetctl-next")).collect()
}

#[test]
fn ctrl_c_during_a_replacement_stops_the_rollout_and_the_next_up_finishes_it() {
    let fleet = TestFleet::new("int-replace");
    fleet.expect(&["infra", "up", "--yes"], 0);
    change_opus(&fleet);
    // A running agent that changes is replaced by the rollout engine: Ctrl-C while its new
    // container is gated stops the rollout with its journal written (exit 3, as `update`).
    let mut up = Watched::spawn(fleet.command(&["infra", "up", "--yes"]));
    up.wait_for("for the new opus container's gate", Duration::from_secs(180), rollout_event("opus", "gating"));
    up.signal(libc::SIGINT);
    let (output, _) = up.finish(Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{}", describe(&output));
    assert!(stderr.contains(STOPPING) && stderr.contains("the rollout was interrupted"), "{stderr}");

    // The next `infra up` finishes the rollout it left, then has nothing else to do.
    let again = fleet.expect(&["infra", "up", "--yes"], 0);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("finishing it first") && stderr.contains("Resuming the infra up"), "{}", describe(&again));
    let env = docker(&["inspect", "--format", "{{range .Config.Env}}{{println .}}{{end}}", &fleet.agent("opus")]);
    assert!(env.lines().any(|l| l == "LOG_LEVEL=debug"), "the replacement was completed: {env}");
    assert!(rollout_leftovers(&fleet).is_empty(), "{:?}", rollout_leftovers(&fleet));
    let third = fleet.expect(&["infra", "up", "--yes"], 0);
    assert!(String::from_utf8_lossy(&third.stdout).contains("No changes"), "{}", describe(&third));
    fleet.assert_healthy(AGENTS);
}

#[test]
fn a_second_ctrl_c_aborts_at_once_and_up_converges() {
    let fleet = TestFleet::new("int-abort");
    fleet.expect(&["infra", "up", "--yes"], 0);
    change_opus(&fleet);
    let mut up = Watched::spawn(fleet.command(&["infra", "up", "--yes"]));
    up.wait_for("for the new opus container's gate", Duration::from_secs(120), rollout_event("opus", "gating"));
    up.interrupt();
    up.wait_for("saying it stops", Duration::from_secs(10), |line| line.contains(STOPPING));
    up.interrupt();
    let (output, waited) = up.finish(Duration::from_secs(10));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(INTERRUPTED), "{}", describe(&output));
    assert!(stderr.contains("aborted") && stderr.contains("rivetctl infra up"), "{stderr}");
    assert!(waited < Duration::from_secs(2), "the abort took {waited:?}");
    assert_no_half_state(&fleet, false);

    // The journal says where the rollout was: the next `infra up` finishes it.
    fleet.expect(&["infra", "up", "--yes"], 0);
    fleet.assert_healthy(AGENTS);
    assert_no_half_state(&fleet, true);
    assert!(rollout_leftovers(&fleet).is_empty(), "{:?}", rollout_leftovers(&fleet));
}

#[test]
fn ctrl_c_during_destroy_stops_after_the_removals_in_flight() {
    let fleet = TestFleet::new("int-destroy");
    fleet.expect(&["infra", "up", "--yes"], 0);
    let mut destroy = Watched::spawn(fleet.command(&["infra", "destroy", "--volumes", "--yes"]));
    destroy.wait_for("for an agent being removed", Duration::from_secs(60), event(&fleet.agent("grok"), "removing"));
    destroy.interrupt();
    let (output, _) = destroy.finish(Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(INTERRUPTED), "{}", describe(&output));
    assert!(stderr.contains(STOPPING) && stderr.contains("not started"), "{stderr}");
    // The volumes come last: they were not started, so the data is still there.
    assert_eq!(fleet.list("volume").len(), 2, "{stderr}");
    assert!(!fleet.containers().contains_key(&fleet.agent("grok")), "the removal in flight finished");
    for (name, container) in fleet.containers().into_iter().filter(|(n, _)| !n.ends_with("-migrate")) {
        assert_eq!(container.state, "running", "{name} is whole or gone");
    }

    fleet.expect(&["infra", "up", "--yes"], 0);
    fleet.assert_healthy(AGENTS);
}
