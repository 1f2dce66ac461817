//! Images for the cluster: built from source on this machine's Docker Engine (content-hash
//! tags, as for Docker), pushed to `deployment.image.registry` and named in the manifests
//! by digest (`<registry>/<repo>:<tag>@sha256:…`), or, with `--no-push`, named by their
//! local tag for clusters that share this engine's images. What `status` shows of a
//! workload comes from the API.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use orchestrator::port::{Artifacts, Details, ImageEvent, ImageFacts, ImageRequest, StoredImage, TargetError};
use orchestrator::resource::{ObservedResource, Resource};
use serde_json::Value;

use orchestrator::fleet::Fleet;

use super::{ConnectOptions, KubernetesTarget, classify};
use crate::docker::port::images::{build_on, facts_on, push_built, stored_on, with_token};
use crate::registry::{self, registry_host};

/// Where built images go (`deployment.image.registry`), unless `--no-push` or nothing is built.
fn push_registry<'a>(fleet: &'a Fleet, options: &ConnectOptions) -> Option<&'a str> {
    let image = &fleet.config.raw.deployment.image;
    (!options.no_push && image.build_from_source && !image.registry.is_empty()).then_some(image.registry.as_str())
}

/// The `.dockerconfigjson` of the image pull Secret, when the registry images are pushed to
/// needs credentials (`None`: no push, or anonymous).
pub fn pull_secret(fleet: &Fleet, options: &ConnectOptions) -> Result<Option<String>, TargetError> {
    let Some(registry) = push_registry(fleet, options) else { return Ok(None) };
    let host = registry_host(registry);
    let credentials = registry::RegistryAuth::for_registry(host, &|name| std::env::var(name).ok())
        .map_err(|err| TargetError::failed(err.to_string()).with_hint(err.hint()))?;
    match credentials {
        Some(credentials) => registry::docker_config_json(host, &credentials)
            .map(Some)
            .map_err(|err| TargetError::failed(err.to_string()).with_hint(err.hint())),
        None => Ok(None),
    }
}

