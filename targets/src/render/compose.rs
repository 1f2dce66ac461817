//! `docker-compose.yaml` from the fleet's Docker resources: the same containers, networks,
//! volumes, limits and health checks `rivetctl infra up` creates, for people who want to run
//! `docker compose` themselves.
//!
//! Secrets never go into the compose file: each service reads them from an env file beside
//! it, written 0600. A multi-node deployment gets one directory per node.

use std::collections::{BTreeMap, BTreeSet};

use orchestrator::docker::{self, ContainerSpec, DockerObject, MountSource, labels};
use orchestrator::fleet::{Env, Fleet};
use orchestrator::resource::Component;
use serde_json::{Value, json};

use super::{Artifact, RenderError, render};

/// Where the config file is mounted from, relative to the compose file.
pub const CONFIG_COPY: &str = "rivet.config.yaml";

fn duration(ms: u64) -> String {
    if ms % 1000 == 0 { format!("{}s", ms / 1000) } else { format!("{ms}ms") }
}

fn service_name(component: &Component, spec: &ContainerSpec) -> String {
    match component {
        Component::Datahub => "datahub".into(),
        Component::Migrate => "migrate".into(),
        Component::Agent(_) => format!("agent-{}", spec.hostname),
        _ => spec.name.clone(),
    }
}

fn secrets_of(env: &Env) -> BTreeMap<String, String> {
    env.iter().filter(|(_, v)| v.sensitive).map(|(k, v)| (k.clone(), v.value.clone())).collect()
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

fn service(component: &Component, spec: &ContainerSpec, env_files: Vec<String>, depends: &[(String, &str)]) -> Value {
    let environment: BTreeMap<&String, &String> =
        spec.env.iter().filter(|(_, v)| !v.sensitive).map(|(k, v)| (k, &v.value)).collect();
    let volumes: Vec<Value> = spec
        .mounts
        .iter()
        .map(|m| {
            let (kind, source) = match &m.source {
                MountSource::Volume(name) => ("volume", name.clone()),
                MountSource::Bind(_) => ("bind", format!("./{CONFIG_COPY}")),
            };
            json!({ "type": kind, "source": source, "target": m.target, "read_only": m.read_only })
        })
        .collect();
    let visible_labels: BTreeMap<&String, &String> =
        spec.labels.iter().filter(|(k, _)| [labels::COMPONENT, labels::AGENT].contains(&k.as_str())).collect();
    json!({
        "service": service_name(component, spec),
        "name": spec.name,
        "hostname": spec.hostname,
        "image": spec.image,
        "user": spec.user,
        "environment": environment,
        "env_files": env_files,
        "networks": spec.networks.iter().map(|(name, aliases)| json!({"name": name, "aliases": aliases})).collect::<Vec<_>>(),
        "ports": spec.ports.iter().map(|p| format!("{}:{}:{}", p.host_ip, p.host_port, p.container_port)).collect::<Vec<_>>(),
        "volumes": volumes,
        "healthcheck": spec.healthcheck.as_ref().map(|h| if h.test == ["NONE"] { json!({"disable": true}) } else { json!({
            "disable": false,
            "test": h.test,
            "interval": duration(h.interval_ms),
            "timeout": duration(h.timeout_ms),
            "retries": h.retries,
            "start_period": duration(h.start_period_ms),
        })}),
        "depends_on": depends.iter().map(|(service, condition)| json!({"service": service, "condition": condition})).collect::<Vec<_>>(),
        "cap_drop": spec.cap_drop,
        "no_new_privileges": spec.no_new_privileges,
        "memory": spec.limits.memory,
        "cpus": spec.limits.cpus,
        "pids": spec.limits.pids,
        "restart": spec.restart.as_str(),
        "stop_grace_period": format!("{}s", spec.stop_grace_secs),
        "labels": visible_labels,
    })
}

/// The compose files and their env files, one set per node that runs something.
/// `config_text` is copied beside each compose file (agents mount it) and written 0600, as
/// it may hold values people should have put in `.env`.
pub fn artifacts(fleet: &Fleet, config_name: &str, config_text: &str) -> Result<Vec<Artifact>, RenderError> {
    let resources = docker::resources(fleet);
    let nodes: BTreeSet<&str> = resources.iter().map(|r| r.key.node.as_str()).collect();
    let multi = fleet.nodes.len() > 1;
    let mut out = Vec::new();
    for node in nodes {
        let dir = if multi { format!("{node}/") } else { String::new() };
        let mine: Vec<_> = resources.iter().filter(|r| r.key.node == node).collect();
        let mut networks = Vec::new();
        let mut volumes = Vec::new();
        let mut services = Vec::new();
        let mut files: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        let has_hub = mine.iter().any(|r| r.component == Component::Datahub);
        let has_migrate = mine.iter().any(|r| r.component == Component::Migrate);
        for resource in &mine {
            match &resource.payload {
                DockerObject::Network(net) => networks.push(json!({"name": net.name, "internal": net.internal})),
                DockerObject::Volume(volume) => volumes.push(json!(volume.name)),
                DockerObject::Container(spec) => {
                    let secrets = secrets_of(&spec.env);
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
                    let mut depends: Vec<(String, &str)> = Vec::new();
                    if !matches!(resource.component, Component::Datahub) && has_hub {
                        depends.push(("datahub".into(), "service_healthy"));
                    }
                    if matches!(resource.component, Component::Agent(_)) && has_migrate {
                        depends.push(("migrate".into(), "service_completed_successfully"));
                    }
                    services.push(service(&resource.component, spec, env_files, &depends));
                }
            }
        }
        let context = json!({
            "config_name": config_name,
            "deployment": fleet.name,
            "node": if multi { Some(node) } else { None },
            "services": services,
            "networks": networks,
            "volumes": volumes,
        });
        out.push(Artifact {
            path: format!("{dir}docker-compose.yaml"),
            contents: render("docker-compose.yaml.j2", &context)?,
            secret: false,
        });
        out.push(Artifact { path: format!("{dir}{CONFIG_COPY}"), contents: config_text.to_string(), secret: true });
        for (name, secrets) in files {
            out.push(Artifact { path: format!("{dir}{name}"), contents: env_file(&secrets), secret: true });
        }
    }
    Ok(out)
}
