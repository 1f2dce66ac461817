//! The fleet as Proxmox VE LXC containers: the parameters of `POST /nodes/{node}/lxc`, one
//! container per node of `deployment.proxmox.nodes`, named `rivet-<node>`.
//!
//! The files `proxmox/<node>.json` hold exactly the request body (the path's `{node}` is not
//! repeated), with the API's parameter names and value formats (`reference/pve-api-schema.json`):
//! booleans as `0`/`1`, `rootfs` as `<storage>:<size in GiB>` (allocate a new volume),
//! `net0` as a property string. Never a password: logins are by SSH key only, and no secret
//! appears in these files. Ownership lives in `tags` and `description` (read back when
//! observing).
//!
//! Choices:
//! - `vmid`: the node's `ctid_start`, else `200 + the node's index` in `proxmox.nodes`.
//! - Addresses: with `network.subnet`, the node at index `i` gets `<subnet base> + 10 + i`
//!   (the gateway is added when set); without a subnet, DHCP.
//! - Every container should be running (`start` and `onboot` are set).
//! - Component: the node running the datahub is [`Component::Datahub`] (created first);
//!   a node with agents is `Agent(<its first agent id>)`; an empty node is
//!   [`Component::Foundation`]. Every container is stateful: its root disk holds the data.
//!
//! Pure: no I/O; output is deterministic.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use orchestrator::config::model::ProxmoxNode;
use orchestrator::fleet::Fleet;
use orchestrator::resource::{Component, Fields, Resource, ResourceKey, RunState, flatten_json};
use serde_json::{Value, json};

use super::{Artifact, RenderError};

/// The template of one container's parameters.
pub const TEMPLATE: &str = "lxc.json.j2";
/// Resource kind of a container.
pub const KIND: &str = "lxc";
/// vmid of the node at index `i` without `ctid_start`: `FIRST_VMID + i`.
pub const FIRST_VMID: u32 = 200;
/// Host part of the first address handed out in `network.subnet`.
pub const FIRST_HOST: u32 = 10;
/// Parameters whose change needs a new container.
pub const REPLACE_ON: &[&str] = &["vmid", "ostemplate", "unprivileged", "rootfs", "hostname"];

fn invalid(detail: String) -> RenderError {
    RenderError { template: TEMPLATE, source: minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, detail) }
}

/// The container's hostname.
pub fn hostname(node: &str) -> String {
    format!("rivet-{node}")
}

/// `ip=<addr>/<prefix>[,gw=<gw>]` from the subnet, or `ip=dhcp`.
fn ip_config(fleet: &Fleet, index: usize) -> Result<String, RenderError> {
    let network = &fleet.config.raw.deployment.proxmox.network;
    let Some(subnet) = &network.subnet else {
        return Ok("ip=dhcp".into());
    };
    let (base, prefix) = subnet.split_once('/').ok_or_else(|| invalid(format!("subnet {subnet} has no prefix")))?;
    let base: Ipv4Addr = base.parse().map_err(|_| invalid(format!("subnet {subnet} is not IPv4")))?;
    let prefix: u32 = prefix.parse().map_err(|_| invalid(format!("subnet {subnet} has a bad prefix")))?;
    let size = 1u64 << (32 - prefix.min(32));
    let host = u64::from(FIRST_HOST) + index as u64;
    if host + 1 >= size {
        return Err(invalid(format!("subnet {subnet} has no address for node {} (host .{host})", index + 1)));
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
fn description(fleet: &Fleet, node: &ProxmoxNode, agents: &[String]) -> String {
    let agents = if agents.is_empty() { "-".to_string() } else { agents.join(",") };
    format!(
        "Managed by rivetctl; edits are overwritten.\ndeployment: {}\nnode: {}\nrole: {}\nagents: {agents}\n",
        fleet.name,
        node.name,
        node.role.as_str()
    )
}

/// The context of one node's container.
fn node_context(fleet: &Fleet, index: usize, node: &ProxmoxNode) -> Result<Value, RenderError> {
    let settings = &fleet.config.raw.deployment.proxmox;
    let agents = fleet.node(&node.name).map(|n| n.agents.clone()).unwrap_or_default();
    let vmid = node.ctid_start.unwrap_or(FIRST_VMID + index as u32);
    let net0 = format!("name=eth0,bridge={},{}", settings.network.bridge, ip_config(fleet, index)?);
    Ok(json!({
        "node": node.name,
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
        "ssh_public_keys": settings.ssh_public_keys,
    }))
}

/// The template context of every node, in `proxmox.nodes` order. Fails when two nodes would
/// get the same vmid or the subnet runs out of addresses.
pub fn context(fleet: &Fleet) -> Result<Vec<Value>, RenderError> {
    let nodes = &fleet.config.raw.deployment.proxmox.nodes;
    let contexts: Vec<Value> =
        nodes.iter().enumerate().map(|(i, node)| node_context(fleet, i, node)).collect::<Result<_, _>>()?;
    let mut seen = BTreeMap::new();
    for ctx in &contexts {
        if let Some(other) = seen.insert(ctx["vmid"].as_u64(), ctx["node"].clone()) {
            return Err(invalid(format!("nodes {other} and {} both get vmid {}", ctx["node"], ctx["vmid"])));
        }
    }
    Ok(contexts)
}

/// `proxmox/<node>.json` for every node.
pub fn artifacts(fleet: &Fleet) -> Result<Vec<Artifact>, RenderError> {
    context(fleet)?
        .into_iter()
        .map(|ctx| {
            let node = ctx["node"].as_str().unwrap_or_default().to_string();
            Ok(Artifact {
                path: format!("proxmox/{node}.json"),
                contents: super::render(TEMPLATE, &ctx)?,
                secret: false,
            })
        })
        .collect()
}

/// One stateful resource per container; fields are the request parameters.
pub fn resources(fleet: &Fleet) -> Result<Vec<Resource<Value>>, RenderError> {
    let nodes = &fleet.config.raw.deployment.proxmox.nodes;
    let artifacts = artifacts(fleet)?;
    nodes
        .iter()
        .zip(artifacts)
        .map(|(node, artifact)| {
            let params: Value = serde_json::from_str(&artifact.contents)
                .map_err(|err| invalid(format!("{} is not valid JSON: {err}", artifact.path)))?;
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
            Ok(Resource {
                key: ResourceKey { node: node.name.clone(), kind: KIND.into(), name: hostname(&node.name) },
                component,
                stateful: true,
                fields,
                replace_on: REPLACE_ON.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>(),
                run_state: Some(RunState::Running),
                stop_grace_ms: None,
                payload: params,
            })
        })
        .collect()
}
