//! Benchmark: rollout wall time for 3 nodes × 4 agents with `max_parallel: 1`, each node
//! reached through its own sshd on loopback, against the sum of the per-batch floor: for
//! each batch (one agent), the time its old container took to stop, its new one to start,
//! and the new one to become healthy, all measured in the same run from the rollout's own
//! events (draining → starting → gating → done; `min_healthy_time: 0s`, so "done" is the
//! first passing health probe). The ratio shows what the rollout adds between batches.
//! Goal: under 1.2.
//!
//! Run: `cargo bench -p rivetctl --bench rollout`

mod support;

#[path = "../../targets/tests/sshd/mod.rs"]
mod sshd;

use std::collections::BTreeMap;
use std::time::Duration;

use support::{BenchFleet, median, require_docker, timed};

const RUNS: usize = 3;

fn main() {
    require_docker();
    // Declared first, dropped last: the fleet is destroyed (through the nodes' sshd) before
    // the sshd servers stop.
    let servers: Vec<sshd::Sshd> = (0..3).map(|_| sshd::Sshd::start()).collect();
    let fleet = BenchFleet::new("bench-rollout", 0, "32m");
    let public = std::fs::read_to_string(servers[0].dir().join("id_ed25519.pub")).unwrap();
    let mut known_hosts = String::new();
    let mut nodes = String::new();
    let mut agents = String::new();
    for (n, server) in servers.iter().enumerate() {
        let authorized = server.dir().join("authorized_keys");
        let text = std::fs::read_to_string(&authorized).unwrap() + &public;
        std::fs::write(&authorized, text).unwrap();
        known_hosts.push_str(&std::fs::read_to_string(server.known_hosts()).unwrap());
        let ids: Vec<String> = (0..4).map(|a| format!("n{n}a{a}")).collect();
        for id in &ids {
            agents.push_str(&format!("  {id}: {{provider: anthropic}}\n"));
        }
        let role = if n == 0 { "both" } else { "agents" };
        nodes.push_str(&format!(
            "    - {{name: n{n}, role: {role}, host: \"ssh://{}@127.0.0.1:{}\", address: 127.0.0.1, agents: [{}]}}\n",
            server.user(),
            server.port(),
            ids.join(", ")
        ));
    }
    std::fs::write(fleet.dir.path().join("known_hosts"), known_hosts).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = format!(
        "deployment:\n  target: docker\n  docker: {{project_name: {name}, network: {name}-net, postgres_port: {port}}}\n  resources:\n    agent: {{memory: 32m, cpus: 0.2}}\n    datahub: {{memory: 64m, cpus: 0.5}}\n  health: {{interval: 1s, timeout: 2s, start_period: 5s, deadline: 60s}}\n  update: {{max_parallel: 1, canary: 1, min_healthy_time: 0s, healthy_deadline: 30s, stop_grace_period: 2s, keep_images: 50}}\n  ssh: {{known_hosts: known_hosts, identity_file: {key}}}\n  nodes:\n{nodes}agents:\n{agents}",
        name = fleet.name,
        key = servers[0].client_key().display(),
    );
    std::fs::write(fleet.config(), config).unwrap();
    timed(&mut fleet.command(&["infra", "up", "--yes", "-q"]));

    let mut ratios = Vec::new();
    for run in 0..RUNS {
        let package = fleet.dir.path().join("package.json");
        let text = std::fs::read_to_string(&package).unwrap();
        let bumped = text.replace("\"version\": \"", &format!("\"version\": \"9.{run}."));
        std::fs::write(&package, bumped).unwrap();
        timed(&mut fleet.command(&["build", "-q"]));
        let update = timed(&mut fleet.command(&["--output", "json", "update", "--mesh"]));
        // Per agent: when it entered each state (ms since the rollout started).
        let mut at: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for line in update.stdout.lines() {
            let event: serde_json::Value = serde_json::from_str(line).unwrap();
            if event["type"] == "instance" {
                let agent = event["agent"].as_str().unwrap().to_string();
                let state = event["state"].as_str().unwrap().to_string();
                at.entry(agent).or_default().entry(state).or_insert(event["elapsed_ms"].as_u64().unwrap());
            }
        }
        assert_eq!(at.len(), 12, "12 agents rolled: {}", update.stdout);
        let mut floor = 0u64;
        let (mut first, mut last) = (u64::MAX, 0u64);
        for (agent, states) in &at {
            let (draining, starting, gating, done) =
                (states["draining"], states["starting"], states["gating"], states["done"]);
            floor += done - draining;
            first = first.min(draining);
            last = last.max(done);
            if run == 0 {
                println!(
                    "  {agent}: stop {} ms, start {} ms, healthy after {} ms",
                    starting - draining,
                    gating - starting,
                    done - gating
                );
            }
        }
        let wall = last - first;
        // The floor measured by hand on the same containers: docker stop, docker start, and
        // GET /health/live polled every 10 ms until it answers 200.
        let mut by_hand = 0u64;
        for agent in at.keys() {
            by_hand +=
                manual_cycle(&format!("{}-agent-{agent}", fleet.name), &format!("{}-net-{}", fleet.name, &agent[..2]));
        }
        let events_ratio = wall as f64 / floor as f64;
        let ratio = wall as f64 / by_hand as f64;
        println!(
            "run {run}: rollout wall {:.2} s; per-batch windows (stop+start+healthy, from the rollout's events) {:.2} s, ratio {events_ratio:.3}; floor by hand (docker stop + docker start + first 200) {:.2} s, ratio {ratio:.3}",
            wall as f64 / 1000.0,
            floor as f64 / 1000.0,
            by_hand as f64 / 1000.0
        );
        ratios.push(Duration::from_secs_f64(ratio));
    }
    println!("rollout of 3 nodes × 4 agents, max_parallel 1, {RUNS} runs");
    println!(
        "  ratio rollout wall / sum of per-batch floor (by hand): median {:.3} (goal < 1.2)",
        median(&mut ratios).as_secs_f64()
    );
}

/// Stops and starts one agent container by hand and waits for its first healthy answer;
/// returns the milliseconds it took.
fn manual_cycle(container: &str, network: &str) -> u64 {
    use std::io::{Read, Write};
    let started = std::time::Instant::now();
    let stop = std::process::Command::new("docker").args(["stop", "-t", "2", container]).output().unwrap();
    assert!(stop.status.success());
    let start = std::process::Command::new("docker").args(["start", container]).output().unwrap();
    assert!(start.status.success());
    let format = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
    let ip = String::from_utf8(
        std::process::Command::new("docker").args(["inspect", "--format", &format, container]).output().unwrap().stdout,
    )
    .unwrap();
    let address = format!("{}:3100", ip.trim());
    loop {
        let ok = std::net::TcpStream::connect_timeout(&address.parse().unwrap(), Duration::from_millis(200))
            .ok()
            .and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
                s.write_all(b"GET /health/live HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").ok()?;
                let mut reply = String::new();
                s.read_to_string(&mut reply).ok()?;
                Some(reply.starts_with("HTTP/1.1 200") || reply.starts_with("HTTP/1.0 200"))
            });
        if ok == Some(true) {
            return started.elapsed().as_millis() as u64;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{container} never answered");
        std::thread::sleep(Duration::from_millis(10));
    }
}
