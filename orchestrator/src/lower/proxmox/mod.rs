//! The fleet as Proxmox VE LXC containers: the datahub in one container on its node, and on
//! each node with agents one container hosting that node's agents. A resource's payload is
//! `{"container", "params"}`: its identity in the deployment (`datahub`, `agents-<node>`) and
//! exactly the body of `POST /nodes/{node}/lxc` (the path's `{node}` is the resource key's
//! node), with the API's parameter names and value formats: booleans as `0`/`1`, `rootfs`
//! as `<storage>:<size in GiB>` (allocate a new volume), `net0` as a property string. Never
//! a password: logins are by SSH key only, and no secret is a parameter.
//!
//! Identity does not come from position. A container that exists keeps its vmid and address
//! ([`Identity`], read back from the cluster by its tags; the adapter passes them in), so
//! reordering the node list or the agents replaces nothing. For a new container:
//! - `vmid`: the first one from the node's `ctid_start` that no guest of the cluster (and no
//!   earlier container) holds, else the first from `/cluster/nextid` the same way
//!   ([`Cluster`]: the adapter reads both); offline, with nothing read, that is the node's
//!   `ctid_start` plus the containers already placed on it, else `FIRST_VMID` plus its
//!   position.
//! - address: with `network.subnet`, the lowest host number from `FIRST_HOST` that no other
//!   container of the deployment has, in layout order (datahub first); without a subnet, DHCP.
//!
//! Fields are what the plan diffs, in the form both the lowering and the live config give:
//! `net0` without the MAC address PVE adds, `rootfs` as storage and size. `description`
//! (ownership and the record of the fields) and `tags` (identity and spec hash) are derived,
//! not fields. A new `ostemplate`, `unprivileged` flag, vmid or storage needs a new
//! container; a bigger disk is grown in place and never replaces one.
//!
//! After the containers, one resource per agent: its service inside its node's container
//! ([`services`]).
//!
//! Pure: no I/O; output is deterministic.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde_json::{Value, json};

use crate::fleet::{EnvValue, Fleet, ProxmoxSettings};
use crate::resource::{Component, FieldValue, Fields, Resource, ResourceKey, RunState};

pub mod services;

/// Resource kind of a container.
pub const KIND: &str = "lxc";
/// vmid of the container at layout position `i` without `ctid_start`: `FIRST_VMID + i`.
pub const FIRST_VMID: u32 = 200;
/// Host part of the first address handed out in `network.subnet`.
pub const FIRST_HOST: u32 = 10;
/// Fields whose change needs a new container.
pub const REPLACE_ON: &[&str] = &["vmid", "ostemplate", "unprivileged", "rootfs.storage"];
/// PostgreSQL's port in the datahub's container.
pub const POSTGRES_PORT: u16 = 5432;
/// The datahub container's identity.
pub const DATAHUB: &str = "datahub";

/// Why the containers cannot be laid out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LowerError {
    #[error("subnet {subnet} has no prefix")]
    NoPrefix { subnet: String },
    #[error("subnet {subnet} is not IPv4")]
    NotIpv4 { subnet: String },
    #[error("subnet {subnet} has a bad prefix")]
    BadPrefix { subnet: String },
    #[error("subnet {subnet} has no address left for container {container}")]
    SubnetFull { subnet: String, container: String },
    #[error("containers \"{first}\" and \"{second}\" both get vmid {vmid}")]
    DuplicateVmid { first: String, second: String, vmid: u32 },
}

/// What a container of the deployment already has (read back by its tags).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub vmid: Option<u32>,
    pub address: Option<Ipv4Addr>,
}

/// What the cluster holds, for the vmids and addresses of the containers (all empty
/// offline).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cluster {
    /// The deployment's containers found, by identity.
    pub identities: BTreeMap<String, Identity>,
    /// Every vmid a guest of the cluster has.
    pub taken: BTreeSet<u32>,
    /// What `/cluster/nextid` said, when it was asked ([`needs_next_id`]).
    pub next_id: Option<u32>,
    /// The health port each agent found in its container has, by agent id
    /// ([`services::ports`]).
    pub ports: BTreeMap<String, u16>,
    /// Every health port an agent found has (kept or moving away): not given to a new one.
    pub busy_ports: BTreeSet<u16>,
}

/// Whether a new container has no `ctid_start` to take its vmid from, so that the cluster's
/// next id must be asked.
pub fn needs_next_id(fleet: &Fleet, settings: &ProxmoxSettings, identities: &BTreeMap<String, Identity>) -> bool {
    layout(fleet, settings)
        .iter()
        .any(|c| identities.get(&c.id).and_then(|i| i.vmid).is_none() && start_of(settings, &c.node).is_none())
}

