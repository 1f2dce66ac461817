//! Benchmark: `rivetctl infra preview --out DIR` for a generated config with 1,000 agents,
//! against the live (empty for this deployment) Docker Engine, side by side with
//! `docker-compose -f <the rendered docker-compose.yaml> config -q` on the same file in the
//! same run. Reports the median wall time and peak RSS (from wait4) of each. Goal for
//! rivetctl: under 100 ms and under 20 MB.
//!
//! Run: `cargo bench -p rivetctl --bench preview`
//! Other sizes: `AGENTS=10000 cargo bench -p rivetctl --bench preview`; runs of each:
//! `RUNS=15` (rivetctl) and `COMPOSE_RUNS=3` (docker-compose takes seconds per run).

mod support;

use std::process::Command;

use support::{BenchFleet, Run, median, ms, require_docker, timed};

/// A positive whole number from the environment, or `default`.
fn setting(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(text) => text.parse().ok().filter(|n| *n > 0).unwrap_or_else(|| panic!("{name}={text}: expected a count")),
        Err(_) => default,
    }
}

/// Median wall time and median peak RSS of some runs, with their ranges.
struct Figures {
    wall_ms: f64,
    wall_range: (f64, f64),
    rss_mb: f64,
    rss_range: (f64, f64),
}

fn figures(runs: &[Run]) -> Figures {
    let mut walls: Vec<_> = runs.iter().map(|r| r.wall).collect();
    let mut rss: Vec<_> = runs.iter().map(|r| r.max_rss_kib).collect();
    let wall = median(&mut walls);
    let peak = median(&mut rss);
    let mb = |kib: i64| kib as f64 / 1024.0;
    Figures {
        wall_ms: ms(wall),
        wall_range: (ms(walls[0]), ms(walls[walls.len() - 1])),
        rss_mb: mb(peak),
        rss_range: (mb(rss[0]), mb(rss[rss.len() - 1])),
    }
}

fn main() {
    require_docker();
    let agents = setting("AGENTS", 1000);
    let runs = setting("RUNS", 15);
    let compose_runs = setting("COMPOSE_RUNS", 3);
    let fleet = BenchFleet::new("bench-preview", agents, "64m");
    // Outside the source tree: rendered files must not become build inputs.
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("rendered");
    // Warm the page cache and check the output once.
    let first = timed(fleet.command(&["infra", "preview", "--out", out.to_str().unwrap()]).env("NO_COLOR", "1"));
    let expected = format!("{agents} agents: container create");
    assert!(first.stdout.contains(&expected), "unexpected plan:\n{}", &first.stdout[..first.stdout.len().min(2000)]);
    let rivetctl: Vec<Run> =
        (0..runs).map(|_| timed(&mut fleet.command(&["infra", "preview", "--out", out.to_str().unwrap()]))).collect();
    let files = std::fs::read_dir(&out).unwrap().count();
    let compose_file = out.join("docker-compose.yaml");
    let compose_bytes = std::fs::metadata(&compose_file).unwrap().len();
    // The same file, read and validated by Docker Compose itself.
    let compose_command = || {
        let mut command = Command::new("docker-compose");
        command.arg("-f").arg(&compose_file).args(["config", "-q"]).current_dir(&out);
        command
    };
    let compose: Vec<Run> = (0..compose_runs).map(|_| timed(&mut compose_command())).collect();

    let ours = figures(&rivetctl);
    let theirs = figures(&compose);
    println!(
        "infra preview --out, {agents} agents: {runs} runs (+1 warm-up), {files} files written per run, docker-compose.yaml {:.2} MB",
        compose_bytes as f64 / 1e6
    );
    println!("{:<40} {:>14} {:>10}", "", "median wall", "peak RSS");
    let row = |name: &str, f: &Figures| {
        println!(
            "{name:<40} {:>11.1} ms {:>7.1} MB   (wall {:.1}–{:.1} ms, RSS {:.1}–{:.1} MB)",
            f.wall_ms, f.rss_mb, f.wall_range.0, f.wall_range.1, f.rss_range.0, f.rss_range.1
        );
    };
    row("rivetctl infra preview --out", &ours);
    let plural = if compose_runs == 1 { "" } else { "s" };
    row(&format!("docker-compose config -q ({compose_runs} run{plural})"), &theirs);
    println!(
        "{:<40} {:>14.3} {:>10.3}",
        "ratio rivetctl / docker-compose",
        ours.wall_ms / theirs.wall_ms,
        ours.rss_mb / theirs.rss_mb
    );
    println!("goal at 1,000 agents: rivetctl median < 100 ms and peak RSS < 20 MB");
}
