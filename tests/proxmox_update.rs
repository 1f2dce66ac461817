//! RivetOS provisioned from source inside Proxmox VE containers, then updated and rolled
//! back, through the `rivetctl` binary: the fake Proxmox VE API of the testkit, whose
//! containers are Docker stand-ins with a real sshd on the container's own loopback address
//! (from `net0`) and runit as PID 1 (`deployment.proxmox.service_manager: runit`; systemd is
//! the default and its unit is golden-tested, since PID 1 here is not systemd).
//!
//! What is real: the build of examples/quickstart's agent image on this machine's engine,
//! the release made from it and shipped over SSH (host keys pinned from the create task's
//! log), each agent's link, environment file, service and health port, the health gate read
//! through the SSH connection, a failing revision rolled back by the link (exit 3) while the
//! other agents keep running untouched; the datahub's PostgreSQL with pgvector (the stand-ins
//! carry a real PostgreSQL 16 with pgvector, as a template with Debian's packages would)
//! reached with the agents' own URL, its data kept through every update.

mod support;

use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use support::{describe, repo, rivetctl, run};
use testkit::proxmox::standin::DockerStandins;
use testkit::proxmox::{FakePve, Options, Runtime};

/// A quickstart source tree deployed to the fake: pve1 (datahub and agents, vmids from
/// 310), pve2 (agents, vmids from 320), containers on a loopback subnet of this test's own.
struct Fleet {
    dir: tempfile::TempDir,
    pve: FakePve,
    standins: Arc<DockerStandins>,
    subnet: String,
    // Last: the fake's threads serve while the test runs.
    _runtime: tokio::runtime::Runtime,
}

impl Fleet {
    fn new(label: &str, second_octet: u8) -> Fleet {
        support::base_image::ensure_base_image();
        let subnet = format!("127.{second_octet}.{}", std::process::id() % 250);
        let ssh_port = support::pve::free_port_on(&format!("{subnet}.1"));
        let standins =
            Arc::new(DockerStandins::new(&format!("{label}{}", std::process::id()), ssh_port).expect("stand-ins"));
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let shared: Arc<dyn Runtime> = standins.clone();
        let options = Options { task_duration: Duration::from_millis(30), runtime: Some(shared), ..Options::default() };
        let pve = runtime.block_on(FakePve::start(options)).expect("the fake PVE API starts");
        let dir = tempfile::Builder::new().prefix("rivetctl-pve-up-").tempdir().unwrap();
        support::docker::copy_tree(&repo().join("examples/quickstart"), dir.path());
        let (key, public) = testkit::proxmox::raw::keypair(dir.path(), "id_ed25519");
        // Three health ports in a row, free a moment ago.
        let health_port = support::pve::free_ports(3);
        let config = format!(
            "deployment:
  target: proxmox
  source: {{ path: . }}
  ssh: {{ identity_file: {key} }}
  health: {{ port: {health_port}, interval: 2s, timeout: 2s, start_period: 5s, deadline: 60s }}
  update: {{ max_parallel: 1, canary: 1, min_healthy_time: 1s, stop_grace_period: 5s, healthy_deadline: 20s }}
  proxmox:
    api_url: {url}
    token_id: \"{token}\"
    token_secret: ${{PVE_TOKEN_SECRET}}
    fingerprint: \"{pin}\"
    ssh_port: {ssh_port}
    service_manager: runit
    ssh_public_keys: \"{public}\"
    nodes:
      - {{ name: pve1, role: both, ctid_start: 310 }}
      - {{ name: pve2, role: agents, ctid_start: 320 }}
    network: {{ bridge: vmbr0, subnet: {subnet}.0/24, gateway: {subnet}.1 }}
agents:
  opus: {{ provider: anthropic }}
  grok: {{ provider: xai }}
  gemini: {{ provider: google }}
",
            key = key.display(),
            url = pve.url(),
            token = pve.token_id(),
            pin = pve.fingerprint(),
        );
        std::fs::write(dir.path().join("rivet.config.yaml"), config).unwrap();
        std::fs::write(
            dir.path().join(".env"),
            format!(
                "PVE_TOKEN_SECRET={}\nPOSTGRES_PASSWORD=pg-secret-value\nANTHROPIC_API_KEY=sk-ant-secret\n",
                pve.token_secret()
            ),
        )
        .unwrap();
        Fleet { dir, pve, standins, subnet, _runtime: runtime }
    }