/// The node's `ctid_start`.
fn start_of(settings: &ProxmoxSettings, node: &str) -> Option<u32> {
    settings.nodes.iter().find(|n| n.name == node).and_then(|n| n.ctid)
}

/// One container of the layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// `datahub` or `agents-<node>`.
    pub id: String,
    /// The Proxmox node it runs on.
    pub node: String,
    /// The agents it hosts (none for the datahub).
    pub agents: Vec<String>,
}

/// The identity of the agents container of `node`.
pub fn agents_container(node: &str) -> String {
    format!("agents-{node}")
}

/// The datahub's container (on the datahub's node), then each node's agents container in
/// node order. A node with role `both` holds two containers.
pub fn layout(fleet: &Fleet, settings: &ProxmoxSettings) -> Vec<Container> {
    let mut out = Vec::new();
    if let Some(hub) = &fleet.datahub {
        out.push(Container { id: DATAHUB.into(), node: hub.node.clone(), agents: Vec::new() });
    }
    for node in &settings.nodes {
        let agents = fleet.node(&node.name).map(|n| n.agents.clone()).unwrap_or_default();
        if !agents.is_empty() {
            out.push(Container { id: agents_container(&node.name), node: node.name.clone(), agents });
        }
    }
    out
}

/// The container's hostname: `<deployment>-<id>`, as a DNS label.
pub fn hostname(deployment: &str, container: &str) -> String {
    let raw = format!("{deployment}-{container}").to_ascii_lowercase();
    let label: String = raw.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).collect();
    label.trim_matches('-').chars().take(63).collect::<String>().trim_end_matches('-').to_string()
}

/// The subnet's base, prefix and number of addresses.
fn subnet(settings: &ProxmoxSettings) -> Result<Option<(Ipv4Addr, u32, u64)>, LowerError> {
    let Some(subnet) = &settings.network.subnet else { return Ok(None) };
    let (base, prefix) = subnet.split_once('/').ok_or_else(|| LowerError::NoPrefix { subnet: subnet.clone() })?;
    let base: Ipv4Addr = base.parse().map_err(|_| LowerError::NotIpv4 { subnet: subnet.clone() })?;
    let prefix: u32 = prefix.parse().map_err(|_| LowerError::BadPrefix { subnet: subnet.clone() })?;
    if prefix > 32 {
        return Err(LowerError::BadPrefix { subnet: subnet.clone() });
    }
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
    Ok(Some((Ipv4Addr::from(u32::from(base) & mask), prefix, 1u64 << (32 - prefix))))
}

/// Every container's address: its own if it has one, else the lowest free host number
/// from [`FIRST_HOST`]; `None` without a subnet (DHCP).
fn addresses(
    settings: &ProxmoxSettings,
    containers: &[Container],
    identities: &BTreeMap<String, Identity>,
) -> Result<Vec<Option<Ipv4Addr>>, LowerError> {
    let Some((base, _, size)) = subnet(settings)? else { return Ok(vec![None; containers.len()]) };
    let mut taken: BTreeSet<Ipv4Addr> =
        containers.iter().filter_map(|c| identities.get(&c.id).and_then(|i| i.address)).collect();
    let subnet_text = settings.network.subnet.clone().unwrap_or_default();
    containers
        .iter()
        .map(|container| {
            if let Some(address) = identities.get(&container.id).and_then(|i| i.address) {
                return Ok(Some(address));
            }
            let free = (u64::from(FIRST_HOST)..size.saturating_sub(1))
                .map(|host| Ipv4Addr::from(u32::from(base) + host as u32))
                .find(|address| !taken.contains(address))
                .ok_or_else(|| LowerError::SubnetFull {
                    subnet: subnet_text.clone(),
                    container: container.id.clone(),
                })?;
            taken.insert(free);
            Ok(Some(free))
        })
        .collect()
}

/// Every container's vmid (see the module doc); `start_of` gives a node's `ctid_start`.
fn vmids(containers: &[Container], start_of: impl Fn(&str) -> Option<u32>, cluster: &Cluster) -> Vec<u32> {
    let own = |c: &Container| cluster.identities.get(&c.id).and_then(|i| i.vmid);
    let mut taken = cluster.taken.clone();
    taken.extend(containers.iter().filter_map(own));
    containers
        .iter()
        .enumerate()
        .map(|(position, container)| {
            if let Some(vmid) = own(container) {
                return vmid;
            }
            let from = match (start_of(&container.node), cluster.next_id) {
                (Some(start), _) => start,
                (None, Some(next)) => next,
                // Offline, nothing to ask: by position.
                (None, None) => return FIRST_VMID + position as u32,
            };
            let vmid = (from..).find(|v| !taken.contains(v)).expect("a free vmid");
            taken.insert(vmid);
            vmid
        })
        .collect()
}

