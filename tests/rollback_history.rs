//! `rollback` after the sequence on a three-node mesh over real sshd on loopback: a
//! good update, a revision whose canary fails and is rolled back, a good update killed with
//! kill -9 after the first node and finished with `update --resume`. `rollback` must return
//! to the first good update's image, never to the rejected one; `rollback --list` shows the
//! candidates per node; a corrupt history is an error naming the file.
//!
//! The source tree is a git checkout edited without committing, so every update has the
//! same revision (`<commit>-dirty`), as in the issue: the history must key on images, and
//! the final table must say what changed.

mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use support::describe;
use support::docker::{TestFleet, docker, docker_status};
use support::mesh::{self, sshd};
use support::state;

/// One agent per node, in node order.
const NODES: &[mesh::Node<'static>] = &[("n1", "both", &["a1"]), ("n2", "agents", &["b1"]), ("n3", "agents", &["c1"])];

fn git(dir: &std::path::Path, args: &[&str]) {
    let output = Command::new("git")
        .args(["-c", "user.name=rivetctl-test", "-c", "user.email=test@rivetctl.invalid"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git");
    assert!(output.status.success(), "git {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr));
}

struct Mesh {
    fleet: TestFleet,
    _sshd: Vec<sshd::Sshd>,
    /// The source's commit: this test's agent images carry it in their revision label (and
    /// their tags, content hashes of the build inputs, are this test's own because of it).
    commit: String,
}

impl Drop for Mesh {
    /// Removes the deployment's containers (the fleet's own drop would come after this),
    /// then the agent images only this test built.
    fn drop(&mut self) {
        let filter = format!("label=io.rivetctl.deployment={}", self.fleet.name);
        let ids = docker_status(&["ps", "-aq", "--filter", &filter]);
        let ids: Vec<String> = String::from_utf8_lossy(&ids.stdout).split_whitespace().map(str::to_string).collect();
        if !ids.is_empty() {
            docker_status(&[&["rm", "-f", "-v"][..], &ids.iter().map(String::as_str).collect::<Vec<_>>()].concat());
        }
        for revision in [self.commit.clone(), format!("{}-dirty", self.commit)] {
            let label = format!("label=org.opencontainers.image.revision={revision}");
            let images = docker_status(&["images", "-q", "--filter", "reference=rivetos-agent", "--filter", &label]);
            for id in
                String::from_utf8_lossy(&images.stdout).split_whitespace().collect::<std::collections::BTreeSet<_>>()
            {
                docker_status(&["rmi", id]);
            }
        }
    }
}

impl Mesh {
    fn new(test: &str) -> Mesh {
        let fleet = TestFleet::new(test);
        let sshd = mesh::start(&fleet, NODES, "15s");
        git(fleet.dir.path(), &["init", "-q"]);
        git(fleet.dir.path(), &["add", "-A"]);
        git(fleet.dir.path(), &["commit", "-qm", "the source"]);
        let head = Command::new("git").args(["rev-parse", "HEAD"]).current_dir(fleet.dir.path()).output().unwrap();
        let commit = String::from_utf8_lossy(&head.stdout).trim().to_string();
        assert_eq!(commit.len(), 40, "git rev-parse HEAD: {commit}");
        Mesh { fleet, _sshd: sshd, commit }
    }

    /// A new version in package.json (not committed: the revision stays `<commit>-dirty`).
    fn bump(&self, version: &str) {
        mesh::bump(&self.fleet, version);
    }

    fn fail_health(&self, on: bool) {
        let knob = self.fleet.dir.path().join("containers/agent/FAIL_HEALTH");
        if on { std::fs::write(knob, "broken\n").unwrap() } else { std::fs::remove_file(knob).unwrap() }
    }

    /// Per agent container: (image, health).
    fn agents(&self) -> BTreeMap<String, (String, String)> {
        let containers = self.fleet.containers();
        NODES
            .iter()
            .flat_map(|(_, _, ids)| ids.iter())
            .map(|id| {
                let name = self.fleet.agent(id);
                let c = containers.get(&name).unwrap_or_else(|| panic!("{name} missing: {containers:#?}"));
                (name, (c.image.clone(), c.health.clone()))
            })
            .collect()
    }

    /// The one image every agent runs, after checking they are healthy.
    /// The engine's own health check of a container put back by a revert restarts at
    /// `starting`; it is given a few of its intervals to report `healthy`.
    fn image(&self) -> String {
        let start = Instant::now();
        loop {
            let agents = self.agents();
            let images: std::collections::BTreeSet<&String> = agents.values().map(|(image, _)| image).collect();
            assert_eq!(images.len(), 1, "every agent runs the same image: {agents:#?}");
            let healthy = agents.values().all(|(_, health)| health == "healthy");
            let starting = agents.values().any(|(_, health)| health == "starting");
            if healthy {
                return images.into_iter().next().unwrap().clone();
            }
            assert!(starting && start.elapsed() < Duration::from_secs(10), "{agents:#?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The rollout journal, as kept on the target.
    fn journal(&self) -> Option<serde_json::Value> {
        state::json(&self.fleet.name, "journal")
    }
}

fn version_of(image: &str) -> String {
    docker(&["inspect", "--format", "{{index .Config.Labels \"org.opencontainers.image.version\"}}", image])
        .trim()
        .to_string()
}

#[test]
fn rollback_after_a_rejected_canary_and_a_resumed_update_returns_to_the_last_good_revision() {
    let mesh = Mesh::new("history");
    mesh.fleet.expect(&["infra", "up", "--yes"], 0);
    let first = mesh.image();

    // A good update. The revision did not change (a dirty tree): the table says what did.
    mesh.bump("2.0.0");
    let update = mesh.fleet.expect(&["update", "--mesh"], 0);
    let good = mesh.image();
    assert_ne!(good, first);
    let table = String::from_utf8_lossy(&update.stdout);
    let tag = good.rsplit_once(':').unwrap().1;
    assert!(
        table.contains(&format!("version 0.0.0-quickstart → 2.0.0, image {first} → :{tag}")),
        "{}",
        describe(&update)
    );

    // A revision whose canary fails: rolled back. With --output json the error names the
    // result line, which is the last line on stdout.
    mesh.fail_health(true);
    mesh.bump("3.0.0");
    let failed = mesh.fleet.expect(&["update", "--mesh", "--output", "json"], 3);
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains("`\"type\":\"result\"` line on stdout") && !stderr.contains("table above"), "{stderr}");
    let stdout = String::from_utf8_lossy(&failed.stdout);
    let result: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(result["type"], "result");
    assert_eq!(result["nodes"][0]["result"], "rolled back", "{result}");
    assert_eq!(result["nodes"][0]["previous_image"], good.as_str(), "{result}");
    assert_eq!(result["nodes"][0]["new_image"], serde_json::Value::Null, "{result}");
    assert_eq!(mesh.image(), good, "the canary went back");
    let history = state::json(&mesh.fleet.name, "history").expect("the history is on the target");
    let bad = history["nodes"]["n1"]["rejected"][0]["image"].as_str().unwrap().to_string();
    assert_eq!(version_of(&bad), "3.0.0");

    // A good update killed with kill -9 after the first node, finished with --resume.
    mesh.fail_health(false);
    mesh.bump("4.0.0");
    let mut update = mesh.fleet.command(&["update", "--mesh"]).spawn().unwrap();
    let start = Instant::now();
    while !mesh.journal().is_some_and(|j| {
        j["rollout"]["instances"].as_array().is_some_and(|all| {
            all.iter().any(|i| i["spec"]["node"] == "n1" && i["state"] == "done" && i["spec"]["to_version"] == "4.0.0")
        })
    }) {
        assert!(
            update.try_wait().unwrap().is_none(),
            "the update ended before the journal on the target showed n1 done"
        );
        assert!(start.elapsed() < Duration::from_secs(120), "timed out waiting for n1");
        std::thread::sleep(Duration::from_millis(25));
    }
    update.kill().unwrap();
    update.wait().unwrap();
    let resumed = mesh.fleet.expect(&["update", "--resume"], 0);
    let newest = mesh.image();
    assert_eq!(version_of(&newest), "4.0.0", "{}", describe(&resumed));

    // The candidates per node: the newest is current, 3.0.0 rejected, 2.0.0 the target.
    let list = mesh.fleet.expect(&["rollback", "--list"], 0);
    let text = String::from_utf8_lossy(&list.stdout);
    for (node, _, _) in NODES {
        let line = |image: &str| {
            text.lines()
                .find(|l| l.starts_with(&format!("{node} ")) && l.contains(image))
                .unwrap_or_else(|| panic!("no line for {image} on {node}:\n{text}"))
                .to_string()
        };
        assert!(line(&newest).contains("4.0.0") && line(&newest).ends_with("current"), "{text}");
        assert!(line(&good).contains("2.0.0") && line(&good).ends_with("← rollback"), "{text}");
        assert!(line(&bad).contains("3.0.0") && line(&bad).contains("rejected: "), "{text}");
        assert!(!line(&first).contains("rollback"), "{text}");
    }
    let json = mesh.fleet.expect(&["rollback", "--list", "--output", "json"], 0);
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&json.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for (node, _, _) in NODES {
        let of_node: Vec<&serde_json::Value> = lines.iter().filter(|l| l["node"] == *node).collect();
        let targets: Vec<&str> =
            of_node.iter().filter(|l| l["rollback_target"] == true).map(|l| l["image"].as_str().unwrap()).collect();
        assert_eq!(targets, [good.as_str()], "{node}: {of_node:#?}");
        let bad_line = of_node.iter().find(|l| l["image"] == bad.as_str()).expect("the rejected image is listed");
        assert_eq!((bad_line["rejected"].as_bool(), bad_line["version"].as_str()), (Some(true), Some("3.0.0")));
        assert!(bad_line["revision"].as_str().is_some_and(|r| r.ends_with("-dirty")), "{bad_line}");
    }

    // rollback returns to the first good update's image, not the rejected one.
    let rollback = mesh.fleet.expect(&["rollback"], 0);
    assert_eq!(mesh.image(), good, "{}", describe(&rollback));
    assert_eq!(version_of(&good), "2.0.0");

    // --to may name the rejected image: a warning says why it was rejected; its gate fails
    // again and the node goes back.
    let forced = mesh.fleet.expect(&["rollback", "--node", "n3", "--to", bad.rsplit_once(':').unwrap().1], 3);
    let stderr = String::from_utf8_lossy(&forced.stderr);
    assert!(
        stderr.contains(&format!(
            "warning: {bad} was rejected on node n3 (its rollout was rolled back before it reached this node)"
        )),
        "{}",
        describe(&forced)
    );
    assert_eq!(mesh.image(), good);

    // A corrupt history stops the next command before it changes anything, naming the
    // document (written as another runner would: a new generation on the target).
    state::write(&mesh.fleet.name, "history", "{\"version\": 2, \"nodes\": {");
    let refused = mesh.fleet.expect(&["rollback"], 1);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("history") && stderr.contains("is unreadable"), "{stderr}");
    assert!(stderr.contains("hint:"), "it says what to do: {stderr}");
    assert_eq!(mesh.image(), good);
}
