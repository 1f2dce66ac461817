//! The fleet as Proxmox VE LXC containers: the parameters of `POST /nodes/{node}/lxc`, one
//! container per node of the Proxmox settings, named `rivet-<node>`.
//!
//! A resource's payload is exactly the request body (the path's `{node}` is the resource
//! key's node), with the API's parameter names and value formats
//! (`reference/pve-api-schema.json`): booleans as `0`/`1`, `rootfs` as
//! `<storage>:<size in GiB>` (allocate a new volume), `net0` as a property string. Never a
//! password: logins are by SSH key only, and no secret is a parameter. Ownership lives in
//! `tags` and `description` (read back when observing).
//!
//! Choices:
//! - `vmid`: the node's `ctid_start`, else `200 + the node's index` in the settings' nodes.
//! - Addresses: with `network.subnet`, the node at index `i` gets `<subnet base> + 10 + i`
//!   (the gateway is added when set); without a subnet, DHCP.
//! - Every container should be running (`start` and `onboot` are set).
//! - Component: the node running the datahub is [`Component::Datahub`] (created first);
//!   a node with agents is `Agent(<its first agent id>)`; an empty node is
//!   [`Component::Foundation`]. Every container is stateful: its root disk holds the data.
//! - How an agent reaches the datahub: PostgreSQL runs in the datahub node's container on
//!   its own port, so `@localhost:5432` there and `@<datahub node's host>:5432` elsewhere
//!   ([`database_url`]); the systemd units never print it (it is a secret of the node's
//!   environment file).
//!
//! Pure: no I/O; output is deterministic.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde_json::{Value, json};

use crate::fleet::{EnvValue, Fleet, ProxmoxNodeSettings, ProxmoxSettings};
use crate::resource::{Component, Fields, Resource, ResourceKey, RunState, flatten_json};

/// Resource kind of a container.
pub const KIND: &str = "lxc";
/// vmid of the node at index `i` without `ctid_start`: `FIRST_VMID + i`.
pub const FIRST_VMID: u32 = 200;
/// Host part of the first address handed out in `network.subnet`.
pub const FIRST_HOST: u32 = 10;
/// Parameters whose change needs a new container.
pub const REPLACE_ON: &[&str] = &["vmid", "ostemplate", "unprivileged", "rootfs", "hostname"];
/// PostgreSQL's port in the datahub's container.
pub const POSTGRES_PORT: u16 = 5432;

/// Why the containers cannot be laid out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LowerError {
    #[error("subnet {subnet} has no prefix")]
    NoPrefix { subnet: String },
    #[error("subnet {subnet} is not IPv4")]
    NotIpv4 { subnet: String },
    #[error("subnet {subnet} has a bad prefix")]
    BadPrefix { subnet: String },
    #[error("subnet {subnet} has no address for node {position} (host .{host})")]
    SubnetFull { subnet: String, position: usize, host: u64 },
    #[error("nodes \"{first}\" and \"{second}\" both get vmid {vmid}")]
    DuplicateVmid { first: String, second: String, vmid: u32 },
}

/// The container's hostname.
pub fn hostname(node: &str) -> String {
    format!("rivet-{node}")
}

/// `RIVETOS_PG_URL` for the agents of `node`.
pub fn database_url(fleet: &Fleet, settings: &ProxmoxSettings, node: &str) -> Option<EnvValue> {
    let hub = fleet.datahub.as_ref()?;
    if hub.node == node {
        return Some(hub.url("localhost", POSTGRES_PORT));
    }
    let host = settings.nodes.iter().find(|n| n.name == hub.node).and_then(|n| n.host.as_deref());
    Some(hub.url(host.unwrap_or(&hub.node), POSTGRES_PORT))
}

