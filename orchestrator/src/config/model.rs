//! The typed config: what the checker produced, as Rust types.
//!
//! These structs mirror [`super::schema`] one to one. They are only ever built from a
//! document that passed the checker (defaults filled in, formats normalised: durations in
//! milliseconds, memory in bytes), so deserialising them cannot fail on user input; a
//! failure here is a bug caught by the tests that load every example and generated config.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Where the fleet runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Docker,
    Proxmox,
    Kubernetes,
    Manual,
}

impl Target {
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Docker => "docker",
            Target::Proxmox => "proxmox",
            Target::Kubernetes => "kubernetes",
            Target::Manual => "manual",
        }
    }
}

/// What runs on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Datahub,
    Agents,
    Both,
}

/// How a Docker node gets an image built once for a rollout (`deployment.nodes[].images`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageDelivery {
    /// Sent from the control host's engine over the node's connection (`docker save | load`).
    #[default]
    Ship,
    /// Pulled by the node's engine, by digest, from `deployment.image.registry`.
    Pull,
}

impl Role {
    pub fn runs_datahub(self) -> bool {
        matches!(self, Role::Datahub | Role::Both)
    }
    pub fn runs_agents(self) -> bool {
        matches!(self, Role::Agents | Role::Both)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Datahub => "datahub",
            Role::Agents => "agents",
            Role::Both => "both",
        }
    }
}

/// The whole file, as rivetctl reads it.
#[derive(Debug, Clone, Deserialize)]
pub struct RawConfig {
    pub deployment: Deployment,
    #[serde(default)]
    pub agents: BTreeMap<String, AgentEntry>,
    pub mesh: Option<Mesh>,
}

