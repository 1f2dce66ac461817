//! State on the target (issue 8): two working directories hold copies of the same config and
//! source, as two CI runners do. While an `update` runs in the first, the second is refused
//! by the lock on the target, which names the holder (`lock status` too); after `kill -9` of
//! the first, `update --resume` in the second finishes the rollout, taking over the dead
//! holder's lock at once (same host, process gone) instead of waiting for its TTL.
//!
//! The rollout's progress is read from the journal on the target (`support::state`), never
//! from either directory.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use support::docker::{TestFleet, docker, docker_status};
use support::{describe, mesh, rivetctl, run, state};

const AGENTS: &[&str] = &["a1", "a2", "a3"];

/// A second working directory: a copy of the fleet's directory, config and source, made
/// before anything ran (so it holds no `.rivetctl/` of the first).
struct Runner {
    dir: tempfile::TempDir,
}

impl Runner {
    fn copy_of(fleet: &TestFleet) -> Runner {
        let dir = tempfile::Builder::new().prefix("rivetctl-e2e-runner2-").tempdir().unwrap();
        let status = Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", fleet.dir.path().display()))
            .arg(dir.path())
            .status()
            .expect("cp");
        assert!(status.success(), "cp -a of the fleet's directory failed");
        assert!(!dir.path().join(".rivetctl").exists(), "the copy holds no local state");
        Runner { dir }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("rivet.config.yaml")
    }

    fn rivetctl(&self, args: &[&str]) -> std::process::Output {
        let mut command = rivetctl(self.dir.path());
        command.arg("-c").arg(self.config()).args(args);
        run(&mut command)
    }

    fn expect(&self, args: &[&str], code: i32) -> std::process::Output {
        let output = self.rivetctl(args);
        assert_eq!(
            output.status.code(),
            Some(code),
            "rivetctl {} in the second directory:\n{}",
            args.join(" "),
            describe(&output)
        );
        output
    }
}

/// Three agents on the local node, one at a time, each gate held for 5 s: an update takes
/// at least 15 s, so it is surely mid-rollout when the test acts.
fn write_config(fleet: &TestFleet) {
    let agents: String = AGENTS.iter().map(|id| format!("  {id}: {{provider: anthropic}}\n")).collect();
    let config = format!(
        "deployment:\n  target: docker\n  docker: {{project_name: {name}, network: {name}-net, postgres_port: 0}}\n  source: {{path: .}}\n  resources:\n    agent: {{memory: 32m, cpus: 0.2}}\n    datahub: {{memory: 64m, cpus: 0.5}}\n  health: {{interval: 1s, timeout: 2s, start_period: 5s, deadline: 60s}}\n  update: {{max_parallel: 1, canary: 1, min_healthy_time: 5s, healthy_deadline: 60s, stop_grace_period: 2s}}\nagents:\n{agents}",
        name = fleet.name,
    );
    std::fs::write(fleet.config(), config).unwrap();
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").expect("the host name").trim().to_string()
}

/// Whether `text` names an age: a duration (`12s`, `1m 3s`, `850ms`, `4 seconds`) followed by
/// `ago`, or after `for`.
fn names_an_age(text: &str) -> bool {
    const UNITS: &[&str] =
        &["ms", "s", "m", "h", "sec", "secs", "second", "seconds", "min", "mins", "minute", "minutes"];
    let words: Vec<&str> =
        text.split(|c: char| c.is_whitespace() || "(),;".contains(c)).filter(|w| !w.is_empty()).collect();
    let is_duration = |i: usize| -> Option<usize> {
        // One word (`12s`) or two (`12 seconds`); returns the index after it.
        let word = words.get(i)?;
        let digits = word.chars().take_while(|c| c.is_ascii_digit() || *c == '.').count();
        if digits == 0 {
            return None;
        }
        if UNITS.contains(&&word[digits..]) {
            return Some(i + 1);
        }
        if digits == word.len() && words.get(i + 1).is_some_and(|unit| UNITS.contains(unit)) {
            return Some(i + 2);
        }
        None
    };
    (0..words.len()).any(|i| {
        let after_for = i > 0 && words[i - 1] == "for" && is_duration(i).is_some();
        let mut end = i;
        // `1m 3s ago`: several duration words, then `ago`.
        while let Some(next) = is_duration(end) {
            end = next;
        }
        let before_ago = end > i && words.get(end) == Some(&"ago");
        after_for || before_ago
    })
}

