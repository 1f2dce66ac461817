//! The fleet as Kubernetes manifests: what `kubectl apply -f` accepts as-is, and the
//! [`Resource`]s the planner diffs (one per object, parsed back from the rendered text so the
//! plan and the file can never disagree).
//!
//! Two artifacts: `kubernetes/manifests.yaml` (no secret values: containers reference the
//! Secret by key) and `kubernetes/secret.yaml` (the one Secret, `secret: true`, written 0600).
//! The security defaults of the Docker target hold here too: non-root pods with a numeric
//! user, every capability dropped, no privilege escalation, seccomp `RuntimeDefault`, no
//! service-account token, and a NetworkPolicy that lets only this deployment's agents and
//! migrate job reach the datahub.
//!
//! Choices the manifests make (the template's comments repeat them for readers of the file):
//! - The config is the ConfigMap `<project>-config` (key `config.yaml`, the file's text as
//!   written, `${VAR}`s unexpanded): the pods mount it as an *optional* directory volume at
//!   `~/.rivetos`, read-only. A directory, not a `subPath`, so a changed ConfigMap still shows.
//! - The datahub's `PGDATA` is a subdirectory of its claim (a fresh volume may hold `lost+found`).
//! - Agents: one replica each, `strategy: Recreate` (two instances of an agent holding the same
//!   bot tokens never run at once: measured, `maxSurge: 0` does not ensure that, the
//!   replacement starts while the old pod is still terminating), a PodDisruptionBudget of
//!   `maxUnavailable: 1` where the server serves one ([`Profile`]).
//!   Resources come from `kubernetes.resources` when set, else from the fleet's limits;
//!   requests equal limits. Kubernetes has no per-pod pid limit, so `pids` is not rendered.
//! - The migrate Job runs before the agents only because rivetctl applies it first and waits.
//! - A sensitive value's Secret key is its variable name, or `NAME.<owner>` when containers differ.
//! - The Namespace is a stateful resource: deleting it would delete the claims in it.
//!
//! - Secret values are written as `data` (base64), never `stringData`, which the server turns
//!   into `data` and so makes every re-apply a change.
//! - Quantities are canonical (`2`, not `2000m`; `1Gi`, not `1024Mi`): the server stores the
//!   canonical form, and anything else is a change on every apply.
//! - Every top-level object is a member of the deployment's ApplySet (KEP-3659): label
//!   [`PART_OF`] with the set's id ([`applyset_id`]); the parent Secret is the adapter's.
//!
//! Pure: no I/O; the same fleet gives byte-identical text (maps are `BTreeMap`s, lists sorted).

mod profile;
mod resources;
pub mod schema;

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;

use orchestrator::fleet::{
    AGENT_LIMITS, Env, Fleet, KubernetesSettings, ResolvedLimits, TargetSettings, with_database_url,
};
use orchestrator::lower::kubernetes as lowering;
use serde_json::{Value, json};

use super::{Artifact, RenderError, render};

pub use profile::Profile;
pub use resources::{MADE_BY_STATEFULSET, classify, resources, resources_checked, resources_with};
pub use schema::{Schema, Unknown};

/// How the manifests are rendered: for which server, and how secret digests are keyed.
#[derive(Debug, Clone)]
pub struct Options {
    pub profile: Profile,
    /// The deployment's digest key (kept in the ApplySet parent Secret on the cluster):
    /// secret fields are HMACs with it; `None` (offline) keys them by the deployment name.
    pub digest_key: Option<Vec<u8>>,
    /// The `kubernetes.io/dockerconfigjson` Secret pods pull their images with, when the
    /// registry needs credentials.
    pub pull_secret: Option<String>,
    /// The live server's schema: fields it does not declare are taken out of the objects
    /// ([`Schema::prune`]); `None` offline.
    pub schema: Option<std::sync::Arc<Schema>>,
}

impl Options {
    /// Offline rendering: the declared `deployment.kubernetes.version`, no digest key.
    pub fn offline(settings: &KubernetesSettings) -> Options {
        Options { profile: Profile::for_version(settings.version), digest_key: None, pull_secret: None, schema: None }
    }
}

