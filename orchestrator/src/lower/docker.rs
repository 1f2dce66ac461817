//! The fleet as Docker objects: networks, volumes and containers, per node.
//!
//! Docker's choices are made here: object names (`<project>-datahub`, `<project>-pgdata`,
//! `<project>-shared`, networks per node when there are several), how an agent reaches the
//! datahub (`@datahub:5432` on the datahub's node, `@<address>:<postgres_port>` elsewhere),
//! bind-mounting the config on a local engine and copying it to a remote one.
//!
//! Pure data, complete enough that the Docker adapter only translates it into API calls and
//! the compose template only prints it. Security defaults live here, once: every container
//! drops all capabilities, sets `no-new-privileges`, has memory/CPU/pid limits and never runs
//! as root (the adapter refuses images whose user is root unless a user is set here).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::config::rules::Endpoint;
use crate::fleet::{
    DATABASE_URL, DockerSettings, Env, EnvValue, Fleet, ResolvedLimits, TargetSettings, with_database_url,
};
use crate::pool::Pool;
use crate::resource::{Component, FieldValue, Fields, Resource, ResourceKey, RunState};

/// Label keys rivetctl puts on what it owns.
pub mod labels {
    pub const MANAGED_BY: &str = "io.rivetctl.managed-by";
    pub const DEPLOYMENT: &str = "io.rivetctl.deployment";
    pub const NODE: &str = "io.rivetctl.node";
    pub const COMPONENT: &str = "io.rivetctl.component";
    pub const AGENT: &str = "io.rivetctl.agent";
    pub const STATEFUL: &str = "io.rivetctl.stateful";
    pub const REVISION: &str = "io.rivetctl.revision";
    pub const SPEC_HASH: &str = "io.rivetctl.spec-hash";
    pub const SPEC: &str = "io.rivetctl.spec";
}

/// Where a mount comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSource {
    Volume(String),
    /// An absolute path on the engine's host.
    Bind(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub source: MountSource,
    pub target: String,
    pub read_only: bool,
}

/// A file written into a container before it starts.
#[derive(Clone, PartialEq, Eq)]
pub struct FileCopy {
    pub path: String,
    pub contents: String,
}

impl std::fmt::Debug for FileCopy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FileCopy({:?}, {} bytes)", self.path, self.contents.len())
    }
}

/// A published port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub host_ip: String,
    pub host_port: u16,
    pub container_port: u16,
}

/// A container health check (durations in milliseconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Healthcheck {
    /// Docker's form: `["CMD", ...]` or `["CMD-SHELL", "..."]`.
    pub test: Vec<String>,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub retries: u32,
    pub start_period_ms: u64,
}

/// Restart policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    No,
    UnlessStopped,
}

impl Restart {
    pub fn as_str(self) -> &'static str {
        match self {
            Restart::No => "no",
            Restart::UnlessStopped => "unless-stopped",
        }
    }
}

/// Everything needed to create one container.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub name: String,
    pub hostname: String,
    pub image: String,
    /// The fleet agent's environment (shared with the fleet).
    pub env: Arc<Env>,
    /// What the lowering adds to it, none of whose names `env` holds: how an agent reaches
    /// the datahub (`RIVETOS_PG_URL`), one map shared by the node's agents instead of a copy
    /// of each agent's environment. Read both through [`ContainerSpec::environment`].
    pub env_added: Option<Arc<Env>>,
    /// `uid:gid`; `None`: the image's `USER`.
    pub user: Option<String>,
    /// Networks joined, with the DNS aliases on each.
    pub networks: Vec<(String, Vec<String>)>,
    pub mounts: Vec<Mount>,
    /// Files copied in before start (the config on nodes that cannot bind mount it).
    pub files: Vec<FileCopy>,
    pub ports: Vec<Port>,
    pub cap_drop: Vec<String>,
    pub no_new_privileges: bool,
    pub limits: ResolvedLimits,
    pub healthcheck: Option<Healthcheck>,
    pub restart: Restart,
    /// Seconds between SIGTERM and SIGKILL.
    pub stop_grace_secs: u64,
    pub labels: BTreeMap<String, String>,
    /// Runs to completion (the migrate step).
    pub one_shot: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSpec {
    pub name: String,
    /// No route outside the host: the datahub's network.
    pub internal: bool,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSpec {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// What the Docker adapter applies. A container's spec is boxed: resources are moved
/// around by value (into the plan), and most of a large fleet's are containers.
#[derive(Debug, Clone)]
pub enum DockerObject {
    Network(NetworkSpec),
    Volume(VolumeSpec),
    Container(Box<ContainerSpec>),
}

/// A Docker resource.
pub type DockerResource = Resource<DockerObject>;

/// Kinds as the plan names them.
pub const KIND_NETWORK: &str = "network";
pub const KIND_VOLUME: &str = "volume";
pub const KIND_CONTAINER: &str = "container";

/// Where the agent's config is mounted (upstream's path).
pub const CONFIG_MOUNT: &str = "/home/rivetos/.rivetos/config.yaml";

fn ownership(fleet: &Fleet, node: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::MANAGED_BY.to_string(), "rivetctl".to_string()),
        (labels::DEPLOYMENT.to_string(), fleet.name.clone()),
        (labels::NODE.to_string(), node.to_string()),
        (labels::COMPONENT.to_string(), component.to_string()),
    ])
}

