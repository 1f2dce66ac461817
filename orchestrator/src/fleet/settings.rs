//! What only one target uses, typed per target, so the rest of the [`Fleet`](super::Fleet)
//! is the same whichever target runs it.
//!
//! Docker's project name, networks, published PostgreSQL port and per-node engines; the
//! Kubernetes namespace, storage and resources; the Proxmox API, containers and network.
//! Each target's lowering (`crate::lower`) reads its own settings and nothing of another's.
//! Connection credentials (API tokens, TLS files of a Proxmox cluster, the Kubernetes
//! context) are the runtime's: they are not part of the desired state.

use crate::config::model::{self, ImageDelivery, KubernetesResources, ProxmoxNetwork};
use crate::config::rules::{Endpoint, TcpSecurity};
use crate::config::{Config, Role, Target};

use super::{FleetError, FleetNode};

/// The settings of the fleet's target.
#[derive(Debug, Clone)]
pub enum TargetSettings {
    Docker(DockerSettings),
    Kubernetes(KubernetesSettings),
    Proxmox(ProxmoxSettings),
    /// Hosts run RivetOS as a process under systemd, installed by hand: nothing to set.
    Manual,
}

impl TargetSettings {
    /// Which target these settings are for.
    pub fn target(&self) -> Target {
        match self {
            TargetSettings::Docker(_) => Target::Docker,
            TargetSettings::Kubernetes(_) => Target::Kubernetes,
            TargetSettings::Proxmox(_) => Target::Proxmox,
            TargetSettings::Manual => Target::Manual,
        }
    }

    /// The Docker engine of every node, in node order; none unless the target is Docker.
    pub fn docker_engines(&self) -> &[DockerEngine] {
        match self {
            TargetSettings::Docker(docker) => &docker.engines,
            _ => &[],
        }
    }
}

/// Docker: `deployment.docker` and the engine of every node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerSettings {
    /// Prefix of container and volume names (`deployment.docker.project_name`).
    pub project: String,
    /// The agents' network (per node when there are several).
    pub network: String,
    /// The port PostgreSQL is published on, on the datahub's node; `0`: not published.
    /// Agents on other nodes reach the datahub there.
    pub postgres_port: u16,
    /// The host address the port is published on.
    pub postgres_bind: String,
    /// The engine of every node, in the fleet's node order.
    pub engines: Vec<DockerEngine>,
}

impl DockerSettings {
    /// The engine of this node.
    pub fn engine(&self, node: &str) -> Option<&DockerEngine> {
        self.engines.iter().find(|e| e.name == node)
    }

    /// Host address and port the datahub's PostgreSQL port is published on, if any.
    pub fn publish(&self) -> Option<(String, u16)> {
        (self.postgres_port != 0).then(|| (self.postgres_bind.clone(), self.postgres_port))
    }
}

/// How a node's Docker Engine is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerEngine {
    /// The node's name.
    pub name: String,
    pub endpoint: Endpoint,
    /// How a `tcp://` engine (configured, or `DOCKER_HOST`) is secured.
    pub tcp: TcpSecurity,
    /// How the node gets images built once for a rollout (`images: ship | pull`).
    pub images: ImageDelivery,
}

/// Kubernetes: `deployment.kubernetes`.
#[derive(Debug, Clone)]
pub struct KubernetesSettings {
    pub namespace: String,
    /// Whether the deployment creates and owns its namespace (`create_namespace`).
    pub create_namespace: bool,
    /// The base of object names (`deployment.docker.project_name`, which names the
    /// deployment's objects on every target that names them; made a DNS label by the lowering).
    pub project: String,
    /// The kubeconfig context to use (the runtime's; `None`: the current one).
    pub context: Option<String>,
    /// `(major, minor)` offline rendering targets (`deployment.kubernetes.version`).
    pub version: (u32, u32),
    pub storage_class: Option<String>,
    pub storage_size: String,
    pub shared_storage_class: Option<String>,
    pub shared_storage_size: String,
    /// Agent resources overriding the fleet's limits.
    pub resources: KubernetesResources,
}

