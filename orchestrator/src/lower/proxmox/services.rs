//! The agents as services inside their node's container: one resource per agent (kind
//! [`KIND`], named `rivetos@<agent>`, the unit it runs as), so that each agent is planned,
//! rolled out and rolled back on its own while the others of its container keep running.
//!
//! A service's payload is what the adapter installs over SSH: the container that hosts it,
//! the release (the agent image's tag: content-addressed for images built from source), the
//! agent's health port and its environment (secrets included: the payload is never printed;
//! the fields carry digests of them). Its fields are what the plan diffs and what is
//! recorded in the container beside the service, so that observing reads them back.
//!
//! Health ports: each agent has its own, unique in the deployment (two agents in one
//! container cannot share one, and unique across containers costs nothing). An agent that
//! has one keeps it ([`Cluster::ports`], read back from the containers); a new one takes the
//! lowest port from `deployment.health.port` that no other agent has.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use serde_json::{Value, json};

use super::{Cluster, agents_container, database_url};
use crate::fleet::{Env, EnvValue, Fleet, ProxmoxSettings, with_database_url};
use crate::resource::{Component, FieldValue, Fields, Resource, ResourceKey, RunState};

/// Where the config file is in an agents container (`RIVETOS_CONFIG`).
pub const CONFIG_FILE: &str = "/etc/rivetos/config.yaml";

/// Resource kind of an agent's service.
pub const KIND: &str = "service";

/// The service (and resource) name of an agent.
pub fn service_name(agent: &str) -> String {
    format!("rivetos@{agent}")
}

/// The release an image is installed as: its tag (`rivetos-agent:81e41e8bfc76` →
/// `81e41e8bfc76`), the whole reference made path-safe when it has none.
pub fn release_of(image: &str) -> String {
    let tail = image.rsplit('/').next().unwrap_or(image);
    let tag = tail.split('@').next().unwrap_or(tail).rsplit_once(':').map_or(tail, |(_, tag)| tag);
    tag.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '-' }).collect()
}

/// Every agent's health port (see the module doc), by agent id.
pub fn ports(fleet: &Fleet, cluster: &Cluster) -> BTreeMap<String, u16> {
    let mut ids: Vec<&str> = fleet.agents.iter().map(|a| a.id.as_str()).collect();
    ids.sort_unstable();
    let mut out = BTreeMap::new();
    let mut taken = BTreeSet::new();
    for id in &ids {
        if let Some(port) = cluster.ports.get(*id).filter(|p| !taken.contains(*p)) {
            taken.insert(*port);
            out.insert(id.to_string(), *port);
        }
    }
    taken.extend(cluster.busy_ports.iter().copied().filter(|p| !out.values().any(|kept| kept == p)));
    let mut next = fleet.health.port;
    for id in ids {
        if out.contains_key(id) {
            continue;
        }
        while taken.contains(&next) {
            next = next.checked_add(1).expect("fewer agents than ports");
        }
        taken.insert(next);
        out.insert(id.to_string(), next);
    }
    out
}