/// `RIVETOS_PG_URL` for the agents of `node`: the datahub container's address (its node's
/// `host` when addresses come from DHCP).
pub fn database_url(fleet: &Fleet, settings: &ProxmoxSettings, datahub_address: Option<Ipv4Addr>) -> Option<EnvValue> {
    let hub = fleet.datahub.as_ref()?;
    let host = match datahub_address {
        Some(address) => address.to_string(),
        None => {
            settings.nodes.iter().find(|n| n.name == hub.node).and_then(|n| n.host.clone()).unwrap_or(hub.node.clone())
        }
    };
    Some(hub.url(&host, POSTGRES_PORT))
}

/// `name=eth0,bridge=…,ip=…[,gw=…]` from a `net0` value, in this order, without what PVE
/// adds (`hwaddr`, `type`): the form both sides of a diff are compared in.
pub fn canonical_net0(net0: &str) -> String {
    let members: BTreeMap<&str, &str> = net0.split(',').filter_map(|part| part.split_once('=')).collect();
    let mut out = Vec::new();
    for key in ["name", "bridge", "ip", "gw", "firewall", "tag", "mtu", "rate"] {
        if let Some(value) = members.get(key) {
            out.push(format!("{key}={value}"));
        }
    }
    out.join(",")
}

/// The fields of one container, from its creation parameters or from its live config (where
/// `rootfs` is `local-lvm:vm-310-disk-0,size=8G` rather than `local-lvm:8`).
pub fn fields_of(params: &BTreeMap<String, String>) -> Fields {
    let mut fields = Fields::new();
    let mut put = |name: &str, value: &str| {
        fields.insert(name.into(), FieldValue::plain(value));
    };
    for name in ["vmid", "hostname", "ostemplate", "unprivileged", "cores", "memory", "swap", "onboot", "features"] {
        if let Some(value) = params.get(name) {
            put(name, value);
        }
    }
    if let Some(net0) = params.get("net0") {
        put("net0", &canonical_net0(net0));
    }
    if let Some(rootfs) = params.get("rootfs") {
        let mut parts = rootfs.split(',');
        let volume = parts.next().unwrap_or_default();
        let (storage, rest) = volume.split_once(':').unwrap_or((volume, ""));
        let size = if !rest.is_empty() && rest.chars().all(|c| c.is_ascii_digit()) {
            format!("{rest}G")
        } else {
            parts.find_map(|p| p.strip_prefix("size=")).unwrap_or("unknown").to_string()
        };
        put("rootfs.storage", storage);
        put("rootfs.size", &size);
    }
    fields
}

/// `fields` with `agents`: the agents the container hosts, as its description lists them
/// (`gemini,opus`, `-` for none), so that preview shows the spread and a move is a change.
pub fn with_agents(mut fields: Fields, agents: &[String]) -> Fields {
    fields.insert("agents".into(), FieldValue::plain(agents_text(agents)));
    fields
}

fn agents_text(agents: &[String]) -> String {
    if agents.is_empty() { "-".to_string() } else { agents.join(",") }
}

/// The agents a description lists (its `agents:` line).
pub fn agents_in(description: &str) -> Vec<String> {
    description
        .lines()
        .find_map(|l| l.strip_prefix("agents: "))
        .map(|a| a.split(',').map(str::trim).filter(|a| *a != "-" && !a.is_empty()).map(str::to_string).collect())
        .unwrap_or_default()
}

/// Who owns the container and what runs in it: no secrets. Read back by observe
/// (`template:`, `agents:`); the state documents' lines follow it (`targets::proxmox::store`).
pub fn description(fleet: &Fleet, container: &Container, template: &str) -> String {
    let agents = agents_text(&container.agents);
    format!(
        "Managed by rivetctl; edits are overwritten.\ndeployment: {}\ncontainer: {}\nnode: {}\ntemplate: {template}\nagents: {agents}\n",
        fleet.name, container.id, container.node
    )
}