/// The `deployment:` section.
#[derive(Debug, Clone, Deserialize)]
pub struct Deployment {
    pub target: Target,
    pub name: Option<String>,
    pub datahub: DatahubSettings,
    pub image: ImageSettings,
    pub docker: DockerSettings,
    pub proxmox: ProxmoxSettings,
    pub kubernetes: KubernetesSettings,
    pub source: SourceSettings,
    pub nodes: Vec<NodeSettings>,
    pub resources: ResourceSettings,
    pub env: BTreeMap<String, String>,
    pub agents: BTreeMap<String, AgentDeployment>,
    pub health: HealthSettings,
    pub update: UpdateSettings,
    pub apply: ApplySettings,
    pub ssh: SshSettings,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DatahubSettings {
    pub postgres: bool,
    pub postgres_version: String,
    pub shared_storage: bool,
    pub shared_mount_path: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ImageSettings {
    pub registry: String,
    pub agent_image: String,
    pub tag: String,
    pub build_from_source: bool,
    pub datahub_image: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DockerSettings {
    pub network: String,
    pub postgres_port: u16,
    pub project_name: String,
    pub host: Option<String>,
    pub postgres_bind: String,
    pub tls: EngineTls,
    pub insecure: bool,
}

/// Client TLS files of a `tcp://` engine, as written (relative to the config's directory).
/// All three are set, or none (the checker requires all three once `tls:` is written).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct EngineTls {
    pub ca: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ProxmoxNode {
    pub name: String,
    pub host: Option<String>,
    pub role: Role,
    pub ctid_start: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ProxmoxNetwork {
    pub bridge: String,
    pub subnet: Option<String>,
    pub gateway: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ProxmoxSettings {
    pub api_url: Option<String>,
    pub nodes: Vec<ProxmoxNode>,
    pub network: ProxmoxNetwork,
    pub token_id: Option<String>,
    pub token_secret: Option<String>,
    pub fingerprint: Option<String>,
    pub ca_file: Option<String>,
    pub insecure: bool,
    pub template: String,
    pub storage: String,
    pub rootfs_gb: u32,
    pub memory_mb: u32,
    pub swap_mb: u32,
    pub cores: u32,
    pub unprivileged: bool,
    pub ssh_public_keys: Option<String>,
    pub ssh_port: u16,
    pub service_manager: ServiceManager,
}

/// What runs the agents' services in a Proxmox VE container (`deployment.proxmox.service_manager`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceManager {
    #[default]
    Systemd,
    Runit,
}

#[derive(Debug, Clone, Deserialize)]
pub struct KubernetesResources {
    pub cpu: Option<String>,
    pub memory: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct KubernetesSettings {
    pub namespace: String,
    pub create_namespace: bool,
    pub storage_class: Option<String>,
    pub resources: KubernetesResources,
    pub context: Option<String>,
    pub version: String,
    pub storage_size: String,
    pub shared_storage_size: String,
    pub shared_storage_class: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Dockerfiles {
    pub agent: Option<String>,
    pub datahub: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SourceSettings {
    pub path: String,
    pub git: Option<String>,
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// Milliseconds one git command may run.
    pub git_timeout: u64,
    pub dockerfiles: Dockerfiles,
    pub build_args: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NodeSettings {
    pub name: String,
    pub role: Role,
    pub host: String,
    pub agents: Option<Vec<String>>,
    pub address: Option<String>,
    pub tls: EngineTls,
    pub insecure: bool,
    pub images: ImageDelivery,
}

/// Limits of one container; unset fields take the role's defaults.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Limits {
    /// Bytes.
    pub memory: Option<u64>,
    pub cpus: Option<f64>,
    pub pids: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ResourceSettings {
    pub agent: Limits,
    pub datahub: Limits,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AgentDeployment {
    pub env: BTreeMap<String, String>,
    pub resources: Limits,
    pub node: Option<String>,
}

/// Health checks; durations in milliseconds.
#[derive(Debug, Clone, Deserialize)]
pub struct HealthSettings {
    pub port: u16,
    pub live_path: String,
    pub path: String,
    pub interval: u64,
    pub timeout: u64,
    pub retries: u32,
    pub start_period: u64,
    pub deadline: u64,
}

/// Rollout policy; durations in milliseconds.
#[derive(Debug, Clone, Deserialize)]
pub struct UpdateSettings {
    pub max_parallel: String,
    pub canary: u32,
    pub approve: bool,
    pub min_healthy_time: u64,
    pub healthy_deadline: u64,
    pub progress_deadline: u64,
    pub stop_grace_period: u64,
    /// Least time between two probes of one gating agent (not the engine's health check).
    pub probe_interval: u64,
    /// How long one probe's HTTP request may take.
    pub probe_timeout: u64,
    pub failure_action: FailureAction,
    pub max_failure_ratio: f64,
    pub keep_images: u32,
}

/// How `infra up` and `infra destroy` execute a plan.
#[derive(Debug, Clone, Deserialize)]
pub struct ApplySettings {
    /// Steps of one wave that run at once.
    pub max_parallel: u32,
}

/// What a rollout does when an instance fails its health gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureAction {
    Rollback,
    Pause,
    Continue,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SshSettings {
    pub known_hosts: String,
    pub identity_file: Option<String>,
    pub connect_timeout: u64,
    pub command_timeout: u64,
}

/// One entry of the top-level `agents:` section (runtime fields are kept by the runtime).
#[derive(Debug, Clone, Deserialize)]
pub struct AgentEntry {
    pub provider: Option<String>,
    pub model: Option<String>,
    pub local: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    pub mode: Option<String>,
    pub seed_host: Option<String>,
    pub seed_port: u16,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Peer {
    pub name: Option<String>,
    pub host: Option<String>,
    pub port: u16,
}

/// The `mesh:` section.
#[derive(Debug, Clone, Deserialize)]
pub struct Mesh {
    pub enabled: bool,
    pub node_name: Option<String>,
    pub advertise_host: Option<String>,
    pub tls: bool,
    pub agent_channel_port: u16,
    pub storage_dir: String,
    pub discovery: Discovery,
    pub heartbeat_interval_ms: u64,
    pub stale_threshold_ms: u64,
    pub peers: Vec<Peer>,
}
