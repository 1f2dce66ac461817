//! `update --mesh` with a node told `images: pull`: the node is a Docker Engine of its own
//! (a second dockerd, `testkit::dockerd`, which starts with no images), so the new revision
//! can only reach it through the registry (a real `docker-registry` with htpasswd), not by
//! sharing this machine's engine as the SSH test nodes do.

mod support;

use std::process::{Command, Stdio};

use support::describe;
use support::docker::{TestFleet, docker};
use support::mesh::{self, free_port};
use testkit::dockerd::Dockerd;
use testkit::registry::{Registry, RegistryOptions};

const USER: &str = "deployer";
const PASSWORD: &str = "pull-pass-5c1e";

/// `docker -H <node>` with `args`, its stdout; panics with stderr on failure.
fn on_node(node: &Dockerd, args: &[&str]) -> String {
    let out = Command::new("docker").arg("-H").arg(node.host()).args(args).output().expect("docker CLI");
    assert!(out.status.success(), "docker -H {} {args:?}: {}", node.host(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Loads this engine's `image` into `node` (`docker save | docker -H … load`): the base
/// image the node's own `infra up` build starts from, as an operator would provide it.
fn preload(node: &Dockerd, image: &str) {
    let mut save = Command::new("docker").args(["save", image]).stdout(Stdio::piped()).spawn().unwrap();
    let load = Command::new("docker")
        .arg("-H")
        .arg(node.host())
        .arg("load")
        .stdin(save.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(save.wait().unwrap().success() && load.status.success(), "{}", String::from_utf8_lossy(&load.stderr));
}

#[test]
fn a_node_told_to_pull_gets_the_new_revision_from_the_registry() {
    let fleet = TestFleet::new("pull");
    let registry = Registry::start(RegistryOptions { user: Some((USER.into(), PASSWORD.into())) })
        .unwrap_or_else(|e| panic!("the test registry starts: {e:#}"));
    let node = Dockerd::start().unwrap_or_else(|e| panic!("a second dockerd starts: {e:#}"));
    preload(&node, "rivetos-base:busybox");
    let prefix = format!("{}/rivetos", registry.address());
    let config = format!(
        "deployment:\n  target: docker\n  docker: {{project_name: {name}, network: {name}-net, postgres_port: {port}}}\n  image: {{registry: \"{prefix}\"}}\n  resources:\n    agent: {{memory: 32m, cpus: 0.2}}\n    datahub: {{memory: 64m, cpus: 0.5}}\n  health: {{interval: 1s, timeout: 2s, start_period: 5s, deadline: 60s}}\n  update: {{max_parallel: 1, canary: 1, min_healthy_time: 1s, healthy_deadline: 30s, stop_grace_period: 2s}}\n  nodes:\n    - {{name: n1, role: both, host: local, address: 127.0.0.1, agents: [a1]}}\n    - {{name: n2, role: agents, host: \"{host}\", address: 127.0.0.1, agents: [b1], images: pull}}\nagents:\n  a1: {{provider: anthropic}}\n  b1: {{provider: anthropic}}\n",
        name = fleet.name,
        port = free_port(),
        host = node.host(),
    );
    std::fs::write(fleet.config(), config).unwrap();
    let with_credentials = |args: &[&str]| {
        let mut command = fleet.command(args);
        command.env("RIVET_REGISTRY_USERNAME", USER).env("RIVET_REGISTRY_PASSWORD", PASSWORD);
        command.output().unwrap()
    };

    let up = with_credentials(&["infra", "up", "--yes"]);
    assert_eq!(up.status.code(), Some(0), "{}\n--- node's dockerd\n{}", describe(&up), node.log());
    let b1 = fleet.agent("b1");
    let image_before = on_node(&node, &["inspect", "--format", "{{.Config.Image}}", &b1]);

    mesh::bump(&fleet, "2.0.0");
    let update = with_credentials(&["--output", "json", "update", "--mesh"]);
    assert_eq!(update.status.code(), Some(0), "{}\n--- node's dockerd\n{}", describe(&update), node.log());
    let events: Vec<serde_json::Value> =
        String::from_utf8_lossy(&update.stdout).lines().filter_map(|line| serde_json::from_str(line).ok()).collect();
    let of = |kind: &str| events.iter().filter(|e| e["type"] == kind && e["status"] == "done").collect::<Vec<_>>();
    let pushed = of("push");
    assert!(
        pushed.iter().any(|e| e["name"].as_str().unwrap().starts_with("rivetos-agent:")
            && e["detail"].as_str().unwrap().starts_with(&format!("pushed {prefix}/rivetos-agent:"))),
        "the new agent image is pushed once: {events:#?}"
    );
    let pulls = of("pull");
    let agent_pull = pulls
        .iter()
        .find(|e| e["node"] == "n2" && e["name"].as_str().unwrap().starts_with("rivetos-agent:"))
        .unwrap_or_else(|| panic!("n2 pulls the agent image: {events:#?}"));
    let agent_image = agent_pull["name"].as_str().unwrap();
    assert!(agent_pull["detail"].as_str().unwrap().starts_with(&format!("pulled {prefix}/{agent_image}@sha256:")));
    assert!(of("ship").iter().all(|e| e["node"] != "n2"), "nothing is shipped to n2: {events:#?}");

    // On n2: the agent runs the new image, the one built here (same ID), fetched by digest.
    let image_after = on_node(&node, &["inspect", "--format", "{{.Config.Image}}", &b1]);
    assert_ne!(image_after, image_before);
    assert_eq!(image_after.trim(), agent_image);
    let id_here = docker(&["image", "inspect", "--format", "{{.Id}}", agent_image]);
    let id_there = on_node(&node, &["image", "inspect", "--format", "{{.Id}}", agent_image]);
    assert_eq!(id_there, id_here);
    let repo_digests = on_node(&node, &["image", "inspect", "--format", "{{json .RepoDigests}}", agent_image]);
    let (repository, tag) = agent_image.split_once(':').unwrap();
    let digest = registry.manifest_digest(&format!("rivetos/{repository}"), tag).unwrap().expect("in the registry");
    assert!(repo_digests.contains(&digest), "{repo_digests} holds {digest}");
    let version =
        on_node(&node, &["inspect", "--format", "{{index .Config.Labels \"org.opencontainers.image.version\"}}", &b1]);
    assert_eq!(version.trim(), "2.0.0");
    let health = on_node(&node, &["inspect", "--format", "{{.State.Health.Status}}", &b1]);
    assert!(matches!(health.trim(), "healthy" | "starting"), "{health}");
    let text = String::from_utf8_lossy(&update.stdout) + String::from_utf8_lossy(&update.stderr);
    assert!(!text.contains(PASSWORD), "the registry password is never printed");

    // The next update with nothing new pulls nothing.
    let again = with_credentials(&["--output", "json", "update", "--mesh"]);
    assert_eq!(again.status.code(), Some(0), "{}", describe(&again));
    let text = String::from_utf8_lossy(&again.stdout);
    assert!(!text.contains("\"pulled "), "{text}");
}
