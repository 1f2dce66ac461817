//! Benchmark: planning a Proxmox VE fleet of 200 agents over 5 nodes (pve1 holding the datahub
//! and agents, pve2–pve5 agents), with the release `rivetctl` against the testkit's fake
//! Proxmox VE API (HTTPS, every request checked against the official schema), whose
//! containers are Docker stand-ins with a real sshd (as in the tests):
//!
//! 1. `infra preview --output json --offline`: lowering and planning alone;
//! 2. `infra preview --output json` against the empty cluster (what a first preview does:
//!    version, nodes, guests, next id);
//! 3. the same once the fleet is deployed (`infra up` first: six containers, PostgreSQL in
//!    the datahub's, 200 agents provisioned from the quickstart's source): every container's
//!    config read and compared, each running container's services read over SSH, a no-op plan.
//!
//! Median wall time and peak RSS (wait4) of `RUNS` runs each, after a warm-up.
//!
//! Run: `cargo bench -p rivetctl --bench proxmox` (`RUNS=25` for more runs).

mod support;

use std::process::Command;
use std::time::Duration;

use std::sync::Arc;

use support::{Run, binary, median, ms, timed};
use testkit::proxmox::standin::DockerStandins;
use testkit::proxmox::{FakePve, Options, Runtime};

const AGENTS: usize = 200;
const NODES: usize = 5;

fn runs() -> usize {
    std::env::var("RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(15)
}

/// A free port on `ip` a moment ago.
fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap().port()
}

/// The first of `count` ports in a row that are free now.
fn free_ports(count: u16) -> u16 {
    loop {
        let first = free_port("0.0.0.0");
        if first < 65535 - count && (1..count).all(|i| std::net::TcpListener::bind(("0.0.0.0", first + i)).is_ok()) {
            return first;
        }
    }
}

/// How the bench's containers are reached.
struct Reach {
    subnet: String,
    ssh_port: u16,
    health_port: u16,
    key: std::path::PathBuf,
    public: String,
}

/// The generated config, pointed at the fake.
fn config(pve: &FakePve, reach: &Reach) -> String {
    let mut text = format!(
        "deployment:\n  target: proxmox\n  docker: {{project_name: bench}}\n  source: {{path: .}}\n  ssh: {{identity_file: {key}}}\n  health: {{port: {health}, interval: 2s, timeout: 2s, start_period: 5s, deadline: 120s}}\n  update: {{min_healthy_time: 1s}}\n  apply: {{max_parallel: 16}}\n  proxmox:\n    api_url: {url}\n    token_id: \"{token}\"\n    token_secret: ${{PVE_TOKEN_SECRET}}\n    fingerprint: \"{pin}\"\n    ssh_port: {ssh_port}\n    service_manager: runit\n    ssh_public_keys: \"{public}\"\n    network: {{ bridge: vmbr0, subnet: {subnet}.0/24, gateway: {subnet}.1 }}\n    nodes:\n",
        key = reach.key.display(),
        health = reach.health_port,
        url = pve.url(),
        token = pve.token_id(),
        pin = pve.fingerprint(),
        ssh_port = reach.ssh_port,
        public = reach.public,
        subnet = reach.subnet,
    );
    for n in 1..=NODES {
        let role = if n == 1 { "both" } else { "agents" };
        text.push_str(&format!("      - {{ name: pve{n}, role: {role}, ctid_start: {} }}\n", n * 100 + 1000));
    }
    text.push_str("agents:\n");
    for i in 0..AGENTS {
        text.push_str(&format!("  agent{i:04}: {{provider: anthropic, model: claude-opus-4}}\n"));
    }
    text
}

fn measure(label: &str, runs: usize, command: &dyn Fn() -> Command) -> (Duration, i64) {
    timed(&mut command());
    let mut results: Vec<Run> = (0..runs).map(|_| timed(&mut command())).collect();
    let mut walls: Vec<Duration> = results.iter().map(|r| r.wall).collect();
    let mut rss: Vec<i64> = results.iter().map(|r| r.max_rss_kib).collect();
    let wall = median(&mut walls);
    let peak = median(&mut rss);
    let (low, high) = (walls[0], walls[walls.len() - 1]);
    println!(
        "{label:<44} median {:>8.1} ms ({:.1}–{:.1})  peak RSS {:>6.1} MB",
        ms(wall),
        ms(low),
        ms(high),
        peak as f64 / 1024.0
    );
    results.clear();
    (wall, peak)
}

fn main() {
    let subnet = format!("127.97.{}", std::process::id() % 250);
    let ssh_port = free_port(&format!("{subnet}.1"));
    let standins = Arc::new(DockerStandins::new(&format!("bench{}", std::process::id()), ssh_port).expect("stand-ins"));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let nodes: Vec<String> = (1..=NODES).map(|n| format!("pve{n}")).collect();
    let shared: Arc<dyn Runtime> = standins.clone();
    let options = Options { nodes, task_duration: Duration::from_millis(10), runtime: Some(shared) };
    let pve = runtime.block_on(FakePve::start(options)).expect("the fake PVE API starts");
    let dir = tempfile::Builder::new().prefix("rivetctl-bench-pve-").tempdir().unwrap();
    support::copy_quickstart(dir.path());
    let (key, public) = testkit::proxmox::raw::keypair(dir.path(), "id_ed25519");
    let reach = Reach { subnet, ssh_port, health_port: free_ports(AGENTS as u16), key, public };
    std::fs::write(dir.path().join("rivet.config.yaml"), config(&pve, &reach)).unwrap();
    std::fs::write(
        dir.path().join(".env"),
        format!("PVE_TOKEN_SECRET={}\nPOSTGRES_PASSWORD=bench\n", pve.token_secret()),
    )
    .unwrap();
    let command = |args: &[&str]| {
        let mut command = Command::new(binary());
        command.current_dir(dir.path()).arg("-c").arg(dir.path().join("rivet.config.yaml")).args(args);
        command.env("NO_COLOR", "1");
        command
    };
    let runs = runs();
    println!("Proxmox VE plan, {AGENTS} agents over {NODES} nodes, {runs} runs each (fake PVE API on loopback)");
    measure("preview --offline", runs, &|| command(&["--output", "json", "infra", "preview", "--offline"]));
    let before = pve.requests().len();
    measure("preview, empty cluster", runs, &|| command(&["--output", "json", "infra", "preview"]));
    let per_run = (pve.requests().len() - before) / (runs + 1);
    println!("  API requests per preview: {per_run}");
    let up = timed(&mut command(&["infra", "up", "--yes"]));
    assert_eq!(up.code, 0, "infra up failed");
    println!("infra up (6 containers, PostgreSQL, {AGENTS} agents provisioned over SSH): {:.1} ms", ms(up.wall));
    let before = pve.requests().len();
    measure("preview, fleet deployed (no-op plan)", runs, &|| command(&["--output", "json", "infra", "preview"]));
    println!("  API requests per preview: {}", (pve.requests().len() - before) / (runs + 1));
    let writes = pve.requests()[before..].iter().filter(|r| r.is_write()).count();
    assert_eq!(writes, 0, "preview writes nothing");
    let down = timed(&mut command(&["infra", "destroy", "--yes", "--volumes"]));
    println!("infra destroy --volumes: {:.1} ms", ms(down.wall));
}
