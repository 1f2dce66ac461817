//! `infra up`, `destroy`, `status` against the real Docker Engine, running the binary on a
//! fresh copy of the quickstart fleet per test.

mod support;

use std::time::{Duration, Instant};

use support::describe;
use support::docker::{TestFleet, docker};
use support::state;

const AGENTS: &[&str] = &["grok", "opus"];

fn ids(fleet: &TestFleet) -> Vec<(String, String)> {
    fleet.containers().into_iter().map(|(name, c)| (name, c.id)).collect()
}

#[test]
fn up_converges_is_idempotent_and_repairs_drift() {
    let fleet = TestFleet::new("idem");
    fleet.expect(&["infra", "up", "--yes"], 0);
    fleet.assert_healthy(AGENTS);
    let before = ids(&fleet);

    let again = fleet.expect(&["infra", "up"], 0);
    assert!(String::from_utf8_lossy(&again.stdout).contains("No changes"), "{}", describe(&again));
    assert_eq!(ids(&fleet), before, "a no-op up touches nothing");

    // Stopped by hand: drift in preview, repaired by up (same container).
    docker(&["stop", "-t", "1", &fleet.agent("grok")]);
    let preview = fleet.expect(&["infra", "preview", "--detailed-exitcode"], 2);
    let text = String::from_utf8_lossy(&preview.stdout);
    assert!(text.contains(&fleet.agent("grok")) && text.contains("(drift)"), "{text}");
    fleet.expect(&["infra", "up"], 0);
    fleet.assert_healthy(AGENTS);
    assert_eq!(ids(&fleet), before, "a stopped container is started again, not replaced");

    // Removed by hand: created again; nothing else changes.
    docker(&["rm", "-f", &fleet.agent("opus")]);
    fleet.expect(&["infra", "up"], 0);
    fleet.assert_healthy(AGENTS);
    let after = ids(&fleet);
    for (name, id) in &before {
        let now = after.iter().find(|(n, _)| n == name).map(|(_, id)| id);
        if *name == fleet.agent("opus") {
            assert_ne!(now, Some(id));
        } else {
            assert_eq!(now, Some(id), "{name} was touched");
        }
    }

    // Secrets reach containers as environment, never as labels.
    for name in fleet.containers().keys() {
        let labels = docker(&["inspect", "--format", "{{json .Config.Labels}}", name]);
        assert!(!labels.contains("quickstart-demo-password") && !labels.contains("sk-ant-"), "{name}: {labels}");
    }

    let status = fleet.expect(&["--output", "json", "status"], 0);
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&status.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 4, "datahub, migrate and two agents: {lines:#?}");
    for line in lines.iter().filter(|l| l["component"] == "agent") {
        assert_eq!(line["health"], "healthy");
        assert_eq!(line["drift"], "in sync");
        assert!(line["revision"].as_str().is_some_and(|r| !r.is_empty()));
    }
}

#[test]
fn changing_one_agent_recreates_only_that_agent() {
    let fleet = TestFleet::new("edit");
    fleet.expect(&["infra", "up", "--yes"], 0);
    let before = ids(&fleet);
    fleet.edit(|text| text.replace("LOG_LEVEL: info", "LOG_LEVEL: debug"));
    let output = fleet.expect(&["infra", "up"], 0);
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("env.LOG_LEVEL: \"info\" -> \"debug\""),
        "{}",
        describe(&output)
    );
    fleet.assert_healthy(AGENTS);
    let after = ids(&fleet);
    let changed: Vec<&String> =
        after.iter().filter(|(name, id)| !before.contains(&(name.clone(), id.clone()))).map(|(n, _)| n).collect();
    assert_eq!(changed, [&fleet.agent("opus")]);
    let env = docker(&["inspect", "--format", "{{range .Config.Env}}{{println .}}{{end}}", &fleet.agent("opus")]);
    assert!(env.lines().any(|l| l == "LOG_LEVEL=debug"), "{env}");
}

#[test]
fn removed_agents_are_pruned_only_after_confirmation() {
    let fleet = TestFleet::new("prune");
    fleet.expect(&["infra", "up", "--yes"], 0);
    fleet.edit(|text| text.replace("  grok: { provider: xai, model: grok-4 }\n", ""));
    let refused = fleet.expect(&["infra", "up"], 1);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("refusing") && stderr.contains(&fleet.agent("grok")) && stderr.contains("--yes"),
        "{stderr}"
    );
    assert!(fleet.containers().contains_key(&fleet.agent("grok")), "nothing changed without confirmation");
    fleet.expect(&["infra", "up", "--yes"], 0);
    assert!(!fleet.containers().contains_key(&fleet.agent("grok")));
    fleet.assert_healthy(&["opus"]);
}

