//! Reaching the cluster: the kubeconfig with kubectl's loading rules (`KUBECONFIG`, else
//! `~/.kube/config`), its current context or the one asked for, else the in-cluster
//! service account; TLS verified as the kubeconfig says (rustls with ring).

use orchestrator::fleet::KubernetesSettings;
use orchestrator::port::TargetError;

use super::{Cluster, error_chain};

/// How to connect and apply, from the command line.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// `--context`: overrides `deployment.kubernetes.context`.
    pub context: Option<String>,
    /// `--force-conflicts`: server-side apply takes fields other managers own.
    pub force_conflicts: bool,
    /// `--skip-unserved`: objects no served API version can hold are left out (with a warning).
    pub skip_unserved: bool,
    /// `--no-push`: images are not pushed; manifests name them by their content-hash tag
    /// (clusters that share the local engine's images).
    pub no_push: bool,
    /// Observing fails on a conflict with another field manager (unless `force_conflicts`)
    /// with the table of fields and managers, before anything changes: what `up` and
    /// `update` want; `preview` shows the conflict as a change instead.
    pub refuse_conflicts: bool,
}

/// Loads the client configuration: the context asked for, else the kubeconfig's current
/// context, else in-cluster.
pub async fn config(settings: &KubernetesSettings, options: &ConnectOptions) -> Result<kube::Config, TargetError> {
    let context = options.context.clone().or_else(|| settings.context.clone());
    let loaded = match &context {
        Some(context) => {
            let wanted = kube::config::KubeConfigOptions { context: Some(context.clone()), ..Default::default() };
            kube::Config::from_kubeconfig(&wanted).await.map_err(|err| {
                TargetError::failed(format!("cannot use kubeconfig context \"{context}\": {}", error_chain(&err)))
                    .with_hint("`kubectl config get-contexts` lists the contexts; set KUBECONFIG to pick another file")
            })?
        }
        None => kube::Config::infer().await.map_err(|err| {
            TargetError::failed(format!("no Kubernetes cluster configured: {}", error_chain(&err))).with_hint(
                "set KUBECONFIG or create ~/.kube/config (kubectl's loading rules), or run inside a cluster with a service account",
            )
        })?,
    };
    Ok(loaded)
}

/// Connects to the cluster (no call is made yet).
pub async fn connect(settings: &KubernetesSettings, options: &ConnectOptions) -> Result<Cluster, TargetError> {
    let mut config = config(settings, options).await?;
    config.default_namespace = settings.namespace.clone();
    let url = config.cluster_url.to_string();
    let client = kube::Client::try_from(config)
        .map_err(|err| TargetError::failed(format!("cannot set up the client for {url}: {}", error_chain(&err))))?;
    Ok(Cluster::new(client, url.trim_end_matches('/')))
}
