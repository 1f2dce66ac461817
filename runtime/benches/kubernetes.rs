//! Benchmark: rivetctl's Kubernetes target against a real kube-apiserver v1.20 (with etcd and
//! the controller manager, `testkit::apiserver`), in two parts on one server:
//!
//! 1. render + plan of 1,000 agents: `infra preview --output json` against the live server,
//!    the namespace existing but empty (what a first preview sees; nothing is applied, so no
//!    kubelet runs), and the same with `--offline`; median wall time and peak RSS (wait4).
//! 2. a no-op `infra up` of a deployed 50-agent fleet (pods run by the test kubelet,
//!    `testkit::kubelet`, on the local Docker Engine): median wall time and the API calls of
//!    its final JSON line, against `kubectl get deploy,sts,svc,pdb,secret,configmap -o json`
//!    on the same namespace. Every no-op run must report `"changed": false` and leave every
//!    object's resourceVersion as it was (rivetctl's lock Lease and state ConfigMaps aside).
//!
//! Run: `cargo bench -p rivetctl --bench kubernetes` (several minutes: the first `up` starts
//! 50 pods). Needs what the Kubernetes end-to-end tests need (scripts/install-prerequisites.sh).

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use testkit::apiserver::{ApiServer, ApiServerOptions};
use testkit::kubelet::{Kubelet, KubeletOptions};

use support::{Run, binary, median, ms, repo, require_docker, timed};

const PREVIEW_AGENTS: usize = 1000;
const NOOP_AGENTS: usize = 50;
const RUNS: usize = 5;
/// The namespaced kinds rivetctl deploys (as the Kubernetes end-to-end tests list them).
const KINDS: &str = "networkpolicies,secrets,configmaps,persistentvolumeclaims,statefulsets,services,jobs,deployments,poddisruptionbudgets,leases";
/// What `kubectl` reads for the reference figure of part 2.
const KUBECTL_KINDS: &str = "deploy,sts,svc,pdb,secret,configmap";
/// How long the objects may take to stop changing after the first `up` (controllers writing
/// status) before the no-op runs start.
const SETTLE_DEADLINE: Duration = Duration::from_secs(120);

/// The bench's API server and a `kubectl` with its own discovery cache (not `~/.kube/cache`).
struct Cluster {
    server: ApiServer,
    kubectl_cache: tempfile::TempDir,
}

impl Cluster {
    fn kubectl_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("kubectl");
        command.arg("--kubeconfig").arg(self.server.kubeconfig()).arg("--cache-dir").arg(self.kubectl_cache.path());
        command.args(args);
        command
    }

    /// Runs `kubectl`; panics with its stderr when it fails.
    fn kubectl(&self, args: &[&str]) -> String {
        let output = self.kubectl_command(args).output().expect("kubectl on the PATH");
        assert!(output.status.success(), "kubectl {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    }

    /// `Kind/name → resourceVersion` of the namespace and of every object of [`KINDS`] in it.
    fn versions(&self, namespace: &str) -> BTreeMap<String, String> {
        let list: serde_json::Value =
            serde_json::from_str(&self.kubectl(&["get", KINDS, "-n", namespace, "-o", "json"])).unwrap();
        let mut versions: BTreeMap<String, String> =
            list["items"].as_array().unwrap().iter().map(|item| (key(item), resource_version(item))).collect();
        let namespace: serde_json::Value =
            serde_json::from_str(&self.kubectl(&["get", "namespace", namespace, "-o", "json"])).unwrap();
        versions.insert(key(&namespace), resource_version(&namespace));
        versions
    }
}

fn key(object: &serde_json::Value) -> String {
    format!("{}/{}", object["kind"].as_str().unwrap(), object["metadata"]["name"].as_str().unwrap())
}

fn resource_version(object: &serde_json::Value) -> String {
    object["metadata"]["resourceVersion"].as_str().unwrap().to_string()
}

/// A generated Kubernetes fleet over a copy of the quickstart source, on the bench's server.
/// (Not `support::BenchFleet`: its config is Docker's, and dropping it runs `infra destroy`
/// without this server's kubeconfig. Here the server is thrown away whole.)
struct KubeFleet {
    dir: tempfile::TempDir,
    name: String,
    namespace: String,
    kubeconfig: PathBuf,
}

impl KubeFleet {
    /// `agents` agents `agent0000…` in `namespace`; `deployment` holds the rest of the
    /// deployment section (resources, health, apply), indented by two spaces.
    fn new(name: &str, agents: usize, cluster: &Cluster, deployment: &str) -> KubeFleet {
        let dir = tempfile::Builder::new().prefix("rivetctl-bench-").tempdir().unwrap();
        let status =
            Command::new("cp").arg("-a").arg(repo().join("examples/quickstart/.")).arg(dir.path()).status().unwrap();
        assert!(status.success());
        let _ = std::fs::remove_dir_all(dir.path().join(".rivetctl"));
        let namespace = format!("ns-{name}");
        let mut config = format!(
            "deployment:\n  target: kubernetes\n  docker: {{project_name: {name}}}\n  kubernetes: {{namespace: {namespace}, create_namespace: true, storage_size: 1Gi}}\n{deployment}agents:\n"
        );
        for i in 0..agents {
            config.push_str(&format!("  agent{i:04}: {{provider: anthropic, model: claude-opus-4}}\n"));
        }
        std::fs::write(dir.path().join("rivet.config.yaml"), config).unwrap();
        KubeFleet { dir, name: name.to_string(), namespace, kubeconfig: cluster.server.kubeconfig() }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(binary());
        command.arg("-c").arg(self.dir.path().join("rivet.config.yaml")).args(args);
        command.env("NO_COLOR", "1").env("KUBECONFIG", &self.kubeconfig).env_remove("RIVET_KUBE_CONTEXT");
        command
    }

    /// Whether `Kind/name` is rivetctl's own state, which every locked run writes.
    fn is_state(&self, key: &str) -> bool {
        key == format!("Lease/{}-lock", self.name) || key.starts_with(&format!("ConfigMap/{}-state", self.name))
    }
}

/// The JSON document on the last line of a run's stdout.
fn last_json(run: &Run) -> serde_json::Value {
    let line = run.stdout.lines().last().unwrap_or_else(|| panic!("no output; stdout: {:?}", run.stdout));
    serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}"))
}

