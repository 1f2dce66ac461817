//! Checks that span several fields: nodes against agents, targets against their sections,
//! names that every target must accept. Runs after the per-field checks, on the typed model,
//! and reports with the positions the checker recorded.

mod reach;

use std::collections::{BTreeMap, BTreeSet};

use super::check::Loc;
use super::diagnostics::{Diagnostic, did_you_mean};
use super::model::{EngineTls, ImageDelivery, RawConfig, Role, Target};
use super::rules::{Endpoint, TcpSecurity, parse_endpoint};

/// Collects cross-field problems.
pub struct Semantic<'a> {
    pub config: &'a RawConfig,
    pub locations: &'a BTreeMap<String, Loc>,
    /// Top-level keys present under `deployment:` in the file (not defaulted).
    pub written: &'a BTreeSet<String>,
    /// Values of the `.env` beside the config.
    pub dotenv: &'a BTreeMap<String, String>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Semantic<'_> {
    fn at(&self, path: &str) -> (Option<super::diagnostics::Pos>, usize) {
        self.locations
            .get(path)
            .or_else(|| self.locations.get(&format!("{path}#key")))
            .map_or((None, 1), |loc| (Some(loc.pos), loc.len))
    }

    fn error(&mut self, path: &str, message: String, hint: Option<String>) {
        let (pos, len) = self.at(path);
        let mut diag = Diagnostic::error(message, pos).with_len(len);
        if let Some(hint) = hint {
            diag = diag.with_hint(hint);
        }
        self.diagnostics.push(diag);
    }

    fn warning(&mut self, path: &str, message: String, hint: Option<String>) {
        let (pos, len) = self.at(path);
        let mut diag = Diagnostic::warning(message, pos).with_len(len);
        if let Some(hint) = hint {
            diag = diag.with_hint(hint);
        }
        self.diagnostics.push(diag);
    }

    /// Runs every check.
    pub fn run(&mut self) {
        self.target_sections();
        self.agent_names();
        match self.config.deployment.target {
            Target::Docker => {
                self.docker_nodes();
                self.datahub_reach();
                self.tcp_engines();
            }
            Target::Proxmox => self.proxmox(),
            Target::Kubernetes => self.kubernetes(),
            Target::Manual => {}
        }
        self.agent_overrides();
        self.images();
        self.secrets();
    }

    /// The datahub's password (or, without a datahub, the database URL) lives in `.env`.
    fn secrets(&mut self) {
        let deployment = &self.config.deployment;
        if deployment.target == Target::Manual {
            return;
        }
        let (name, path, what) = if deployment.datahub.postgres {
            ("POSTGRES_PASSWORD", "deployment.datahub.postgres", "the datahub needs it")
        } else {
            ("RIVETOS_PG_URL", "deployment.datahub.postgres", "agents need it when the datahub is off")
        };
        if self.dotenv.get(name).is_none_or(|v| v.is_empty()) {
            let at = if self.locations.contains_key(path) { path.to_string() } else { "deployment#key".to_string() };
            let hint = if deployment.datahub.postgres {
                "add a line to the .env beside the config: POSTGRES_PASSWORD=<a long random string> (for example from `openssl rand -hex 24`)"
            } else {
                "add RIVETOS_PG_URL=postgres://user:password@host:5432/db to the .env beside the config"
            };
            self.error(&at, format!("{name} is not set in the .env beside the config ({what})"), Some(hint.into()));
        }
    }

    fn target_sections(&mut self) {
        let target = self.config.deployment.target;
        for (section, owner) in
            [("docker", Target::Docker), ("proxmox", Target::Proxmox), ("kubernetes", Target::Kubernetes)]
        {
            if target != owner && self.written.contains(section) {
                let label = match owner {
                    Target::Docker => "Docker",
                    Target::Proxmox => "Proxmox",
                    _ => "Kubernetes",
                };
                self.warning(
                    &format!("deployment.{section}#key"),
                    format!(
                        "\"deployment.{section}\" is configured but target is \"{}\" — {label} settings will be ignored",
                        target.as_str()
                    ),
                    None,
                );
            }
        }
        if !self.written.contains("nodes") || target == Target::Docker {
            return;
        }
        self.warning(
            "deployment.nodes#key",
            format!("\"deployment.nodes\" applies to the docker target; target is \"{}\"", target.as_str()),
            Some("Proxmox nodes go under deployment.proxmox.nodes".into()),
        );
    }

    fn agent_names(&mut self) {
        let mut seen: BTreeMap<String, &str> = BTreeMap::new();
        for id in self.config.agents.keys() {
            let name = crate::fleet::container_name_of(id);
            if name.is_empty() {
                self.error(
                    &format!("agents.{id}#key"),
                    format!("agent id \"{id}\" has no letters or digits"),
                    Some("agent ids become container and host names: use letters, digits and `-`".into()),
                );
                continue;
            }
            if let Some(other) = seen.insert(name.clone(), id) {
                self.error(
                    &format!("agents.{id}#key"),
                    format!("agents \"{other}\" and \"{id}\" would both be deployed as \"{name}\""),
                    Some("agent ids are lower-cased and `_` becomes `-` in container names; rename one".into()),
                );
            }
        }
    }

    fn agent_exists(&mut self, id: &str, path: &str) -> bool {
        if self.config.agents.contains_key(id) {
            return true;
        }
        let hint = did_you_mean(id, self.config.agents.keys().map(String::as_str))
            .map(|m| format!("did you mean \"{m}\"?"))
            .unwrap_or_else(|| "agent ids are the keys of the top-level `agents:` section".into());
        self.error(path, format!("unknown agent \"{id}\""), Some(hint));
        false
    }

    /// A `tcp://` engine needs TLS or an explicit `insecure: true`; not both.
    fn tcp_engines(&mut self) {
        let deployment = &self.config.deployment;
        // (path of the settings, what they are for, host, tls, insecure)
        let mut engines = Vec::new();
        if deployment.nodes.is_empty() {
            if let Some(host) = &deployment.docker.host {
                let docker = &deployment.docker;
                engines.push((
                    "deployment.docker".to_string(),
                    "the Docker engine".to_string(),
                    host.clone(),
                    docker.tls.clone(),
                    docker.insecure,
                ));
            }
        } else {
            for (i, node) in deployment.nodes.iter().enumerate() {
                let what = format!("node \"{}\"", node.name);
                engines.push((
                    format!("deployment.nodes[{i}]"),
                    what,
                    node.host.clone(),
                    node.tls.clone(),
                    node.insecure,
                ));
            }
        }
        for (path, what, host, tls, insecure) in engines {
            let Some(endpoint) = parse_endpoint(&host) else { continue };
            let security = TcpSecurity::of(&tls, insecure);
            let tcp = matches!(endpoint, Endpoint::Tcp { .. });
            if matches!(security, TcpSecurity::Tls { .. }) && insecure {
                self.error(
                    &format!("{path}.insecure"),
                    format!("{what} has both `tls` and `insecure: true`"),
                    Some("remove `insecure`: with `tls` the engine is spoken to over TLS".into()),
                );
            } else if tcp && security == TcpSecurity::Unset {
                self.error(
                    &format!("{path}.host"),
                    format!(
                        "{what} is reached at {endpoint} without TLS: anyone on the path could run containers as root there"
                    ),
                    Some(format!(
                        "run dockerd with --tlsverify and add `tls: {{ca: ca.pem, cert: cert.pem, key: key.pem}}` to {path} (paths relative to the config), or set `insecure: true` there to accept plain HTTP"
                    )),
                );
            } else if matches!(endpoint, Endpoint::Unix(_) | Endpoint::Ssh { .. }) && tls != EngineTls::default() {
                self.warning(
                    &format!("{path}.tls#key"),
                    format!("{what}: `tls` applies to tcp:// engines; {endpoint} ignores it"),
                    None,
                );
            }
        }
    }

    /// A node told to pull needs images built here and a registry to pull them from.
    fn pulling_node(&mut self, i: usize) {
        let node = &self.config.deployment.nodes[i];
        let image = &self.config.deployment.image;
        let path = format!("deployment.nodes[{i}].images");
        if !image.build_from_source {
            let message = format!(
                "node \"{}\" is told to pull images, but images are not built from source, so there is nothing to push for it",
                node.name
            );
            self.error(
                &path,
                message,
                Some("remove `images: pull`, or set deployment.image.build_from_source: true".into()),
            );
        } else if image.registry.trim().is_empty() {
            let message =
                format!("node \"{}\" is told to pull images, but deployment.image.registry is empty", node.name);
            self.error(
                &path,
                message,
                Some("set deployment.image.registry to a registry both this machine and the node reach (`registry.lan:5000/rivetos`)".into()),
            );
        }
    }

    fn docker_nodes(&mut self) {
        let nodes = &self.config.deployment.nodes;
        let mut names = BTreeSet::new();
        let mut placed: BTreeMap<&str, &str> = BTreeMap::new();
        for (i, node) in nodes.iter().enumerate() {
            if !names.insert(node.name.as_str()) {
                self.error(
                    &format!("deployment.nodes[{i}].name"),
                    format!("duplicate node name \"{}\"", node.name),
                    Some("node names must be unique".into()),
                );
            }
            if node.images == ImageDelivery::Pull {
                self.pulling_node(i);
            }
            for (j, id) in node.agents.iter().flatten().enumerate() {
                let path = format!("deployment.nodes[{i}].agents[{j}]");
                if !self.agent_exists(id, &path) {
                    continue;
                }
                if !node.role.runs_agents() {
                    self.error(
                        &path,
                        format!("node \"{}\" has role \"datahub\" but lists agent \"{id}\"", node.name),
                        Some("use role `both` to run agents there too".into()),
                    );
                }
                if let Some(other) = placed.insert(id.as_str(), node.name.as_str()) {
                    self.error(
                        &path,
                        format!("agent \"{id}\" is placed on two nodes: \"{other}\" and \"{}\"", node.name),
                        Some("an agent runs on exactly one node".into()),
                    );
                }
            }
        }
        if nodes.is_empty() {
            return;
        }
        if self.config.deployment.datahub.postgres && !nodes.iter().any(|n| n.role.runs_datahub()) {
            self.warning(
                "deployment.nodes#key",
                "No node has role \"datahub\" or \"both\" — at least one node should run the datahub".into(),
                None,
            );
        }
        let hubs: Vec<_> = nodes.iter().filter(|n| n.role.runs_datahub()).collect();
        if hubs.len() > 1 {
            self.error(
                "deployment.nodes#key",
                format!(
                    "{} nodes run the datahub ({}); a deployment has one datahub",
                    hubs.len(),
                    hubs.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", ")
                ),
                Some("give the other nodes role `agents`".into()),
            );
        }
        let hub = hubs.first().map(|n| n.name.clone());
        let remote_agents = nodes.iter().any(|n| n.role.runs_agents() && Some(&n.name) != hub.as_ref());
        if remote_agents
            && self.config.deployment.datahub.postgres
            && self.config.deployment.docker.postgres_port == 0
            && hub.is_some()
        {
            self.error(
                "deployment.docker.postgres_port",
                "agents on other nodes than the datahub's need its port published, but postgres_port is 0".into(),
                Some("set deployment.docker.postgres_port (for example 5432)".into()),
            );
        }
        let unlisted: Vec<_> = nodes.iter().filter(|n| n.role.runs_agents() && n.agents.is_none()).collect();
        let mut unplaced: Vec<&String> = self
            .config
            .agents
            .keys()
            .filter(|id| !placed.contains_key(id.as_str()))
            .filter(|id| self.config.deployment.agents.get(*id).and_then(|a| a.node.as_ref()).is_none())
            .collect();
        unplaced.sort();
        if !unplaced.is_empty() && unlisted.len() != 1 {
            let names: Vec<_> = unplaced.iter().map(|s| s.as_str()).collect();
            self.error(
                "deployment.nodes#key",
                format!("agents not placed on any node: {}", names.join(", ")),
                Some(if unlisted.is_empty() {
                    "list them under a node's `agents:`, or leave `agents:` out on one agents node to run the rest there".into()
                } else {
                    "more than one agents node has no `agents:` list; list the agents of each node".into()
                }),
            );
        }
    }

    fn proxmox(&mut self) {
        let proxmox = &self.config.deployment.proxmox;
        if proxmox.api_url.is_none() {
            self.error(
                "deployment.proxmox#key",
                "target \"proxmox\" needs \"deployment.proxmox.api_url\"".into(),
                Some("add `api_url: https://<node>:8006/api2/json` under deployment.proxmox".into()),
            );
        }
        if proxmox.nodes.is_empty() {
            self.error(
                "deployment.proxmox#key",
                "target \"proxmox\" needs at least one node in \"deployment.proxmox.nodes\"".into(),
                Some("add `nodes: [{ name: pve1, role: both }]`".into()),
            );
        } else if !proxmox.nodes.iter().any(|n| matches!(n.role, Role::Datahub | Role::Both)) {
            self.warning(
                "deployment.proxmox.nodes",
                "No node has role \"datahub\" or \"both\" — at least one node should run the datahub".into(),
                None,
            );
        }
        let mut names = BTreeSet::new();
        for (i, node) in proxmox.nodes.iter().enumerate() {
            if !names.insert(node.name.as_str()) {
                self.error(
                    &format!("deployment.proxmox.nodes[{i}].name"),
                    format!("duplicate node name \"{}\"", node.name),
                    None,
                );
            }
        }
        if proxmox.network.subnet.is_some() != proxmox.network.gateway.is_some() {
            self.error(
                "deployment.proxmox.network#key",
                "\"subnet\" and \"gateway\" go together: set both for static addresses, or neither for DHCP".into(),
                None,
            );
        }
    }

    fn kubernetes(&mut self) {
        let namespace = &self.config.deployment.kubernetes.namespace;
        let dns_label = namespace.len() <= 63
            && namespace.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !namespace.starts_with('-')
            && !namespace.ends_with('-');
        if !dns_label {
            self.error(
                "deployment.kubernetes.namespace",
                format!("namespace \"{namespace}\" is not a valid Kubernetes name"),
                Some("use lower-case letters, digits and `-`".into()),
            );
        }
    }

    fn agent_overrides(&mut self) {
        let node_names: BTreeSet<&str> = self.config.deployment.nodes.iter().map(|n| n.name.as_str()).collect();
        for (id, settings) in &self.config.deployment.agents {
            let path = format!("deployment.agents.{id}#key");
            if !self.agent_exists(id, &path) {
                continue;
            }
            if let Some(node) = &settings.node {
                let node_path = format!("deployment.agents.{id}.node");
                if self.config.deployment.target == Target::Docker && !node_names.contains(node.as_str()) {
                    let hint = did_you_mean(node, node_names.iter().copied())
                        .map(|m| format!("did you mean \"{m}\"?"))
                        .unwrap_or_else(|| "node names come from deployment.nodes".into());
                    self.error(&node_path, format!("unknown node \"{node}\""), Some(hint));
                }
                let listed = self
                    .config
                    .deployment
                    .nodes
                    .iter()
                    .any(|n| n.name != *node && n.agents.iter().flatten().any(|a| a == id));
                if listed {
                    self.error(
                        &node_path,
                        format!("agent \"{id}\" is placed on node \"{node}\" here and listed under another node"),
                        Some("keep one placement".into()),
                    );
                }
            }
        }
    }

    fn images(&mut self) {
        let image = &self.config.deployment.image;
        for (field, value) in [("agent_image", &image.agent_image), ("datahub_image", &image.datahub_image)] {
            let ok = !value.is_empty()
                && value.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c));
            if !ok {
                self.error(
                    &format!("deployment.image.{field}"),
                    format!("\"{field}\" must be a lower-case image repository name (found {value:?})"),
                    Some("use lower-case letters, digits, `.`, `_`, `-` and `/`".into()),
                );
            }
        }
    }
}
