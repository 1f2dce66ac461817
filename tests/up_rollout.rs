//! `infra up` replaces running agents through the rollout engine, as `update` does (issue 8,
//! "one way to replace an agent"): six agents on one local node, `max_parallel: 1` and a
//! canary. A sampler polls the engine (the `docker` CLI, every ~20 ms, in a thread of its
//! own) while `infra up` runs, and the test checks what it saw: never more than one agent
//! down, never two containers of one agent running at once, the canary (the first agent)
//! replaced first. A failing revision through `infra up --yes` then exits 3 with the failed
//! agent back on its previous container, healthy, and the others untouched.

mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::describe;
use support::docker::{TestFleet, docker};
use support::mesh;

/// The agents, in config order: `a1` is the canary.
const AGENTS: &[&str] = &["a1", "a2", "a3", "a4", "a5", "a6"];

/// One agent container as `docker ps` shows it at one instant.
#[derive(Debug, Clone)]
struct Seen {
    id: String,
    name: String,
    running: bool,
    healthy: bool,
}

/// What the engine showed at one instant: the containers of each agent.
#[derive(Debug)]
struct Sample {
    at: Duration,
    agents: BTreeMap<String, Vec<Seen>>,
}

impl Sample {
    /// The agents with no running, healthy container.
    fn down(&self) -> Vec<&str> {
        AGENTS
            .iter()
            .copied()
            .filter(|id| !self.agents.get(*id).is_some_and(|all| all.iter().any(|c| c.running && c.healthy)))
            .collect()
    }

    /// One line per agent: its containers (short id, name, running or not, healthy or not).
    fn describe(&self) -> String {
        let mut text = format!("at {:?}:", self.at);
        for (id, all) in &self.agents {
            let containers: Vec<String> = all
                .iter()
                .map(|c| {
                    let state = if c.running { "running" } else { "not running" };
                    let health = if c.healthy { ", healthy" } else { "" };
                    format!("{} {} ({state}{health})", &c.id[..12.min(c.id.len())], c.name)
                })
                .collect();
            text.push_str(&format!("\n  {id}: {}", containers.join("; ")));
        }
        text
    }

    /// The agents with more than one running container.
    fn doubled(&self) -> Vec<&str> {
        self.agents
            .iter()
            .filter(|(_, all)| all.iter().filter(|c| c.running).count() > 1)
            .map(|(id, _)| id.as_str())
            .collect()
    }
}

/// One look at the engine: the deployment's agent containers by their `io.rivetctl.agent`
/// label (so `-rivetctl-prev`/`-next` containers count for their agent).
fn look(deployment: &str) -> BTreeMap<String, Vec<Seen>> {
    let output = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--no-trunc",
            "--filter",
            &format!("label=io.rivetctl.deployment={deployment}"),
            "--format",
            "{{.ID}}|{{.State}}|{{.Status}}|{{.Label \"io.rivetctl.agent\"}}|{{.Names}}",
        ])
        .output()
        .expect("the docker CLI");
    assert!(output.status.success(), "docker ps failed: {}", String::from_utf8_lossy(&output.stderr));
    let mut agents: BTreeMap<String, Vec<Seen>> = BTreeMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let parts: Vec<&str> = line.split('|').collect();
        assert_eq!(parts.len(), 5, "unexpected docker ps line {line:?}");
        if parts[3].is_empty() {
            continue; // the datahub and the migrate step
        }
        agents.entry(parts[3].to_string()).or_default().push(Seen {
            id: parts[0].to_string(),
            name: parts[4].to_string(),
            running: parts[1] == "running",
            healthy: parts[2].ends_with("(healthy)"),
        });
    }
    agents
}

/// Samples the engine every ~20 ms until stopped.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Sample>>,
}

impl Sampler {
    fn start(deployment: &str) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, deployment) = (stop.clone(), deployment.to_string());
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let mut samples = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                samples.push(Sample { at: started.elapsed(), agents: look(&deployment) });
                std::thread::sleep(Duration::from_millis(20));
            }
            samples
        });
        Sampler { stop, thread }
    }

    fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the sampler thread")
    }
}