/// The ApplySet membership label (KEP-3659) every top-level object carries.
pub const PART_OF: &str = "applyset.kubernetes.io/part-of";
/// The label of the ApplySet parent holding the set's id.
pub const APPLYSET_ID: &str = "applyset.kubernetes.io/id";

/// The base of the deployment's object names (the project name as a DNS label).
pub fn object_prefix(settings: &KubernetesSettings) -> String {
    lowering::prefix(settings)
}

/// The name of the image pull Secret (registry credentials), when one is needed.
pub fn pull_secret_name(settings: &KubernetesSettings) -> String {
    format!("{}-registry", lowering::prefix(settings))
}

/// The name of the ApplySet parent Secret (which also keeps the digest key).
pub fn applyset_parent(settings: &KubernetesSettings) -> String {
    format!("{}-applyset", lowering::prefix(settings))
}

/// The ApplySet's id, as KEP-3659 derives it from its parent:
/// `applyset-<base64url(sha256(<name>.<namespace>.<kind>.<group>))>-v1` (a Secret: group "").
pub fn applyset_id(settings: &KubernetesSettings) -> String {
    use sha2::{Digest, Sha256};
    let key = format!("{}.{}.Secret.", applyset_parent(settings), settings.namespace);
    let hash = Sha256::digest(key.as_bytes());
    format!("applyset-{}-v1", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hash))
}

/// The template rendering both artifacts (`part` selects which).
pub const TEMPLATE: &str = "kubernetes.yaml.j2";
/// The manifests, without secret values.
pub const MANIFESTS_PATH: &str = "kubernetes/manifests.yaml";
/// The Secret holding every sensitive environment value.
pub const SECRET_PATH: &str = "kubernetes/secret.yaml";
/// Resource key node of cluster-scoped objects (the Namespace); namespaced objects use the
/// namespace.
pub const CLUSTER: &str = "cluster";
/// Where agents and the migrate job find the config (upstream's `~/.rivetos/config.yaml`).
pub const CONFIG_DIR: &str = "/home/rivetos/.rivetos";
/// uid and gid of agent and migrate pods, and of a datahub image built from source.
/// Kubelet cannot prove `runAsNonRoot` for an image whose `USER` is a name (upstream's
/// `rivetos`), so the pods name a number; the images built from source run as 10001.
pub const DEFAULT_UID: u32 = 10001;
/// Mount point of the datahub's claim; PostgreSQL keeps its files one level below because a
/// fresh volume's root may hold `lost+found`, which `initdb` refuses.
const DATA_MOUNT: &str = "/var/lib/postgresql/data";
const PGDATA: &str = "/var/lib/postgresql/data/pgdata";
const MIB: u64 = 1024 * 1024;

fn secret_name(settings: &KubernetesSettings) -> String {
    format!("{}-secrets", lowering::prefix(settings))
}

/// The Kubernetes settings of a Kubernetes fleet.
fn settings_of(fleet: &Fleet) -> Option<&KubernetesSettings> {
    match &fleet.target_settings {
        TargetSettings::Kubernetes(settings) => Some(settings),
        _ => None,
    }
}

/// Label keys a selector matches on: stable across revisions (selectors are immutable).
const SELECTOR_KEYS: &[&str] = &["app.kubernetes.io/instance", "app.kubernetes.io/component", "rivetctl.io/agent"];

