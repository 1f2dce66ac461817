//! `rivetctl infra preview|up|destroy` on the Proxmox VE target, through the binary, against
//! the fake Proxmox VE API of the testkit (every request checked against the official
//! schema, tasks with UPIDs and logs, injected failures). Its containers are Docker
//! stand-ins with a real sshd on their loopback addresses, so that the agents' services
//! are provisioned for real (tests/proxmox_update.rs covers those); the assertions here are
//! about the API.

mod support;

use std::collections::BTreeMap;
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use support::{describe, rivetctl, run};
use testkit::proxmox::standin::DockerStandins;
use testkit::proxmox::{FakePve, Logged, Options, Runtime};

/// A fleet on the fake: pve1 (datahub and agents, vmids from 310), pve2 (agents, vmids
/// from the cluster), a loopback subnet of its own, the token secret in `.env`, the source
/// tree of examples/quickstart.
struct Fleet {
    dir: tempfile::TempDir,
    pve: FakePve,
    /// `127.a.b`: the containers' subnet without its last part.
    subnet: String,
    ssh_port: u16,
    health_port: u16,
    key: std::path::PathBuf,
    public: String,
    _standins: Option<Arc<DockerStandins>>,
    // Last: the fake's threads serve while the test runs.
    _runtime: tokio::runtime::Runtime,
}

const NODES: &str = "      - { name: pve1, host: 10.0.0.11, role: both, ctid_start: 310 }\n      - { name: pve2, host: 10.0.0.12, role: agents }\n";

/// Unique per test of this binary: its own subnet and stand-in label.
static COUNTER: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

impl Fleet {
    /// With stand-ins: containers that start are reachable over SSH.
    fn new() -> Fleet {
        Fleet::start(true)
    }

    /// Without stand-ins: the API only (nothing may provision agents).
    fn api_only() -> Fleet {
        Fleet::start(false)
    }

    fn start(standins: bool) -> Fleet {
        support::base_image::ensure_base_image();
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let subnet = format!("127.{}.{}", 100 + n, std::process::id() % 250);
        let ssh_port = support::pve::free_port_on(&format!("{subnet}.1"));
        let standins = standins.then(|| {
            Arc::new(DockerStandins::new(&format!("pvetest{n}-{}", std::process::id()), ssh_port).expect("stand-ins"))
        });
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let shared: Option<Arc<dyn Runtime>> = standins.clone().map(|s| s as Arc<dyn Runtime>);
        let options = Options { task_duration: Duration::from_millis(30), runtime: shared, ..Options::default() };
        let pve =
            runtime.block_on(FakePve::start(options)).unwrap_or_else(|e| panic!("the fake PVE API starts: {e:#}"));
        let dir = tempfile::Builder::new().prefix("rivetctl-pve-").tempdir().unwrap();
        support::docker::copy_tree(&support::repo().join("examples/quickstart"), dir.path());
        let (key, public) = testkit::proxmox::raw::keypair(dir.path(), "id_ed25519");
        let health_port = support::pve::free_ports(3);
        let fleet =
            Fleet { dir, pve, subnet, ssh_port, health_port, key, public, _standins: standins, _runtime: runtime };
        fleet.write(NODES, 2048, 8);
        std::fs::write(
            fleet.dir.path().join(".env"),
            format!("PVE_TOKEN_SECRET={}\nPOSTGRES_PASSWORD=pg-secret-value\n", fleet.pve.token_secret()),
        )
        .unwrap();
        // A secret file readable by others is what doctor reports; this one is not.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(fleet.dir.path().join(".env"), std::fs::Permissions::from_mode(0o600)).unwrap();
        fleet
    }

