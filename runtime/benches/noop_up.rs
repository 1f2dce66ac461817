//! Benchmark: a no-op `rivetctl infra up` on a deployed 50-agent fleet: median wall time and
//! Docker API calls, against `docker ps -a --filter label=<ownership label>` on the same
//! fleet. Goal: ratio under 3.
//!
//! Run: `cargo bench -p rivetctl --bench noop_up`

mod support;

use std::process::Command;

use support::{BenchFleet, median, ms, require_docker, timed};

const RUNS: usize = 11;

fn main() {
    require_docker();
    let fleet = BenchFleet::new("bench-noop", 50, "32m");
    let first = timed(&mut fleet.command(&["infra", "up", "--yes", "-q"]));
    println!("initial up of 50 agents: {:.1} s", first.wall.as_secs_f64());
    let mut walls = Vec::new();
    let mut calls = Vec::new();
    for _ in 0..RUNS {
        let run = timed(&mut fleet.command(&["--output", "json", "infra", "up", "-q"]));
        let result: serde_json::Value =
            serde_json::from_str(run.stdout.lines().last().expect("a result line")).unwrap();
        assert_eq!(result["changed"], false, "the fleet drifted between runs: {result}");
        walls.push(run.wall);
        calls.push(result["api_calls"].as_u64().unwrap());
    }
    let filter = format!("label=io.rivetctl.deployment={}", fleet.name);
    let mut baseline = Vec::new();
    for _ in 0..RUNS {
        let run = timed(Command::new("docker").args(["ps", "-a", "--filter", &filter]));
        assert_eq!(run.stdout.lines().count(), 53, "50 agents, datahub, migrate and a header line");
        baseline.push(run.wall);
    }
    let up = median(&mut walls);
    let ps = median(&mut baseline);
    let api = median(&mut calls);
    println!("no-op infra up, 50 agents, {RUNS} runs each");
    println!(
        "  rivetctl infra up:        median {:.1} ms (min {:.1}, max {:.1}); {api} Docker API calls",
        ms(up),
        ms(walls[0]),
        ms(walls[RUNS - 1])
    );
    println!(
        "  docker ps -a --filter:    median {:.1} ms (min {:.1}, max {:.1})",
        ms(ps),
        ms(baseline[0]),
        ms(baseline[RUNS - 1])
    );
    println!("  ratio up / docker ps:     {:.2} (goal < 3)", up.as_secs_f64() / ps.as_secs_f64());
}