fn labels(fleet: &Fleet, component: &str, agent: Option<&str>) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = [
        ("app.kubernetes.io/name", "rivetos"),
        ("app.kubernetes.io/instance", fleet.name.as_str()),
        ("app.kubernetes.io/component", component),
        ("app.kubernetes.io/managed-by", "rivetctl"),
        ("rivetctl.io/deployment", fleet.name.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    if let Some(id) = agent {
        labels.insert("rivetctl.io/agent".into(), id.to_string());
    }
    labels
}

fn selector(labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    labels.iter().filter(|(k, _)| SELECTOR_KEYS.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Sensitive variables whose value differs between containers (an agent's own sensitive
/// override). Each container gets its own Secret key for them, `NAME.<owner>`; every other
/// Secret key is the variable's name.
fn conflicting_secrets<'a>(envs: impl IntoIterator<Item = &'a Env>) -> BTreeSet<String> {
    let mut values: BTreeMap<&str, &str> = BTreeMap::new();
    let mut conflicts = BTreeSet::new();
    for (name, value) in envs.into_iter().flatten().filter(|(_, v)| v.sensitive) {
        if *values.entry(name).or_insert(&value.value) != &*value.value {
            conflicts.insert(name.to_string());
        }
    }
    conflicts
}

/// `[{name, value, secret_key}]` with exactly one of value / secret_key set.
fn env_entries(env: &Env, owner: &str, conflicts: &BTreeSet<String>, secrets: &mut BTreeMap<String, String>) -> Value {
    let entries: Vec<Value> = env
        .iter()
        .map(|(name, value)| {
            if value.sensitive {
                let key = match conflicts.contains(&**name) {
                    true => format!("{name}.{owner}"),
                    false => name.to_string(),
                };
                secrets.insert(key.clone(), value.value.to_string());
                json!({ "name": &**name, "value": null, "secret_key": key })
            } else {
                json!({ "name": &**name, "value": &*value.value, "secret_key": null })
            }
        })
        .collect();
    Value::Array(entries)
}

/// `1.5` cores → `1500m`, `2.0` → `2` (the canonical form the server stores).
pub fn cpu_quantity(cpus: f64) -> String {
    let millis = (cpus * 1000.0).round() as u64;
    if millis.is_multiple_of(1000) { format!("{}", millis / 1000) } else { format!("{millis}m") }
}

/// Bytes → whole MiB, rounded up, in the canonical form: `1073741824` → `1Gi`,
/// `536870912` → `512Mi`.
pub fn memory_quantity(bytes: u64) -> String {
    let mib = bytes.div_ceil(MIB);
    if mib.is_multiple_of(1024) { format!("{}Gi", mib / 1024) } else { format!("{mib}Mi") }
}

fn resources_of(limits: ResolvedLimits) -> Value {
    json!({ "cpu": cpu_quantity(limits.cpus), "memory": memory_quantity(limits.memory) })
}

/// Pod security from `uid[:gid]`; `fsGroup` is the gid so mounted claims are writable.
fn security(run_as: Option<&str>) -> Value {
    let (uid, gid) = run_as
        .and_then(|spec| {
            let (uid, gid) = spec.split_once(':').unwrap_or((spec, spec));
            Some((uid.parse::<u32>().ok()?, gid.parse::<u32>().ok()?))
        })
        .unwrap_or((DEFAULT_UID, DEFAULT_UID));
    json!({ "run_as_user": uid, "run_as_group": gid, "fs_group": gid })
}

fn seconds(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

/// A probe: `action` is `{"http": {path, port}}` or `{"exec": [command]}`.
fn probe(kind: &str, fleet: &Fleet, action: Value, delay: bool) -> Value {
    let health = &fleet.health;
    json!({
        "kind": kind,
        "http": action.get("http"),
        "exec": action.get("exec"),
        "initial_delay": if delay { seconds(health.start_period) } else { 0 },
        "period": seconds(health.interval).max(1),
        "timeout": seconds(health.timeout).max(1),
        "failure_threshold": health.retries,
    })
}

fn mount(name: &str, path: &str, read_only: bool) -> Value {
    json!({ "name": name, "path": path, "read_only": read_only })
}

/// The template context. Holds the secret values under `secret.data` only; the manifests
/// part never reads them.
pub fn context(fleet: &Fleet, k8s: &KubernetesSettings, profile: &Profile) -> Value {
    let prefix = lowering::prefix(k8s);
    let secret_name = secret_name(k8s);
    let url = lowering::database_url(fleet);
    let migrate_env = fleet.migrate.as_ref().map(|m| with_database_url(&m.env, url.clone()));
    let agent_envs: Vec<Env> = fleet.agents.iter().map(|a| with_database_url(&a.env, url.clone())).collect();
    let config_map = format!("{prefix}-config");
    let grace = seconds(fleet.update.stop_grace_period);
    let health_port = fleet.health.port;
    let keys =
        conflicting_secrets(fleet.datahub.iter().map(|h| &h.env).chain(migrate_env.iter()).chain(agent_envs.iter()));
    let mut secrets = BTreeMap::new();
    let shared = lowering::shared_claim(fleet, k8s).map(|claim| {
        json!({
            "name": claim,
            "size": k8s.shared_storage_size,
            "storage_class": k8s.shared_storage_class,
            "mount_path": fleet.shared_mount_path,
            "labels": labels(fleet, "storage", None),
        })
    });
    let shared_claim = shared.as_ref().map(|s| s["name"].clone());
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    if let Some(claim) = &shared_claim {
        volumes.push(json!({ "name": "shared", "claim": claim, "config_map": null }));
        mounts.push(mount("shared", &fleet.shared_mount_path, false));
    }
    let mut runtime_volumes = volumes.clone();
    runtime_volumes.push(json!({ "name": "config", "claim": null, "config_map": config_map }));
    let mut runtime_mounts = mounts.clone();
    runtime_mounts.push(mount("config", CONFIG_DIR, true));

    let mut workloads = Vec::new();
    if let Some(hub) = &fleet.datahub {
        let mut env = hub.env.clone();
        if let Some(pgdata) = env.get_mut("PGDATA") {
            pgdata.value = PGDATA.into();
        }
        let mut hub_mounts = vec![mount("pgdata", DATA_MOUNT, false)];
        hub_mounts.extend(mounts.iter().cloned());
        let pg_isready = json!({ "exec": ["pg_isready", "-U", hub.user, "-d", hub.database] });
        let labels = labels(fleet, "datahub", None);
        workloads.push(json!({
            "kind": "StatefulSet",
            "api_version": "apps/v1",
            "name": format!("{prefix}-datahub"),
            "container": "datahub",
            "selector": selector(&labels),
            "labels": labels,
            "annotations": {
                "rivetctl.io/postgres-version": hub.postgres_version,
                "rivetctl.io/revision": fleet.revision,
            },
            "image": hub.image,
            "env": env_entries(&env, "datahub", &keys, &mut secrets),
            "resources": resources_of(hub.limits),
            "security": security(hub.run_as.as_deref()),
            "grace": grace.max(30),
            "ports": [{ "name": "postgres", "port": 5432 }],
            "probes": [
                probe("readinessProbe", fleet, pg_isready.clone(), false),
                probe("livenessProbe", fleet, pg_isready, true),
            ],
            "mounts": hub_mounts,
            "volumes": volumes,
            "claim": { "size": k8s.storage_size, "storage_class": k8s.storage_class },
            "service": {
                "name": "datahub",
                "headless": true,
                "port": { "name": "postgres", "port": 5432 },
            },
            "pdb": false,
        }));
    }
    if let Some(migrate) = &fleet.migrate {
        let labels = labels(fleet, "migrate", None);
        workloads.push(json!({
            "kind": "Job",
            "api_version": "batch/v1",
            "name": format!("{prefix}-migrate"),
            "container": "migrate",
            "selector": selector(&labels),
            "labels": labels,
            "annotations": { "rivetctl.io/revision": fleet.revision },
            "image": migrate.image,
            "env": env_entries(migrate_env.as_ref().unwrap_or(&migrate.env), "migrate", &keys, &mut secrets),
            "resources": resources_of(AGENT_LIMITS),
            "security": security(None),
            "grace": grace,
            "ports": [],
            "probes": [],
            "mounts": runtime_mounts,
            "volumes": runtime_volumes,
            "service": null,
            "pdb": false,
        }));
    }
    for (agent, agent_env) in fleet.agents.iter().zip(&agent_envs) {
        let mut resources = resources_of(agent.limits);
        if let Some(cpu) = &k8s.resources.cpu {
            resources["cpu"] = json!(cpu);
        }
        if let Some(memory) = &k8s.resources.memory {
            resources["memory"] = json!(memory);
        }
        let name = format!("{prefix}-agent-{}", agent.name);
        let health = &fleet.health;
        let labels = labels(fleet, "agent", Some(&agent.id));
        let ready = json!({ "http": { "path": health.path, "port": health_port } });
        let live = json!({ "http": { "path": health.live_path, "port": health_port } });
        workloads.push(json!({
            "kind": "Deployment",
            "api_version": "apps/v1",
            "name": name,
            "container": "agent",
            "selector": selector(&labels),
            "labels": labels,
            "annotations": { "rivetctl.io/revision": fleet.revision },
            "image": agent.image,
            "env": env_entries(agent_env, &agent.name, &keys, &mut secrets),
            "resources": resources,
            "security": security(None),
            "grace": grace,
            "ports": [{ "name": "health", "port": health_port }],
            "probes": [
                probe("readinessProbe", fleet, ready, false),
                probe("livenessProbe", fleet, live, true),
            ],
            "mounts": runtime_mounts,
            "volumes": runtime_volumes,
            "service": { "name": name, "headless": false, "port": { "name": "health", "port": health_port } },
            "pdb": profile.pdb_api.is_some(),
        }));
    }
    json!({
        "part": "manifests",
        "pull_secret": null,
        // Not `namespace`: that is a minijinja builtin, so a missing key would not be undefined.
        "namespace_name": k8s.namespace,
        "create_namespace": k8s.create_namespace,
        "deployment": fleet.name,
        "config_map": config_map,
        "config_text": fleet.config_text,
        "secret_name": secret_name,
        "policy_name": format!("{prefix}-datahub-ingress"),
        "history": fleet.update.keep_images,
        "namespace_labels": labels(fleet, "foundation", None),
        "datahub_selector": fleet.datahub.as_ref().map(|_| selector(&labels(fleet, "datahub", None))),
        "datahub_policy_labels": labels(fleet, "datahub", None),
        "shared": shared,
        "workloads": workloads,
        "secret": { "labels": labels(fleet, "foundation", None), "data": base64_values(&secrets) },
        "applyset_id": applyset_id(k8s),
        "profile": {
            "pdb_api": profile.pdb_api,
            "claim_retention": profile.claim_retention,
            "pdb_unhealthy_policy": profile.pdb_unhealthy_policy,
        },
    })
}

/// A Secret's `data`: every value base64-encoded.
fn base64_values(values: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    values.iter().map(|(k, v)| (k.clone(), base64::engine::general_purpose::STANDARD.encode(v))).collect()
}

/// Renders `kubernetes/manifests.yaml` and `kubernetes/secret.yaml` (secret) for the
/// declared version; nothing for a fleet of another target.
pub fn artifacts(fleet: &Fleet) -> Result<Vec<Artifact>, RenderError> {
    let Some(k8s) = settings_of(fleet) else {
        return Ok(Vec::new());
    };
    artifacts_with(fleet, &Options::offline(k8s))
}

/// [`artifacts`] for the server `options` describe.
pub fn artifacts_with(fleet: &Fleet, options: &Options) -> Result<Vec<Artifact>, RenderError> {
    let Some(k8s) = settings_of(fleet) else {
        return Ok(Vec::new());
    };
    let mut ctx = context(fleet, k8s, &options.profile);
    ctx["pull_secret"] = serde_json::to_value(&options.pull_secret).unwrap_or(Value::Null);
    let manifests = render(TEMPLATE, &ctx)?;
    ctx["part"] = json!("secret");
    let secret = render(TEMPLATE, &ctx)?;
    Ok(vec![
        Artifact { path: MANIFESTS_PATH.into(), contents: manifests, secret: false },
        Artifact { path: SECRET_PATH.into(), contents: secret, secret: true },
    ])
}

/// Parses rendered manifests (a `---`-separated stream) into JSON objects.
pub fn parse_documents(text: &str) -> Result<Vec<Value>, RenderError> {
    // rivetctl's own output, not a user's file: no budget (the default one stops at 1,024
    // documents and 250,000 nodes, which a fleet of a few hundred agents passes).
    let mut options = serde_saphyr::Options::default();
    options.budget = None;
    serde_saphyr::from_multiple_with_options::<Value>(text, options).map_err(|err| RenderError {
        template: TEMPLATE,
        source: minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            format!("the rendered manifests are not valid YAML: {err}"),
        ),
    })
}
