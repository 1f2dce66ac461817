//! `docker-compose.yaml` from the fleet's Docker resources: the same containers, networks,
//! volumes, limits and health checks `rivetctl infra up` creates, for people who want to run
//! `docker compose` themselves.
//!
//! Secrets never go into the compose file: each service reads them from an env file beside
//! it, written 0600. A multi-node deployment gets one directory per node.

use std::collections::{BTreeMap, BTreeSet};

use orchestrator::docker::{ContainerSpec, DockerObject, DockerResource, MountSource, labels};
use orchestrator::fleet::Fleet;
use orchestrator::resource::Component;
use serde_json::json;

use minijinja::Value as MValue;

use super::{Artifact, RenderError, render, render_value};

/// The templates of the compose file: its head, one service, and what follows the services.
const HEAD_TEMPLATE: &str = "docker-compose.yaml.j2";
const SERVICE_TEMPLATE: &str = "docker-compose-service.yaml.j2";
const TAIL_TEMPLATE: &str = "docker-compose-tail.yaml.j2";

/// Where the config file is mounted from, relative to the compose file.
pub const CONFIG_COPY: &str = "rivet.config.yaml";

fn duration(ms: u64) -> String {
    if ms.is_multiple_of(1000) { format!("{}s", ms / 1000) } else { format!("{ms}ms") }
}

fn service_name(component: &Component, spec: &ContainerSpec) -> String {
    match component {
        Component::Datahub => "datahub".into(),
        Component::Migrate => "migrate".into(),
        Component::Agent(_) => format!("agent-{}", spec.hostname),
        _ => spec.name.clone(),
    }
}

fn secrets_of(spec: &ContainerSpec) -> BTreeMap<String, String> {
    spec.environment().filter(|(_, v)| v.sensitive).map(|(k, v)| (k.to_string(), v.value.to_string())).collect()
}

/// An env file in the format `docker compose` reads (`KEY=value`, one per line; values are
/// single-line, as `.env` values are).
fn env_file(secrets: &BTreeMap<String, String>) -> String {
    let mut out = String::from("# Written by rivetctl: secrets for docker compose. Keep this file private.\n");
    for (key, value) in secrets {
        out.push_str(&format!("{key}={value}\n"));
    }
    out
}

/// A string as JSON (and so as a YAML scalar).
fn q(text: &str) -> MValue {
    // Most values need no escaping: quote them directly (a thousand agents have many).
    if text.chars().all(|c| c != '"' && c != '\\' && !c.is_control()) {
        return MValue::from(format!("\"{text}\""));
    }
    MValue::from(serde_json::to_string(text).expect("strings serialise"))
}

/// A list of strings as a JSON array.
fn q_list(items: &[String]) -> MValue {
    let quoted: Vec<String> = items.iter().map(|i| serde_json::to_string(i).expect("strings serialise")).collect();
    MValue::from(format!("[{}]", quoted.join(", ")))
}