/// Names that differ per node when the deployment has several (they may share an engine).
fn per_node(fleet: &Fleet, base: &str, node: &str) -> String {
    if fleet.nodes.len() > 1 { format!("{base}-{node}") } else { base.to_string() }
}

/// The Docker settings of a Docker fleet.
fn settings_of(fleet: &Fleet) -> Option<&DockerSettings> {
    match &fleet.target_settings {
        TargetSettings::Docker(settings) => Some(settings),
        _ => None,
    }
}

/// The network's base name: the settings', or the default for a fleet of another target.
fn network_base(fleet: &Fleet) -> &str {
    settings_of(fleet).map_or("rivet-net", |s| s.network.as_str())
}

/// The agents' network on a node.
pub fn network_name(fleet: &Fleet, node: &str) -> String {
    per_node(fleet, network_base(fleet), node)
}

/// The datahub's internal network on a node.
pub fn internal_network_name(fleet: &Fleet, node: &str) -> String {
    format!("{}-internal", network_name(fleet, node))
}

fn shared_volume_name(fleet: &Fleet, settings: &DockerSettings, node: &str) -> Option<String> {
    fleet.shared_storage.then(|| per_node(fleet, &format!("{}-shared", settings.project), node))
}

/// The datahub's data volume.
pub fn data_volume_name(settings: &DockerSettings) -> String {
    format!("{}-pgdata", settings.project)
}

/// `RIVETOS_PG_URL` for the agents of `node`: the datahub's alias on its internal network
/// on the same node; on another node, the datahub node's address and published port (when
/// some node has the datahub role; else the alias, as one node's fleet has).
fn database_url(fleet: &Fleet, settings: &DockerSettings, node: &str) -> Option<EnvValue> {
    let hub = fleet.datahub.as_ref()?;
    let hub_has_role = fleet.nodes.iter().any(|n| n.role.runs_datahub());
    if hub.node == node || !hub_has_role {
        return Some(hub.url("datahub", 5432));
    }
    let address = fleet.datahub_node().and_then(|n| n.address.as_deref()).unwrap_or("datahub");
    Some(hub.url(address, settings.postgres_port))
}

fn env_fields<'e>(fields: &mut Fields, pool: &mut Pool<'_>, env: impl Iterator<Item = (&'e Arc<str>, &'e EnvValue)>) {
    for (key, value) in env {
        let field = pool.text(&format!("env.{key}"));
        // Plain values are the fleet's own shared strings.
        let v = if value.sensitive {
            pool.digest(&field, &value.value)
        } else {
            FieldValue { text: Arc::clone(&value.value), sensitive: false }
        };
        fields.insert(field, v);
    }
}

