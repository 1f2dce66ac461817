//! How an agent reaches the datahub is each target's lowering's choice: the fleet holds no
//! `RIVETOS_PG_URL` of rivetctl's, and each lowering writes the host and port its own
//! network gives the datahub. Also: the Proxmox renderer prints exactly what its lowering
//! decided (no parameter added, dropped or changed on the way).

mod support;

use orchestrator::docker::{self, DockerObject};
use orchestrator::fleet::{Fleet, TargetSettings};
use orchestrator::lower;
use rivet_targets::render::proxmox;
use serde_json::Value;
use support::fleet;

const DOCKER_MESH: &str = r#"
deployment:
  target: docker
  docker: { postgres_port: 15432, postgres_bind: 10.0.0.10 }
  nodes:
    - { name: hub, role: both, host: local, address: 10.0.0.10, agents: [opus] }
    - { name: edge, role: agents, host: "ssh://deploy@10.0.0.11", agents: [grok] }
agents:
  opus: { provider: anthropic }
  grok: { provider: xai }
"#;

const PROXMOX: &str = r#"
deployment:
  target: proxmox
  proxmox:
    api_url: https://pve1.example.net:8006/api2/json
    nodes:
      - { name: pve1, host: 10.0.0.11, role: both }
      - { name: pve2, host: 10.0.0.12, role: agents }
agents:
  opus: { provider: anthropic }
  grok: { provider: xai }
"#;

const URL: &str = "postgres://rivetos:correct-horse@";

fn database_url_of(env: &orchestrator::fleet::Env) -> Option<String> {
    env.get("RIVETOS_PG_URL").map(|v| {
        assert!(v.sensitive, "the URL holds the password");
        v.value.to_string()
    })
}

fn no_url_in_the_fleet(fleet: &Fleet) {
    for agent in &fleet.agents {
        assert_eq!(database_url_of(&agent.env), None, "agent {} carries a target's URL", agent.id);
    }
    assert_eq!(fleet.migrate.as_ref().and_then(|m| database_url_of(&m.env)), None);
}

#[test]
fn docker_writes_the_alias_on_the_datahub_node_and_the_published_port_elsewhere() {
    let fleet = fleet(DOCKER_MESH);
    no_url_in_the_fleet(&fleet);
    let urls: Vec<(String, Option<String>)> = docker::resources(&fleet)
        .into_iter()
        .filter_map(|r| match r.payload {
            DockerObject::Container(spec) if !spec.name.ends_with("-datahub") => {
                let env: orchestrator::fleet::Env =
                    spec.environment().map(|(k, v)| (std::sync::Arc::clone(k), v.clone())).collect();
                Some((spec.name.clone(), database_url_of(&env)))
            }
            _ => None,
        })
        .collect();
    let expect = |host: &str| Some(format!("{URL}{host}/rivetos"));
    assert_eq!(
        urls,
        [
            ("rivetos-migrate".to_string(), expect("datahub:5432")),
            ("rivetos-agent-opus".to_string(), expect("datahub:5432")),
            ("rivetos-agent-grok".to_string(), expect("10.0.0.10:15432")),
        ]
    );
}

#[test]
fn kubernetes_writes_the_datahub_service() {
    let fleet = fleet(&DOCKER_MESH.replace("target: docker", "target: kubernetes"));
    no_url_in_the_fleet(&fleet);
    assert_eq!(
        lower::kubernetes::database_url(&fleet).map(|v| v.value.to_string()),
        Some(format!("{URL}datahub:5432/rivetos"))
    );
}

#[test]
fn proxmox_writes_the_datahub_container_s_address_or_its_node_s_host() {
    let fleet = fleet(PROXMOX);
    no_url_in_the_fleet(&fleet);
    let TargetSettings::Proxmox(settings) = &fleet.target_settings else { panic!("a proxmox fleet") };
    let url = |address| lower::proxmox::database_url(&fleet, settings, address).map(|v| v.value.to_string());
    assert_eq!(url(Some([10, 4, 0, 10].into())), Some(format!("{URL}10.4.0.10:5432/rivetos")));
    assert_eq!(url(None), Some(format!("{URL}10.0.0.11:5432/rivetos")), "DHCP: the datahub node's host");
}

#[test]
fn the_proxmox_renderer_prints_exactly_the_lowered_parameters() {
    let with_keys = PROXMOX.replace(
        "    nodes:\n",
        "    ssh_public_keys: \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk0c2V0dXBrZXlmb3J0ZXN0aW5nb25seQ ops@example.net\"\n    nodes:\n",
    );
    for source in [PROXMOX, with_keys.as_str()] {
        let fleet = fleet(source);
        let all = proxmox::resources(&fleet).unwrap();
        let resources: Vec<_> = all.iter().filter(|r| r.key.kind == "lxc").collect();
        assert_eq!(resources.len(), 3, "the datahub's container and one per node with agents");
        for resource in resources {
            let artifact = proxmox::artifact(&fleet.name, resource).unwrap();
            let printed: serde_json::Map<String, Value> = serde_json::from_str(&artifact.contents).unwrap();
            let as_text: std::collections::BTreeMap<String, String> = printed
                .into_iter()
                .map(|(k, v)| (k, v.as_str().map_or_else(|| v.to_string(), str::to_string)))
                .collect();
            assert_eq!(as_text, proxmox::create_params(&fleet.name, resource), "{}", artifact.path);
        }
    }
    assert!(proxmox::resources(&fleet(&with_keys)).unwrap()[0].payload["params"].get("ssh-public-keys").is_some());
}