/// Median wall time and median peak RSS of some runs, with their ranges.
struct Figures {
    wall: Duration,
    walls: (Duration, Duration),
    rss_kib: i64,
    rss: (i64, i64),
}

fn figures(runs: &[Run]) -> Figures {
    let mut walls: Vec<_> = runs.iter().map(|r| r.wall).collect();
    let mut rss: Vec<_> = runs.iter().map(|r| r.max_rss_kib).collect();
    let (wall, rss_kib) = (median(&mut walls), median(&mut rss));
    Figures { wall, walls: (walls[0], walls[walls.len() - 1]), rss_kib, rss: (rss[0], rss[rss.len() - 1]) }
}

fn mb(kib: i64) -> f64 {
    kib as f64 / 1024.0
}

fn main() {
    require_docker();
    let cluster = Cluster {
        server: ApiServer::start(ApiServerOptions { controller_manager: true }),
        kubectl_cache: tempfile::Builder::new().prefix("rivetctl-bench-kubectl-").tempdir().unwrap(),
    };
    let version = cluster.kubectl(&["version", "-o", "json"]);
    let version: serde_json::Value = serde_json::from_str(&version).unwrap();
    println!("kube-apiserver {} (testkit, loopback)", version["serverVersion"]["gitVersion"].as_str().unwrap_or("?"));
    preview(&cluster);
    noop_up(&cluster);
}