/// What the samples of one run show.
struct Observed {
    samples: usize,
    /// The most agents down at one instant, and that instant.
    worst: (usize, String),
    /// Instants at which an agent had two running containers.
    doubled: Vec<String>,
    /// The agents in the order they were first touched: their original container stopped
    /// running, or another container of theirs ran.
    touched: Vec<String>,
    /// Instants at which more than one agent was first touched (replaced together).
    together: Vec<String>,
}

fn analyse(samples: &[Sample], original: &BTreeMap<String, String>) -> Observed {
    let mut worst = (0, String::from("no sample"));
    let mut doubled = Vec::new();
    let mut touched: Vec<String> = Vec::new();
    let mut together = Vec::new();
    for sample in samples {
        let down = sample.down();
        if down.len() > worst.0 || worst.1 == "no sample" {
            worst = (down.len(), format!("down {down:?} {}", sample.describe()));
        }
        let two = sample.doubled();
        if !two.is_empty() {
            doubled.push(format!("{two:?} {}", sample.describe()));
        }
        let mut now: Vec<String> = Vec::new();
        for id in AGENTS {
            let all = sample.agents.get(*id).map(Vec::as_slice).unwrap_or_default();
            let first = &original[*id];
            let original_runs = all.iter().any(|c| &c.id == first && c.running);
            let another_runs = all.iter().any(|c| &c.id != first && c.running);
            if (!original_runs || another_runs) && !touched.iter().any(|t| t == id) {
                now.push(id.to_string());
            }
        }
        if now.len() > 1 {
            together.push(format!("{now:?} {}", sample.describe()));
        }
        touched.extend(now);
    }
    Observed { samples: samples.len(), worst, doubled, touched, together }
}