/// Waits until the journal on the target satisfies `ready`, while `child` runs; a failure
/// says which state documents the target held and shows the child's stderr (`log`).
fn wait_journal(
    fleet: &TestFleet,
    child: &mut Child,
    log: &std::path::Path,
    what: &str,
    ready: impl Fn(&serde_json::Value) -> bool,
) {
    let start = Instant::now();
    loop {
        if state::json(&fleet.name, "journal").is_some_and(|j| ready(&j["rollout"])) {
            return;
        }
        let ended = child.try_wait().unwrap();
        let timed_out = start.elapsed() > Duration::from_secs(180);
        if ended.is_some() || timed_out {
            let _ = child.kill();
            panic!(
                "the journal on the target never showed {what} while the first update ran ({}); state documents on the target: {:?}; its stderr:\n{}",
                ended.map_or("timed out".to_string(), |status| format!("it ended: {status}")),
                state::documents(&fleet.name).keys().collect::<Vec<_>>(),
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn states(rollout: &serde_json::Value) -> Vec<String> {
    rollout["instances"]
        .as_array()
        .map(|all| all.iter().map(|i| i["state"].as_str().unwrap_or("").to_string()).collect())
        .unwrap_or_default()
}

fn version_of(image: &str) -> String {
    docker(&["inspect", "--format", "{{index .Config.Labels \"org.opencontainers.image.version\"}}", image])
        .trim()
        .to_string()
}

fn bump_both(fleet: &TestFleet, second: &Runner, version: &str) {
    mesh::bump(fleet, version);
    let (a, b) = (fleet.dir.path().join("package.json"), second.dir.path().join("package.json"));
    std::fs::copy(&a, &b).unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
}

#[test]
fn a_rollout_killed_in_one_directory_is_refused_then_resumed_from_another() {
    let fleet = TestFleet::new("elsewhere");
    write_config(&fleet);
    let second = Runner::copy_of(&fleet);
    fleet.expect(&["infra", "up", "--yes"], 0);
    fleet.assert_healthy(AGENTS);
    bump_both(&fleet, &second, "2.0.0");

    // The first runner's stderr goes to a file outside both directories, for messages.
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut first =
        fleet.command(&["update"]).stdout(std::process::Stdio::null()).stderr(log.reopen().unwrap()).spawn().unwrap();
    let pid = first.id();
    // The journal shows an instance `starting` from its Start until its gate ends.
    wait_journal(&fleet, &mut first, log.path(), "the canary started", |r| states(r).iter().any(|s| s == "starting"));
    assert!(state::document(&fleet.name, "lock").is_some(), "the running update holds a lock document on the target");

    // The second runner is refused by the same lock, which names its holder.
    let refused = second.expect(&["update"], 1);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    for (what, needle) in [
        ("the lock", "locked by".to_string()),
        ("the command", "rivetctl update".into()),
        ("the host", hostname()),
        ("the pid", format!("pid {pid}")),
    ] {
        assert!(stderr.contains(&needle), "the refusal names {what} ({needle:?}): {stderr}");
    }
    let status = second.expect(&["lock", "status"], 0);
    let text = String::from_utf8_lossy(&status.stdout);
    for (what, needle) in
        [("the command", "rivetctl update".to_string()), ("the host", hostname()), ("the pid", format!("pid {pid}"))]
    {
        assert!(text.contains(&needle), "lock status names {what} ({needle:?}): {}", describe(&status));
    }
    assert!(names_an_age(&text), "lock status names the lock's age (`12s ago` or `for 12s`): {}", describe(&status));
    assert!(first.try_wait().unwrap().is_none(), "the first update still ran while the second was refused");

    // kill -9 mid-rollout; the second directory finishes it.
    first.kill().unwrap();
    first.wait().unwrap();
    let journal = state::json(&fleet.name, "journal").expect("the journal survives kill -9");
    assert!(!states(&journal["rollout"]).iter().all(|s| s == "done"), "killed mid-rollout: {journal:#}");
    let started = Instant::now();
    let resumed = second.expect(&["update", "--resume"], 0);
    let took = started.elapsed();
    assert!(String::from_utf8_lossy(&resumed.stderr).contains("Resuming"), "{}", describe(&resumed));
    // Three agents at most, each ~5 s of gate: far below any TTL the lock could have.
    assert!(took < Duration::from_secs(120), "the resume took {took:?}: it waited for the dead holder's lock");

    let containers = fleet.containers();
    assert!(
        !containers.keys().any(|n| n.ends_with("-rivetctl-prev") || n.ends_with("-rivetctl-next")),
        "nothing is left half-replaced: {:#?}",
        containers.keys().collect::<Vec<_>>()
    );
    let start = Instant::now();
    loop {
        let containers = fleet.containers();
        let healthy = AGENTS
            .iter()
            .all(|id| containers.get(&fleet.agent(id)).is_some_and(|c| c.state == "running" && c.health == "healthy"));
        if healthy {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "every agent runs and is healthy after the resume: {containers:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    fleet.assert_healthy(AGENTS);
    for id in AGENTS {
        let image = &fleet.containers()[&fleet.agent(id)].image;
        assert_eq!(version_of(image), "2.0.0", "{id} runs the new revision");
    }
    let journal = state::json(&fleet.name, "journal").expect("the finished rollout's journal");
    assert_eq!(journal["rollout"]["status"], "succeeded", "{journal:#}");
    assert_eq!(state::document(&fleet.name, "lock"), None, "the resume released the lock it took over");
    let free = second.expect(&["lock", "status"], 0);
    assert!(String::from_utf8_lossy(&free.stdout).contains("is not locked"), "{}", describe(&free));
}

/// Removes a made-up deployment's state volumes, pass or fail.
struct StateVolumes(String);

impl Drop for StateVolumes {
    fn drop(&mut self) {
        state::remove_all(&self.0);
    }
}

fn create_volume(name: &str, labels: &[(&str, &str)]) {
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut args = vec!["volume", "create"];
    for label in &labels {
        args.extend(["--label", label.as_str()]);
    }
    args.push(name);
    docker(&args);
}

/// The test's own reader of the state format (`support::state`) against volumes made by hand:
/// the highest generation wins, chunked bodies are joined in order, a tombstone hides the
/// document. Runs today; it keeps the other tests' view of the target honest.
#[test]
fn the_state_reader_takes_the_highest_generation_joins_chunks_and_honours_tombstones() {
    let deployment = format!("rt-statefmt-{}", std::process::id());
    let _cleanup = StateVolumes(deployment.clone());
    assert!(state::documents(&deployment).is_empty());
    let of = ("io.rivetctl.state-of", deployment.as_str());
    let journal = ("io.rivetctl.state.document", "journal");
    create_volume(
        &format!("{deployment}-j1"),
        &[of, journal, ("io.rivetctl.state.generation", "1"), ("io.rivetctl.state.body", "{\"n\": 1}")],
    );
    // Generation 10 sorts after 9 as a number, not as text.
    create_volume(
        &format!("{deployment}-j10"),
        &[
            of,
            journal,
            ("io.rivetctl.state.generation", "10"),
            ("io.rivetctl.state.body.1", "\": 10}"),
            ("io.rivetctl.state.body.0", "{\"n"),
        ],
    );
    create_volume(
        &format!("{deployment}-j9"),
        &[of, journal, ("io.rivetctl.state.generation", "9"), ("io.rivetctl.state.body", "{\"n\": 9}")],
    );
    let lock = ("io.rivetctl.state.document", "lock");
    create_volume(
        &format!("{deployment}-l1"),
        &[of, lock, ("io.rivetctl.state.generation", "1"), ("io.rivetctl.state.body", "{}")],
    );
    create_volume(
        &format!("{deployment}-l2"),
        &[of, lock, ("io.rivetctl.state.generation", "2"), ("io.rivetctl.state.removed", "true")],
    );

    assert_eq!(
        state::json(&deployment, "journal"),
        Some(serde_json::json!({"n": 10})),
        "the highest generation, chunks joined"
    );
    assert_eq!(state::document(&deployment, "lock"), None, "a tombstone removes the lock");
    assert_eq!(state::generations(&deployment).len(), 5);
    let written = state::write(&deployment, "history", "{\"nodes\": {}}");
    assert_eq!(state::json(&deployment, "history"), Some(serde_json::json!({"nodes": {}})), "written by {written}");
    assert_eq!(state::documents(&deployment).keys().collect::<Vec<_>>(), ["history", "journal"]);

    state::remove_all(&deployment);
    assert!(state::volume_names(&deployment).is_empty(), "cleanup removes every state volume");
    assert!(!docker_status(&["volume", "inspect", &format!("{deployment}-j1")]).status.success());
}

#[test]
fn names_an_age_recognises_ages_not_timestamps() {
    for yes in [
        "locked by `rivetctl update` on h (pid 1) since 2026-12-02T07:35:01Z, 12s ago",
        "held for 3m 2s",
        "(4 seconds ago)",
        "1m 3s ago",
    ] {
        assert!(names_an_age(yes), "{yes}");
    }
    for no in ["locked by `rivetctl update` on h (pid 1) since 2026-12-02T07:35:01Z", "expires 2026-12-02T07:50:01Z"] {
        assert!(!names_an_age(no), "{no}");
    }
}