/// `ip=<addr>/<prefix>[,gw=<gw>]` from the subnet, or `ip=dhcp`.
fn ip_config(settings: &ProxmoxSettings, index: usize) -> Result<String, LowerError> {
    let network = &settings.network;
    let Some(subnet) = &network.subnet else {
        return Ok("ip=dhcp".into());
    };
    let (base, prefix) = subnet.split_once('/').ok_or_else(|| LowerError::NoPrefix { subnet: subnet.clone() })?;
    let base: Ipv4Addr = base.parse().map_err(|_| LowerError::NotIpv4 { subnet: subnet.clone() })?;
    let prefix: u32 = prefix.parse().map_err(|_| LowerError::BadPrefix { subnet: subnet.clone() })?;
    let size = 1u64 << (32 - prefix.min(32));
    let host = u64::from(FIRST_HOST) + index as u64;
    if host + 1 >= size {
        return Err(LowerError::SubnetFull { subnet: subnet.clone(), position: index + 1, host });
    }
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix.min(32)) };
    let address = Ipv4Addr::from((u32::from(base) & mask) + host as u32);
    let mut config = format!("ip={address}/{prefix}");
    if let Some(gateway) = &network.gateway {
        config.push_str(&format!(",gw={gateway}"));
    }
    Ok(config)
}

/// Who owns the container and what runs in it: no secrets, one `key: value` per line.
fn description(fleet: &Fleet, node: &ProxmoxNodeSettings, agents: &[String]) -> String {
    let agents = if agents.is_empty() { "-".to_string() } else { agents.join(",") };
    format!(
        "Managed by rivetctl; edits are overwritten.\ndeployment: {}\nnode: {}\nrole: {}\nagents: {agents}\n",
        fleet.name,
        node.name,
        node.role.as_str()
    )
}

/// The request body creating one node's container.
fn parameters(
    fleet: &Fleet,
    settings: &ProxmoxSettings,
    index: usize,
    node: &ProxmoxNodeSettings,
) -> Result<Value, LowerError> {
    let agents = fleet.node(&node.name).map(|n| n.agents.clone()).unwrap_or_default();
    let vmid = node.ctid.unwrap_or(FIRST_VMID + index as u32);
    let net0 = format!("name=eth0,bridge={},{}", settings.network.bridge, ip_config(settings, index)?);
    let mut params = json!({
        "vmid": vmid,
        "hostname": hostname(&node.name),
        "ostemplate": settings.template,
        "description": description(fleet, node, &agents),
        "tags": format!("rivetctl;rivet-{}", fleet.name),
        "cores": settings.cores,
        "memory": settings.memory_mb,
        "swap": settings.swap_mb,
        "rootfs": format!("{}:{}", settings.storage, settings.rootfs_gb),
        "net0": net0,
        "features": "nesting=1",
        "unprivileged": u8::from(settings.unprivileged),
        "onboot": 1,
        "start": 1,
    });
    if let Some(keys) = &settings.ssh_public_keys {
        params["ssh-public-keys"] = json!(keys);
    }
    Ok(params)
}

/// One stateful resource per container, in the settings' node order; fields are the
/// request parameters. Fails when two nodes would get the same vmid or the subnet runs out
/// of addresses.
pub fn lower(fleet: &Fleet, settings: &ProxmoxSettings) -> Result<Vec<Resource<Value>>, LowerError> {
    let mut seen: BTreeMap<u32, &str> = BTreeMap::new();
    let mut out = Vec::new();
    for (index, node) in settings.nodes.iter().enumerate() {
        let params = parameters(fleet, settings, index, node)?;
        let vmid = node.ctid.unwrap_or(FIRST_VMID + index as u32);
        if let Some(first) = seen.insert(vmid, &node.name) {
            return Err(LowerError::DuplicateVmid { first: first.to_string(), second: node.name.clone(), vmid });
        }
        let mut fields = Fields::new();
        flatten_json(&params, "", &mut fields, &|_| false, &fleet.name);
        let agents = fleet.node(&node.name).map(|n| n.agents.as_slice()).unwrap_or_default();
        let component = if fleet.datahub.as_ref().is_some_and(|h| h.node == node.name) {
            Component::Datahub
        } else if let Some(first) = agents.first() {
            Component::Agent(first.clone())
        } else {
            Component::Foundation
        };
        out.push(Resource {
            key: ResourceKey { node: node.name.clone(), kind: KIND.into(), name: hostname(&node.name) },
            component,
            stateful: true,
            fields,
            replace_on: REPLACE_ON.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>(),
            run_state: Some(RunState::Running),
            stop_grace_ms: None,
            payload: params,
        });
    }
    Ok(out)
}