/// One service resource per agent, on its node; `datahub_address` is the datahub
/// container's (for `RIVETOS_PG_URL`).
pub fn services(
    fleet: &Fleet,
    settings: &ProxmoxSettings,
    cluster: &Cluster,
    datahub_address: Option<Ipv4Addr>,
) -> Vec<Resource<Value>> {
    let ports = ports(fleet, cluster);
    let url = database_url(fleet, settings, datahub_address);
    let grace_ms = fleet.update.stop_grace_period.max(30_000);
    let mut out = Vec::new();
    for agent in &fleet.agents {
        let port = ports[&agent.id];
        let container = agents_container(&agent.node);
        let release = release_of(&agent.image);
        let mut env: Env = with_database_url(&agent.env, url.clone());
        let mut set = |key: &str, value: String| {
            env.insert(Arc::from(key), EnvValue { value: value.into(), sensitive: false });
        };
        set("RIVETOS_AGENT_ID", agent.id.clone());
        set("RIVETOS_HEALTH_PORT", port.to_string());
        set("RIVETOS_ROLE", "agent".into());
        // The config is a file of the container (the adapter writes it there): the
        // containers' home directories are hidden from the agents' sandbox.
        set("RIVETOS_CONFIG", CONFIG_FILE.into());
        let mut fields = Fields::new();
        let mut put = |name: &str, value: &str| {
            fields.insert(name.into(), FieldValue::plain(value));
        };
        put("image", &agent.image);
        put("release", &release);
        put("container", &container);
        put("port", &port.to_string());
        let digest = fleet.config.agent_digests.get(&agent.id).map_or("", |d| &d[..16]);
        put("config", digest);
        let mut values = serde_json::Map::new();
        for (key, value) in &env {
            let field = format!("env.{key}");
            let recorded = if value.sensitive {
                FieldValue::secret(&fleet.name, &field, &value.value)
            } else {
                FieldValue::plain(Arc::clone(&value.value))
            };
            fields.insert(field.into(), recorded);
            values.insert(key.to_string(), Value::String(value.value.to_string()));
        }
        out.push(Resource {
            key: ResourceKey { node: agent.node.clone(), kind: KIND.into(), name: service_name(&agent.id) },
            component: Component::Agent(agent.id.clone()),
            stateful: false,
            fields,
            replace_on: BTreeSet::new(),
            run_state: Some(RunState::Running),
            stop_grace_ms: Some(grace_ms),
            payload: json!({
                "agent": agent.id,
                "container": container,
                "image": agent.image,
                "release": release,
                "port": port,
                "revision": fleet.revision,
                "env": values,
            }),
        });
    }
    out
}

/// The datahub's database service (kind [`KIND`], named [`DATABASE`]) in the datahub's
/// container, when the deployment has a datahub: PostgreSQL listening on the container's
/// address (every address with DHCP) for the deployment's subnet (the server's own subnets
/// with DHCP), the role and database of `deployment.datahub`, the shared directory. The
/// password is a digest in the fields and a value only in the payload.
pub fn database(
    fleet: &Fleet,
    settings: &ProxmoxSettings,
    datahub_address: Option<Ipv4Addr>,
) -> Option<Resource<Value>> {
    let hub = fleet.datahub.as_ref()?;
    let password = hub.env.get("POSTGRES_PASSWORD").map_or("", |p| &*p.value);
    let listen = datahub_address.map_or_else(|| "*".to_string(), |a| a.to_string());
    let clients = settings.network.subnet.clone().unwrap_or_else(|| "samenet".to_string());
    let shared = fleet.shared_storage.then(|| fleet.shared_mount_path.clone());
    let mut fields = Fields::new();
    let mut put = |name: &str, value: &str| {
        fields.insert(name.into(), FieldValue::plain(value));
    };
    put("postgres_version", &hub.postgres_version);
    put("user", &hub.user);
    put("database", &hub.database);
    put("port", &super::POSTGRES_PORT.to_string());
    put("listen", &listen);
    put("clients", &clients);
    put("shared", shared.as_deref().unwrap_or("-"));
    fields.insert("password".into(), FieldValue::secret(&fleet.name, "password", password));
    Some(Resource {
        key: ResourceKey { node: hub.node.clone(), kind: KIND.into(), name: DATABASE.into() },
        component: Component::Database,
        stateful: false,
        fields,
        replace_on: BTreeSet::new(),
        run_state: Some(RunState::Running),
        stop_grace_ms: Some(fleet.update.stop_grace_period.max(30_000)),
        payload: json!({
            "container": super::DATAHUB,
            "version": hub.postgres_version,
            "user": hub.user,
            "database": hub.database,
            "password": password,
            "port": super::POSTGRES_PORT,
            "listen": listen,
            "clients": clients,
            "shared": shared,
        }),
    })
}

/// The datahub's database service name (the unit it runs as).
pub const DATABASE: &str = "rivetos-datahub";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_are_image_tags() {
        assert_eq!(release_of("rivetos-agent:81e41e8bfc76"), "81e41e8bfc76");
        assert_eq!(release_of("127.0.0.1:5000/rivetos-agent:v1.2"), "v1.2");
        assert_eq!(release_of("reg:5000/rivetos-agent"), "rivetos-agent");
    }
}