fn container_fields(pool: &mut Pool<'_>, spec: &ContainerSpec) -> Fields {
    let mut fields = Fields::new();
    let mut put = |pool: &mut Pool<'_>, k: &str, v: &str| {
        fields.insert(pool.text(k), FieldValue { text: pool.text(v), sensitive: false });
    };
    put(pool, "image", &spec.image);
    put(pool, "user", spec.user.as_deref().unwrap_or("(image default)"));
    put(pool, "restart", spec.restart.as_str());
    put(pool, "memory", &format_bytes(spec.limits.memory));
    put(pool, "cpus", &format!("{}", spec.limits.cpus));
    put(pool, "pids", &spec.limits.pids.to_string());
    put(pool, "stop_grace_period", &format!("{}s", spec.stop_grace_secs));
    let mut security = vec![format!("cap_drop={}", spec.cap_drop.join(","))];
    if spec.no_new_privileges {
        security.push("no-new-privileges".into());
    }
    put(pool, "security", &security.join(" "));
    if spec.healthcheck.as_ref().is_some_and(|c| c.test == ["NONE"]) {
        put(pool, "healthcheck", "disabled");
    } else if let Some(check) = &spec.healthcheck {
        let text = format!(
            "{} every {}ms timeout {}ms retries {} start {}ms",
            check.test.join(" "),
            check.interval_ms,
            check.timeout_ms,
            check.retries,
            check.start_period_ms
        );
        put(pool, "healthcheck", &text);
    }
    for (network, aliases) in &spec.networks {
        put(pool, &format!("network.{network}"), &aliases.join(","));
    }
    for mount in &spec.mounts {
        let source = match &mount.source {
            MountSource::Volume(name) => format!("volume:{name}"),
            MountSource::Bind(path) => format!("bind:{path}"),
        };
        let mode = if mount.read_only { ":ro" } else { "" };
        put(pool, &format!("mount.{}", mount.target), &format!("{source}{mode}"));
    }
    for port in &spec.ports {
        put(pool, &format!("port.{}", port.container_port), &format!("{}:{}", port.host_ip, port.host_port));
    }
    for file in &spec.files {
        // The file may hold secrets written inline: recorded as a digest.
        let field = pool.text(&format!("file.{}", file.path));
        let digest = pool.digest(&field, &file.contents);
        fields.insert(field, digest);
    }
    env_fields(&mut fields, pool, spec.environment());
    fields
}

/// `1GiB`, `512MiB`, or bytes when not a whole number of MiB.
pub fn format_bytes(bytes: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    if bytes.is_multiple_of(1024 * MIB) {
        format!("{}GiB", bytes / (1024 * MIB))
    } else if bytes.is_multiple_of(MIB) {
        format!("{}MiB", bytes / MIB)
    } else {
        bytes.to_string()
    }
}

impl ContainerSpec {
    /// The container's whole environment: [`ContainerSpec::env`], then what the lowering
    /// added (names never repeat).
    pub fn environment(&self) -> impl Iterator<Item = (&Arc<str>, &EnvValue)> {
        self.env.iter().chain(self.env_added.iter().flat_map(|added| added.iter()))
    }
}

fn hardened(
    name: String,
    image: String,
    env: Arc<Env>,
    limits: ResolvedLimits,
    labels: BTreeMap<String, String>,
) -> ContainerSpec {
    ContainerSpec {
        hostname: name.clone(),
        name,
        image,
        env,
        env_added: None,
        user: None,
        networks: Vec::new(),
        mounts: Vec::new(),
        files: Vec::new(),
        ports: Vec::new(),
        cap_drop: vec!["ALL".into()],
        no_new_privileges: true,
        limits,
        healthcheck: None,
        restart: Restart::UnlessStopped,
        stop_grace_secs: 10,
        labels,
        one_shot: false,
    }
}

/// Lowers a Docker fleet with its own settings; a fleet of another target has no Docker
/// resources.
pub fn resources(fleet: &Fleet) -> Vec<DockerResource> {
    settings_of(fleet).map(|settings| lower(fleet, settings)).unwrap_or_default()
}

