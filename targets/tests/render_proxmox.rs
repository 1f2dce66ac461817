//! The Proxmox LXC parameters: golden files, and every parameter checked against the
//! official API schema of `POST /nodes/{node}/lxc` (names, types, ranges, enums, patterns,
//! property-string formats). The schema is the repository's own subset of the official one,
//! `tests/data/pve-api-schema.subset.json` (written by `scripts/extract-pve-schema.py`).

mod support;

use std::collections::BTreeMap;

use orchestrator::resource::Component;
use rivet_targets::render::proxmox;
use serde_json::Value;
use support::{fleet, golden, secret_values};
use testkit::proxmox as proxmox_fake;
use testkit::proxmox::schema::{Refused, Schema};

const CONFIG: &str = r#"
deployment:
  target: proxmox
  proxmox:
    api_url: https://pve1.example.net:8006/api2/json
    token_id: rivetctl@pve!deploy
    token_secret: pve-token-secret-value
    nodes:
      - { name: pve1, host: 10.0.0.11, role: both, ctid_start: 310 }
      - { name: pve2, host: 10.0.0.12, role: agents }
    network: { bridge: vmbr1, subnet: 10.4.0.0/24, gateway: 10.4.0.1 }
    ssh_public_keys: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk0c2V0dXBrZXlmb3J0ZXN0aW5nb25seQ ops@example.net"
agents:
  opus: { provider: anthropic }
  grok: { provider: xai }
  gemini: { provider: google }
"#;

const SCHEMA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/pve-api-schema.subset.json");

fn rendered(source: &str) -> Vec<(String, Value)> {
    proxmox::artifacts(&fleet(source))
        .expect("renders")
        .into_iter()
        .map(|a| {
            assert!(!a.secret);
            let params = serde_json::from_str(&a.contents).unwrap_or_else(|e| panic!("{} is not JSON: {e}", a.path));
            (a.path, params)
        })
        .collect()
}

#[test]
fn two_nodes_match_golden_files() {
    let artifacts = proxmox::artifacts(&fleet(CONFIG)).unwrap();
    let paths: Vec<&str> = artifacts.iter().map(|a| a.path.as_str()).collect();
    assert_eq!(paths, ["proxmox/datahub.json", "proxmox/agents-pve1.json", "proxmox/agents-pve2.json"]);
    for artifact in &artifacts {
        golden(&artifact.path, &artifact.contents);
    }
    assert_eq!(artifacts, proxmox::artifacts(&fleet(CONFIG)).unwrap(), "deterministic");
}

#[test]
fn no_password_and_no_secret() {
    for (path, params) in rendered(CONFIG) {
        assert!(params.get("password").is_none(), "{path} sets a password");
        let text = params.to_string();
        for secret in secret_values().iter().map(String::as_str).chain(["pve-token-secret-value"]) {
            assert!(!text.contains(secret), "{path} holds a secret");
        }
    }
}

/// The datahub in its own container, each node's agents in one container; vmids from
/// `ctid_start` (one after the other on a node holding two), else from `FIRST_VMID` by
/// position; addresses from the subnet in layout order; identity and spec hash in tags.
#[test]
fn addresses_ids_and_ownership() {
    let containers = rendered(CONFIG);
    let (hub, pve1, pve2) = (&containers[0].1, &containers[1].1, &containers[2].1);
    let vmids: Vec<Option<u64>> = [hub, pve1, pve2].iter().map(|c| c["vmid"].as_u64()).collect();
    assert_eq!(vmids, [Some(310), Some(311), Some(202)]);
    assert_eq!(hub["net0"], "name=eth0,bridge=vmbr1,ip=10.4.0.10/24,gw=10.4.0.1");
    assert_eq!(pve1["net0"], "name=eth0,bridge=vmbr1,ip=10.4.0.11/24,gw=10.4.0.1");
    assert_eq!(pve2["net0"], "name=eth0,bridge=vmbr1,ip=10.4.0.12/24,gw=10.4.0.1");
    assert_eq!(
        (hub["hostname"].as_str(), pve2["hostname"].as_str()),
        (Some("rivetos-datahub"), Some("rivetos-agents-pve2"))
    );
    let tags = hub["tags"].as_str().unwrap();
    assert!(tags.starts_with("rivet-c-datahub;rivet-d-rivetos;rivet-s-") && tags.ends_with(";rivetctl"), "{tags}");
    assert!(hub["description"].as_str().unwrap().contains("container: datahub\nnode: pve1\n"));
    assert!(pve1["description"].as_str().unwrap().contains("agents: gemini,opus\n"));
    assert!(pve2["description"].as_str().unwrap().contains("agents: grok\n"));

    let dhcp = CONFIG.replace("    network: { bridge: vmbr1, subnet: 10.4.0.0/24, gateway: 10.4.0.1 }\n", "");
    let containers = rendered(&dhcp);
    assert_eq!(containers[0].1["net0"], "name=eth0,bridge=vmbr0,ip=dhcp");
    assert!(containers[0].1.get("ssh-public-keys").is_some());
}