#[test]
fn destroy_keeps_data_unless_volumes_is_given() {
    let fleet = TestFleet::new("destroy");
    fleet.expect(&["infra", "up", "--yes"], 0);
    let hub = format!("{}-datahub", fleet.name);
    docker(&["exec", &hub, "sh", "-c", "echo kept-across-destroy > /var/lib/postgresql/data/marker"]);
    let refused = fleet.expect(&["infra", "destroy"], 1);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--yes"));
    assert_eq!(fleet.containers().len(), 4, "refused: nothing removed");

    let output = fleet.expect(&["infra", "destroy", "--yes"], 0);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("Kept") && stdout.contains(&format!("{}-pgdata", fleet.name)), "{stdout}");
    assert!(fleet.containers().is_empty());
    assert!(fleet.list("network").is_empty());
    assert_eq!(fleet.list("volume").len(), 2);

    fleet.expect(&["infra", "up", "--yes"], 0);
    let marker = docker(&["exec", &hub, "cat", "/var/lib/postgresql/data/marker"]);
    assert_eq!(marker.trim(), "kept-across-destroy");

    fleet.expect(&["infra", "destroy", "--volumes", "--yes"], 0);
    assert!(fleet.list("volume").is_empty());
    assert!(fleet.containers().is_empty());
    let state = state::volume_names(&fleet.name);
    assert!(state.is_empty(), "destroy --volumes removes rivetctl's state on the target too: {state:?}");
}

#[test]
fn a_second_concurrent_up_fails_on_the_lock() {
    let fleet = TestFleet::new("lock");
    let mut first = fleet.command(&["infra", "up", "--yes"]).spawn().expect("spawn rivetctl");
    let started = Instant::now();
    while state::document(&fleet.name, "lock").is_none() {
        assert!(started.elapsed() < Duration::from_secs(60), "the first run never wrote a lock on the target");
        assert!(first.try_wait().unwrap().is_none(), "the first run ended before a lock showed on the target");
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = fleet.expect(&["infra", "up", "--yes"], 1);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("is locked by `rivetctl infra up`"), "{stderr}");
    assert!(stderr.contains(&format!("pid {}", first.id())), "{stderr}");
    assert!(first.wait().unwrap().success());
    assert_eq!(state::document(&fleet.name, "lock"), None, "the lock is released");
    fleet.assert_healthy(AGENTS);
}

#[test]
fn a_bad_config_touches_nothing() {
    let fleet = TestFleet::new("bad");
    fleet.edit(|text| text.replace("postgres_port: 0", "postgres_port: 70000"));
    let output = fleet.expect(&["infra", "up", "--yes"], 1);
    assert!(String::from_utf8_lossy(&output.stderr).contains("rivet.config.yaml:"), "{}", describe(&output));
    assert!(fleet.containers().is_empty());
    assert!(fleet.list("volume").is_empty());
    assert!(fleet.list("network").is_empty());
}

#[test]
fn docker_compose_accepts_the_rendered_file() {
    let fleet = TestFleet::new("compose");
    let out = fleet.dir.path().join("rendered");
    fleet.expect(&["infra", "preview", "--offline", "--out", out.to_str().unwrap()], 0);
    let check = std::process::Command::new("docker-compose")
        .args(["-f", "docker-compose.yaml", "config", "--quiet"])
        .current_dir(&out)
        .output()
        .expect("docker-compose (Debian package docker-compose) must be installed");
    assert!(check.status.success(), "docker-compose rejected the file: {}", String::from_utf8_lossy(&check.stderr));
    let compose = std::fs::read_to_string(out.join("docker-compose.yaml")).unwrap();
    assert!(!compose.contains("quickstart-demo-password"), "secrets stay out of the compose file");
    let secret = std::fs::metadata(out.join("agents.env")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(secret.permissions().mode() & 0o777, 0o600);
}

#[test]
fn a_failing_build_shows_the_end_of_its_log() {
    let fleet = TestFleet::new("buildfail");
    let dockerfile = fleet.dir.path().join("containers/agent/Dockerfile");
    let text = std::fs::read_to_string(&dockerfile).unwrap();
    std::fs::write(&dockerfile, text.replace("USER 10001:10001", "RUN echo about to fail && false\nUSER 10001:10001"))
        .unwrap();
    let output = fleet.expect(&["build"], 1);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("building rivetos-agent:") && stderr.contains("failed"), "{stderr}");
    assert!(stderr.contains("last ") && stderr.contains("lines of the build log"), "{stderr}");
    assert!(stderr.contains("about to fail"), "{stderr}");
    let log = stderr.lines().find_map(|l| l.strip_prefix("hint: the full build log is ")).expect("the log's path");
    assert!(std::fs::read_to_string(log.trim()).unwrap().contains("about to fail"));
    assert!(fleet.containers().is_empty(), "nothing was started");
}