/// One resource per container of the [`layout`], datahub first; `cluster` is what the
/// cluster holds (empty offline). Fails when two containers would get the same vmid or the
/// subnet runs out of addresses.
pub fn lower(fleet: &Fleet, settings: &ProxmoxSettings, cluster: &Cluster) -> Result<Vec<Resource<Value>>, LowerError> {
    let containers = layout(fleet, settings);
    let addresses = addresses(settings, &containers, &cluster.identities)?;
    let vmids = vmids(&containers, |node| start_of(settings, node), cluster);
    let prefix = subnet(settings)?.map(|(_, prefix, _)| prefix);
    let mut seen: BTreeMap<u32, &str> = BTreeMap::new();
    let mut out = Vec::new();
    for ((container, address), vmid) in containers.iter().zip(&addresses).zip(&vmids) {
        if let Some(first) = seen.insert(*vmid, &container.id) {
            return Err(LowerError::DuplicateVmid {
                first: first.to_string(),
                second: container.id.clone(),
                vmid: *vmid,
            });
        }
        let ip = match (address, prefix) {
            (Some(address), Some(prefix)) => {
                let gateway = settings.network.gateway.as_ref().map(|gw| format!(",gw={gw}")).unwrap_or_default();
                format!("ip={address}/{prefix}{gateway}")
            }
            _ => "ip=dhcp".to_string(),
        };
        let mut params: BTreeMap<String, String> = [
            ("vmid", vmid.to_string()),
            ("hostname", hostname(&fleet.name, &container.id)),
            ("ostemplate", settings.template.clone()),
            ("description", description(fleet, container, &settings.template)),
            ("cores", settings.cores.to_string()),
            ("memory", settings.memory_mb.to_string()),
            ("swap", settings.swap_mb.to_string()),
            ("rootfs", format!("{}:{}", settings.storage, settings.rootfs_gb)),
            ("net0", format!("name=eth0,bridge={},{ip}", settings.network.bridge)),
            ("features", "nesting=1".to_string()),
            ("unprivileged", u8::from(settings.unprivileged).to_string()),
            ("onboot", "1".to_string()),
            ("start", "1".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        if let Some(keys) = &settings.ssh_public_keys {
            params.insert("ssh-public-keys".into(), keys.clone());
        }
        let component = if container.id == DATAHUB { Component::Datahub } else { Component::Host };
        out.push(Resource {
            key: ResourceKey {
                node: container.node.clone(),
                kind: KIND.into(),
                name: hostname(&fleet.name, &container.id),
            },
            component,
            // The datahub's disk holds the data; an agents container holds releases and
            // logs, which a new one gets again.
            stateful: container.id == DATAHUB,
            fields: with_agents(fields_of(&params), &container.agents),
            replace_on: REPLACE_ON.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>(),
            run_state: Some(RunState::Running),
            stop_grace_ms: None,
            payload: json!({"container": container.id, "agents": container.agents, "params": params}),
        });
    }
    let datahub_address = containers.iter().zip(&addresses).find(|(c, _)| c.id == DATAHUB).and_then(|(_, a)| *a);
    out.extend(services::database(fleet, settings, datahub_address));
    out.extend(services::services(fleet, settings, cluster, datahub_address));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(id: &str, node: &str) -> Container {
        Container { id: id.into(), node: node.into(), agents: Vec::new() }
    }

    /// A container found keeps its vmid whatever the order; a new one takes the first free
    /// from its node's `ctid_start`, else from the cluster's next id; offline, by position.
    #[test]
    fn containers_keep_their_vmid_when_the_nodes_are_reordered() {
        let found = |vmid| Identity { vmid: Some(vmid), address: None };
        let cluster = Cluster {
            identities: BTreeMap::from([("datahub".into(), found(310)), ("agents-pve2".into(), found(320))]),
            taken: BTreeSet::from([310, 320, 330, 340]),
            ..Cluster::default()
        };
        let start = |node: &str| match node {
            "pve2" => Some(400),
            "pve1" => Some(310),
            _ => None,
        };
        // pve1's agents are new; the order (the node list) moves nobody.
        let layout = [container("agents-pve2", "pve2"), container("agents-pve1", "pve1"), container("datahub", "pve3")];
        assert_eq!(vmids(&layout, start, &cluster), [320, 311, 310]);
        let new = [container("agents-pve3", "pve3")];
        assert_eq!(vmids(&new, start, &Cluster { next_id: Some(100), ..cluster.clone() }), [100]);
        assert_eq!(vmids(&new, start, &Cluster::default()), [FIRST_VMID], "offline: by position");
    }

    #[test]
    fn hostnames_are_dns_labels() {
        assert_eq!(hostname("Home_Lab", "agents-pve1"), "home-lab-agents-pve1");
        assert_eq!(hostname("rivetos", DATAHUB), "rivetos-datahub");
    }

    #[test]
    fn net0_compares_without_what_pve_adds() {
        let live = "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:AA:BB:CC,ip=10.4.0.10/24,gw=10.4.0.1,type=veth";
        assert_eq!(canonical_net0(live), "name=eth0,bridge=vmbr0,ip=10.4.0.10/24,gw=10.4.0.1");
    }

    #[test]
    fn root_disks_are_storage_and_size_fields() {
        for rootfs in ["local-lvm:8", "local-lvm:vm-310-disk-0,size=8G"] {
            let fields = fields_of(&BTreeMap::from([("rootfs".to_string(), rootfs.to_string())]));
            assert_eq!(&*fields["rootfs.storage"].text, "local-lvm", "{rootfs}");
            assert_eq!(&*fields["rootfs.size"].text, "8G", "{rootfs}");
        }
    }
}