#[test]
fn clashing_vmids_are_an_error() {
    let clash = CONFIG.replace("role: both, ctid_start: 310", "role: both, ctid_start: 202");
    let err = proxmox::artifacts(&fleet(&clash)).unwrap_err();
    assert!(format!("{err:?}").contains("both get vmid 202"), "{err:?}");
}

#[test]
fn resources_are_stateful_containers() {
    let all = proxmox::resources(&fleet(CONFIG)).unwrap();
    let resources: Vec<_> = all.iter().filter(|r| r.key.kind == "lxc").collect();
    assert_eq!(resources.len(), 3);
    let (hub, pve1, pve2) = (&resources[0], &resources[1], &resources[2]);
    assert_eq!(
        (hub.key.node.as_str(), hub.key.kind.as_str(), hub.key.name.as_str()),
        ("pve1", "lxc", "rivetos-datahub")
    );
    assert_eq!(hub.component, Component::Datahub);
    assert_eq!((pve1.component.clone(), pve2.component.clone()), (Component::Host, Component::Host));
    assert!(hub.stateful && !pve1.stateful && !pve2.stateful, "only the datahub's disk holds data");
    assert_eq!((&*pve1.fields["agents"].text, &*pve2.fields["agents"].text), ("gemini,opus", "grok"));
    assert_eq!(&*hub.fields["vmid"].text, "310");
    assert_eq!(&*hub.fields["net0"].text, "name=eth0,bridge=vmbr1,ip=10.4.0.10/24,gw=10.4.0.1");
    assert_eq!(&*hub.fields["rootfs.size"].text, "8G");
    for field in ["vmid", "ostemplate", "unprivileged", "rootfs.storage"] {
        assert!(hub.forces_replacement(field), "{field}");
    }
    for field in ["memory", "hostname", "rootfs.size", "net0"] {
        assert!(!hub.forces_replacement(field), "{field} changes in place");
    }
    assert!(!hub.fields.contains_key("description") && !hub.fields.contains_key("tags"), "derived, not fields");
}

/// After the containers, one service per agent in its node's container: its own health
/// port (unique in the deployment, from `deployment.health.port`), the release named by the
/// image's tag, how it reaches the datahub (a secret: a digest in the fields, the value
/// only in the payload the adapter writes into the 0600 environment file).
#[test]
fn each_agent_is_a_service_in_its_node_s_container() {
    let fleet = fleet(CONFIG);
    let all = proxmox::resources(&fleet).unwrap();
    let services: Vec<_> =
        all.iter().filter(|r| r.key.kind == "service" && matches!(r.component, Component::Agent(_))).collect();
    let seen: Vec<(&str, &str, &str, &str)> = services
        .iter()
        .map(|s| (s.key.node.as_str(), s.key.name.as_str(), &*s.fields["container"].text, &*s.fields["port"].text))
        .collect();
    assert_eq!(
        seen,
        [
            ("pve1", "rivetos@gemini", "agents-pve1", "3100"),
            ("pve1", "rivetos@opus", "agents-pve1", "3102"),
            ("pve2", "rivetos@grok", "agents-pve2", "3101"),
        ]
    );
    let opus = services[1];
    assert_eq!(opus.component, Component::Agent("opus".into()));
    assert!(!opus.stateful && opus.replace_on.is_empty());
    let url = &opus.fields["env.RIVETOS_PG_URL"];
    assert!(url.sensitive && url.text.starts_with("sensitive:"), "{url:?}");
    let env = &opus.payload["env"];
    assert!(env["RIVETOS_PG_URL"].as_str().unwrap().contains("@10.4.0.10:5432/"), "{env}");
    assert_eq!((env["RIVETOS_AGENT_ID"].as_str(), env["RIVETOS_HEALTH_PORT"].as_str()), (Some("opus"), Some("3102")));
    assert_eq!(opus.payload["release"], opus.fields["image"].text.rsplit(':').next().unwrap());

    // The datahub's database: its own service in the datahub's container, before the agents.
    let hub = all.iter().find(|r| r.component == Component::Database).expect("the datahub's service");
    assert_eq!((hub.key.node.as_str(), hub.key.name.as_str()), ("pve1", "rivetos-datahub"));
    assert_eq!((&*hub.fields["listen"].text, &*hub.fields["clients"].text), ("10.4.0.10", "10.4.0.0/24"));
    assert!(hub.fields["password"].sensitive && !hub.stateful, "its data is the container's disk");
}