/// Part 1: preview of 1,000 agents, live (empty namespace) and `--offline`.
fn preview(cluster: &Cluster) {
    let fleet = KubeFleet::new(
        "bench-kpreview",
        PREVIEW_AGENTS,
        cluster,
        "  resources:\n    agent: {memory: 64m, cpus: 0.1}\n",
    );
    cluster.kubectl(&["create", "namespace", &fleet.namespace]);
    let live = ["--output", "json", "infra", "preview", "--no-push"];
    let offline = ["--output", "json", "infra", "preview", "--no-push", "--offline"];
    // Warm the page cache (and kube-apiserver's caches) and check what is planned, once each.
    // Returns the plan and the size of the JSON document.
    let check = |args: &[&str], observed: &str| -> (serde_json::Value, usize) {
        let output = fleet.command(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "rivetctl {}: {:?}\n{stderr}", args.join(" "), output.status);
        let stdout = String::from_utf8(output.stdout).unwrap();
        let line = stdout.lines().last().unwrap_or_else(|| panic!("no plan; stderr:\n{stderr}"));
        let plan: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(plan["observed"], observed, "{}\n{stderr}", plan["summary"]);
        let deployments = plan["changes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["action"] == "create" && c["kind"] == "Deployment" && c["component"] == "agent")
            .count();
        assert_eq!(
            deployments, PREVIEW_AGENTS,
            "a first preview creates every agent's Deployment: {}\n{stderr}",
            plan["summary"]
        );
        (plan, line.len())
    };
    let (first, live_bytes) = check(&live, "live");
    let (_, offline_bytes) = check(&offline, "offline");
    let live_runs: Vec<Run> = (0..RUNS).map(|_| timed(&mut fleet.command(&live))).collect();
    let offline_runs: Vec<Run> = (0..RUNS).map(|_| timed(&mut fleet.command(&offline))).collect();
    let left = cluster.kubectl(&["get", KINDS, "-n", &fleet.namespace, "-o", "name"]);
    // The namespace's own ServiceAccount token and root CA ConfigMap come from the controllers.
    let written: Vec<&str> = left.lines().filter(|l| l.contains(&fleet.name)).collect();
    assert!(written.is_empty(), "preview wrote objects: {written:?}");

    let summary = &first["summary"];
    println!(
        "\ninfra preview --output json, {PREVIEW_AGENTS} agents, namespace existing and empty: {RUNS} runs each (+1 warm-up); plan: {} to create; JSON {:.1} MB live, {:.1} MB offline",
        summary["create"],
        live_bytes as f64 / 1e6,
        offline_bytes as f64 / 1e6
    );
    println!("{:<44} {:>14} {:>10}", "", "median wall", "peak RSS");
    let row = |name: &str, f: &Figures| {
        println!(
            "{name:<44} {:>11.1} ms {:>7.1} MB   (wall {:.1}–{:.1} ms, RSS {:.1}–{:.1} MB)",
            ms(f.wall),
            mb(f.rss_kib),
            ms(f.walls.0),
            ms(f.walls.1),
            mb(f.rss.0),
            mb(f.rss.1)
        );
    };
    let (ours, unconnected) = (figures(&live_runs), figures(&offline_runs));
    row("rivetctl infra preview (live)", &ours);
    row("rivetctl infra preview --offline", &unconnected);
    println!(
        "{:<44} {:>14.3} {:>10.3}",
        "ratio live / offline",
        ours.wall.as_secs_f64() / unconnected.wall.as_secs_f64(),
        mb(ours.rss_kib) / mb(unconnected.rss_kib)
    );
    match first.get("api_calls") {
        Some(calls) => println!("API calls of the live preview: {calls}"),
        None => println!("API calls of the live preview: not reported by `infra preview --output json`"),
    }
}

/// Part 2: no-op `infra up` of a deployed 50-agent fleet, against `kubectl get`.
fn noop_up(cluster: &Cluster) {
    let fleet = KubeFleet::new(
        "bench-knoop",
        NOOP_AGENTS,
        cluster,
        // Small pods, probes every 5 s (100 probes per interval would load 2 cores), and room
        // for 50 pods starting at once on a busy machine.
        "  resources:\n    agent: {memory: 64m, cpus: 0.1}\n    datahub: {memory: 256m, cpus: 0.5}\n  health: {interval: 5s, timeout: 5s, start_period: 60s, deadline: 20m}\n  apply: {max_parallel: 50}\n",
    );
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let kubelet = runtime.block_on(async {
        let options = KubeletOptions {
            node_name: "bench-node".into(),
            namespace: Some(fleet.namespace.clone()),
            ..KubeletOptions::default()
        };
        Kubelet::start(cluster.server.client().await, options).await.expect("the test kubelet starts")
    });
    // On a panic from here on, the kubelet's Drop removes its containers.
    let up = ["infra", "up", "--yes", "--no-push", "-q"];
    let first = timed(&mut fleet.command(&up));
    println!("\ninitial infra up of {NOOP_AGENTS} agents: {:.1} s", first.wall.as_secs_f64());
    let before = settled(cluster, &fleet);

    let noop = ["--output", "json", "infra", "up", "--yes", "--no-push", "-q"];
    let mut walls = Vec::new();
    let mut calls = Vec::new();
    for run_number in 1..=RUNS {
        let run = timed(&mut fleet.command(&noop));
        let result = last_json(&run);
        assert!(result["changed"] == false, "no-op run {run_number}: rivetctl reports changes: {result}");
        let changed = changed_objects(&fleet, &before, &cluster.versions(&fleet.namespace));
        assert!(
            changed.is_empty(),
            "no-op run {run_number} (\"changed\": false) left objects with a new resourceVersion:\n{}",
            describe_changes(cluster, &fleet, &changed)
        );
        walls.push(run.wall);
        calls.push(result["api_calls"].as_u64().expect("api_calls in the result line"));
    }
    let items =
        |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap()["items"].as_array().unwrap().len();
    let get = ["get", KUBECTL_KINDS, "-n", &fleet.namespace, "-o", "json"];
    let objects = items(&cluster.kubectl(&get));
    let baseline: Vec<Run> = (0..RUNS).map(|_| timed(&mut cluster.kubectl_command(&get))).collect();
    runtime.block_on(kubelet.shutdown());

    let (up, mut kubectl_walls) = (median(&mut walls), baseline.iter().map(|r| r.wall).collect::<Vec<_>>());
    let get_median = median(&mut kubectl_walls);
    let api = median(&mut calls);
    let api_range =
        if calls[0] == calls[RUNS - 1] { String::new() } else { format!(" ({}–{})", calls[0], calls[RUNS - 1]) };
    println!(
        "no-op infra up --output json, {NOOP_AGENTS} agents, {RUNS} runs each; every run \"changed\": false, no resourceVersion changed (Lease and state ConfigMaps aside)"
    );
    println!(
        "  rivetctl infra up:        median {:.1} ms (min {:.1}, max {:.1}); {api}{api_range} API calls",
        ms(up),
        ms(walls[0]),
        ms(walls[RUNS - 1])
    );
    println!(
        "  kubectl get {KUBECTL_KINDS} -o json ({objects} objects): median {:.1} ms (min {:.1}, max {:.1})",
        ms(get_median),
        ms(kubectl_walls[0]),
        ms(kubectl_walls[RUNS - 1])
    );
    println!("  ratio up / kubectl get:   {:.2}", up.as_secs_f64() / get_median.as_secs_f64());
}

/// The versions once two readings a few seconds apart agree (the controllers have finished
/// writing status after the first `up`).
fn settled(cluster: &Cluster, fleet: &KubeFleet) -> BTreeMap<String, String> {
    let give_up = Instant::now() + SETTLE_DEADLINE;
    let mut last = cluster.versions(&fleet.namespace);
    loop {
        std::thread::sleep(Duration::from_secs(3));
        let now = cluster.versions(&fleet.namespace);
        let moving = changed_objects(fleet, &last, &now);
        if moving.is_empty() {
            return now;
        }
        assert!(
            Instant::now() < give_up,
            "objects still changing {} s after the first up:\n{}",
            SETTLE_DEADLINE.as_secs(),
            describe_changes(cluster, fleet, &moving)
        );
        last = now;
    }
}

/// The objects (not rivetctl's state) whose resourceVersion differs between two readings,
/// with both versions; `-` for an object that is not there.
fn changed_objects(
    fleet: &KubeFleet,
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> Vec<(String, String, String)> {
    let missing = "-".to_string();
    let keys: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter(|key| !fleet.is_state(key))
        .filter_map(|key| {
            let (was, is) = (before.get(key).unwrap_or(&missing), after.get(key).unwrap_or(&missing));
            (was != is).then(|| (key.clone(), was.clone(), is.clone()))
        })
        .collect()
}

/// One line per changed object, with who last wrote it (its managedFields).
fn describe_changes(cluster: &Cluster, fleet: &KubeFleet, changed: &[(String, String, String)]) -> String {
    let mut text = String::new();
    for (key, was, is) in changed {
        text.push_str(&format!("  {key}: resourceVersion {was} -> {is}"));
        let (kind, name) = key.split_once('/').unwrap();
        let output = cluster.kubectl_command(&["get", kind, name, "-n", &fleet.namespace, "-o", "json"]).output();
        if let Ok(output) = output
            && let Ok(object) = serde_json::from_slice::<serde_json::Value>(&output.stdout)
        {
            let writers: Vec<String> = object["metadata"]["managedFields"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| {
                    let sub = m["subresource"].as_str().map(|s| format!(" {s}")).unwrap_or_default();
                    format!("{} {}{sub} at {}", m["manager"], m["operation"], m["time"])
                })
                .collect();
            text.push_str(&format!("; managedFields: {}", writers.join(", ")));
        }
        text.push('\n');
    }
    text
}
