//! The Kubernetes API behind the port ([`orchestrator::port`]), through kube-rs: one
//! [`KubernetesTarget`] holds a client for the deployment's namespace and implements
//! observing and applying with server-side apply ([`observe`], [`apply`], [`wait`]), the
//! rollout operations on one agent Deployment ([`units`]), images ([`images`]) and the
//! state store on the cluster ([`store`]: a Lease and a ConfigMap).
//!
//! What the server serves decides the manifests ([`discovery`]): each kind's API version
//! and no field the server does not know. Every call goes through
//! [`KubernetesTarget::api`] or [`Cluster::call`], which count API calls (the no-op `up`
//! benchmark reports them).

pub mod apply;
pub mod conflicts;
pub mod connect;
pub mod diff;
pub mod discovery;
pub mod doctor;
pub mod images;
pub mod kinds;
pub mod observe;
pub mod revert;
pub mod store;
pub mod units;
pub mod wait;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use orchestrator::fleet::{Fleet, KubernetesSettings, TargetSettings};
use orchestrator::port::{Port, TargetError};
use orchestrator::resource::Resource;
use serde_json::Value;

use crate::render::kubernetes::{self as manifests, Options as RenderOptions, Profile};

pub use connect::ConnectOptions;
pub use store::KubernetesStore;

/// The field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "rivetctl";
/// Annotation holding the record of the applied fields ([`orchestrator::resource::encode_record`]).
pub const RECORD: &str = "rivetctl.io/fields";
/// Annotation holding the spec hash.
pub const SPEC_HASH: &str = "rivetctl.io/spec-hash";
/// Label of the deployment an object belongs to.
pub const DEPLOYMENT: &str = "rivetctl.io/deployment";
/// Label of the objects holding the deployment's own state (lock, journal, previous
/// revisions, the ApplySet parent): never observed as part of the deployment.
pub const STATE_OF: &str = "rivetctl.io/state-of";

/// A client of the cluster that counts its calls.
#[derive(Clone)]
pub struct Cluster {
    client: kube::Client,
    /// Where it was reached, for messages.
    pub url: String,
    calls: Arc<AtomicUsize>,
}

impl Cluster {
    pub fn new(client: kube::Client, url: impl Into<String>) -> Cluster {
        Cluster { client, url: url.into(), calls: Arc::new(AtomicUsize::new(0)) }
    }

    /// Counts one API call; returns the client to make it with.
    pub fn call(&self) -> kube::Client {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.client.clone()
    }

    /// API calls made so far.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }
}

/// The deployment's namespace on a connected cluster, for as long as the caller holds the fleet.
pub struct KubernetesTarget<'f> {
    fleet: &'f Fleet,
    settings: &'f KubernetesSettings,
    cluster: Cluster,
    /// The server's version and what it serves.
    served: discovery::Served,
    /// How the manifests are rendered for this server (profile, digest key).
    render: RenderOptions,
    options: ConnectOptions,
    /// The `.dockerconfigjson` of the image pull Secret, when the registry needs credentials
    /// (read once, when the target opens).
    pull_config: Option<String>,
    /// Pinned references (`repo:tag@sha256:…`) of the images pushed or found in the registry,
    /// by local reference: manifests name images by digest once pushed.
    pinned: Mutex<BTreeMap<String, String>>,
    /// The local engine, where images are built (connected on first use).
    engine: tokio::sync::OnceCell<crate::docker::Engine>,
    /// The fleet as this server's objects, lowered once.
    desired: std::sync::OnceLock<Vec<Resource<Value>>>,
    /// The ApplySet parent has been brought up to date in this run.
    parent_ready: tokio::sync::OnceCell<()>,
    config_dir: PathBuf,
    store: KubernetesStore,
}

/// The Kubernetes settings of a Kubernetes fleet.
pub fn settings_of(fleet: &Fleet) -> Result<&KubernetesSettings, TargetError> {
    match &fleet.target_settings {
        TargetSettings::Kubernetes(settings) => Ok(settings),
        _ => Err(TargetError::failed(format!("deployment {} is not on Kubernetes", fleet.name))),
    }
}