// ---- checking parameters against the official schema ----

/// What the API would refuse in these parameters: first the schema, through the same
/// validator as the fake PVE server (`testkit::proxmox::schema`), the values sent as
/// text like a form body would carry them (numbers in decimal); then the checks of PVE's
/// create handler that come after the schema (volumes, template).
fn violations(params: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let mut text = BTreeMap::new();
    for (name, value) in params.as_object().expect("an object") {
        match value {
            Value::String(s) => text.insert(name.clone(), s.clone()),
            Value::Number(n) => text.insert(name.clone(), n.to_string()),
            other => {
                errors.push(format!("{name}: {other} is neither text nor a number (no form value)"));
                continue;
            }
        };
    }
    match Schema::official().check("POST", "/nodes/pve1/lxc", &text) {
        Ok(_) => {}
        Err(Refused::Invalid(invalid)) => errors.extend(invalid.iter().map(|(name, e)| format!("{name}: {e}"))),
        Err(refused) => errors.push(format!("{refused:?}")),
    }
    if errors.is_empty()
        && let Err(refused) = proxmox_fake::check_create(&text)
    {
        errors.push(refused);
    }
    errors
}

#[test]
fn every_parameter_fits_the_api_schema() {
    for source in [CONFIG.to_string(), CONFIG.replace(", subnet: 10.4.0.0/24, gateway: 10.4.0.1", "")] {
        for (path, params) in rendered(&source) {
            let errors = violations(&params);
            assert!(errors.is_empty(), "{path}:\n{}", errors.join("\n"));
        }
    }
}

/// The checker itself rejects what the API would.
#[test]
fn the_schema_check_catches_mistakes() {
    let (_, good) = rendered(CONFIG).remove(0);
    let bad = |key: &str, value: Value| {
        let mut params = good.clone();
        params[key] = value;
        violations(&params)
    };
    assert!(!bad("vmid", 99.into()).is_empty(), "vmid below 100");
    assert!(!bad("unprivileged", "yes".into()).is_empty(), "boolean as text");
    assert!(!bad("net0", "name=eth0,bridge=vmbr0,ip=10.0.0.5".into()).is_empty(), "ip without prefix");
    assert!(!bad("net0", "bridge=vmbr0,ip=dhcp".into()).is_empty(), "net without name");
    assert!(!bad("features", "nesting=true".into()).is_empty(), "boolean member as word");
    assert!(!bad("tags", "rivetctl;rivet:x".into()).is_empty(), "bad tag");
    assert!(!bad("hostname", "rivet_pve1".into()).is_empty(), "underscore in hostname");
    assert!(!bad("rootfs", "local-lvm".into()).is_empty(), "rootfs without size");
    assert!(!bad("sshkeys", "x".into()).is_empty(), "a QEMU parameter");
}

/// The subset says where it came from and holds exactly the methods its header lists, each a
/// whole entry (scripts/extract-pve-schema.py --check proves it a faithful copy).
#[test]
fn the_schema_subset_names_its_source_and_holds_what_it_lists() {
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(SCHEMA).unwrap()).unwrap();
    let source = &schema["source"];
    assert!(source["origin"].as_str().unwrap().contains("apidoc.js"), "{source:#}");
    assert_eq!(source["extracted_by"], "scripts/extract-pve-schema.py");
    assert_eq!(source["source_sha256"].as_str().map(str::len), Some(64));
    assert!(source["pve_version"].is_string() && source["extracted_on"].is_string());
    let kept: Vec<&str> = source["kept"].as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect();
    let mut present = Vec::new();
    for (path, methods) in schema["paths"].as_object().unwrap() {
        for (method, entry) in methods.as_object().unwrap() {
            assert!(entry["parameters"].is_object() && entry["description"].is_string(), "{method} {path}");
            present.push(format!("{method} {path}"));
        }
    }
    let mut listed: Vec<String> = kept.iter().map(|k| k.to_string()).collect();
    listed.sort();
    present.sort();
    assert_eq!(listed, present);
    for needed in
        ["POST /nodes/{node}/lxc", "PUT /nodes/{node}/lxc/{vmid}/resize", "GET /nodes/{node}/tasks/{upid}/status"]
    {
        assert!(kept.contains(&needed), "{needed}");
    }
}