#[test]
fn a_git_source_is_resolved_to_a_commit() {
    let fleet = TestFleet::new("git");
    let repo = fleet.dir.path().join("upstream");
    std::fs::create_dir_all(&repo).unwrap();
    for entry in ["containers", "package.json", ".dockerignore"] {
        let status =
            std::process::Command::new("cp").arg("-a").arg(fleet.dir.path().join(entry)).arg(&repo).status().unwrap();
        assert!(status.success());
    }
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git").args(args).current_dir(&repo).output().unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"]);
    git(&["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "upstream"]);
    let commit = git(&["rev-parse", "HEAD"]);
    let url = format!("file://{}", repo.display());
    fleet.edit(|text| {
        text.replace(
            "    path: .                       # this directory is the source tree",
            &format!("    git: {url}\n    ref: main"),
        )
    });
    let cache = fleet.dir.path().join("cache");
    let output = support::run(
        fleet.command(&["--output", "json", "infra", "preview", "--offline"]).env("XDG_CACHE_HOME", &cache),
    );
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let tree = cache.join("rivetctl/git");
    let checked_out: Vec<_> = std::fs::read_dir(&tree)
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path().join("trees")).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(checked_out, std::slice::from_ref(&commit), "the ref was resolved to its commit and checked out");
    let plan: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let image = plan["changes"].as_array().unwrap().iter().find(|c| c["component"] == "agent").unwrap()["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["field"] == "image")
        .unwrap()["after"]
        .clone();
    assert!(image.as_str().unwrap().starts_with("rivetos-agent:"), "{image}");
}

/// Removes a container the test started outside the deployment, pass or fail.
struct Foreign(String);

impl Drop for Foreign {
    fn drop(&mut self) {
        support::docker::docker_status(&["rm", "-f", &self.0]);
    }
}

#[test]
fn destroy_does_all_it_can_and_lists_what_is_left() {
    let fleet = TestFleet::new("leftover");
    fleet.expect(&["infra", "up", "--yes"], 0);
    let network = format!("{}-net", fleet.name);
    // A container the deployment does not own keeps the network busy ("has active endpoints").
    let foreign = Foreign(format!("{}-foreign", fleet.name));
    docker(&["run", "-d", "--name", &foreign.0, "--network", &network, "rivetos-base:busybox", "sleep", "300"]);
    assert_eq!(fleet.list("volume").len(), 2);

    let output = fleet.expect(&["infra", "destroy", "--volumes", "--yes"], 1);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(fleet.containers().is_empty(), "every container was removed: {}", describe(&output));
    assert!(fleet.list("volume").is_empty(), "the volumes asked for were deleted although the network was not");
    assert_eq!(fleet.list("network").len(), 1, "the busy network is still there");
    assert!(stderr.contains("could not be removed"), "{stderr}");
    assert!(stderr.contains(&format!("network {network} on node")) && stderr.contains("active endpoints"), "{stderr}");
    assert!(stderr.contains(&format!("docker network disconnect -f {network} {}`", foreign.0)), "{stderr}");

    drop(foreign);
    let again = fleet.expect(&["infra", "destroy", "--volumes", "--yes"], 0);
    assert!(fleet.list("network").is_empty(), "{}", describe(&again));
}

#[test]
fn state_an_earlier_rivetctl_kept_beside_the_config_moves_to_the_target_once() {
    let fleet = TestFleet::new("migrate");
    fleet.expect(&["infra", "up", "--yes"], 0);
    // An earlier rivetctl kept no state on the target (this one's first up wrote the
    // history there: take it away) but left in .rivetctl/<deployment>/ a rollback history
    // in the first format (node → images, oldest first) and a stale lock file nobody holds.
    state::remove_all(&fleet.name);
    let local = fleet.dir.path().join(".rivetctl").join(&fleet.name);
    std::fs::create_dir_all(local.join("locks")).unwrap();
    let history = local.join("images.json");
    std::fs::write(&history, r#"{"local": ["rivetos-agent:old-one", "rivetos-agent:old-two"]}"#).unwrap();
    std::fs::write(local.join("locks").join(format!("{}.lock", fleet.name)), "{}").unwrap();

    let first = fleet.expect(&["infra", "up", "--yes"], 0);
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(
        stderr.contains("Moved rollback history from") && stderr.contains("removed the stale local lock"),
        "{}",
        describe(&first)
    );
    assert!(!history.exists() && !local.join("locks").exists(), "the local copies are gone");
    let stored = state::json(&fleet.name, "history").expect("the history is on the target");
    let images: Vec<&str> = stored["nodes"]["local"]["deployed"]
        .as_array()
        .unwrap_or_else(|| panic!("{stored:#}"))
        .iter()
        .filter_map(|r| r["image"].as_str())
        .collect();
    assert_eq!(images, ["rivetos-agent:old-one", "rivetos-agent:old-two"], "{stored:#}");
    assert_eq!(state::document(&fleet.name, "lock"), None, "the no-op up released its lock");

    // The next run finds nothing to move.
    let second = fleet.expect(&["infra", "up", "--yes"], 0);
    assert!(!String::from_utf8_lossy(&second.stderr).contains("Moved"), "{}", describe(&second));
    // destroy --volumes takes the state with it.
    fleet.expect(&["infra", "destroy", "--volumes", "--yes"], 0);
    assert!(state::volume_names(&fleet.name).is_empty(), "{:?}", state::generations(&fleet.name));
}