impl<'f> KubernetesTarget<'f> {
    /// Connects to the cluster of the kubeconfig context (or in-cluster config), reads what
    /// it serves, and the deployment's digest key.
    pub async fn open(
        fleet: &'f Fleet,
        config_dir: &std::path::Path,
        options: ConnectOptions,
    ) -> Result<KubernetesTarget<'f>, TargetError> {
        let settings = settings_of(fleet)?;
        let cluster = connect::connect(settings, &options).await?;
        let served = discovery::discover(&cluster).await?;
        let store = KubernetesStore::new(cluster.clone(), settings, &fleet.name);
        let digest_key = store.digest_key().await?;
        let profile = served.profile();
        let pull_config = images::pull_secret(fleet, &options)?;
        let pull_secret = pull_config.as_ref().map(|_| manifests::pull_secret_name(settings));
        let render =
            RenderOptions { profile, digest_key: Some(digest_key), pull_secret, schema: Some(served.schema.clone()) };
        let (desired, unknown) = manifests::resources_checked(fleet, &render).map_err(|err| {
            TargetError::failed(format!(
                "the Kubernetes manifests of {} do not render: {}",
                fleet.name,
                error_chain(&err)
            ))
        })?;
        if !unknown.is_empty() {
            eprintln!(
                "warning: the server ({}) does not know these fields, so they are left out:\n  {}",
                served.git_version,
                manifests::schema::summarize(&unknown).join("\n  ")
            );
        }
        Ok(KubernetesTarget {
            fleet,
            settings,
            cluster,
            served,
            render,
            options,
            pull_config,
            pinned: Mutex::new(BTreeMap::new()),
            engine: tokio::sync::OnceCell::new(),
            desired: std::sync::OnceLock::from(desired),
            parent_ready: tokio::sync::OnceCell::new(),
            config_dir: config_dir.to_path_buf(),
            store,
        })
    }

    /// The namespace of the deployment.
    pub fn namespace(&self) -> &str {
        &self.settings.namespace
    }

    /// The profile the manifests are rendered for.
    pub fn profile(&self) -> &Profile {
        &self.render.profile
    }

    /// The manifests for this server (`infra preview --out` against the cluster).
    pub fn artifacts(&self) -> Result<Vec<crate::render::Artifact>, crate::render::RenderError> {
        manifests::artifacts_with(self.fleet, &self.render)
    }

    /// The fleet's objects for this server, lowered once per run.
    fn desired(&self) -> &[Resource<Value>] {
        self.desired.get_or_init(|| self.lowered(self.fleet))
    }

    /// The fleet's objects for this server. Rendering is checked when the target opens
    /// ([`KubernetesTarget::open`]), so a failure here is a bug, said loudly, never an empty
    /// fleet that would plan to change nothing.
    fn lowered(&self, fleet: &Fleet) -> Vec<Resource<Value>> {
        manifests::resources_with(fleet, &self.render)
            .unwrap_or_else(|err| panic!("the Kubernetes manifests of {} do not render: {err:#?}", fleet.name))
    }

    /// The local engine (images are built there).
    async fn engine(&self) -> Result<&crate::docker::Engine, TargetError> {
        self.engine.get_or_try_init(|| crate::docker::port::nodes::control_host(self.fleet, &self.config_dir)).await
    }

    /// The pinned reference of a local image, when it was pushed.
    fn pinned(&self, image: &str) -> Option<String> {
        self.pinned.lock().expect("pinned images").get(image).cloned()
    }
}

impl Port for KubernetesTarget<'_> {
    type Store = KubernetesStore;

    fn store(&self) -> &KubernetesStore {
        &self.store
    }
}

/// A kube error as the port's error: the server answered (failed) or it did not (unreachable).
pub fn classify(what: &str, err: &kube::Error) -> TargetError {
    match err {
        kube::Error::Api(status) => {
            let message = format!("{what}: {} ({})", status.message, status.code);
            match status.code {
                401 => TargetError::failed(message)
                    .with_hint("the kubeconfig's credentials were refused: check the context's user (`kubectl auth whoami`)"),
                403 => TargetError::failed(message)
                    .with_hint("the user lacks an RBAC permission: `rivetctl doctor` lists what is missing (docs/kubernetes.md has the Role)"),
                500.. => TargetError::unreachable(message),
                _ => TargetError::failed(message),
            }
        }
        other => TargetError::unreachable(format!("{what}: {}", error_chain(other))),
    }
}

pub use crate::with_causes as error_chain;

/// Whether a kube error is the connection's, not the server's answer (a cut connection, a
/// reset): an idempotent call can be made again.
pub fn is_transport(err: &kube::Error) -> bool {
    matches!(err, kube::Error::HyperError(_) | kube::Error::Service(_))
}

/// How often an idempotent call is made again after a transport error.
const TRANSPORT_RETRIES: u32 = 3;

/// Makes an idempotent call (a server-side apply, a dry run, a read), again after a
/// transport error, up to [`TRANSPORT_RETRIES`] times with a doubling pause from 200 ms.
pub async fn retried<T, F, Fut>(mut call: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut pause = std::time::Duration::from_millis(200);
    let mut attempt = 0;
    loop {
        match call().await {
            Err(err) if is_transport(&err) && attempt < TRANSPORT_RETRIES => {
                attempt += 1;
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            other => return other,
        }
    }
}

/// Whether a kube error is a 404.
pub fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 404)
}
