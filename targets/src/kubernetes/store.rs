//! The deployment's state on the cluster, in its namespace, so any machine with the
//! kubeconfig sees the same lock and can resume the same rollout:
//! - the lock is the `coordination.k8s.io/v1` Lease `<prefix>-lock`: holder identity
//!   (`<command> on <host> (pid <pid>)`), acquire and renew times and the TTL as
//!   `leaseDurationSeconds`, for `kubectl get lease` to show; the lock record itself in the
//!   annotation [`BODY`];
//! - every other document (the rollout journal, the revision history) is a key of the
//!   ConfigMap `<prefix>-state`;
//! - the digest key that makes secret digests HMACs is in the ApplySet parent Secret
//!   (`<prefix>-applyset`), created with a random key on first use.
//!
//! Compare-and-swap: each document carries its generation in an annotation; a write reads
//! the object, checks the generation it expects, and replaces the object with the
//! `resourceVersion` it read (the server refuses a stale one with 409, and the write is
//! tried again from the read). A removed document keeps its generation (the Lease stays,
//! released; the ConfigMap keeps the annotation), so generations never go backwards.
//! None of these objects carries the deployment label: observing the deployment, and
//! `infra destroy` without `--volumes`, leave them alone.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, DeleteParams, PostParams};
use orchestrator::fleet::KubernetesSettings;
use orchestrator::port::{Document, StateError, StateStore, TargetError};
use serde_json::Value;

use super::{Cluster, STATE_OF, classify, is_not_found};
use crate::render::kubernetes::{APPLYSET_ID, applyset_id, applyset_parent};

/// Annotation of a document's generation (ConfigMap: `generation.<document>`).
pub const GENERATION: &str = "rivetctl.io/generation";
/// Annotation of the Lease holding the lock record.
pub const BODY: &str = "rivetctl.io/lock";
/// The lock document (the Lease).
const LOCK: &str = orchestrator::state::lock::DOCUMENT;
/// Key of the digest key in the ApplySet parent Secret.
pub const DIGEST_KEY: &str = "digest-key";
/// How often a write is tried again after losing a race on the resourceVersion.
const RETRIES: usize = 8;

/// A deployment's documents in its namespace.
pub struct KubernetesStore {
    cluster: Cluster,
    namespace: String,
    deployment: String,
    lease: String,
    config_map: String,
    parent: String,
    applyset: String,
    /// The deployment owns its namespace: the first write creates it when missing.
    create_namespace: bool,
}

fn conflict(name: &str, expected: Option<u64>, found: Option<u64>) -> StateError {
    StateError::Conflict { name: name.to_string(), expected, found }
}

fn generation_of(annotations: Option<&BTreeMap<String, String>>, key: &str) -> Option<u64> {
    annotations?.get(key)?.parse().ok()
}

/// The key of a ConfigMap document's generation annotation.
fn generation_key(document: &str) -> String {
    format!("{GENERATION}.{document}")
}

/// `2026-12-02T18:00:00.000000Z` of ms since the epoch.
fn micro_time(ms: u64) -> Option<MicroTime> {
    let timestamp = jiff::Timestamp::from_millisecond(i64::try_from(ms).ok()?).ok()?;
    Some(MicroTime(timestamp))
}

impl KubernetesStore {
    pub fn new(cluster: Cluster, settings: &KubernetesSettings, deployment: &str) -> KubernetesStore {
        let prefix = crate::render::kubernetes::object_prefix(settings);
        KubernetesStore {
            cluster,
            namespace: settings.namespace.clone(),
            deployment: deployment.to_string(),
            lease: format!("{prefix}-lock"),
            config_map: format!("{prefix}-state"),
            parent: applyset_parent(settings),
            applyset: applyset_id(settings),
            create_namespace: settings.create_namespace,
        }
    }

    /// Whether a write failed because the namespace is missing.
    fn namespace_missing(err: &kube::Error) -> bool {
        matches!(err, kube::Error::Api(status) if status.code == 404 && status.details.as_ref().is_some_and(|d| d.kind == "namespaces"))
    }

