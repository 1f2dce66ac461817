//! Benchmark: time from `rivetctl infra up` start to all-healthy for 10 agents (plus the
//! datahub and the migrate step), against the sum of the containers' own start + health
//! times (container created → first passing health check, or → exit for migrate), as a
//! ratio. Several runs; medians.
//!
//! Run: `cargo bench -p rivetctl --bench up_healthy`

mod support;

use std::process::Command;
use std::time::Duration;

use support::{BenchFleet, median, require_docker, timed};

const RUNS: usize = 5;

fn parse_time(text: &str) -> f64 {
    // RFC 3339 with nanoseconds, e.g. 2026-11-22T00:12:03.123456789Z, as seconds of the day.
    let time = text.trim().trim_matches('"');
    let t = time.split('T').nth(1).expect("a time");
    let t = t.trim_end_matches('Z');
    let mut parts = t.split(':');
    let h: f64 = parts.next().unwrap().parse().unwrap();
    let m: f64 = parts.next().unwrap().parse().unwrap();
    let s: f64 = parts.next().unwrap().parse().unwrap();
    h * 3600.0 + m * 60.0 + s
}

/// Seconds from creation to ready (first passing health check, or exit) of one container.
fn own_time(name: &str) -> f64 {
    let out = Command::new("docker").args(["inspect", name]).output().expect("docker");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let c = &doc[0];
    let created = parse_time(c["Created"].as_str().unwrap());
    let state = &c["State"];
    let ready = match state["Health"]["Log"].as_array() {
        Some(log) => log
            .iter()
            .find(|entry| entry["ExitCode"] == 0)
            .map(|entry| parse_time(entry["End"].as_str().unwrap()))
            .expect("a passing health check"),
        None => parse_time(state["FinishedAt"].as_str().unwrap()),
    };
    ready - created
}

fn main() {
    require_docker();
    let mut ratios = Vec::new();
    let mut walls = Vec::new();
    let mut sums = Vec::new();
    for run in 0..RUNS {
        let fleet = BenchFleet::new(&format!("bench-healthy-{run}"), 10, "32m");
        let built = timed(&mut fleet.command(&["build", "-q"]));
        let up = timed(&mut fleet.command(&["infra", "up", "--yes", "-q"]));
        let list = Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label=io.rivetctl.deployment={}", fleet.name),
                "--format",
                "{{.Names}}",
            ])
            .output()
            .unwrap();
        let names: Vec<String> = String::from_utf8_lossy(&list.stdout).lines().map(str::to_string).collect();
        assert_eq!(names.len(), 12, "10 agents, datahub, migrate: {names:?}");
        let sum: f64 = names.iter().map(|n| own_time(n)).sum();
        let wall = up.wall.as_secs_f64();
        println!(
            "run {run}: build check {:.2} s, up to all-healthy {wall:.2} s, sum of container times {sum:.2} s, ratio {:.2}",
            built.wall.as_secs_f64(),
            wall / sum
        );
        walls.push(Duration::from_secs_f64(wall));
        sums.push(Duration::from_secs_f64(sum));
        ratios.push(Duration::from_secs_f64(wall / sum));
    }
    println!("up to all-healthy, 10 agents + datahub + migrate, {RUNS} runs");
    println!("  wall time:                 median {:.2} s", median(&mut walls).as_secs_f64());
    println!("  sum of containers' times:  median {:.2} s", median(&mut sums).as_secs_f64());
    println!("  ratio wall / sum:          median {:.2}", median(&mut ratios).as_secs_f64());
}
