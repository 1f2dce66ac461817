//! Where every agent runs: the fleet's nodes, from the config of its target.
//!
//! Docker uses `deployment.nodes` (default: one local node); Proxmox spreads agents over its
//! agent nodes in id order; Kubernetes and manual use one logical node. Docker nodes also get
//! their engine endpoint, which only the Docker settings keep.

use std::collections::BTreeSet;

use crate::config::model::ImageDelivery;
use crate::config::rules::{TcpSecurity, parse_endpoint};
use crate::config::{Config, Role, Target};

use super::settings::{DockerEngine, Placed};
use super::{FleetError, FleetNode};

/// Resolves where every agent runs, and Docker's engine of every node.
pub(super) fn place_nodes(config: &Config) -> Placed {
    let deployment = &config.raw.deployment;
    let ids: Vec<String> = config.raw.agents.keys().cloned().collect();
    match deployment.target {
        Target::Docker if !deployment.nodes.is_empty() => {
            let mut nodes = Vec::new();
            let mut engines = Vec::new();
            let mut placed: BTreeSet<&str> = BTreeSet::new();
            for node in &deployment.nodes {
                for id in node.agents.iter().flatten() {
                    placed.insert(id);
                }
            }
            for (id, settings) in &deployment.agents {
                if settings.node.is_some() {
                    placed.insert(id);
                }
            }
            let catch_all = deployment.nodes.iter().find(|n| n.role.runs_agents() && n.agents.is_none());
            for node in &deployment.nodes {
                let endpoint = parse_endpoint(&node.host)
                    .ok_or_else(|| FleetError::BadEndpoint { node: node.name.clone(), host: node.host.clone() })?;
                let mut agents: Vec<String> = node.agents.clone().unwrap_or_default();
                for (id, settings) in &deployment.agents {
                    if settings.node.as_deref() == Some(node.name.as_str()) && !agents.contains(id) {
                        agents.push(id.clone());
                    }
                }
                if catch_all.is_some_and(|c| c.name == node.name) {
                    agents.extend(ids.iter().filter(|id| !placed.contains(id.as_str())).cloned());
                }
                if !node.role.runs_agents() {
                    agents.clear();
                }
                agents.sort();
                agents.dedup();
                let address = node.address.clone().or_else(|| endpoint.host().map(str::to_string));
                let tcp = TcpSecurity::of(&node.tls, node.insecure);
                engines.push(DockerEngine { name: node.name.clone(), endpoint, tcp, images: node.images });
                nodes.push(FleetNode { name: node.name.clone(), role: node.role, address, agents });
            }
            Ok((nodes, engines))
        }
        Target::Proxmox if !deployment.proxmox.nodes.is_empty() => {
            // By name, not by position: reordering the node list moves no agent.
            let mut agent_nodes: Vec<&str> =
                deployment.proxmox.nodes.iter().filter(|n| n.role.runs_agents()).map(|n| n.name.as_str()).collect();
            agent_nodes.sort_unstable();
            let mut nodes: Vec<FleetNode> = deployment
                .proxmox
                .nodes
                .iter()
                .map(|n| FleetNode { name: n.name.clone(), role: n.role, address: n.host.clone(), agents: Vec::new() })
                .collect();
            for (i, id) in ids.iter().enumerate() {
                let pinned = deployment.agents.get(id).and_then(|a| a.node.clone());
                let target = pinned
                    .or_else(|| (!agent_nodes.is_empty()).then(|| agent_nodes[i % agent_nodes.len()].to_string()));
                if let Some(node) = target.and_then(|t| nodes.iter_mut().find(|n| n.name == t)) {
                    node.agents.push(id.clone());
                }
            }
            Ok((nodes, Vec::new()))
        }
        Target::Kubernetes => {
            // One logical node: the namespace, which the objects' keys name too.
            let name = deployment.kubernetes.namespace.clone();
            Ok((vec![FleetNode { name, role: Role::Both, address: None, agents: ids }], Vec::new()))
        }
        target => {
            let nodes = vec![FleetNode { name: "local".into(), role: Role::Both, address: None, agents: ids }];
            if target != Target::Docker {
                return Ok((nodes, Vec::new()));
            }
            let host = deployment.docker.host.clone().unwrap_or_else(|| "local".into());
            let endpoint = parse_endpoint(&host)
                .ok_or_else(|| FleetError::BadEndpoint { node: "local".into(), host: host.clone() })?;
            let tcp = TcpSecurity::of(&deployment.docker.tls, deployment.docker.insecure);
            Ok((nodes, vec![DockerEngine { name: "local".into(), endpoint, tcp, images: ImageDelivery::Ship }]))
        }
    }
}
