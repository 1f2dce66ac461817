//! The desired state of a deployment, independent of the target: which nodes, which
//! datahub, which agents with which images, environment and limits.
//!
//! Built from a checked [`Config`] plus the facts the runtime gathered (the `.env` values,
//! the image references resolved from the source). Every target lowers the same `Fleet`
//! (`crate::lower`), so a Docker deployment and a Kubernetes one of the same config run the
//! same containers. What only one target uses is in [`TargetSettings`], typed per target;
//! how an agent reaches the datahub (a host name and port) is decided by each target's
//! lowering, so the agents' environment here holds no `RIVETOS_PG_URL` of rivetctl's.

mod placement;
mod settings;

pub use crate::config::model::ImageDelivery;
pub use settings::{
    DockerEngine, DockerSettings, KubernetesSettings, ProxmoxNodeSettings, ProxmoxSettings, TargetSettings,
};

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::config::model::{HealthSettings, Limits, UpdateSettings};
use crate::config::{Config, Role, Target};

/// Where a value of the environment came from decides whether it may be shown.
///
/// Names and values are shared strings: every agent's environment holds the same secrets and
/// settings, and a thousand agents hold them once.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EnvValue {
    pub value: Arc<str>,
    pub sensitive: bool,
}

impl fmt::Debug for EnvValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.sensitive { f.write_str("(sensitive)") } else { write!(f, "{:?}", self.value) }
    }
}

/// A container's environment, sorted by name.
pub type Env = BTreeMap<Arc<str>, EnvValue>;

fn plain(value: impl Into<Arc<str>>) -> EnvValue {
    EnvValue { value: value.into(), sensitive: false }
}

fn secret(value: impl Into<Arc<str>>) -> EnvValue {
    EnvValue { value: value.into(), sensitive: true }
}

/// Which image: the agent image also runs the migrate step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Component {
    Agent,
    Datahub,
}

impl Component {
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Agent => "agent",
            Component::Datahub => "datahub",
        }
    }
}

/// How an image is obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildSpec {
    /// Dockerfile path relative to the source root.
    pub dockerfile: String,
    /// Content hash of every build input (context files, Dockerfile, build args).
    pub content_hash: String,
    pub build_args: BTreeMap<String, String>,
}

/// One image the fleet runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    pub component: Component,
    /// `repository:tag` as containers refer to it.
    pub reference: String,
    /// `None`: prebuilt, pulled from its registry.
    pub build: Option<BuildSpec>,
}

/// What the runtime resolved about images before the fleet is built (reading the source
/// tree is I/O, so it happens outside).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImages {
    pub agent: ImageSpec,
    pub datahub: Option<ImageSpec>,
    /// Source revision (commit, or `content:<hash>` for a checkout that is not a git tree).
    pub revision: String,
}

/// Everything the fleet needs besides the config.
#[derive(Debug, Clone)]
pub struct FleetInputs {
    /// Values of the `.env` beside the config (all secret).
    pub dotenv: BTreeMap<String, String>,
    pub images: ResolvedImages,
    /// Absolute path of the config file on the control host (mounted into agents).
    pub config_file: String,
    /// The config file's text (copied into containers on remote nodes).
    pub config_text: String,
}

/// Memory in bytes, CPUs in cores, process count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResolvedLimits {
    pub memory: u64,
    pub cpus: f64,
    pub pids: u32,
}

fn resolve_limits(specific: &Limits, general: &Limits, fallback: ResolvedLimits) -> ResolvedLimits {
    ResolvedLimits {
        memory: specific.memory.or(general.memory).unwrap_or(fallback.memory),
        cpus: specific.cpus.or(general.cpus).unwrap_or(fallback.cpus),
        pids: specific.pids.or(general.pids).unwrap_or(fallback.pids),
    }
}

const GIB: u64 = 1024 * 1024 * 1024;
/// Default agent limits: 1 GiB, 1 CPU, 512 processes.
pub const AGENT_LIMITS: ResolvedLimits = ResolvedLimits { memory: GIB, cpus: 1.0, pids: 512 };
/// Default datahub limits: 2 GiB, 2 CPUs, 1024 processes.
pub const DATAHUB_LIMITS: ResolvedLimits = ResolvedLimits { memory: 2 * GIB, cpus: 2.0, pids: 1024 };