impl KubernetesTarget<'_> {
    /// Where built images are pushed (`deployment.image.registry`), unless `--no-push`.
    fn push_to(&self) -> Option<&str> {
        push_registry(self.fleet, &self.options)
    }

    /// The registry credentials for `registry` (environment, then the Docker config).
    fn credentials(&self, registry: &str) -> Result<Option<registry::Credentials>, TargetError> {
        registry::RegistryAuth::for_registry(registry_host(registry), &|name| std::env::var(name).ok())
            .map_err(|err| TargetError::failed(err.to_string()))
    }

    /// The pinned references of the fleet's built images the local engine knows (pushed
    /// from here before): `infra preview` compares what was applied, digests included.
    pub(super) async fn resolve_pins(&self) {
        let Some(registry) = self.push_to() else { return };
        let Ok(engine) = self.engine().await else { return };
        for image in self.fleet.images.iter().filter(|i| i.build.is_some()) {
            if self.pinned(&image.reference).is_some() {
                continue;
            }
            let remote = format!("{registry}/{}", image.reference);
            let Ok(info) = engine.call().inspect_image(&remote).await else { continue };
            let repository = remote.rsplit_once(':').map_or(remote.as_str(), |(repo, _)| repo);
            let digest = info
                .repo_digests
                .unwrap_or_default()
                .into_iter()
                .find_map(|d| d.strip_prefix(&format!("{repository}@")).map(str::to_string));
            if let Some(digest) = digest {
                self.pinned
                    .lock()
                    .expect("pinned images")
                    .insert(image.reference.clone(), format!("{remote}@{digest}"));
            }
        }
    }

    /// The local reference a live image names (`<registry>/<repo>:<tag>@sha256:…` → `<repo>:<tag>`).
    pub(super) fn local_of(&self, image: &str) -> String {
        let pinned = self.pinned.lock().expect("pinned images");
        if let Some((local, _)) = pinned.iter().find(|(_, p)| p.as_str() == image) {
            return local.clone();
        }
        let without_digest = image.split('@').next().unwrap_or(image);
        match self.push_to() {
            Some(registry) => {
                without_digest.strip_prefix(&format!("{registry}/")).unwrap_or(without_digest).to_string()
            }
            None => without_digest.to_string(),
        }
    }

    /// Pushes the built images of `request` and records their pinned references.
    async fn push_all(
        &self,
        request: &ImageRequest<'_>,
        events: &(dyn Fn(ImageEvent<'_>) + Sync),
    ) -> Result<(), TargetError> {
        let Some(registry) = self.push_to() else { return Ok(()) };
        let engine = self.engine().await?;
        let credentials = self.credentials(registry)?;
        let pushed = push_built(engine, request.images, registry, credentials.as_ref(), events)
            .await
            .map_err(|(image, err)| TargetError::failed(format!("cannot push {image} to {registry}: {err}")))?;
        self.pinned.lock().expect("pinned images").extend(pushed);
        Ok(())
    }
}

impl Artifacts for KubernetesTarget<'_> {
    async fn provide_images(
        &self,
        request: &ImageRequest<'_>,
        cancelled: &dyn Fn() -> bool,
        events: &(dyn Fn(ImageEvent<'_>) + Sync),
    ) -> Result<(), TargetError> {
        let engine = self.engine().await?;
        with_token(cancelled, |token| async move { build_on(engine, "local", request, &token, events).await }).await?;
        if cancelled() {
            return Err(TargetError::interrupted("interrupted after the builds; nothing was pushed or applied"));
        }
        self.push_all(request, events).await
    }

    async fn check_users(&self, _desired: &[Resource<Value>]) -> Result<(), TargetError> {
        // Every pod names a numeric non-root user and `runAsNonRoot`: the kubelet refuses root.
        Ok(())
    }

    async fn stored_images(&self, _node: &str, repository: &str) -> Result<Vec<StoredImage>, TargetError> {
        let engine = self.engine().await?;
        stored_on(engine, repository).await.map_err(|e| TargetError::failed(format!("cannot list local images: {e}")))
    }

    async fn image_facts(&self, _node: &str, image: &str) -> Option<ImageFacts> {
        facts_on(self.engine().await.ok()?, image).await
    }

    async fn remove_images(&self, _node: &str, _images: &[String]) -> Result<Vec<String>, TargetError> {
        // Images stay in the registry and on this engine: a rollback may need them.
        Ok(Vec::new())
    }

    async fn details(&self, observed: &ObservedResource) -> Result<Details, TargetError> {
        let api = self.api_for(&observed.key, if observed.key.kind == "Job" { "batch/v1" } else { "apps/v1" });
        let live = match observed.key.kind.as_str() {
            "Deployment" | "StatefulSet" | "Job" => api
                .get_opt(&observed.key.name)
                .await
                .map_err(|e| classify(&format!("cannot read {}", observed.key), &e))?,
            _ => None,
        };
        let Some(live) = live.map(|o| serde_json::to_value(o).unwrap_or(Value::Null)) else {
            return Ok(Details {
                component: format!("{:?}", observed.component),
                state: observed.state.describe(),
                health: "-".into(),
                ..Details::default()
            });
        };
        let text = |pointer: &str| live.pointer(pointer).and_then(Value::as_str).unwrap_or_default().to_string();
        let number = |pointer: &str| live.pointer(pointer).and_then(Value::as_i64).unwrap_or(0);
        let state = match observed.key.kind.as_str() {
            "Job" if number("/status/succeeded") > 0 => "completed".to_string(),
            "Job" => "running".to_string(),
            _ => format!(
                "{}/{} ready",
                number("/status/readyReplicas"),
                live.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1)
            ),
        };
        let pods: Api<Pod> = Api::namespaced(self.cluster.call(), self.namespace());
        let selector = super::wait::selector_of(&live);
        let pod =
            pods.list(&ListParams::default().labels(&selector)).await.ok().and_then(|l| l.items.into_iter().next());
        let ready = pod
            .as_ref()
            .and_then(|p| p.status.as_ref())
            .and_then(|s| s.conditions.as_ref())
            .map(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        Ok(Details {
            component: text("/metadata/labels/app.kubernetes.io~1component"),
            image: self.local_of(&text("/spec/template/spec/containers/0/image")),
            revision: text("/metadata/annotations/rivetctl.io~1revision"),
            state,
            health: match ready {
                Some(true) => "ready".into(),
                Some(false) => "not ready".into(),
                None => "-".into(),
            },
            started_at: pod.and_then(|p| p.status).and_then(|s| s.start_time).map(|t| t.0.to_string()),
        })
    }
}