    fn rivetctl(&self, args: &[&str]) -> Output {
        run(rivetctl(self.dir.path()).args(args))
    }

    fn expect(&self, args: &[&str], code: i32) -> Output {
        let output = self.rivetctl(args);
        assert_eq!(output.status.code(), Some(code), "rivetctl {}:\n{}", args.join(" "), describe(&output));
        output
    }

    /// The vmid of the container hosting `node`'s agents.
    fn agents_ct(&self, node: &str) -> u32 {
        let name = format!("rivetos-agents-{node}");
        self.pve
            .containers()
            .into_iter()
            .find(|c| c.config["hostname"] == name)
            .unwrap_or_else(|| panic!("{name}"))
            .vmid
    }

    fn exec(&self, vmid: u32, script: &str) -> String {
        self.standins.exec(vmid, script).unwrap_or_else(|e| panic!("CT {vmid}: {script}: {e:#}")).trim().to_string()
    }

    /// Per agent: the container, the release its link names, its service's pid, what
    /// `/health` says (status and version).
    fn agents(&self) -> Vec<(String, u32, String, String, String)> {
        let mut out = Vec::new();
        for node in ["pve1", "pve2"] {
            let vmid = self.agents_ct(node);
            let listed = self.exec(vmid, "ls /etc/rivetos/agents");
            for agent in listed.split_whitespace() {
                let release = self.exec(vmid, &format!("readlink /opt/rivetos/agents/{agent}/current"));
                let pid = self.exec(vmid, &format!("cat /etc/service/rivetos@{agent}/supervise/pid"));
                let port = self.exec(vmid, &format!(". /etc/rivetos/agents/{agent}/env; echo $RIVETOS_HEALTH_PORT"));
                let health = self.exec(vmid, &format!("wget -q -O - http://127.0.0.1:{port}/health || true"));
                let health: serde_json::Value = serde_json::from_str(&health).unwrap_or_default();
                out.push((
                    agent.to_string(),
                    vmid,
                    release.rsplit('/').next().unwrap_or_default().to_string(),
                    pid,
                    format!(
                        "{} {}",
                        health["status"].as_str().unwrap_or("-"),
                        health["version"].as_str().unwrap_or("-")
                    ),
                ));
            }
        }
        out
    }
}

/// `version` in the source's package.json: a new revision of the agent.
fn bump(fleet: &Fleet, version: &str) {
    let path = fleet.dir.path().join("package.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text.find("\"version\": \"").unwrap() + 12;
    let end = start + text[start..].find('"').unwrap();
    std::fs::write(&path, format!("{}{version}{}", &text[..start], &text[end..])).unwrap();
}