fn map<const N: usize>(pairs: [(&'static str, MValue); N]) -> MValue {
    MValue::from(BTreeMap::from(pairs))
}

/// The context of one service: every value pre-encoded as JSON, so the template only places
/// them (and rendering a thousand services stays cheap).
fn service(component: &Component, spec: &ContainerSpec, env_files: Vec<String>, depends: &[(&str, &str)]) -> MValue {
    let environment: Vec<MValue> =
        spec.environment().filter(|(_, v)| !v.sensitive).map(|(k, v)| MValue::from(vec![q(k), q(&v.value)])).collect();
    // A copied config file (remote nodes) is, for compose, the config beside the file.
    let copied = spec.files.iter().filter(|f| f.path == orchestrator::docker::CONFIG_MOUNT).map(|f| {
        orchestrator::docker::Mount {
            source: MountSource::Bind(f.path.clone()),
            target: f.path.clone(),
            read_only: true,
        }
    });
    let mounts: Vec<orchestrator::docker::Mount> = spec.mounts.iter().cloned().chain(copied).collect();
    let volumes: Vec<MValue> = mounts
        .iter()
        .map(|m| {
            let (kind, source) = match &m.source {
                MountSource::Volume(name) => ("volume", name.clone()),
                MountSource::Bind(_) => ("bind", format!("./{CONFIG_COPY}")),
            };
            map([
                ("type", q(kind)),
                ("source", q(&source)),
                ("target", q(&m.target)),
                ("read_only", MValue::from(m.read_only.to_string())),
            ])
        })
        .collect();
    let labels: Vec<MValue> = spec
        .labels
        .iter()
        .filter(|(k, _)| [labels::COMPONENT, labels::AGENT].contains(&k.as_str()))
        .map(|(k, v)| MValue::from(vec![q(k), q(v)]))
        .collect();
    let healthcheck = match &spec.healthcheck {
        None => MValue::from(()),
        Some(h) if h.test == ["NONE"] => map([("disable", MValue::from(true))]),
        Some(h) => map([
            ("disable", MValue::from(false)),
            ("test", q_list(&h.test)),
            ("interval", q(&duration(h.interval_ms))),
            ("timeout", q(&duration(h.timeout_ms))),
            ("retries", MValue::from(h.retries.to_string())),
            ("start_period", q(&duration(h.start_period_ms))),
        ]),
    };
    map([
        ("service", q(&service_name(component, spec))),
        ("name", q(&spec.name)),
        ("hostname", q(&spec.hostname)),
        ("image", q(&spec.image)),
        ("user", spec.user.as_deref().map_or(MValue::from(()), q)),
        ("environment", MValue::from(environment)),
        ("env_files", MValue::from(env_files.iter().map(|f| q(f)).collect::<Vec<_>>())),
        (
            "networks",
            MValue::from(
                spec.networks
                    .iter()
                    .map(|(name, aliases)| {
                        let aliases = if aliases.is_empty() { MValue::from(()) } else { q_list(aliases) };
                        map([("name", q(name)), ("aliases", aliases)])
                    })
                    .collect::<Vec<_>>(),
            ),
        ),
        (
            "ports",
            MValue::from(
                spec.ports
                    .iter()
                    .map(|p| q(&format!("{}:{}:{}", p.host_ip, p.host_port, p.container_port)))
                    .collect::<Vec<_>>(),
            ),
        ),
        ("volumes", MValue::from(volumes)),
        ("healthcheck", healthcheck),
        (
            "depends_on",
            MValue::from(
                depends
                    .iter()
                    .map(|(service, condition)| map([("service", q(service)), ("condition", q(condition))]))
                    .collect::<Vec<_>>(),
            ),
        ),
        ("cap_drop", q_list(&spec.cap_drop)),
        ("no_new_privileges", MValue::from(spec.no_new_privileges)),
        ("memory", MValue::from(spec.limits.memory.to_string())),
        ("cpus", MValue::from(serde_json::to_string(&spec.limits.cpus).expect("numbers serialise"))),
        ("pids", MValue::from(spec.limits.pids.to_string())),
        ("restart", q(spec.restart.as_str())),
        ("stop_grace_period", q(&format!("{}s", spec.stop_grace_secs))),
        ("labels", MValue::from(labels)),
    ])
}

/// Where [`write`] puts the files it renders: memory ([`artifacts`]) or a directory, as they
/// are rendered (a thousand services are about 1.4 MB that need not be held at once).
pub trait Sink {
    type Error: From<RenderError>;
    /// Starts the file at `path` (relative; `secret`: it holds secrets and is written 0600);
    /// the text written next belongs to it.
    fn start(&mut self, path: &str, secret: bool) -> Result<(), Self::Error>;
    /// Appends to the file started last.
    fn write(&mut self, text: &str) -> Result<(), Self::Error>;
}

/// Collects the files in memory.
struct Memory(Vec<Artifact>);

impl Sink for Memory {
    type Error = RenderError;

    fn start(&mut self, path: &str, secret: bool) -> Result<(), RenderError> {
        self.0.push(Artifact { path: path.to_string(), contents: String::new(), secret });
        Ok(())
    }

    fn write(&mut self, text: &str) -> Result<(), RenderError> {
        if let Some(file) = self.0.last_mut() {
            file.contents.push_str(text);
        }
        Ok(())
    }
}

/// The files in memory: see [`write`].
pub fn artifacts(
    fleet: &Fleet,
    resources: &[DockerResource],
    config_name: &str,
    config_text: &str,
) -> Result<Vec<Artifact>, RenderError> {
    let mut memory = Memory(Vec::new());
    write(fleet, resources, config_name, config_text, &mut memory)?;
    Ok(memory.0)
}

/// Renders the compose files into `sink`, each service as it is rendered. `resources` are
/// the fleet's Docker resources (`orchestrator::docker::resources`). `config_text` is copied
/// beside each compose file (agents mount it) and written 0600, as it may hold values people
/// should have put in `.env`.
pub fn write<S: Sink>(
    fleet: &Fleet,
    resources: &[DockerResource],
    config_name: &str,
    config_text: &str,
    sink: &mut S,
) -> Result<(), S::Error> {
    let nodes: BTreeSet<&str> = resources.iter().map(|r| r.key.node.as_str()).collect();
    let multi = fleet.nodes.len() > 1;
    for node in nodes {
        let dir = if multi { format!("{node}/") } else { String::new() };
        let mine: Vec<_> = resources.iter().filter(|r| r.key.node == node).collect();
        let mut networks = Vec::new();
        let mut volumes = Vec::new();
        let head = json!({
            "config_name": config_name,
            "deployment": fleet.name,
            "node": if multi { Some(node) } else { None },
        });
        sink.start(&format!("{dir}docker-compose.yaml"), false)?;
        sink.write(&render(HEAD_TEMPLATE, &head)?)?;
        let mut files: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        let has_hub = mine.iter().any(|r| r.component == Component::Datahub);
        let has_migrate = mine.iter().any(|r| r.component == Component::Migrate);
        for resource in &mine {
            match &resource.payload {
                DockerObject::Network(net) => networks.push(json!({"name": net.name, "internal": net.internal})),
                DockerObject::Volume(volume) => volumes.push(json!(volume.name)),
                DockerObject::Container(spec) => {
                    let secrets = secrets_of(spec);
                    let mut env_files = Vec::new();
                    if !secrets.is_empty() {
                        let file = match &resource.component {
                            Component::Datahub => "datahub.env".to_string(),
                            _ => files
                                .iter()
                                .find(|(name, content)| name.starts_with("agent") && **content == secrets)
                                .map(|(name, _)| name.clone())
                                .unwrap_or_else(|| {
                                    if files.keys().any(|k| k.starts_with("agent")) {
                                        format!("agent-{}.env", spec.hostname)
                                    } else {
                                        "agents.env".to_string()
                                    }
                                }),
                        };
                        files.insert(file.clone(), secrets);
                        env_files.push(file);
                    }
                    let mut depends: Vec<(&str, &str)> = Vec::new();
                    if !matches!(resource.component, Component::Datahub) && has_hub {
                        depends.push(("datahub", "service_healthy"));
                    }
                    if matches!(resource.component, Component::Agent(_)) && has_migrate {
                        depends.push(("migrate", "service_completed_successfully"));
                    }
                    let context = service(&resource.component, spec, env_files, &depends);
                    sink.write(&render_value(SERVICE_TEMPLATE, minijinja::context! { s => context })?)?;
                }
            }
        }
        sink.write(&render(TAIL_TEMPLATE, &json!({ "networks": networks, "volumes": volumes }))?)?;
        sink.start(&format!("{dir}{CONFIG_COPY}"), true)?;
        sink.write(config_text)?;
        for (name, secrets) in files {
            sink.start(&format!("{dir}{name}"), true)?;
            sink.write(&env_file(&secrets))?;
        }
    }
    Ok(())
}
