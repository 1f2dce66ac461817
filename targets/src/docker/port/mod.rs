//! The Docker Engine behind the port ([`orchestrator::port`]): one [`DockerTarget`] holds a
//! connection to every node's engine (local socket, `tcp://` with TLS, or through SSH) and
//! implements observing and applying ([`steps`]), the rollout operations on one agent
//! container ([`units`]), and images and object details ([`images`]).
//!
//! What the runtime did with bollard before the port lives here now; the runtime sees only
//! the traits.

pub mod doctor;
pub(crate) mod images;
pub mod nodes;
mod steps;
mod units;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use orchestrator::docker::{ContainerSpec, DockerObject};
use orchestrator::fleet::Fleet;
use orchestrator::port::{Port, TargetError};
use orchestrator::resource::Resource;

pub use nodes::Link;

use super::Engine;
use super::gate::GateOptions;
use super::state::DockerStore;

/// Suffix of an agent's previous container while its instance is in a rollout.
pub const PREV_SUFFIX: &str = "-rivetctl-prev";
/// Suffix of the new container, created (not started) while the old one stops.
pub const NEXT_SUFFIX: &str = super::apply::NEXT_SUFFIX;

/// The fleet's Docker nodes, connected, for as long as the caller holds the fleet.
pub struct DockerTarget<'f> {
    /// The fleet as configured (its name, health and update settings, images), borrowed:
    /// a copy of a 1,000-agent fleet is a megabyte `infra preview` does not need.
    fleet: &'f Fleet,
    config_dir: PathBuf,
    /// Every connected node, by name.
    links: BTreeMap<String, Link>,
    /// Nodes asked for that could not be connected, with why: an operation that needs one
    /// fails with its error; the state store (on the primary node) and the other nodes
    /// still answer, so a command can still say, say, that a rollout is unfinished.
    unreachable: BTreeMap<String, TargetError>,
    /// How agent containers are gated (`infra up`'s waits).
    gate: GateOptions,
    /// The control host's engine, connected on first use (`update` builds there once).
    control: tokio::sync::OnceCell<Engine>,
    /// The deployment's state, on the primary node's engine.
    store: DockerStore,
}

/// The node holding the deployment's state: the one running the datahub, else the first.
pub fn primary_node(fleet: &Fleet) -> Option<&str> {
    fleet.nodes.iter().find(|n| n.role.runs_datahub()).or(fleet.nodes.first()).map(|n| n.name.as_str())
}

impl<'f> DockerTarget<'f> {
    /// Connects to `nodes` of the fleet (all when `None`) and always to the primary node
    /// (where the state is), in config order.
    pub async fn open(
        fleet: &'f Fleet,
        config_dir: &Path,
        nodes: Option<&[String]>,
    ) -> Result<DockerTarget<'f>, TargetError> {
        let primary = primary_node(fleet)
            .ok_or_else(|| TargetError::failed(format!("deployment {} has no nodes", fleet.name)))?
            .to_string();
        let options = nodes::ssh_options(fleet, config_dir);
        let mut links = BTreeMap::new();
        let mut unreachable = BTreeMap::new();
        for node in fleet.target_settings.docker_engines() {
            if node.name != primary && nodes.is_some_and(|wanted| !wanted.contains(&node.name)) {
                continue;
            }
            match nodes::connect(node, &options, config_dir).await {
                Ok(link) => {
                    links.insert(node.name.clone(), link);
                }
                // Without the primary node there is no state, and no lock: nothing can go on.
                Err(err) if node.name == primary => return Err(err),
                Err(err) => {
                    unreachable.insert(node.name.clone(), err);
                }
            }
        }
        let store = DockerStore::new(links[&primary].engine.clone(), fleet.name.clone());
        let reaches = links.values().map(|link| (link.name.clone(), link.reach.clone())).collect();
        let gate = GateOptions {
            port: fleet.health.port,
            live_path: fleet.health.live_path.clone(),
            health_path: fleet.health.path.clone(),
            min_healthy_time: Duration::from_millis(fleet.update.min_healthy_time),
            probe_interval: Duration::from_millis(fleet.update.probe_interval),
            probe_timeout: Duration::from_millis(fleet.update.probe_timeout),
            reaches,
        };
        Ok(DockerTarget {
            fleet,
            config_dir: config_dir.to_path_buf(),
            links,
            unreachable,
            gate,
            control: tokio::sync::OnceCell::new(),
            store,
        })
    }

    /// The connection to `node`.
    fn link(&self, node: &str) -> Result<&Link, TargetError> {
        if let Some(err) = self.unreachable.get(node) {
            return Err(err.clone());
        }
        self.links.get(node).ok_or_else(|| TargetError::failed(format!("node {node} is not connected")))
    }

    /// Fails with the first node that could not be connected (operations that need every
    /// node: observing the deployment, building on each node).
    fn all_connected(&self) -> Result<(), TargetError> {
        match self.unreachable.values().next() {
            Some(err) => Err(err.clone()),
            None => Ok(()),
        }
    }

    /// The control host's engine.
    async fn control(&self) -> Result<&Engine, TargetError> {
        self.control.get_or_try_init(|| nodes::control_host(self.fleet, &self.config_dir)).await
    }
}

impl Port for DockerTarget<'_> {
    type Store = DockerStore;

    fn store(&self) -> &DockerStore {
        &self.store
    }
}

/// The container spec of an agent, datahub or migrate resource.
fn container_of(resource: &Resource<DockerObject>) -> Result<&ContainerSpec, TargetError> {
    match &resource.payload {
        DockerObject::Container(spec) => Ok(spec),
        _ => Err(TargetError::failed(format!("{} is not a container", resource.key))),
    }
}