    fn write(&self, nodes: &str, memory: u32, rootfs: u32) {
        let config = format!(
            "deployment:\n  target: proxmox\n  docker: {{project_name: pvetest}}\n  source: {{path: .}}\n  ssh: {{identity_file: {key}}}\n  health: {{port: {health}, interval: 2s, timeout: 2s, start_period: 5s, deadline: 60s}}\n  update: {{min_healthy_time: 1s, stop_grace_period: 5s}}\n  proxmox:\n    api_url: {url}\n    token_id: \"{token}\"\n    token_secret: ${{PVE_TOKEN_SECRET}}\n    fingerprint: \"{pin}\"\n    ssh_port: {ssh_port}\n    service_manager: runit\n    ssh_public_keys: \"{public}\"\n    memory_mb: {memory}\n    rootfs_gb: {rootfs}\n    nodes:\n{nodes}    network: {{ bridge: vmbr0, subnet: {subnet}.0/24, gateway: {subnet}.1 }}\nagents:\n  opus: {{ provider: anthropic }}\n  grok: {{ provider: xai }}\n  gemini: {{ provider: google }}\n",
            key = self.key.display(),
            health = self.health_port,
            url = self.pve.url(),
            token = self.pve.token_id(),
            pin = self.pve.fingerprint(),
            ssh_port = self.ssh_port,
            public = self.public,
            subnet = self.subnet,
        );
        std::fs::write(self.dir.path().join("rivet.config.yaml"), config).unwrap();
    }

    fn rivetctl(&self, args: &[&str]) -> Output {
        run(rivetctl(self.dir.path()).args(args))
    }

    fn expect(&self, args: &[&str], code: i32) -> Output {
        let output = self.rivetctl(args);
        assert_eq!(output.status.code(), Some(code), "rivetctl {}:\n{}", args.join(" "), describe(&output));
        output
    }

    /// The requests the fake got from `from` on.
    fn since(&self, from: usize) -> Vec<Logged> {
        self.pve.requests()[from..].to_vec()
    }

    fn vmids(&self) -> Vec<(u32, String, bool)> {
        self.pve.containers().into_iter().map(|c| (c.vmid, c.config["hostname"].clone(), c.running)).collect()
    }

    fn plan(&self) -> serde_json::Value {
        let output = self.expect(&["--output", "json", "infra", "preview"], 0);
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {}", describe(&output)))
    }
}

/// The changes of a plan to containers (not to the agents' services).
fn container_changes(plan: &serde_json::Value) -> Vec<&serde_json::Value> {
    plan["changes"].as_array().unwrap().iter().filter(|c| c["kind"] == "lxc").collect()
}

fn writes(requests: &[Logged]) -> Vec<String> {
    requests.iter().filter(|r| r.is_write()).map(|r| format!("{} {}", r.method, r.path)).collect()
}