#[test]
fn agents_are_provisioned_from_source_updated_and_a_failing_revision_is_rolled_back_by_its_link() {
    let fleet = Fleet::new("pveup", 95);
    bump(&fleet, "1.0.0");

    // From empty: the containers, then each agent's service from the release built here.
    let up = fleet.expect(&["infra", "up", "--yes"], 0);
    let text = String::from_utf8_lossy(&up.stdout);
    for agent in ["opus", "grok", "gemini"] {
        assert!(text.contains(&format!("service rivetos@{agent}")), "{text}");
    }
    let agents = fleet.agents();
    let names: Vec<&str> = agents.iter().map(|a| a.0.as_str()).collect();
    assert_eq!(names.len(), 3, "{agents:?}");
    let first_release = agents[0].2.clone();
    for (agent, _, release, _, health) in &agents {
        assert_eq!((release, health.as_str()), (&first_release, "healthy 1.0.0"), "{agent}");
    }
    // The environment file is root's alone, holds the secrets, and the agents run as rivetos.
    let vmid = fleet.agents_ct("pve1");
    let agent = &agents.iter().find(|a| a.1 == vmid).unwrap().0;
    assert_eq!(fleet.exec(vmid, &format!("stat -c '%a %U' /etc/rivetos/agents/{agent}/env")), "600 root");
    // The config is a file of the container, readable by the agents' account, named by
    // RIVETOS_CONFIG.
    assert_eq!(fleet.exec(vmid, "stat -c '%a %U %G' /etc/rivetos/config.yaml"), "640 root rivetos");
    let named = fleet.exec(vmid, &format!(". /etc/rivetos/agents/{agent}/env; echo $RIVETOS_CONFIG"));
    assert_eq!(named, "/etc/rivetos/config.yaml");
    assert!(fleet.exec(vmid, "cat /etc/rivetos/config.yaml").contains("service_manager: runit"));
    let pid = &agents.iter().find(|a| a.1 == vmid).unwrap().3;
    assert_eq!(fleet.exec(vmid, &format!("stat -c %u /proc/{pid}")), "10001");
    let url = fleet.exec(vmid, &format!(". /etc/rivetos/agents/{agent}/env; echo $RIVETOS_PG_URL"));
    assert_eq!(url, format!("postgres://rivetos:pg-secret-value@{}.10:5432/rivetos", fleet.subnet));
    assert!(!text.contains("pg-secret-value") && !text.contains("sk-ant-secret"), "no secret printed: {text}");

    // The datahub: PostgreSQL with pgvector in its container, reached from an agent's
    // container with the agent's own URL (its address, the role's password over SCRAM).
    let sql = |statement: &str| {
        fleet.exec(vmid, &format!(". /etc/rivetos/agents/{agent}/env; psql \"$RIVETOS_PG_URL\" -X -tA -v ON_ERROR_STOP=1 -c \"{statement}\""))
    };
    sql("CREATE TABLE memories (id int PRIMARY KEY, embedding vector(3))");
    sql("INSERT INTO memories VALUES (1, '[1,2,3]')");
    assert_eq!(sql("SELECT embedding <-> '[1,2,4]' FROM memories WHERE id = 1"), "1");

    // A second run changes nothing.
    let again = fleet.expect(&["infra", "up", "--yes"], 0);
    assert!(String::from_utf8_lossy(&again.stdout).contains("No changes"), "{}", describe(&again));

    // A failing revision: the canary fails its gate, is rolled back by its link, exit 3;
    // the other agents were not touched (same pids, same release).
    std::fs::write(fleet.dir.path().join("containers/agent/FAIL_HEALTH"), "broken\n").unwrap();
    bump(&fleet, "2.0.0-broken");
    let failed = fleet.expect(&["update", "--mesh"], 3);
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains("rolled back"), "{}", describe(&failed));
    let after = fleet.agents();
    for ((agent, _, release, pid, health), before) in after.iter().zip(&agents) {
        assert_eq!(release, &first_release, "{agent} runs the previous release again");
        assert_eq!(health, "healthy 1.0.0", "{agent}");
        if agent != &agents[0].0 {
            assert_eq!(pid, &before.3, "{agent} was not touched");
        }
    }
    // Both releases are in the containers the canary reached; the broken one is not linked.
    assert!(fleet.exec(after[0].1, "ls /opt/rivetos/releases").split_whitespace().count() >= 2);

    // A good revision rolls through every agent, one at a time.
    std::fs::remove_file(fleet.dir.path().join("containers/agent/FAIL_HEALTH")).unwrap();
    bump(&fleet, "3.0.0");
    fleet.expect(&["update", "--mesh"], 0);
    let updated = fleet.agents();
    for (agent, _, release, _, health) in &updated {
        assert_ne!(release, &first_release, "{agent}");
        assert_eq!(health, "healthy 3.0.0", "{agent}");
    }

    // `rollback` returns every agent to the release before (kept in its container).
    fleet.expect(&["rollback"], 0);
    for (agent, _, release, _, health) in fleet.agents() {
        assert_eq!((release.as_str(), health.as_str()), (first_release.as_str(), "healthy 1.0.0"), "{agent}");
    }

    // The datahub's data survived every update and rollback.
    assert_eq!(sql("SELECT embedding FROM memories WHERE id = 1"), "[1,2,3]");

    // Status shows each agent's service.
    let status = fleet.expect(&["status"], 0);
    assert!(String::from_utf8_lossy(&status.stdout).contains("rivetos@opus"), "{}", describe(&status));

    fleet.expect(&["infra", "destroy", "--yes", "--volumes"], 0);
    assert!(fleet.pve.containers().is_empty());
}