/// Proxmox VE: the API, one LXC container per node, their network and sizes.
#[derive(Debug, Clone)]
pub struct ProxmoxSettings {
    pub api_url: Option<String>,
    /// Every node of `deployment.proxmox.nodes`, in config order.
    pub nodes: Vec<ProxmoxNodeSettings>,
    pub network: ProxmoxNetwork,
    /// The OS template containers are created from.
    pub template: String,
    pub storage: String,
    pub rootfs_gb: u32,
    pub memory_mb: u32,
    pub swap_mb: u32,
    pub cores: u32,
    pub unprivileged: bool,
    pub ssh_public_keys: Option<String>,
    /// Where sshd listens in the containers.
    pub ssh_port: u16,
    /// What runs the agents' services in the containers.
    pub service_manager: crate::config::model::ServiceManager,
}

/// One Proxmox node's container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxmoxNodeSettings {
    pub name: String,
    pub role: Role,
    /// The container's address, as other nodes reach it.
    pub host: Option<String>,
    /// The container's id, when the config fixes it.
    pub ctid: Option<u32>,
}

/// The target's settings from the config; Docker's engines come from the placed nodes.
pub(super) fn target_settings(config: &Config, engines: Vec<DockerEngine>) -> TargetSettings {
    let deployment = &config.raw.deployment;
    match deployment.target {
        Target::Docker => TargetSettings::Docker(DockerSettings {
            project: deployment.docker.project_name.clone(),
            network: deployment.docker.network.clone(),
            postgres_port: deployment.docker.postgres_port,
            postgres_bind: deployment.docker.postgres_bind.clone(),
            engines,
        }),
        Target::Kubernetes => {
            let k8s = &deployment.kubernetes;
            TargetSettings::Kubernetes(KubernetesSettings {
                namespace: k8s.namespace.clone(),
                create_namespace: k8s.create_namespace,
                project: deployment.docker.project_name.clone(),
                context: k8s.context.clone(),
                version: crate::config::rules::kube_version(&k8s.version).unwrap_or((1, 33)),
                storage_class: k8s.storage_class.clone(),
                storage_size: k8s.storage_size.clone(),
                shared_storage_class: k8s.shared_storage_class.clone(),
                shared_storage_size: k8s.shared_storage_size.clone(),
                resources: k8s.resources.clone(),
            })
        }
        Target::Proxmox => TargetSettings::Proxmox(proxmox_settings(&deployment.proxmox)),
        Target::Manual => TargetSettings::Manual,
    }
}

fn proxmox_settings(proxmox: &model::ProxmoxSettings) -> ProxmoxSettings {
    ProxmoxSettings {
        api_url: proxmox.api_url.clone(),
        nodes: proxmox
            .nodes
            .iter()
            .map(|n| ProxmoxNodeSettings {
                name: n.name.clone(),
                role: n.role,
                host: n.host.clone(),
                ctid: n.ctid_start,
            })
            .collect(),
        network: proxmox.network.clone(),
        template: proxmox.template.clone(),
        storage: proxmox.storage.clone(),
        rootfs_gb: proxmox.rootfs_gb,
        memory_mb: proxmox.memory_mb,
        swap_mb: proxmox.swap_mb,
        cores: proxmox.cores,
        unprivileged: proxmox.unprivileged,
        ssh_public_keys: proxmox.ssh_public_keys.clone(),
        ssh_port: proxmox.ssh_port,
        service_manager: proxmox.service_manager,
    }
}

/// The nodes and (for Docker) their engines.
pub(super) type Placement = (Vec<FleetNode>, Vec<DockerEngine>);

/// Result of placing agents on nodes.
pub(super) type Placed = Result<Placement, FleetError>;