/// A machine (or a logical place, on Kubernetes) that runs part of the fleet. How a target
/// reaches it (a Docker engine, a Proxmox container) is in the target's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetNode {
    pub name: String,
    pub role: Role,
    /// How other nodes reach this one (the datahub's host, for agents elsewhere).
    pub address: Option<String>,
    /// Agent ids placed here, sorted.
    pub agents: Vec<String>,
}

/// The datahub: PostgreSQL with pgvector, and the shared directory.
#[derive(Debug, Clone)]
pub struct DatahubSpec {
    pub node: String,
    pub image: String,
    pub postgres_version: String,
    pub user: String,
    pub database: String,
    /// The datahub's own environment (`POSTGRES_PASSWORD` is its secret).
    pub env: Env,
    pub limits: ResolvedLimits,
    /// Run as this user instead of the image's (the prebuilt pgvector image starts as root).
    pub run_as: Option<String>,
}

/// The name of the variable that tells an agent where the datahub is.
pub const DATABASE_URL: &str = "RIVETOS_PG_URL";

impl DatahubSpec {
    /// `RIVETOS_PG_URL` for an agent reaching PostgreSQL at `host:port` (a secret: it holds
    /// the password). Each target's lowering decides the host and port.
    pub fn url(&self, host: &str, port: u16) -> EnvValue {
        let password = self.env.get("POSTGRES_PASSWORD").map_or("", |p| &*p.value);
        secret(format!("postgres://{}:{password}@{host}:{port}/{}", self.user, self.database))
    }
}

/// `env` with the datahub's URL added, unless the deployment's or the agent's own
/// environment already sets one (theirs wins, as it always has).
pub fn with_database_url(env: &Env, url: Option<EnvValue>) -> Env {
    let mut env = env.clone();
    if let Some(url) = url {
        env.entry(DATABASE_URL.into()).or_insert(url);
    }
    env
}

/// The one-shot migration step: the agent image with `RIVETOS_ROLE=migrate`.
#[derive(Debug, Clone)]
pub struct MigrateSpec {
    pub node: String,
    pub image: String,
    pub env: Env,
    /// The agents' default limits.
    pub limits: ResolvedLimits,
}

/// One agent container or process.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    /// The id in `agents:`.
    pub id: String,
    /// The id as container names accept it (lower-case, `_` → `-`).
    pub name: String,
    pub node: String,
    pub image: String,
    /// Everything but how the datahub is reached, which the target's lowering adds. With
    /// the datahub off, `RIVETOS_PG_URL` is the `.env`'s and is here.
    pub env: Arc<Env>,
    pub limits: ResolvedLimits,
}

/// The whole desired deployment.
#[derive(Debug, Clone)]
pub struct Fleet {
    /// The deployment's identity (ownership labels, locks).
    pub name: String,
    /// What only the target uses (its names, endpoints, storage, network).
    pub target_settings: TargetSettings,
    pub nodes: Vec<FleetNode>,
    pub datahub: Option<DatahubSpec>,
    pub migrate: Option<MigrateSpec>,
    pub agents: Vec<AgentSpec>,
    /// Whether the datahub's node shares a directory with the agents (`shared_storage`).
    pub shared_storage: bool,
    /// Where the shared directory is mounted in every container.
    pub shared_mount_path: String,
    pub images: Vec<ImageSpec>,
    pub revision: String,
    pub health: HealthSettings,
    pub update: UpdateSettings,
    pub config_file: String,
    /// The config file's text (copied into containers on remote nodes, which cannot bind
    /// mount a file of the control host).
    pub config_text: String,
    /// The config as checked: its digests (a changed agent section changes that agent) and
    /// the runtime's settings (SSH, image repository). Lowerings read no target setting here.
    pub config: Config,
}

/// Why a fleet cannot be built from an otherwise valid config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FleetError {
    #[error("{name} is not set in the .env beside the config (the datahub needs it)")]
    MissingSecret { name: &'static str },
    #[error("the datahub is off (deployment.datahub.postgres: false) and RIVETOS_PG_URL is not set in .env")]
    MissingDatabaseUrl,
    #[error("node \"{node}\" has an invalid host \"{host}\"")]
    BadEndpoint { node: String, host: String },
}

