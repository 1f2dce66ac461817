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
//! Pure: no I/O; the same fleet gives byte-identical text (maps are `BTreeMap`s, lists sorted).

use std::collections::{BTreeMap, BTreeSet};

use orchestrator::fleet::{AGENT_LIMITS, Env, Fleet, ResolvedLimits, container_name_of};
use orchestrator::resource::{Component, Fields, Resource, ResourceKey, RunState, flatten_json};
use serde_json::{Value, json};

use super::{Artifact, RenderError, render};

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

/// Names of objects are DNS labels: the project name lower-cased, `_` and `.` as `-`.
fn prefix(fleet: &Fleet) -> String {
    container_name_of(&fleet.project)
}

fn secret_name(fleet: &Fleet) -> String {
    format!("{}-secrets", prefix(fleet))
}

fn labels(fleet: &Fleet, component: &str, agent: Option<&str>) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "rivetos".to_string()),
        ("app.kubernetes.io/instance".to_string(), fleet.name.clone()),
        ("app.kubernetes.io/component".to_string(), component.to_string()),
        ("app.kubernetes.io/managed-by".to_string(), "rivetctl".to_string()),
        ("rivetctl.io/deployment".to_string(), fleet.name.clone()),
    ]);
    if let Some(id) = agent {
        labels.insert("rivetctl.io/agent".into(), id.to_string());
    }
    labels
}

/// The labels a selector matches on: stable across revisions (selectors are immutable).
fn selector(fleet: &Fleet, component: &str, agent: Option<&str>) -> BTreeMap<String, String> {
    let mut selector = BTreeMap::from([
        ("app.kubernetes.io/instance".to_string(), fleet.name.clone()),
        ("app.kubernetes.io/component".to_string(), component.to_string()),
    ]);
    if let Some(id) = agent {
        selector.insert("rivetctl.io/agent".into(), id.to_string());
    }
    selector
}

/// Which Secret key holds each sensitive value. Keys are the variable names; a name whose
/// value differs between containers (an agent's own sensitive override) gets one key per
/// container, `NAME.<owner>`.
struct SecretKeys {
    values: BTreeMap<String, BTreeSet<String>>,
}

impl SecretKeys {
    fn collect<'a>(envs: impl IntoIterator<Item = &'a Env>) -> SecretKeys {
        let mut values: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for env in envs {
            for (name, value) in env.iter().filter(|(_, v)| v.sensitive) {
                values.entry(name.clone()).or_default().insert(value.value.clone());
            }
        }
        SecretKeys { values }
    }

    fn key(&self, name: &str, owner: &str) -> String {
        if self.values.get(name).is_some_and(|v| v.len() > 1) { format!("{name}.{owner}") } else { name.to_string() }
    }
}

/// `[{name, value, secret_key}]` with exactly one of value / secret_key set.
fn env_entries(env: &Env, owner: &str, keys: &SecretKeys, secrets: &mut BTreeMap<String, String>) -> Value {
    let entries: Vec<Value> = env
        .iter()
        .map(|(name, value)| {
            if value.sensitive {
                let key = keys.key(name, owner);
                secrets.insert(key.clone(), value.value.clone());
                json!({ "name": name, "value": null, "secret_key": key })
            } else {
                json!({ "name": name, "value": value.value, "secret_key": null })
            }
        })
        .collect();
    Value::Array(entries)
}

/// `1.5` cores → `1500m`.
pub fn cpu_quantity(cpus: f64) -> String {
    format!("{}m", (cpus * 1000.0).round() as u64)
}