#[test]
fn a_fleet_from_empty_then_a_no_op_a_change_drift_and_a_reordered_node_list() {
    let fleet = Fleet::new();

    // Preview from empty: three creates, each the exact request it will send; nothing written.
    let plan = fleet.plan();
    assert_eq!(plan["observed"], "live");
    let changes = container_changes(&plan);
    let names: Vec<&str> = changes.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["pvetest-datahub", "pvetest-agents-pve1", "pvetest-agents-pve2"]);
    let services: Vec<&str> = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] == "service")
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        services,
        ["rivetos-datahub", "rivetos@gemini", "rivetos@opus", "rivetos@grok"],
        "the datahub's database and each agent's service, after the containers"
    );
    let create = &changes[2]["requests"][0];
    assert_eq!((create["method"].as_str(), create["path"].as_str()), (Some("POST"), Some("/nodes/pve2/lxc")));
    assert_eq!(create["params"]["vmid"], "100", "pve2 has no ctid_start: the cluster's next id");
    let subnet = &fleet.subnet;
    assert_eq!(create["params"]["net0"], format!("name=eth0,bridge=vmbr0,ip={subnet}.12/24,gw={subnet}.1"));
    assert!(writes(&fleet.pve.requests()).is_empty(), "preview writes nothing");
    let text = serde_json::to_string(&plan).unwrap();
    assert!(!text.contains(fleet.pve.token_secret()) && !text.contains("pg-secret-value"), "no secret in the plan");

    // Up: the containers exist, run, and carry their identity.
    fleet.expect(&["infra", "up", "--yes"], 0);
    let made = fleet.vmids();
    assert_eq!(
        made,
        [
            (100, "pvetest-agents-pve2".to_string(), true),
            (310, "pvetest-datahub".to_string(), true),
            (311, "pvetest-agents-pve1".to_string(), true),
        ]
    );
    let hub = fleet.pve.container(310).unwrap();
    assert!(hub.config["tags"].contains("rivet-c-datahub") && hub.config["tags"].contains("rivet-d-pvetest"));
    // Each container pins the host keys its create task printed (read over the pinned API):
    // exactly those sshd will present.
    for container in fleet.pve.containers() {
        let pinned: Vec<String> = container.config["description"]
            .lines()
            .filter_map(|l| l.strip_prefix("rivetctl-hostkey "))
            .map(str::to_string)
            .collect();
        let mut real = Vec::new();
        for kind in ["ed25519", "rsa"] {
            let public = container.host_keys.join(format!("ssh_host_{kind}_key.pub"));
            let out = std::process::Command::new("ssh-keygen").arg("-lf").arg(&public).output().unwrap();
            real.push(String::from_utf8_lossy(&out.stdout).split_whitespace().nth(1).unwrap().to_string());
        }
        assert_eq!(pinned, real, "CT {}", container.vmid);
    }

    // A second run changes nothing: its only writes are the lock's (the datahub's description).
    let before = fleet.pve.requests().len();
    fleet.expect(&["infra", "up", "--yes"], 0);
    let again = fleet.since(before);
    for request in again.iter().filter(|r| r.is_write()) {
        assert_eq!(request.path, "/nodes/pve1/lxc/310/config", "{request:?}");
        let keys: Vec<&str> = request.params.keys().map(String::as_str).collect();
        assert_eq!(keys, ["description", "digest"], "only the lock: {request:?}");
    }
    assert!(!writes(&again).is_empty(), "the lock was taken and released");

    // A change: more memory in place, a bigger disk grown in place; nothing replaced.
    fleet.write(NODES, 3072, 10);
    let plan = fleet.plan();
    let actions: Vec<&str> =
        plan["changes"].as_array().unwrap().iter().map(|c| c["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["update", "update", "update"], "the containers only: {plan:#}");
    let requests: Vec<String> = plan["changes"][0]["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{} {}", r["method"].as_str().unwrap(), r["path"].as_str().unwrap()))
        .collect();
    assert_eq!(requests, ["PUT /nodes/pve1/lxc/310/config", "PUT /nodes/pve1/lxc/310/resize"]);
    fleet.expect(&["infra", "up", "--yes"], 0);
    let hub = fleet.pve.container(310).unwrap();
    assert_eq!(hub.config["memory"], "3072");
    assert!(hub.config["rootfs"].contains("size=10G"), "{:?}", hub.config);
    assert_eq!(
        fleet.vmids(),
        [(100, made[0].1.clone(), true), (310, made[1].1.clone(), true), (311, made[2].1.clone(), true)]
    );

    // Drift: cores changed in the GUI, a container stopped; up puts both back.
    fleet.pve.edit_config(311, "cores", Some("6"));
    fleet.pve.set_status(100, false);
    let plan = fleet.plan();
    let shown = serde_json::to_string(&plan["changes"]).unwrap();
    assert!(shown.contains(r#""field":"cores","before":"6","after":"2""#), "{shown}");
    // `status` shows the same drift, container by container.
    let status = fleet.expect(&["--output", "json", "status"], 0);
    let services: Vec<serde_json::Value> =
        String::from_utf8_lossy(&status.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let of =
        |name: &str| services.iter().find(|s| s["name"] == name).unwrap_or_else(|| panic!("{name}: {services:#?}"));
    assert_eq!(
        (of("pvetest-datahub")["state"].as_str(), of("pvetest-datahub")["drift"].as_str()),
        (Some("running"), Some("in sync"))
    );
    assert_eq!(of("pvetest-agents-pve1")["drift"], "changed: cores");
    assert_eq!(of("pvetest-agents-pve2")["state"], "stopped");
    let fixed = fleet.expect(&["infra", "up", "--yes"], 0);
    assert_eq!(fleet.pve.container(311).unwrap().config["cores"], "2", "{}", describe(&fixed));
    assert!(fleet.pve.container(100).unwrap().running);

    // The node list reordered: nothing to do.
    let reordered: String = NODES.lines().rev().map(|l| format!("{l}\n")).collect();
    fleet.write(&reordered, 3072, 10);
    let out = fleet.expect(&["infra", "preview", "--detailed-exitcode"], 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains("No changes"), "{}", describe(&out));

    // An agent moved to the other node: both hosts' agent lists change in place (preview shows
    // the spread), their descriptions say so afterwards, and the lock's lines stay intact.
    let config = std::fs::read_to_string(fleet.dir.path().join("rivet.config.yaml")).unwrap();
    let moved = config.replace("  proxmox:\n", "  agents:\n    opus: {node: pve2}\n  proxmox:\n");
    std::fs::write(fleet.dir.path().join("rivet.config.yaml"), moved).unwrap();
    let out = fleet.expect(&["infra", "preview", "--detailed-exitcode"], 2);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(r#"~ agents: "gemini,opus" -> "gemini""#), "{text}");
    assert!(text.contains(r#"~ agents: "grok" -> "grok,opus""#), "{text}");
    assert!(text.contains("0 to replace"), "{text}");
    fleet.expect(&["infra", "up", "--yes"], 0);
    assert!(fleet.pve.container(100).unwrap().config["description"].contains("agents: grok,opus\n"));
    fleet.expect(&["infra", "preview", "--detailed-exitcode"], 0);
}

#[test]
fn destroy_keeps_the_datahub_unless_volumes_and_failures_are_clear() {
    let fleet = Fleet::new();
    // A lock timeout on the first create is retried; the up succeeds.
    fleet.pve.lock_timeout_next(2);
    fleet.expect(&["infra", "up", "--yes"], 0);
    assert_eq!(fleet.pve.containers().len(), 3);

    // A failing task: the error carries the task's log.
    fleet.write(NODES, 4096, 12);
    fleet.pve.fail_next_task("resize", "zfs error: out of space");
    let out = fleet.expect(&["infra", "up", "--yes"], 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("zfs error: out of space") && stderr.contains("TASK ERROR"), "{}", describe(&out));

    // Destroy: the agents' containers go, the datahub's stays, stopped (it holds the data).
    let out = fleet.expect(&["infra", "destroy", "--yes"], 0);
    let left: Vec<(String, bool)> =
        fleet.pve.containers().into_iter().map(|c| (c.config["hostname"].clone(), c.running)).collect();
    assert_eq!(left, [("pvetest-datahub".to_string(), false)], "{}", describe(&out));
    let said = describe(&out);
    assert!(said.contains("Stopped lxc pvetest-datahub (310 on pve1): its disk holds the data."), "{said}");
    assert!(said.contains("Kept (data; remove with --volumes): lxc pvetest-datahub"), "{said}");
    fleet.expect(&["infra", "destroy", "--yes", "--volumes"], 0);
    assert!(fleet.pve.containers().is_empty());

    // An expired token: a clear error naming it, never its secret.
    fleet.pve.expire_token();
    let out = fleet.expect(&["infra", "preview"], 1);
    let said = describe(&out);
    assert!(said.contains(&format!("the Proxmox VE API token {} has expired", fleet.pve.token_id())), "{said}");
    assert!(!said.contains(fleet.pve.token_secret()));
    let _ = BTreeMap::<u8, u8>::new();
}

/// The API requests `infra preview --output json` lists for examples/proxmox, from empty and
/// after a change, as golden files: the example's config pointed at the fake. The example's
/// containers are made by sending the from-empty requests themselves (the example's
/// addresses are not this machine's, so no agent could be provisioned there).
#[test]
fn the_example_s_request_lists_match_golden_files() {
    let fleet = Fleet::api_only();
    let example = std::fs::read_to_string(support::repo().join("examples/proxmox/rivet.config.yaml")).unwrap();
    let mut config = String::new();
    for line in example.lines() {
        let line = match line.trim_start() {
            l if l.starts_with("api_url:") => format!("    api_url: {}", fleet.pve.url()),
            l if l.starts_with("fingerprint:") => format!("    fingerprint: \"{}\"", fleet.pve.fingerprint()),
            // The test's directory holds a copy of the quickstart's source tree.
            l if l.starts_with("path: ../quickstart") => "    path: .".to_string(),
            _ => line.to_string(),
        };
        config.push_str(&line);
        config.push('\n');
    }
    assert!(config.contains(&fleet.pve.url()) && config.contains(&fleet.pve.fingerprint()));
    std::fs::write(fleet.dir.path().join("rivet.config.yaml"), &config).unwrap();
    let requests = |plan: &serde_json::Value| {
        let lists: Vec<&serde_json::Value> = container_changes(plan).iter().map(|c| &c["requests"]).collect();
        serde_json::to_string_pretty(&lists).unwrap() + "\n"
    };
    let empty = fleet.plan();
    support::golden("tests/golden/examples/proxmox/preview-requests.json", &requests(&empty));

    // The creates, as listed, sent to the fake; then the change.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    for change in container_changes(&empty) {
        for request in change["requests"].as_array().unwrap() {
            let params: Vec<(&str, &str)> =
                request["params"].as_object().unwrap().iter().map(|(k, v)| (k.as_str(), v.as_str().unwrap())).collect();
            let (method, path) = (request["method"].as_str().unwrap(), request["path"].as_str().unwrap());
            let answer = runtime
                .block_on(testkit::proxmox::raw::send(
                    &fleet.pve,
                    method,
                    path,
                    &params,
                    testkit::proxmox::raw::Auth::Token,
                ))
                .unwrap();
            assert_eq!(answer.status, 200, "{method} {path}: {answer:?}");
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while fleet.pve.containers().iter().filter(|c| c.running).count() < 3 {
        assert!(std::time::Instant::now() < deadline, "the example's containers start: {:?}", fleet.vmids());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::write(
        fleet.dir.path().join("rivet.config.yaml"),
        config.replace("  proxmox:\n", "  proxmox:\n    memory_mb: 4096\n    rootfs_gb: 16\n"),
    )
    .unwrap();
    let changed = requests(&fleet.plan());
    // The config digest differs from run to run (it hashes the description's lock lines).
    let digest = regex_lite_digest(&changed);
    support::golden("tests/golden/examples/proxmox/preview-requests-change.json", &digest);
}

/// `"digest": "<40 hex>"` made `"digest": "(config digest)"`.
fn regex_lite_digest(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("\"digest\": \"") {
            Some(at) => {
                format!("{}\"digest\": \"(config digest)\"{}", &line[..at], if line.ends_with(',') { "," } else { "" })
            }
            None => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// `doctor` on the fake: the API with its version, token and TLS trust, each node, which
/// containers exist, the lock; an expired token is a failed check naming it.
#[test]
fn doctor_reports_the_api_the_nodes_and_the_containers() {
    let fleet = Fleet::new();
    let checks = |args: &[&str]| -> (Output, BTreeMap<String, (bool, String)>) {
        let output = fleet.rivetctl(args);
        let checks = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| {
                let check: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
                let name = check["name"].as_str().unwrap().to_string();
                (name, (check["ok"].as_bool().unwrap(), check["detail"].as_str().unwrap_or_default().to_string()))
            })
            .collect();
        (output, checks)
    };
    let (out, found) = checks(&["--output", "json", "doctor"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let api = found.iter().find(|(name, _)| name.starts_with("proxmox API 127.0.0.1:")).expect("the API check");
    assert!(
        api.1.0 && api.1.1.starts_with("Proxmox VE 8.2.4; token rivetctl@pve!deploy accepted; TLS trusts the pinned")
    );
    assert_eq!(found["node pve2"], (true, "in the cluster, online".to_string()));
    assert!(found["containers of pvetest"].1.starts_with("none of 3 yet"), "{found:?}");
    assert!(found["lock"].0, "{found:?}");

    fleet.expect(&["infra", "up", "--yes"], 0);
    let (_, found) = checks(&["--output", "json", "doctor"]);
    assert!(found["containers of pvetest"].1.starts_with("3 of 3 found: "), "{found:?}");
    let ssh = &found["ssh pvetest-agents-pve1"];
    assert!(ssh.0 && ssh.1.ends_with("answers with its pinned host key; sv is there"), "{found:?}");

    fleet.pve.expire_token();
    let (out, found) = checks(&["--output", "json", "doctor"]);
    assert_eq!(out.status.code(), Some(1));
    let (ok, detail) = &found["proxmox API"];
    assert!(!ok && detail.contains("has expired"), "{detail}");
}
