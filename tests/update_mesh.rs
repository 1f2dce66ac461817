//! `rivetctl update --mesh` end to end: three nodes, each reached through its own real sshd
//! on loopback (all three drive the machine's Docker Engine, each owning its own agents).

mod support;

use std::collections::BTreeMap;
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::describe;
use support::docker::{TestFleet, docker};
use support::mesh::{self, sshd};
use support::state;

/// Agents per node, in node order.
const NODES: &[(&str, &str, &[&str])] =
    &[("n1", "both", &["a1", "a2"]), ("n2", "agents", &["b1", "b2"]), ("n3", "agents", &["c1", "c2"])];

/// A quickstart fleet spread over three SSH nodes.
struct Mesh {
    fleet: TestFleet,
    sshd: Vec<sshd::Sshd>,
}

impl Mesh {
    fn new(test: &str) -> Mesh {
        let fleet = TestFleet::new(test);
        let sshd = mesh::start(&fleet, NODES, "25s");
        Mesh { fleet, sshd }
    }

    fn agents(&self) -> Vec<String> {
        NODES.iter().flat_map(|(_, _, ids)| ids.iter().map(|id| self.fleet.agent(id))).collect()
    }

    /// A new revision of the agent: a new version in package.json.
    fn bump(&self, version: &str) {
        mesh::bump(&self.fleet, version);
    }

    /// The rollout journal, as kept on the target.
    fn journal(&self) -> Option<serde_json::Value> {
        state::json(&self.fleet.name, "journal")
    }

