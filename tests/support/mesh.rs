//! A quickstart fleet spread over SSH nodes: one real sshd on loopback per node (all of them
//! drive this machine's Docker Engine), one client key they all accept, one known_hosts
//! that trusts them all, and the fleet's config naming them. The update and rollback tests
//! share it.

#[path = "../../targets/tests/sshd/mod.rs"]
pub mod sshd;

use super::docker::TestFleet;

/// A free TCP port on loopback (the datahub's published port).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One node of a test mesh: name, role, the agents it runs.
pub type Node<'a> = (&'a str, &'a str, &'a [&'a str]);

/// Starts an sshd per node and writes the fleet's config over them, with `healthy_deadline`
/// for the rollout's gate. The servers run as long as the returned list lives.
pub fn start(fleet: &TestFleet, nodes: &[Node<'_>], healthy_deadline: &str) -> Vec<sshd::Sshd> {
    let servers: Vec<sshd::Sshd> = nodes.iter().map(|_| sshd::Sshd::start()).collect();
    let key = servers[0].client_key();
    let public = std::fs::read_to_string(servers[0].dir().join("id_ed25519.pub")).unwrap();
    let mut known_hosts = String::new();
    for server in &servers {
        let authorized = server.dir().join("authorized_keys");
        let text = std::fs::read_to_string(&authorized).unwrap() + &public;
        std::fs::write(&authorized, text).unwrap();
        known_hosts.push_str(&std::fs::read_to_string(server.known_hosts()).unwrap());
    }
    std::fs::write(fleet.dir.path().join("known_hosts"), known_hosts).unwrap();
    let mut node_lines = String::new();
    let mut agents = String::new();
    for ((name, role, ids), server) in nodes.iter().zip(&servers) {
        node_lines.push_str(&format!(
            "    - {{name: {name}, role: {role}, host: \"ssh://{}@127.0.0.1:{}\", address: 127.0.0.1, agents: [{}]}}\n",
            server.user(),
            server.port(),
            ids.join(", ")
        ));
        for id in *ids {
            agents.push_str(&format!("  {id}: {{provider: anthropic}}\n"));
        }
    }
    let config = format!(
        "deployment:\n  target: docker\n  docker: {{project_name: {name}, network: {name}-net, postgres_port: {port}}}\n  resources:\n    agent: {{memory: 32m, cpus: 0.2}}\n    datahub: {{memory: 64m, cpus: 0.5}}\n  health: {{interval: 1s, timeout: 2s, start_period: 5s, deadline: 60s}}\n  update: {{max_parallel: 1, canary: 1, min_healthy_time: 1s, healthy_deadline: {healthy_deadline}, stop_grace_period: 2s, keep_images: 50}}\n  ssh: {{known_hosts: known_hosts, identity_file: {key}}}\n  nodes:\n{node_lines}agents:\n{agents}",
        name = fleet.name,
        port = free_port(),
        key = key.display(),
    );
    std::fs::write(fleet.config(), config).unwrap();
    servers
}

/// A new revision of the agent: `version` in the fleet's package.json.
pub fn bump(fleet: &TestFleet, version: &str) {
    let path = fleet.dir.path().join("package.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text.find("\"version\": \"").unwrap() + 12;
    let end = start + text[start..].find('"').unwrap();
    std::fs::write(&path, format!("{}{version}{}", &text[..start], &text[end..])).unwrap();
}