/// Each agent's one container: (id, image), asserting it is running and healthy by Docker's
/// own check (given up to 20 s to catch up: a rollout's gate does not wait for it) and that
/// no kept-previous or prepared container is left.
fn settled(fleet: &TestFleet) -> BTreeMap<String, (String, String)> {
    let start = Instant::now();
    loop {
        let containers = fleet.containers();
        let leftovers: Vec<&String> =
            containers.keys().filter(|n| n.ends_with("-rivetctl-prev") || n.ends_with("-rivetctl-next")).collect();
        let agents: BTreeMap<String, _> =
            AGENTS.iter().map(|id| (id.to_string(), containers.get(&fleet.agent(id)).cloned())).collect();
        let ready = agents.values().all(|c| c.as_ref().is_some_and(|c| c.state == "running" && c.health == "healthy"));
        if ready && leftovers.is_empty() {
            return agents.into_iter().map(|(id, c)| (id, c.map(|c| (c.id, c.image)).unwrap())).collect();
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "not every agent is running and healthy on one container (leftovers {leftovers:?}): {agents:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn version_of(image: &str) -> String {
    docker(&["inspect", "--format", "{{index .Config.Labels \"org.opencontainers.image.version\"}}", image])
        .trim()
        .to_string()
}

/// Six agents on the local node; `max_parallel: 1` with a one-agent canary; a gate that
/// holds for 3 s (longer than Docker's 1 s health interval, so Docker's own check has
/// caught up before the next agent stops).
fn six_agent_fleet(test: &str) -> TestFleet {
    let fleet = TestFleet::new(test);
    let agents: String = AGENTS.iter().map(|id| format!("  {id}: {{provider: anthropic}}\n")).collect();
    let config = format!(
        "deployment:\n  target: docker\n  docker: {{project_name: {name}, network: {name}-net, postgres_port: 0}}\n  source: {{path: .}}\n  resources:\n    agent: {{memory: 32m, cpus: 0.2}}\n    datahub: {{memory: 64m, cpus: 0.5}}\n  health: {{interval: 1s, timeout: 2s, start_period: 5s, deadline: 60s}}\n  update: {{max_parallel: 1, canary: 1, min_healthy_time: 3s, healthy_deadline: 30s, stop_grace_period: 2s}}\nagents:\n{agents}",
        name = fleet.name,
    );
    std::fs::write(fleet.config(), config).unwrap();
    fleet
}

/// Makes the agent's entrypoint exit at once (a broken source revision).
fn break_entrypoint(fleet: &TestFleet) {
    let path = fleet.dir.path().join("containers/agent/bin/rivetos");
    let text = std::fs::read_to_string(&path).unwrap();
    let broken = text.replacen("run_agent() {\n", "run_agent() {\n    die \"broken on purpose by up_rollout\"\n", 1);
    assert_ne!(text, broken, "the entrypoint's run_agent was not found");
    std::fs::write(&path, broken).unwrap();
}

#[test]
fn up_after_a_source_change_replaces_agents_one_at_a_time_canary_first_and_rolls_back_a_failure() {
    let fleet = six_agent_fleet("uproll");
    fleet.expect(&["infra", "up", "--yes"], 0);
    let first = settled(&fleet);

    // A new revision: every agent's image changes.
    mesh::bump(&fleet, "2.0.0");
    let sampler = Sampler::start(&fleet.name);
    let up = fleet.rivetctl(&["infra", "up"]);
    let samples = sampler.finish();
    assert_eq!(up.status.code(), Some(0), "infra up after a source change: {}", describe(&up));
    let original: BTreeMap<String, String> = first.iter().map(|(id, (cid, _))| (id.clone(), cid.clone())).collect();
    let seen = analyse(&samples, &original);
    assert!(seen.samples > 50, "the sampler looked only {} times", seen.samples);
    assert!(
        seen.worst.0 <= 1,
        "{} agents were down at once with max_parallel 1 (worst instant {})",
        seen.worst.0,
        seen.worst.1
    );
    assert!(
        seen.doubled.is_empty(),
        "two containers of one agent ran at once (same bot tokens), {} times; first: {}",
        seen.doubled.len(),
        seen.doubled[0]
    );
    assert!(
        seen.together.is_empty(),
        "agents were replaced together, not one by one (first touched within one ~20 ms sample): {}",
        seen.together[0]
    );
    assert_eq!(seen.touched.first().map(String::as_str), Some("a1"), "the canary goes first: order {:?}", seen.touched);
    assert_eq!(seen.touched.len(), AGENTS.len(), "every agent was replaced: {:?}", seen.touched);
    let second = settled(&fleet);
    for id in AGENTS {
        let (container, image) = &second[*id];
        assert_ne!(container, &first[*id].0, "{id} has a new container");
        assert_eq!(version_of(image), "2.0.0", "{id} runs the new revision");
    }
    let again = fleet.expect(&["infra", "up"], 0);
    assert!(String::from_utf8_lossy(&again.stdout).contains("No changes"), "converged: {}", describe(&again));

    // A revision whose agent exits at once: the canary fails its gate and goes back to its
    // previous container; no other agent is touched; exit 3, as `update` does.
    break_entrypoint(&fleet);
    mesh::bump(&fleet, "3.0.0");
    let sampler = Sampler::start(&fleet.name);
    let failed = fleet.rivetctl(&["infra", "up", "--yes"]);
    let samples = sampler.finish();
    assert_eq!(failed.status.code(), Some(3), "a failing revision through infra up: {}", describe(&failed));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains("health gate failed after")
            && (stderr.contains("the container exited with code 1")
                || stderr.contains("the container exited and the engine restarted it")),
        "the gate names the exit: {}",
        describe(&failed)
    );
    assert!(stderr.contains("broken on purpose by up_rollout"), "the failed container's logs are shown: {stderr}");
    let all = format!("{}{}", String::from_utf8_lossy(&failed.stdout), stderr);
    assert!(all.contains("rolled back") || all.contains("rolled_back"), "it says what was rolled back: {all}");
    let original: BTreeMap<String, String> = second.iter().map(|(id, (cid, _))| (id.clone(), cid.clone())).collect();
    let seen = analyse(&samples, &original);
    assert!(seen.worst.0 <= 1, "{} agents were down at once during the failed up ({})", seen.worst.0, seen.worst.1);
    assert!(seen.doubled.is_empty(), "two containers of one agent ran at once: {}", seen.doubled[0]);
    assert!(seen.together.is_empty(), "agents were replaced together: {}", seen.together[0]);
    assert_eq!(seen.touched, ["a1"], "only the canary was touched before the rollout stopped");
    let third = settled(&fleet);
    assert_eq!(third, second, "every agent is back on (or still on) its previous container and image, healthy");
}
