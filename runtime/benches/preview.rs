//! Benchmark: `rivetctl infra preview --out DIR` for a generated config with 1,000 agents,
//! against the live (empty for this deployment) Docker Engine. Reports the median wall time
//! and peak RSS of several runs. Goal: under 100 ms and under 30 MB.
//!
//! Run: `cargo bench -p rivetctl --bench preview`

mod support;

use support::{BenchFleet, median, ms, require_docker, timed};

const RUNS: usize = 15;

fn main() {
    require_docker();
    let fleet = BenchFleet::new("bench-preview", 1000, "64m");
    // Outside the source tree: rendered files must not become build inputs.
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("rendered");
    // Warm the page cache and check the output once.
    let first = timed(fleet.command(&["infra", "preview", "--out", out.to_str().unwrap()]).env("NO_COLOR", "1"));
    assert!(
        first.stdout.contains("1000 agents: container create"),
        "unexpected plan:\n{}",
        &first.stdout[..first.stdout.len().min(2000)]
    );
    let mut walls = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..RUNS {
        let run = timed(&mut fleet.command(&["infra", "preview", "--out", out.to_str().unwrap()]));
        walls.push(run.wall);
        rss.push(run.max_rss_kib);
    }
    let wall = median(&mut walls);
    let peak = median(&mut rss);
    let files = std::fs::read_dir(&out).unwrap().count();
    println!("infra preview --out, 1000 agents, {RUNS} runs (+1 warm-up), {files} files written per run");
    println!(
        "  wall time: median {:.1} ms (min {:.1}, max {:.1}); goal < 100 ms",
        ms(wall),
        ms(walls[0]),
        ms(walls[RUNS - 1])
    );
    println!(
        "  peak RSS:  median {:.1} MB (min {:.1}, max {:.1}); goal < 30 MB",
        peak as f64 / 1024.0,
        rss[0] as f64 / 1024.0,
        rss[RUNS - 1] as f64 / 1024.0
    );
}