/// Lowers the fleet into Docker resources on every node, in a stable order.
pub fn lower(fleet: &Fleet, settings: &DockerSettings) -> Vec<DockerResource> {
    let mut out = Vec::new();
    let mut pool = Pool::new(&fleet.name);
    let health = &fleet.health;
    let grace_secs = fleet.update.stop_grace_period.div_ceil(1000);
    for node in &fleet.nodes {
        let runs_hub = fleet.datahub.as_ref().is_some_and(|h| h.node == node.name);
        if !runs_hub && node.agents.is_empty() {
            continue;
        }
        let key =
            |kind: &str, name: &str| ResourceKey { node: node.name.clone(), kind: kind.into(), name: name.into() };
        let net = network_name(fleet, &node.name);
        let internal = internal_network_name(fleet, &node.name);
        for (name, is_internal) in [(net.clone(), false), (internal.clone(), true)] {
            let spec = NetworkSpec {
                name: name.clone(),
                internal: is_internal,
                labels: ownership(fleet, &node.name, "network"),
            };
            let mut fields = Fields::new();
            fields.insert("driver".into(), FieldValue::plain("bridge"));
            fields.insert("internal".into(), FieldValue::plain(is_internal.to_string()));
            out.push(Resource {
                key: key(KIND_NETWORK, &name),
                component: Component::Foundation,
                stateful: false,
                fields,
                replace_on: BTreeSet::from(["driver".to_string(), "internal".to_string()]),
                run_state: None,
                stop_grace_ms: None,
                payload: DockerObject::Network(spec),
            });
        }
        let shared = shared_volume_name(fleet, settings, &node.name);
        let data_volume = data_volume_name(settings);
        let mut volumes: Vec<String> = shared.iter().cloned().collect();
        if runs_hub {
            volumes.push(data_volume.clone());
        }
        for name in volumes {
            let mut labels = ownership(fleet, &node.name, "storage");
            labels.insert(labels::STATEFUL.into(), "true".into());
            let mut fields = Fields::new();
            fields.insert("driver".into(), FieldValue::plain("local"));
            out.push(Resource {
                key: key(KIND_VOLUME, &name),
                component: Component::Storage,
                stateful: true,
                fields,
                replace_on: BTreeSet::from(["driver".to_string()]),
                run_state: None,
                stop_grace_ms: None,
                payload: DockerObject::Volume(VolumeSpec { name, labels }),
            });
        }
        let shared_mount = shared.as_ref().map(|volume| Mount {
            source: MountSource::Volume(volume.clone()),
            target: fleet.shared_mount_path.clone(),
            read_only: false,
        });
        // A local engine bind mounts the config file; a remote one gets a copy of it.
        let endpoint = settings.engine(&node.name).map(|e| &e.endpoint);
        let remote = matches!(endpoint, Some(Endpoint::Ssh { .. } | Endpoint::Tcp { .. }));
        let url = database_url(fleet, settings, &node.name);
        let give_config = |spec: &mut ContainerSpec| {
            if remote {
                spec.files.push(FileCopy { path: CONFIG_MOUNT.into(), contents: fleet.config_text.clone() });
            } else {
                spec.mounts.push(Mount {
                    source: MountSource::Bind(fleet.config_file.clone()),
                    target: CONFIG_MOUNT.into(),
                    read_only: true,
                });
            }
        };

        if let (true, Some(hub)) = (runs_hub, &fleet.datahub) {
            let name = format!("{}-datahub", settings.project);
            let mut labels = ownership(fleet, &node.name, "datahub");
            labels.insert(labels::REVISION.into(), fleet.revision.clone());
            let mut spec = hardened(name.clone(), hub.image.clone(), Arc::new(hub.env.clone()), hub.limits, labels);
            spec.hostname = "datahub".into();
            spec.user = hub.run_as.clone();
            spec.networks.push((internal.clone(), vec!["datahub".into()]));
            if let Some((ip, port)) = &settings.publish() {
                spec.networks.push((net.clone(), vec![]));
                spec.ports.push(Port { host_ip: ip.clone(), host_port: *port, container_port: 5432 });
            }
            spec.mounts.push(Mount {
                source: MountSource::Volume(data_volume.clone()),
                target: "/var/lib/postgresql/data".into(),
                read_only: false,
            });
            spec.mounts.extend(shared_mount.clone());
            spec.healthcheck = Some(Healthcheck {
                test: vec![
                    "CMD".into(),
                    "pg_isready".into(),
                    "-U".into(),
                    hub.user.clone(),
                    "-d".into(),
                    hub.database.clone(),
                ],
                interval_ms: health.interval,
                timeout_ms: health.timeout,
                retries: health.retries,
                start_period_ms: health.start_period,
            });
            spec.stop_grace_secs = grace_secs.max(30);
            let mut fields = container_fields(&mut pool, &spec);
            fields.insert("postgres_version".into(), FieldValue::plain(hub.postgres_version.clone()));
            out.push(Resource {
                key: key(KIND_CONTAINER, &name),
                component: Component::Datahub,
                stateful: false,
                fields,
                replace_on: BTreeSet::from(["postgres_version".to_string()]),
                run_state: Some(RunState::Running),
                stop_grace_ms: Some(spec.stop_grace_secs * 1000),
                payload: DockerObject::Container(Box::new(spec)),
            });
            if let Some(migrate) = &fleet.migrate {
                let name = format!("{}-migrate", settings.project);
                let mut labels = ownership(fleet, &node.name, "migrate");
                labels.insert(labels::REVISION.into(), fleet.revision.clone());
                let mut spec = hardened(
                    name.clone(),
                    migrate.image.clone(),
                    Arc::new(with_database_url(&migrate.env, url.clone())),
                    migrate.limits,
                    labels,
                );
                spec.restart = Restart::No;
                spec.one_shot = true;
                // The agent image's HEALTHCHECK means nothing for a one-shot step.
                spec.healthcheck = Some(Healthcheck {
                    test: vec!["NONE".into()],
                    interval_ms: 0,
                    timeout_ms: 0,
                    retries: 0,
                    start_period_ms: 0,
                });
                spec.networks.push((internal.clone(), vec![]));
                spec.mounts.extend(shared_mount.clone());
                give_config(&mut spec);
                let mut fields = container_fields(&mut pool, &spec);
                fields.insert("config".into(), FieldValue::plain(fleet.config.shared_digest[..16].to_string()));
                out.push(Resource {
                    key: key(KIND_CONTAINER, &name),
                    component: Component::Migrate,
                    stateful: false,
                    fields,
                    replace_on: BTreeSet::new(),
                    run_state: Some(RunState::Completed),
                    stop_grace_ms: Some(spec.stop_grace_secs * 1000),
                    payload: DockerObject::Container(Box::new(spec)),
                });
            }
        }
        // How the node's agents reach the datahub: one map, shared (an agent whose own
        // environment sets the URL keeps its own).
        let url_env: Option<Arc<Env>> =
            url.as_ref().map(|url| Arc::new(Env::from([(Arc::<str>::from(DATABASE_URL), url.clone())])));
        for agent in fleet.agents.iter().filter(|a| a.node == node.name) {
            let name = format!("{}-agent-{}", settings.project, agent.name);
            let mut labels = ownership(fleet, &node.name, "agent");
            labels.insert(labels::AGENT.into(), agent.id.clone());
            labels.insert(labels::REVISION.into(), fleet.revision.clone());
            let env = Arc::clone(&agent.env);
            let mut spec = hardened(name.clone(), agent.image.clone(), env, agent.limits, labels);
            spec.env_added = url_env.clone().filter(|_| !agent.env.contains_key(DATABASE_URL));
            spec.hostname = agent.name.clone();
            spec.networks.push((net.clone(), vec![agent.name.clone()]));
            if fleet.datahub.as_ref().is_some_and(|h| h.node == node.name) {
                spec.networks.push((internal.clone(), vec![]));
            }
            spec.mounts.extend(shared_mount.clone());
            give_config(&mut spec);
            spec.healthcheck = Some(Healthcheck {
                // Exec form: the path is one argument of wget, never shell text.
                test: vec![
                    "CMD".into(),
                    "wget".into(),
                    "-q".into(),
                    "-O".into(),
                    "/dev/null".into(),
                    format!("http://127.0.0.1:{}{}", health.port, health.live_path),
                ],
                interval_ms: health.interval,
                timeout_ms: health.timeout,
                retries: health.retries,
                start_period_ms: health.start_period,
            });
            spec.stop_grace_secs = grace_secs;
            let mut fields = container_fields(&mut pool, &spec);
            let digest = fleet.config.agent_digests.get(&agent.id).map_or("", |d| &d[..16]);
            fields.insert(pool.text("config"), FieldValue::plain(digest));
            out.push(Resource {
                key: key(KIND_CONTAINER, &name),
                component: Component::Agent(agent.id.clone()),
                stateful: false,
                fields,
                replace_on: BTreeSet::new(),
                run_state: Some(RunState::Running),
                stop_grace_ms: Some(spec.stop_grace_secs * 1000),
                payload: DockerObject::Container(Box::new(spec)),
            });
        }
    }
    out
}