    /// Waits until the journal satisfies `ready`, while `child` runs.
    fn wait_journal(&self, child: &mut Child, what: &str, ready: impl Fn(&serde_json::Value) -> bool) {
        let start = Instant::now();
        loop {
            if self.journal().is_some_and(|j| ready(&j["rollout"])) {
                return;
            }
            assert!(
                child.try_wait().unwrap().is_none(),
                "the update ended before the journal on the target showed {what}"
            );
            assert!(start.elapsed() < Duration::from_secs(120), "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Like [`Mesh::agent_states`], once Docker's own health check has caught up (at most
    /// 20 s): a rollout's gate does not wait for that check (docs/updates.md), so right
    /// after `update` returns the last agent may still show `starting`.
    fn settled_agent_states(&self) -> (BTreeMap<String, (String, String, String)>, bool) {
        let start = Instant::now();
        loop {
            let states = self.agent_states();
            let starting = states.0.values().any(|(_, health, _)| health == "starting");
            if !starting || start.elapsed() > Duration::from_secs(20) {
                return states;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Image and health per agent container, and whether any kept-previous container is left.
    fn agent_states(&self) -> (BTreeMap<String, (String, String, String)>, bool) {
        let containers = self.fleet.containers();
        let leftovers = containers.keys().any(|n| n.ends_with("-rivetctl-prev") || n.ends_with("-rivetctl-next"));
        let states = self
            .agents()
            .into_iter()
            .map(|name| {
                let c = containers.get(&name).unwrap_or_else(|| panic!("{name} missing: {containers:#?}"));
                (name, (c.image.clone(), c.health.clone(), c.id.clone()))
            })
            .collect();
        (states, leftovers)
    }
}

fn in_state(rollout: &serde_json::Value, node: &str, states: &[&str]) -> bool {
    rollout["instances"].as_array().is_some_and(|all| {
        all.iter().any(|i| i["spec"]["node"] == node && states.contains(&i["state"].as_str().unwrap_or("")))
    })
}

/// Counts agents that are not running and healthy, every 50 ms, until stopped.
fn sampler(
    names: Vec<String>,
    deployment: String,
) -> (Arc<AtomicBool>, Arc<AtomicUsize>, std::thread::JoinHandle<usize>) {
    let stop = Arc::new(AtomicBool::new(false));
    let worst = Arc::new(AtomicUsize::new(0));
    let (stop2, worst2) = (stop.clone(), worst.clone());
    let handle = std::thread::spawn(move || {
        let mut samples = 0;
        while !stop2.load(Ordering::Relaxed) {
            let out = Command::new("docker")
                .args([
                    "ps",
                    "--filter",
                    &format!("label=io.rivetctl.deployment={deployment}"),
                    "--format",
                    "{{.Names}} {{.Status}}",
                ])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            let healthy = names
                .iter()
                .filter(|n| text.lines().any(|l| l.starts_with(&format!("{n} ")) && l.ends_with("(healthy)")))
                .count();
            worst2.fetch_max(names.len() - healthy, Ordering::Relaxed);
            samples += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
        samples
    });
    (stop, worst, handle)
}

#[test]
fn mesh_update_in_batches_then_a_failing_canary_is_rolled_back() {
    let mesh = Mesh::new("mesh");
    mesh.fleet.expect(&["infra", "up", "--yes"], 0);
    let (before, _) = mesh.agent_states();

    // A new revision, node by node, one agent at a time.
    mesh.bump("2.0.0");
    let dry = mesh.fleet.expect(&["update", "--mesh", "--dry-run"], 0);
    let text = String::from_utf8_lossy(&dry.stdout);
    assert!(
        text.contains("batch 1 (canary): n1/a1")
            && text.contains("batch 6: n3/c2")
            && text.contains("5 of 6 agents stay up"),
        "{text}"
    );
    let (stop, worst, sampling) = sampler(mesh.agents(), mesh.fleet.name.clone());
    let update = mesh.fleet.rivetctl(&["update", "--mesh"]);
    stop.store(true, Ordering::Relaxed);
    let samples = sampling.join().unwrap();
    assert_eq!(update.status.code(), Some(0), "{}", describe(&update));
    assert!(samples > 20, "the sampler ran {samples} times");
    assert!(
        worst.load(Ordering::Relaxed) <= 1,
        "{} agents were down at once (max_parallel 1)",
        worst.load(Ordering::Relaxed)
    );
    let (updated, leftovers) = mesh.settled_agent_states();
    assert!(!leftovers, "no -rivetctl-prev/-next container is left");
    for (name, (image, health, _)) in &updated {
        assert_eq!(health, "healthy", "{name}");
        assert_ne!(image, &before[name].0, "{name} runs the new image");
        let version =
            docker(&["inspect", "--format", "{{index .Config.Labels \"org.opencontainers.image.version\"}}", image]);
        assert_eq!(version.trim(), "2.0.0");
    }
    let table = String::from_utf8_lossy(&update.stdout);
    assert_eq!(table.matches(" done ").count(), 3, "{table}");

    // Back to the previous revision on one node, through the same gates.
    mesh.fleet.expect(&["rollback", "--node", "n2"], 0);
    let (after, _) = mesh.settled_agent_states();
    for (name, (image, health, _)) in &after {
        assert_eq!(health, "healthy", "{name}");
        let expected = if name.contains("-agent-b") { &before[name].0 } else { &updated[name].0 };
        assert_eq!(image, expected, "{name}");
    }

    // A revision whose agent fails its health check: the canary goes back, nothing else moves.
    std::fs::write(mesh.fleet.dir.path().join("containers/agent/FAIL_HEALTH"), "broken\n").unwrap();
    mesh.bump("3.0.0");
    let failed = mesh.fleet.rivetctl(&["update", "--mesh"]);
    assert_eq!(failed.status.code(), Some(3), "{}", describe(&failed));
    let table = String::from_utf8_lossy(&failed.stdout);
    assert!(table.lines().any(|l| l.starts_with("n1") && l.contains("rolled back")), "{table}");
    assert!(table.lines().any(|l| l.starts_with("n2") && l.contains("untouched")), "{table}");
    assert!(table.lines().any(|l| l.starts_with("n3") && l.contains("untouched")), "{table}");
    let (now, leftovers) = mesh.settled_agent_states();
    assert!(!leftovers);
    for (name, (image, health, id)) in &now {
        assert_eq!(health, "healthy", "{name}");
        assert_eq!(image, &after[name].0, "{name} is on the previous revision");
        if !name.ends_with("-a1") {
            assert_eq!(id, &after[name].2, "{name} was not touched");
        }
    }
    assert_eq!(mesh.journal().expect("the journal is on the target")["rollout"]["status"], "rolled_back");
}

#[test]
fn an_ssh_endpoint_lost_mid_rollout_is_resumed() {
    let mut mesh = Mesh::new("lost");
    mesh.fleet.expect(&["infra", "up", "--yes"], 0);
    mesh.bump("2.1.0");
    let mut update = mesh
        .fleet
        .command(&["update", "--mesh"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    mesh.wait_journal(&mut update, "n2 to finish", |r| {
        r["instances"]
            .as_array()
            .is_some_and(|all| all.iter().filter(|i| i["spec"]["node"] == "n2" && i["state"] == "done").count() == 2)
    });
    mesh.sshd[2].stop();
    let output = update.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("interrupted") && stderr.contains("n3") && stderr.contains("--resume"), "{stderr}");
    let journal = mesh.journal().expect("the journal is intact");
    assert_eq!(journal["rollout"]["status"], "interrupted");
    let refused = mesh.fleet.expect(&["update", "--mesh"], 1);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("update --resume"));
    // infra up would prune the kept previous containers the resume needs: it waits too.
    let refused = mesh.fleet.expect(&["infra", "up", "--yes"], 1);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("update --resume"));

    mesh.sshd[2].restart();
    let resumed = mesh.fleet.expect(&["update", "--resume"], 0);
    assert!(String::from_utf8_lossy(&resumed.stderr).contains("Resuming"), "{}", describe(&resumed));
    let (states, leftovers) = mesh.settled_agent_states();
    assert!(!leftovers);
    let images: std::collections::BTreeSet<&String> = states.values().map(|(image, _, _)| image).collect();
    assert_eq!(images.len(), 1, "every agent runs the same (new) image: {states:#?}");
    assert!(states.values().all(|(_, health, _)| health == "healthy"));
}

#[test]
fn kill_9_mid_rollout_then_resume_finishes_without_orphans() {
    let mesh = Mesh::new("kill");
    mesh.fleet.expect(&["infra", "up", "--yes"], 0);
    mesh.bump("2.2.0");
    let mut update = mesh.fleet.command(&["update", "--mesh"]).spawn().unwrap();
    mesh.wait_journal(&mut update, "an n2 agent in flight", |r| in_state(r, "n2", &["starting", "gating"]));
    update.kill().unwrap();
    update.wait().unwrap();
    let resumed = mesh.fleet.expect(&["update", "--resume"], 0);
    assert!(String::from_utf8_lossy(&resumed.stdout).contains("done"), "{}", describe(&resumed));
    let (states, leftovers) = mesh.settled_agent_states();
    assert!(!leftovers, "nothing orphaned: {:#?}", mesh.fleet.containers().keys().collect::<Vec<_>>());
    let images: std::collections::BTreeSet<&String> = states.values().map(|(image, _, _)| image).collect();
    assert_eq!(images.len(), 1, "{states:#?}");
    assert!(states.values().all(|(_, health, _)| health == "healthy"));
    assert_eq!(mesh.journal().expect("the journal is on the target")["rollout"]["status"], "succeeded");
}

#[test]
fn concurrent_updates_unknown_host_keys_and_mesh_json() {
    let mesh = Mesh::new("guard");
    mesh.fleet.expect(&["infra", "up", "--yes"], 0);
    mesh.bump("2.3.0");

    // A second update while one runs fails on the lock and names the holder.
    let mut first = mesh.fleet.command(&["update", "--mesh"]).spawn().unwrap();
    let start = Instant::now();
    while state::document(&mesh.fleet.name, "lock").is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(60) && first.try_wait().unwrap().is_none(),
            "the first update never showed a lock on the target"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = mesh.fleet.expect(&["update", "--mesh"], 1);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("is locked by `rivetctl update`") && stderr.contains(&format!("pid {}", first.id())),
        "{stderr}"
    );
    assert!(first.wait().unwrap().success());

    // mesh.json: an offline node is skipped and listed.
    let registry =
        r#"{"version": 1, "nodes": {"x": {"id": "x", "name": "n3", "status": "offline", "platform": "linux"}}}"#;
    std::fs::write(mesh.fleet.dir.path().join("mesh.json"), registry).unwrap();
    mesh.bump("2.4.0");
    let dry = mesh.fleet.expect(&["update", "--mesh", "--dry-run", "--mesh-file", "mesh.json"], 0);
    let text = String::from_utf8_lossy(&dry.stdout);
    assert!(text.contains("skipped node n3: offline") && !text.contains("n3/c1"), "{text}");

    // An unknown host key is refused with its fingerprint, and nothing happens.
    std::fs::write(mesh.fleet.dir.path().join("known_hosts"), "").unwrap();
    let refused = mesh.fleet.expect(&["update", "--mesh"], 1);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    let fingerprint = mesh.sshd[0].fingerprint(&mesh.sshd[0].host_key_pub());
    assert!(stderr.contains(&fingerprint), "{stderr}\nexpected {fingerprint}");
    assert!(stderr.contains("ssh-keyscan"), "{stderr}");
}