    /// Creates the namespace (when the deployment owns it) so the lock can be written
    /// before the first `up` has applied anything; `up` then applies its full manifest.
    async fn create_namespace(&self) -> Result<bool, StateError> {
        if !self.create_namespace {
            return Ok(false);
        }
        let namespace = k8s_openapi::api::core::v1::Namespace {
            metadata: ObjectMeta {
                name: Some(self.namespace.clone()),
                labels: Some(BTreeMap::from([
                    (super::DEPLOYMENT.to_string(), self.deployment.clone()),
                    ("app.kubernetes.io/managed-by".to_string(), "rivetctl".to_string()),
                ])),
                ..ObjectMeta::default()
            },
            ..Default::default()
        };
        let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(self.cluster.call());
        let params = kube::api::PatchParams::apply(super::FIELD_MANAGER);
        match api.patch(&self.namespace, &params, &kube::api::Patch::Apply(&namespace)).await {
            Ok(_) => Ok(true),
            Err(err) => Err(self.failed(&format!("cannot create namespace {}", self.namespace), &err)),
        }
    }

    fn meta(&self, name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(self.namespace.clone()),
            labels: Some(BTreeMap::from([
                (STATE_OF.to_string(), self.deployment.clone()),
                ("app.kubernetes.io/managed-by".to_string(), "rivetctl".to_string()),
            ])),
            ..ObjectMeta::default()
        }
    }

    fn leases(&self) -> Api<Lease> {
        Api::namespaced(self.cluster.call(), &self.namespace)
    }

    fn config_maps(&self) -> Api<ConfigMap> {
        Api::namespaced(self.cluster.call(), &self.namespace)
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.cluster.call(), &self.namespace)
    }

    fn failed(&self, what: &str, err: &kube::Error) -> StateError {
        let mut error = classify(&format!("{what} in namespace {}", self.namespace), err);
        if Self::namespace_missing(err) {
            error = TargetError::failed(format!("namespace {} does not exist", self.namespace)).with_hint(format!(
                "create it (`kubectl create namespace {}`), or set deployment.kubernetes.create_namespace: true (needs a ClusterRole for namespaces)",
                self.namespace
            ));
        }
        StateError::Target(error)
    }

    /// The deployment's digest key, from the ApplySet parent; a new random one when the
    /// parent does not exist yet (it is written with the parent, before the first object).
    pub async fn digest_key(&self) -> Result<Vec<u8>, TargetError> {
        match self.secrets().get_opt(&self.parent).await {
            Ok(Some(secret)) => {
                if let Some(key) = secret.data.as_ref().and_then(|d| d.get(DIGEST_KEY)) {
                    return Ok(key.0.clone());
                }
            }
            Ok(None) => {}
            // A user who may not read Secrets cannot deploy Secrets either; the apply says so.
            Err(kube::Error::Api(status)) if status.code == 403 => {}
            Err(err) => return Err(classify(&format!("cannot read Secret {}", self.parent), &err)),
        }
        let mut key = vec![0u8; 32];
        getrandom::fill(&mut key).map_err(|e| TargetError::failed(format!("no randomness for the digest key: {e}")))?;
        Ok(key)
    }

    /// Creates or updates the ApplySet parent Secret (KEP-3659): its id label, tooling and
    /// the group-kinds of the members, and the digest key (kept when it exists).
    pub async fn ensure_parent(&self, key: &[u8], group_kinds: &str) -> Result<(), TargetError> {
        let mut meta = self.meta(&self.parent);
        meta.labels.get_or_insert_default().insert(APPLYSET_ID.to_string(), self.applyset.clone());
        meta.annotations = Some(BTreeMap::from([
            ("applyset.kubernetes.io/tooling".to_string(), format!("rivetctl/v{}", env!("CARGO_PKG_VERSION"))),
            ("applyset.kubernetes.io/contains-group-kinds".to_string(), group_kinds.to_string()),
        ]));
        let secret = Secret {
            metadata: meta,
            type_: Some("Opaque".into()),
            data: Some(BTreeMap::from([(DIGEST_KEY.to_string(), ByteString(key.to_vec()))])),
            ..Secret::default()
        };
        let params = kube::api::PatchParams::apply(super::FIELD_MANAGER).force();
        match self.secrets().patch(&self.parent, &params, &kube::api::Patch::Apply(&secret)).await {
            Ok(_) => Ok(()),
            Err(err) => {
                Err(match self.failed(&format!("cannot apply the ApplySet parent Secret {}", self.parent), &err) {
                    StateError::Target(error) => error,
                    other => TargetError::failed(other.to_string()),
                })
            }
        }
    }

    /// Creates or updates the image pull Secret (`kubernetes.io/dockerconfigjson`).
    pub async fn ensure_pull_secret(&self, name: &str, docker_config: &str) -> Result<(), TargetError> {
        let secret = Secret {
            metadata: self.meta(name),
            type_: Some("kubernetes.io/dockerconfigjson".into()),
            data: Some(BTreeMap::from([(
                ".dockerconfigjson".to_string(),
                ByteString(docker_config.as_bytes().to_vec()),
            )])),
            ..Secret::default()
        };
        let params = kube::api::PatchParams::apply(super::FIELD_MANAGER).force();
        match self.secrets().patch(name, &params, &kube::api::Patch::Apply(&secret)).await {
            Ok(_) => Ok(()),
            Err(err) => Err(classify(&format!("cannot apply the image pull Secret {name}"), &err)),
        }
    }

    async fn load_lock(&self) -> Result<Option<Lease>, StateError> {
        self.leases()
            .get_opt(&self.lease)
            .await
            .map_err(|e| self.failed(&format!("cannot read Lease {}", self.lease), &e))
    }

    async fn load_map(&self) -> Result<Option<ConfigMap>, StateError> {
        self.config_maps()
            .get_opt(&self.config_map)
            .await
            .map_err(|e| self.failed(&format!("cannot read ConfigMap {}", self.config_map), &e))
    }

    /// The Lease for a lock record: holder, times and TTL from the record, the record in [`BODY`].
    fn lease_of(&self, generation: u64, body: Option<&str>, resource_version: Option<String>) -> Lease {
        let mut meta = self.meta(&self.lease);
        meta.resource_version = resource_version;
        let mut annotations = BTreeMap::from([(GENERATION.to_string(), generation.to_string())]);
        let mut spec = LeaseSpec::default();
        if let Some(body) = body {
            annotations.insert(BODY.to_string(), body.to_string());
            if let Ok(record) = serde_json::from_str::<Value>(body) {
                let text = |key: &str| record[key].as_str().unwrap_or_default().to_string();
                let number = |key: &str| record[key].as_u64().unwrap_or_default();
                spec.holder_identity = Some(format!("{} on {} (pid {})", text("command"), text("host"), number("pid")));
                spec.acquire_time = micro_time(number("since"));
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                spec.renew_time = micro_time(now);
                let ttl = number("expires").saturating_sub(now).div_ceil(1000);
                spec.lease_duration_seconds = Some(i32::try_from(ttl.max(1)).unwrap_or(i32::MAX));
            }
        }
        meta.annotations = Some(annotations);
        Lease { metadata: meta, spec: Some(spec) }
    }

    async fn store_lock(&self, expected: Option<u64>, body: Option<&str>) -> Result<u64, StateError> {
        for _ in 0..RETRIES {
            let found = self.load_lock().await?;
            let annotations = found.as_ref().and_then(|l| l.metadata.annotations.as_ref());
            let generation = generation_of(annotations, GENERATION).unwrap_or(0);
            let present = annotations.is_some_and(|a| a.contains_key(BODY));
            let current = present.then_some(generation);
            if current != expected {
                return Err(conflict(LOCK, expected, current));
            }
            let next = generation + 1;
            let result = match &found {
                None => {
                    let lease = self.lease_of(next, body, None);
                    self.leases().create(&PostParams::default(), &lease).await.map(|_| ())
                }
                Some(lease) => {
                    let replaced = self.lease_of(next, body, lease.metadata.resource_version.clone());
                    self.leases().replace(&self.lease, &PostParams::default(), &replaced).await.map(|_| ())
                }
            };
            match result {
                Ok(()) => return Ok(next),
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(err) if Self::namespace_missing(&err) && self.create_namespace().await? => continue,
                Err(err) => return Err(self.failed(&format!("cannot write Lease {}", self.lease), &err)),
            }
        }
        Err(conflict(LOCK, expected, None))
    }

    async fn store_document(&self, name: &str, expected: Option<u64>, body: Option<&str>) -> Result<u64, StateError> {
        let key = generation_key(name);
        for _ in 0..RETRIES {
            let found = self.load_map().await?;
            let generation =
                generation_of(found.as_ref().and_then(|m| m.metadata.annotations.as_ref()), &key).unwrap_or(0);
            let present = found.as_ref().and_then(|m| m.data.as_ref()).is_some_and(|d| d.contains_key(name));
            let current = present.then_some(generation);
            if current != expected {
                return Err(conflict(name, expected, current));
            }
            let next = generation + 1;
            let mut map = found
                .clone()
                .unwrap_or_else(|| ConfigMap { metadata: self.meta(&self.config_map), ..ConfigMap::default() });
            map.metadata.annotations.get_or_insert_default().insert(key.clone(), next.to_string());
            let data = map.data.get_or_insert_default();
            match body {
                Some(body) => data.insert(name.to_string(), body.to_string()),
                None => data.remove(name),
            };
            let result = match &found {
                None => self.config_maps().create(&PostParams::default(), &map).await.map(|_| ()),
                Some(_) => self.config_maps().replace(&self.config_map, &PostParams::default(), &map).await.map(|_| ()),
            };
            match result {
                Ok(()) => return Ok(next),
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(err) if Self::namespace_missing(&err) && self.create_namespace().await? => continue,
                Err(err) => return Err(self.failed(&format!("cannot write ConfigMap {}", self.config_map), &err)),
            }
        }
        Err(conflict(name, expected, None))
    }
}

