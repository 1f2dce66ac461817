//! Whether agents on other nodes can reach the datahub. They connect to the datahub node's
//! `address` on `docker.postgres_port`, so the port must be published on an address they
//! can reach: a fleet whose datahub is published on loopback only would start and then
//! never connect. Publishing on every interface works, but puts PostgreSQL, unencrypted,
//! on every network of the machine: that is said out loud.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::Semantic;
use crate::config::model::Target;
use crate::config::rules::parse_endpoint;

/// `localhost`, 127.0.0.0/8 or ::1.
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// 0.0.0.0 or :: (every interface).
fn is_every_interface(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified())
}

impl Semantic<'_> {
    /// Names of the Docker nodes that run at least one agent (the placement rules of
    /// `fleet::place_nodes`, read from the raw config).
    fn nodes_with_agents(&self) -> BTreeSet<&str> {
        let deployment = &self.config.deployment;
        let pinned = |node: &str| deployment.agents.values().any(|a| a.node.as_deref() == Some(node));
        let placed: BTreeSet<&str> = deployment
            .nodes
            .iter()
            .flat_map(|n| n.agents.iter().flatten().map(String::as_str))
            .chain(deployment.agents.iter().filter(|(_, a)| a.node.is_some()).map(|(id, _)| id.as_str()))
            .collect();
        let catch_all = deployment.nodes.iter().find(|n| n.role.runs_agents() && n.agents.is_none());
        let rest = self.config.agents.keys().any(|id| !placed.contains(id.as_str()));
        deployment
            .nodes
            .iter()
            .filter(|n| n.role.runs_agents())
            .filter(|n| {
                n.agents.as_ref().is_some_and(|a| !a.is_empty())
                    || pinned(&n.name)
                    || (rest && catch_all.is_some_and(|c| c.name == n.name))
            })
            .map(|n| n.name.as_str())
            .collect()
    }

    /// The first of `paths` written in the file (the last is a fallback that always is).
    fn first_written(&self, paths: &[&str]) -> String {
        let found = paths.iter().find(|p| self.locations.contains_key(**p));
        found.or(paths.last()).map_or(String::new(), |p| p.to_string())
    }

    /// The checks of this module (Docker target).
    pub(super) fn datahub_reach(&mut self) {
        let deployment = &self.config.deployment;
        if deployment.target != Target::Docker || !deployment.datahub.postgres || deployment.docker.postgres_port == 0 {
            return;
        }
        let bind = deployment.docker.postgres_bind.clone();
        let port = deployment.docker.postgres_port;
        if is_every_interface(&bind) {
            self.warning(
                "deployment.docker.postgres_bind",
                format!(
                    "PostgreSQL is published on every interface ({bind} port {port}), unencrypted: anyone who can reach this machine can try the datahub's password"
                ),
                Some("bind it to the one address the agent nodes use (postgres_bind: <the datahub node's address>) and let only them through the firewall; postgres_port: 0 when no agent runs on another node".into()),
            );
        }
        let Some(hub_index) = deployment.nodes.iter().position(|n| n.role.runs_datahub()) else {
            return;
        };
        let hub = &deployment.nodes[hub_index];
        let agent_nodes = self.nodes_with_agents();
        let Some(remote) = agent_nodes.iter().find(|n| **n != hub.name).map(|n| n.to_string()) else {
            return;
        };
        let hub_name = hub.name.clone();
        let address = hub.address.clone().or_else(|| parse_endpoint(&hub.host)?.host().map(str::to_string));
        let hub_path = format!("deployment.nodes[{hub_index}]");
        let hub_name_path = format!("{hub_path}.name");
        let Some(address) = address else {
            let at = self.first_written(&[&format!("{hub_path}.host"), &hub_name_path]);
            self.error(
                &at,
                format!(
                    "agents on node \"{remote}\" connect to the datahub at node \"{hub_name}\"'s address, but node \"{hub_name}\" has none (its host is {})",
                    hub.host
                ),
                Some(format!("add `address: <the address other nodes reach it at>` to node \"{hub_name}\"")),
            );
            return;
        };
        if is_loopback(&address) {
            let at = self.first_written(&[&format!("{hub_path}.address"), &format!("{hub_path}.host"), &hub_name_path]);
            self.warning(
                &at,
                format!(
                    "agents on node \"{remote}\" connect to the datahub at {address}:{port}, but inside their containers {address} is the container itself"
                ),
                Some(format!(
                    "give node \"{hub_name}\" an address the other nodes reach, and publish the datahub there (deployment.docker.postgres_bind)"
                )),
            );
            return;
        }
        if !is_loopback(&bind) {
            return;
        }
        let at =
            self.first_written(&["deployment.docker.postgres_bind", "deployment.docker.postgres_port", &hub_name_path]);
        self.error(
            &at,
            format!(
                "agents on node \"{remote}\" connect to the datahub at {address}:{port}, but its port is published on {bind} only, which other machines cannot reach"
            ),
            Some(format!(
                "publish it on the address the agent nodes use: `postgres_bind: {address}` under deployment.docker (and let only the agent nodes through the firewall)"
            )),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_every_interface() {
        for host in ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST"] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["10.0.0.10", "0.0.0.0", "::", "db.example", "datahub"] {
            assert!(!is_loopback(host), "{host}");
        }
        for host in ["0.0.0.0", "::", "[::]"] {
            assert!(is_every_interface(host), "{host}");
        }
        assert!(!is_every_interface("10.0.0.10"));
    }
}