impl FleetError {
    /// What to do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            FleetError::MissingSecret { .. } => {
                "add it to .env, for example: POSTGRES_PASSWORD=$(openssl rand -hex 16)"
            }
            FleetError::MissingDatabaseUrl => "set RIVETOS_PG_URL=postgres://user:password@host:5432/db in .env",
            FleetError::BadEndpoint { .. } => "use local, unix:///path, tcp://host:port or ssh://user@host:port",
        }
    }
}

/// Lower-cases an agent id and maps `_` to `-` so it fits container, host and Kubernetes
/// names; characters outside `[a-z0-9-]` are dropped.
pub fn container_name_of(id: &str) -> String {
    let mapped: String = id
        .chars()
        .filter_map(|c| match c {
            'A'..='Z' => Some(c.to_ascii_lowercase()),
            'a'..='z' | '0'..='9' | '-' => Some(c),
            '_' | '.' | ' ' => Some('-'),
            _ => None,
        })
        .collect();
    mapped.trim_matches('-').to_string()
}

impl Fleet {
    /// Builds the desired state.
    pub fn build(config: &Config, inputs: &FleetInputs) -> Result<Fleet, FleetError> {
        let raw = &config.raw;
        let deployment = &raw.deployment;
        let (nodes, engines) = placement::place_nodes(config)?;
        let hub_node = nodes.iter().find(|n| n.role.runs_datahub()).map(|n| n.name.clone());

        let mut agent_env: Env = inputs.dotenv.iter().map(|(k, v)| (k.as_str().into(), secret(v.as_str()))).collect();
        let datahub = if deployment.datahub.postgres {
            let password = inputs
                .dotenv
                .get("POSTGRES_PASSWORD")
                .filter(|p| !p.is_empty())
                .ok_or(FleetError::MissingSecret { name: "POSTGRES_PASSWORD" })?;
            let user = inputs.dotenv.get("POSTGRES_USER").cloned().unwrap_or_else(|| "rivetos".into());
            let database = inputs.dotenv.get("POSTGRES_DB").cloned().unwrap_or_else(|| "rivetos".into());
            let node = hub_node.clone().unwrap_or_else(|| nodes[0].name.clone());
            let env: Env = [
                ("POSTGRES_USER".into(), plain(user.as_str())),
                ("POSTGRES_PASSWORD".into(), secret(password.as_str())),
                ("POSTGRES_DB".into(), plain(database.as_str())),
                ("PGDATA".into(), plain("/var/lib/postgresql/data")),
            ]
            .into_iter()
            .collect();
            let image = inputs
                .images
                .datahub
                .as_ref()
                .map(|i| i.reference.clone())
                .unwrap_or_else(|| format!("pgvector/pgvector:pg{}", deployment.datahub.postgres_version));
            let prebuilt = inputs.images.datahub.as_ref().is_none_or(|i| i.build.is_none());
            Some(DatahubSpec {
                node,
                image,
                postgres_version: deployment.datahub.postgres_version.clone(),
                user,
                database,
                env,
                limits: resolve_limits(&deployment.resources.datahub, &Limits::default(), DATAHUB_LIMITS),
                run_as: prebuilt.then(|| "999:999".to_string()),
            })
        } else {
            if !inputs.dotenv.contains_key("RIVETOS_PG_URL") {
                return Err(FleetError::MissingDatabaseUrl);
            }
            None
        };

        agent_env.insert("RIVETOS_HEALTH_PORT".into(), plain(deployment.health.port.to_string()));
        agent_env.insert("RIVETOS_CONFIG".into(), plain("/home/rivetos/.rivetos/config.yaml"));
        if datahub.is_some() {
            // The datahub's URL is the target's to write (its lowering adds it); the `.env`'s
            // would be replaced by it, so it is not carried.
            agent_env.remove(DATABASE_URL);
        }
        if deployment.datahub.shared_storage {
            agent_env.insert("RIVETOS_SHARED_DIR".into(), plain(deployment.datahub.shared_mount_path.as_str()));
        }

        let migrate = datahub.as_ref().map(|hub| {
            let mut env = agent_env.clone();
            env.insert("RIVETOS_ROLE".into(), plain("migrate"));
            MigrateSpec {
                node: hub.node.clone(),
                image: inputs.images.agent.reference.clone(),
                env,
                limits: resolve_limits(&Limits::default(), &deployment.resources.agent, AGENT_LIMITS),
            }
        });

        // What every agent of a node shares is built once per node; agents clone it (which
        // copies no string) and add their own entries.
        let sensitive_env = |key: &str, value: &str, path: String| {
            let sensitive = config.sensitive.contains(&path);
            (Arc::<str>::from(key), EnvValue { value: value.into(), sensitive })
        };
        let deployment_env: Vec<(Arc<str>, EnvValue)> =
            deployment.env.iter().map(|(k, v)| sensitive_env(k, v, format!("deployment.env.{k}"))).collect();
        let (role_key, id_key, node_key): (Arc<str>, Arc<str>, Arc<str>) =
            ("RIVETOS_ROLE".into(), "RIVETOS_AGENT_ID".into(), "RIVETOS_NODE_NAME".into());
        let role = plain("agent");
        let node_envs: Vec<Env> = nodes
            .iter()
            .map(|node| {
                let mut env = agent_env.clone();
                env.extend(deployment_env.iter().cloned());
                env.insert(Arc::clone(&role_key), role.clone());
                env.insert(Arc::clone(&node_key), plain(node.name.as_str()));
                env
            })
            .collect();
        let agents = nodes
            .iter()
            .zip(&node_envs)
            .flat_map(|(node, base)| node.agents.iter().map(move |id| (node, base, id)))
            .map(|(node, base, id)| {
                let overrides = deployment.agents.get(id);
                let mut env = base.clone();
                if let Some(own) = overrides.filter(|o| !o.env.is_empty()) {
                    env.extend(
                        own.env.iter().map(|(k, v)| sensitive_env(k, v, format!("deployment.agents.{id}.env.{k}"))),
                    );
                    // The role and the node are rivetctl's, whatever the agent's env says.
                    env.insert(Arc::clone(&role_key), role.clone());
                    env.insert(Arc::clone(&node_key), plain(node.name.as_str()));
                }
                env.insert(Arc::clone(&id_key), plain(id.as_str()));
                let limits = resolve_limits(
                    &overrides.map(|o| o.resources.clone()).unwrap_or_default(),
                    &deployment.resources.agent,
                    AGENT_LIMITS,
                );
                AgentSpec {
                    id: id.clone(),
                    name: container_name_of(id),
                    node: node.name.clone(),
                    image: inputs.images.agent.reference.clone(),
                    env: Arc::new(env),
                    limits,
                }
            })
            .collect();

        let mut images = vec![inputs.images.agent.clone()];
        if datahub.is_some()
            && let Some(image) = &inputs.images.datahub
        {
            images.push(image.clone());
        }
        Ok(Fleet {
            name: config.name.clone(),
            target_settings: settings::target_settings(config, engines),
            nodes,
            datahub,
            migrate,
            agents,
            shared_storage: deployment.datahub.shared_storage,
            shared_mount_path: deployment.datahub.shared_mount_path.clone(),
            images,
            revision: inputs.images.revision.clone(),
            health: deployment.health.clone(),
            update: deployment.update.clone(),
            config_file: inputs.config_file.clone(),
            config_text: inputs.config_text.clone(),
            config: config.clone(),
        })
    }

    /// The node with this name.
    pub fn node(&self, name: &str) -> Option<&FleetNode> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Which target runs the fleet.
    pub fn target(&self) -> Target {
        self.target_settings.target()
    }

    /// The node running the datahub, when the fleet has one.
    pub fn datahub_node(&self) -> Option<&FleetNode> {
        self.datahub.as_ref().and_then(|hub| self.node(&hub.node))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_ids_become_container_names() {
        assert_eq!(container_name_of("Opus_4"), "opus-4");
        assert_eq!(container_name_of("grok"), "grok");
        assert_eq!(container_name_of("__x__"), "x");
        assert_eq!(container_name_of("ü"), "");
    }
}