impl StateStore for KubernetesStore {
    fn location(&self) -> String {
        format!("Lease {} and ConfigMap {} in namespace {}", self.lease, self.config_map, self.namespace)
    }

    async fn load(&self) -> Result<BTreeMap<String, Document>, StateError> {
        let mut documents = BTreeMap::new();
        if let Some(lease) = self.load_lock().await? {
            let annotations = lease.metadata.annotations.unwrap_or_default();
            if let Some(body) = annotations.get(BODY) {
                let generation = generation_of(Some(&annotations), GENERATION).unwrap_or(0);
                documents.insert(LOCK.to_string(), Document { generation, body: body.clone() });
            }
        }
        if let Some(map) = self.load_map().await? {
            let annotations = map.metadata.annotations.unwrap_or_default();
            for (name, body) in map.data.unwrap_or_default() {
                let generation = generation_of(Some(&annotations), &generation_key(&name)).unwrap_or(0);
                documents.insert(name, Document { generation, body });
            }
        }
        Ok(documents)
    }

    async fn store(&self, name: &str, expected: Option<u64>, body: &str) -> Result<u64, StateError> {
        if name == LOCK {
            self.store_lock(expected, Some(body)).await
        } else {
            self.store_document(name, expected, Some(body)).await
        }
    }

    async fn remove(&self, name: &str, expected: u64) -> Result<(), StateError> {
        let removed = if name == LOCK {
            self.store_lock(Some(expected), None).await
        } else {
            self.store_document(name, Some(expected), None).await
        };
        removed.map(|_| ())
    }

    async fn destroy(&self) -> Result<(), StateError> {
        let params = DeleteParams::default();
        for result in [
            self.leases().delete(&self.lease, &params).await.map(|_| ()),
            self.config_maps().delete(&self.config_map, &params).await.map(|_| ()),
            self.config_maps().delete(&format!("{}-previous", self.config_map), &params).await.map(|_| ()),
            self.secrets().delete(&self.parent, &params).await.map(|_| ()),
            self.secrets().delete(&self.parent.replace("-applyset", "-registry"), &params).await.map(|_| ()),
        ] {
            match result {
                Ok(()) => {}
                Err(err) if is_not_found(&err) => {}
                Err(err) => return Err(self.failed("cannot remove the deployment's state", &err)),
            }
        }
        Ok(())
    }
}