/// Bytes → whole MiB, rounded up: `1073741824` → `1024Mi`.
pub fn memory_quantity(bytes: u64) -> String {
    format!("{}Mi", bytes.div_ceil(MIB))
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

fn probe(kind: &str, fleet: &Fleet, http: Option<(&str, u16)>, exec: Option<Vec<String>>, delay: bool) -> Value {
    let health = &fleet.health;
    json!({
        "kind": kind,
        "http": http.map(|(path, port)| json!({ "path": path, "port": port })),
        "exec": exec,
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
pub fn context(fleet: &Fleet) -> Value {
    let k8s = &fleet.config.raw.deployment.kubernetes;
    let prefix = prefix(fleet);
    let secret_name = secret_name(fleet);
    let config_map = format!("{prefix}-config");
    let grace = seconds(fleet.update.stop_grace_period);
    let health_port = fleet.health.port;
    let keys = SecretKeys::collect(
        fleet
            .datahub
            .iter()
            .map(|h| &h.env)
            .chain(fleet.migrate.iter().map(|m| &m.env))
            .chain(fleet.agents.iter().map(|a| &a.env)),
    );
    let mut secrets = BTreeMap::new();
    let shared = fleet.shared_volume.as_ref().map(|volume| {
        json!({
            "name": container_name_of(volume),
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
        let pg_isready = || {
            Some(vec!["pg_isready".into(), "-U".into(), hub.user.clone(), "-d".into(), hub.database.clone()])
        };
        workloads.push(json!({
            "kind": "StatefulSet",
            "api_version": "apps/v1",
            "name": format!("{prefix}-datahub"),
            "container": "datahub",
            "labels": labels(fleet, "datahub", None),
            "selector": selector(fleet, "datahub", None),
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
                probe("readinessProbe", fleet, None, pg_isready(), false),
                probe("livenessProbe", fleet, None, pg_isready(), true),
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
        workloads.push(json!({
            "kind": "Job",
            "api_version": "batch/v1",
            "name": format!("{prefix}-migrate"),
            "container": "migrate",
            "labels": labels(fleet, "migrate", None),
            "selector": selector(fleet, "migrate", None),
            "annotations": { "rivetctl.io/revision": fleet.revision },
            "image": migrate.image,
            "env": env_entries(&migrate.env, "migrate", &keys, &mut secrets),
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
    for agent in &fleet.agents {
        let mut resources = resources_of(agent.limits);
        if let Some(cpu) = &k8s.resources.cpu {
            resources["cpu"] = json!(cpu);
        }
        if let Some(memory) = &k8s.resources.memory {
            resources["memory"] = json!(memory);
        }
        let name = format!("{prefix}-agent-{}", agent.name);
        let health = &fleet.health;
        workloads.push(json!({
            "kind": "Deployment",
            "api_version": "apps/v1",
            "name": name,
            "container": "agent",
            "labels": labels(fleet, "agent", Some(&agent.id)),
            "selector": selector(fleet, "agent", Some(&agent.id)),
            "annotations": { "rivetctl.io/revision": fleet.revision },
            "image": agent.image,
            "env": env_entries(&agent.env, &agent.name, &keys, &mut secrets),
            "resources": resources,
            "security": security(None),
            "grace": grace,
            "ports": [{ "name": "health", "port": health_port }],
            "probes": [
                probe("readinessProbe", fleet, Some((&health.path, health_port)), None, false),
                probe("livenessProbe", fleet, Some((&health.live_path, health_port)), None, true),
            ],
            "mounts": runtime_mounts,
            "volumes": runtime_volumes,
            "service": { "name": name, "headless": false, "port": { "name": "health", "port": health_port } },
            "pdb": true,
        }));
    }
    json!({
        "part": "manifests",
        "namespace": k8s.namespace,
        "deployment": fleet.name,
        "config_map": config_map,
        "secret_name": secret_name,
        "history": fleet.update.keep_images,
        "namespace_labels": labels(fleet, "foundation", None),
        "datahub_selector": fleet.datahub.as_ref().map(|_| selector(fleet, "datahub", None)),
        "datahub_policy_labels": labels(fleet, "datahub", None),
        "shared": shared,
        "workloads": workloads,
        "secret": { "labels": labels(fleet, "foundation", None), "data": secrets },
    })
}

/// Renders `kubernetes/manifests.yaml` and `kubernetes/secret.yaml` (secret).
pub fn artifacts(fleet: &Fleet) -> Result<Vec<Artifact>, RenderError> {
    let mut ctx = context(fleet);
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
    serde_saphyr::from_multiple::<Value>(text).map_err(|err| RenderError {
        template: TEMPLATE,
        source: minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            format!("the rendered manifests are not valid YAML: {err}"),
        ),
    })
}

fn text<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

/// One resource per rendered object, in file order (manifests, then the Secret).
pub fn resources(fleet: &Fleet) -> Result<Vec<Resource<Value>>, RenderError> {
    let namespace = &fleet.config.raw.deployment.kubernetes.namespace;
    let mut out = Vec::new();
    for artifact in artifacts(fleet)? {
        for mut object in parse_documents(&artifact.contents)? {
            if let Some(map) = object.as_object_mut() {
                map.remove("status");
            }
            let kind = text(&object, "/kind").to_string();
            let name = text(&object, "/metadata/name").to_string();
            let agent = text(&object, "/metadata/labels/rivetctl.io~1agent").to_string();
            let (component, stateful, run_state) = match kind.as_str() {
                "PersistentVolumeClaim" => (Component::Storage, true, None),
                "StatefulSet" => (Component::Datahub, false, Some(RunState::Running)),
                "Job" => (Component::Migrate, false, Some(RunState::Completed)),
                "Deployment" => (Component::Agent(agent), false, Some(RunState::Running)),
                "Service" | "PodDisruptionBudget" if !agent.is_empty() => (Component::Agent(agent), false, None),
                "Service" => (Component::Datahub, false, None),
                _ => (Component::Foundation, false, None),
            };
            let replace_on: &[&str] = match kind.as_str() {
                "StatefulSet" => &[
                    "spec.selector",
                    "spec.serviceName",
                    "spec.volumeClaimTemplates",
                    "metadata.annotations.rivetctl.io/postgres-version",
                ],
                "Deployment" => &["spec.selector"],
                "Job" => &["spec"],
                "PersistentVolumeClaim" => &["spec.storageClassName", "spec.accessModes"],
                "Service" => &["spec.clusterIP"],
                _ => &[],
            };
            let is_secret = kind == "Secret";
            let mut fields = Fields::new();
            let secret = |path: &str| is_secret && (path.starts_with("stringData.") || path.starts_with("data."));
            flatten_json(&object, "", &mut fields, &secret, &fleet.name);
            let node = if kind == "Namespace" { CLUSTER } else { namespace.as_str() };
            out.push(Resource {
                key: ResourceKey { node: node.to_string(), kind, name },
                component,
                stateful,
                fields,
                replace_on: replace_on.iter().map(|s| s.to_string()).collect(),
                run_state,
                payload: object,
            });
        }
    }
    Ok(out)
}
