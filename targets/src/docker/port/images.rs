//! Images on Docker: built from source on each node's engine (`infra up`) or once on the
//! control host and shipped to the nodes, verified by image ID (`update`); the non-root
//! check; the agent images a node keeps for `rollback`; what `status` shows of a container.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::time::Duration;

use bollard::query_parameters::{ListContainersOptionsBuilder, ListImagesOptionsBuilder, RemoveImageOptionsBuilder};
use futures_util::future::join_all;
use orchestrator::docker::{DockerObject, labels};
use orchestrator::fleet::{ImageDelivery, ImageSpec};
use orchestrator::port::{Artifacts, Details, ImageEvent, ImageFacts, ImageRequest, Provide, StoredImage, TargetError};
use orchestrator::resource::{ObservedResource, Resource};

use super::DockerTarget;
use super::nodes::{Link, with_causes};
use crate::cancel::CancellationToken;
use crate::docker::Engine;
use crate::docker::base_images::{self, BaseImageError};
use crate::docker::build::{self, BuildError, Built};
use crate::docker::ship::{self, Pulled, Shipped};
use crate::registry::{self, registry_host};

/// The examples' base image (examples/base-image/build.sh makes it; its `IMAGE` variable
/// overrides the tag), recognised by its repository name.
const EXAMPLES_BASE: &str = "rivetos-base";
const EXAMPLES_BASE_TAG: &str = "busybox";

/// How to provide a base image that is not on `node`: the examples' script for the examples'
/// base image, else pulling it where a registry is reachable or loading an archive.
pub fn base_image_hint(image: &str, node: &str) -> String {
    let (repository, tag) = match image.rsplit_once(':') {
        Some((repository, tag)) if !tag.contains('/') => (repository, tag),
        _ => (image, "latest"),
    };
    if repository == EXAMPLES_BASE || repository == format!("docker.io/library/{EXAMPLES_BASE}") {
        if tag == EXAMPLES_BASE_TAG {
            return "create it with examples/base-image/build.sh".into();
        }
        return format!("create it with IMAGE={EXAMPLES_BASE}:{tag} examples/base-image/build.sh");
    }
    format!(
        "run `docker pull {image}` where a registry is reachable, or `docker load` it on node {node} from an archive made with `docker save {image}`"
    )
}

/// A build failure with the last lines of its log and where the full log is.
fn build_failure(err: BuildError) -> TargetError {
    match err {
        BuildError::Failed { image, message, tail, log } => TargetError::failed(format!(
            "building {image} failed: {message}\n--- last {} lines of the build log ---\n{}",
            tail.len(),
            tail.join("\n")
        ))
        .with_hint(format!("the full build log is {}", log.display())),
        BuildError::Interrupted { image } => TargetError::interrupted(format!(
            "interrupted: the build of {image} was cancelled (the engine tags only finished images); nothing was applied"
        )),
        other => TargetError::failed(with_causes(&other)),
    }
}

/// A base image that is missing and could not be pulled, with how to provide it.
fn base_image_failure(err: BaseImageError) -> TargetError {
    match err {
        BaseImageError::Unavailable { ref base, ref node, .. } => {
            let hint = base_image_hint(base, node);
            TargetError::failed(err.to_string()).with_hint(hint)
        }
        other => TargetError::failed(with_causes(&other)),
    }
}

fn runs_as_root(user: &str) -> bool {
    let user = user.trim();
    user.is_empty() || user == "root" || user == "0" || user.starts_with("0:") || user.starts_with("root:")
}

/// Runs `work` with a cancellation token that follows `cancelled` (checked every 100 ms):
/// the engine-level code cancels builds in flight through the token.
pub(crate) async fn with_token<F, T>(cancelled: &dyn Fn() -> bool, work: impl FnOnce(CancellationToken) -> F) -> T
where
    F: Future<Output = T>,
{
    let token = CancellationToken::new();
    let watch = async {
        loop {
            if cancelled() {
                token.cancel();
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        out = work(token.clone()) => out,
        () = watch => unreachable!("the watch never ends"),
    }
}

/// Builds (or finds) every image of `images` on one engine (`node` names it in messages);
/// the images build in parallel.
pub(crate) async fn build_on(
    engine: &Engine,
    node: &str,
    request: &ImageRequest<'_>,
    cancel: &CancellationToken,
    events: &(dyn Fn(ImageEvent<'_>) + Sync),
) -> Result<(), TargetError> {
    let note = |image: &str, status: &str, detail: &str| {
        events(ImageEvent::Note { step: "build", node, image, status, detail })
    };
    // First, one image after the other: which need a build, and are their base images
    // there? A missing base image stops here, before any build has started.
    let mut needs_build = Vec::new();
    for image in request.images {
        if image.build.is_none() {
            if !build::has_image(engine, &image.reference).await {
                return Err(TargetError::failed(format!(
                    "image {} is not on node {node}, and it is not built from source",
                    image.reference
                ))
                .with_hint(
                    "load it there first (docker pull / docker load), or set deployment.image.build_from_source: true",
                ));
            }
            needs_build.push(false);
            continue;
        }
        note(&image.reference, "started", "checking");
        if build::has_image(engine, &image.reference).await {
            note(&image.reference, "done", "up to date (content hash unchanged)");
            needs_build.push(false);
            continue;
        }
        let root = request.source_root.expect("images with a build spec have a source");
        let on_line = |line: &str| events(ImageEvent::BuildLine { image: &image.reference, line });
        base_images::ensure(engine, image, root, &on_line).await.map_err(base_image_failure)?;
        needs_build.push(true);
    }
    // Then the builds, in parallel.
    let builds = request.images.iter().zip(needs_build).map(|(image, needed): (&ImageSpec, bool)| async move {
        if !needed {
            return Ok(());
        }
        if cancel.is_cancelled() {
            return Err(TargetError::interrupted(format!(
                "interrupted before building {}; nothing was applied",
                image.reference
            )));
        }
        let root = request.source_root.expect("images with a build spec have a source");
        let on_line = |line: &str| events(ImageEvent::BuildLine { image: &image.reference, line });
        let built = build::build(engine, image, root, request.revision, request.log_dir, cancel, &on_line)
            .await
            .map_err(build_failure)?;
        let detail = if matches!(built, Built::Built { .. }) { "built" } else { "up to date (content hash unchanged)" };
        note(&image.reference, "done", detail);
        Ok(())
    });
    for result in join_all(builds).await {
        result?;
    }
    if cancel.is_cancelled() {
        return Err(TargetError::interrupted(format!(
            "interrupted after the builds on node {node} finished; nothing was applied"
        )));
    }
    Ok(())
}

/// Pushes each built image of `images` from `engine` to `registry` (unless the registry
/// holds its content-hash tag), with `push` events; the pinned reference of each, by local
/// reference. A failure names the image it stopped at.
pub(crate) async fn push_built(
    engine: &Engine,
    images: &[ImageSpec],
    registry: &str,
    credentials: Option<&registry::Credentials>,
    events: &(dyn Fn(ImageEvent<'_>) + Sync),
) -> Result<BTreeMap<String, String>, (String, registry::RegistryError)> {
    let mut pinned = BTreeMap::new();
    for image in images.iter().filter(|i| i.build.is_some()) {
        let note = |status: &str, detail: &str| {
            events(ImageEvent::Note { step: "push", node: registry, image: &image.reference, status, detail })
        };
        note("started", "pushing unless the registry has it");
        let line = |text: &str| events(ImageEvent::BuildLine { image: &image.reference, line: text });
        let ensured = registry::ensure_pushed(engine, &image.reference, registry, credentials, &line)
            .await
            .map_err(|err| (image.reference.clone(), err))?;
        note("done", &ensured.detail());
        pinned.insert(image.reference.clone(), ensured.pinned().to_string());
    }
    Ok(pinned)
}

impl DockerTarget<'_> {
    /// Whether `node` is told to pull images (`images: pull`) rather than be shipped them.
    fn pulls(&self, node: &str) -> bool {
        self.fleet.target_settings.docker_engines().iter().any(|e| e.name == node && e.images == ImageDelivery::Pull)
    }

    /// Pushes each built image once from the control host to `deployment.image.registry`
    /// (unless the registry has its tag already), for the nodes told to pull: their pinned
    /// references by local reference, and the registry's credentials.
    async fn push_for_pulls(
        &self,
        control: &Engine,
        images: &[ImageSpec],
        events: &(dyn Fn(ImageEvent<'_>) + Sync),
    ) -> Result<(BTreeMap<String, String>, Option<registry::Credentials>), TargetError> {
        let registry = self.fleet.config.raw.deployment.image.registry.trim_end_matches('/');
        let credentials =
            registry::RegistryAuth::for_registry(registry_host(registry), &|name| std::env::var(name).ok())
                .map_err(|err| TargetError::failed(err.to_string()).with_hint(err.hint()))?;
        let pinned =
            push_built(control, images, registry, credentials.as_ref(), events).await.map_err(|(image, err)| {
                TargetError::failed(format!("cannot push {image} to {registry} for the nodes that pull: {err}"))
                    .with_hint(format!("{}; nothing was stopped", err.hint()))
            })?;
        Ok((pinned, credentials))
    }

    /// Ships every image to every node of `nodes` (or has the node pull it, when it is told
    /// to) and checks the image IDs there.
    async fn ship_all(
        &self,
        control: &Engine,
        images: &[ImageSpec],
        nodes: &[String],
        cancelled: &dyn Fn() -> bool,
        events: &(dyn Fn(ImageEvent<'_>) + Sync),
    ) -> Result<(), TargetError> {
        let (pinned, credentials) = if nodes.iter().any(|n| self.pulls(n)) {
            self.push_for_pulls(control, images, events).await?
        } else {
            (BTreeMap::new(), None)
        };
        for node in nodes {
            let link = self.link(node)?;
            for image in images {
                if let Some(pinned) = pinned.get(&image.reference).filter(|_| self.pulls(node)) {
                    if cancelled() {
                        return Err(TargetError::interrupted(format!(
                            "interrupted before node {} pulled {}; nothing was stopped",
                            link.name, image.reference
                        )));
                    }
                    let pulled = ship::pull(control, &link.engine, &image.reference, pinned, credentials.as_ref())
                        .await
                        .map_err(|err| {
                            TargetError::failed(format!("node {}: {}", link.name, with_causes(&err))).with_hint(
                                "nothing was stopped; fix the node's access to the registry and run the update again",
                            )
                        })?;
                    let detail = match pulled {
                        Pulled::Present => "present (same image ID)".to_string(),
                        Pulled::Pulled => format!("pulled {pinned}, image ID verified"),
                    };
                    let image = &image.reference;
                    events(ImageEvent::Note { step: "pull", node, image, status: "done", detail: &detail });
                    continue;
                }
                // A ship in flight runs to its end (the engine loads an image whole or not
                // at all); after Ctrl-C no new one starts.
                if cancelled() {
                    return Err(TargetError::interrupted(format!(
                        "interrupted before shipping {} to node {}; nothing was stopped",
                        image.reference, link.name
                    )));
                }
                let shipped = ship::ship(control, &link.engine, &image.reference).await.map_err(|err| {
                    TargetError::failed(format!("node {}: {err}", link.name))
                        .with_hint("nothing was stopped; fix the node and run the update again")
                })?;
                let detail = match shipped {
                    Shipped::Present => "present (same image ID)".to_string(),
                    Shipped::Sent { bytes } => format!("shipped ({:.1} MB), image ID verified", bytes as f64 / 1e6),
                };
                events(ImageEvent::Note {
                    step: "ship",
                    node,
                    image: &image.reference,
                    status: "done",
                    detail: &detail,
                });
            }
        }
        Ok(())
    }
}

impl Artifacts for DockerTarget<'_> {
    async fn provide_images(
        &self,
        request: &ImageRequest<'_>,
        cancelled: &dyn Fn() -> bool,
        events: &(dyn Fn(ImageEvent<'_>) + Sync),
    ) -> Result<(), TargetError> {
        match request.provide {
            Provide::OnEachNode => {
                self.all_connected()?;
                // Nodes told to pull do not build: the control host builds once and pushes,
                // and they pull (the node may have neither the source nor the base images).
                let (pulling, building): (Vec<&Link>, Vec<&Link>) =
                    self.links.values().partition(|link| self.pulls(&link.name));
                for link in building {
                    with_token(cancelled, |token| async move {
                        build_on(&link.engine, &link.name, request, &token, events).await
                    })
                    .await?;
                }
                if pulling.is_empty() {
                    return Ok(());
                }
                let control = self.control().await?;
                with_token(cancelled, |token| async move {
                    build_on(control, "control-host", request, &token, events).await
                })
                .await?;
                let nodes: Vec<String> = pulling.iter().map(|link| link.name.clone()).collect();
                self.ship_all(control, request.images, &nodes, cancelled, events).await
            }
            Provide::OnceThenShip { nodes } => {
                let control = self.control().await?;
                with_token(cancelled, |token| async move {
                    build_on(control, "control-host", request, &token, events).await
                })
                .await?;
                self.ship_all(control, request.images, nodes, cancelled, events).await
            }
        }
    }

    async fn check_users(&self, desired: &[Resource<DockerObject>]) -> Result<(), TargetError> {
        let mut checked: BTreeSet<(String, String)> = BTreeSet::new();
        for resource in desired {
            let DockerObject::Container(spec) = &resource.payload else { continue };
            if spec.user.is_some() || !checked.insert((resource.key.node.clone(), spec.image.clone())) {
                continue;
            }
            let link = self.link(&resource.key.node)?;
            let user = build::image_user(&link.engine, &spec.image).await.map_err(|e| {
                TargetError::failed(format!("cannot inspect image {} on node {}: {e}", spec.image, link.name))
            })?;
            if runs_as_root(&user) {
                return Err(TargetError::failed(format!(
                    "image {} runs as root (it sets no USER); rivetctl runs containers as non-root",
                    spec.image
                ))
                .with_hint("add `USER <uid>:<gid>` (a non-root user) to its Dockerfile"));
            }
        }
        Ok(())
    }

    async fn stored_images(&self, node: &str, repository: &str) -> Result<Vec<StoredImage>, TargetError> {
        let link = self.link(node)?;
        match stored_on(&link.engine, repository).await {
            Ok(images) => Ok(images),
            Err(e) => Err(link.classify(format!("cannot list images on node {node}: {e}")).await),
        }
    }

    async fn image_facts(&self, node: &str, image: &str) -> Option<ImageFacts> {
        facts_on(&self.links.get(node)?.engine, image).await
    }

    async fn remove_images(&self, node: &str, images: &[String]) -> Result<Vec<String>, TargetError> {
        let link = self.link(node)?;
        let all = ListContainersOptionsBuilder::default().all(true).build();
        let used: BTreeSet<String> = match link.engine.call().list_containers(Some(all)).await {
            Ok(containers) => containers.into_iter().filter_map(|c| c.image).collect(),
            Err(e) => return Err(link.classify(format!("cannot list containers on node {node}: {e}")).await),
        };
        let mut removed = Vec::new();
        for image in images.iter().filter(|image| !used.contains(*image)) {
            let options = RemoveImageOptionsBuilder::default().build();
            match link.engine.call().remove_image(image, Some(options), None).await {
                Ok(_) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {
                    removed.push(image.clone())
                }
                // In use by something else (another tag, a container of another deployment): kept.
                Err(_) => {}
            }
        }
        Ok(removed)
    }

    async fn details(&self, observed: &ObservedResource) -> Result<Details, TargetError> {
        let link = self.link(&observed.key.node)?;
        let info = match link.engine.call().inspect_container(&observed.key.name, None).await {
            Ok(info) => info,
            Err(e) => {
                return Err(link
                    .classify(format!("cannot inspect {} on node {}: {e}", observed.key.name, link.name))
                    .await);
            }
        };
        let state = info.state.unwrap_or_default();
        let found = info.config.as_ref().and_then(|c| c.labels.clone()).unwrap_or_default();
        let running = state.running == Some(true);
        Ok(Details {
            component: found.get(labels::COMPONENT).cloned().unwrap_or_default(),
            image: info.config.and_then(|c| c.image).unwrap_or_default(),
            revision: found.get(labels::REVISION).cloned().unwrap_or_default(),
            state: state.status.map(|s| s.to_string()).unwrap_or_default(),
            health: state.health.and_then(|h| h.status).map_or_else(|| "-".to_string(), |h| h.to_string()),
            started_at: if running { state.started_at } else { None },
        })
    }
}

/// The images of `repository` on one engine, newest first.
pub(crate) async fn stored_on(engine: &Engine, repository: &str) -> Result<Vec<StoredImage>, bollard::errors::Error> {
    let filters = HashMap::from([("reference".to_string(), vec![repository.to_string()])]);
    let options = ListImagesOptionsBuilder::default().filters(&filters).build();
    let listed = engine.call().list_images(Some(options)).await?;
    let mut out: Vec<StoredImage> = listed
        .into_iter()
        .filter_map(|image| {
            let reference = image.repo_tags.iter().find(|t| t.starts_with(&format!("{repository}:")))?.clone();
            Some(StoredImage {
                id: image.id,
                reference,
                revision: image.labels.get("org.opencontainers.image.revision").cloned(),
                version: image.labels.get("org.opencontainers.image.version").cloned(),
                created: image.created,
            })
        })
        .collect();
    out.sort_by(|a, b| b.created.cmp(&a.created).then(a.reference.cmp(&b.reference)));
    Ok(out)
}

/// What one engine knows of `image` (`None` when it is not there).
pub(crate) async fn facts_on(engine: &Engine, image: &str) -> Option<ImageFacts> {
    let info = engine.call().inspect_image(image).await.ok()?;
    let found = info.config.and_then(|c| c.labels).unwrap_or_default();
    Some(ImageFacts {
        id: info.id,
        revision: found.get("org.opencontainers.image.revision").cloned(),
        version: found.get("org.opencontainers.image.version").cloned(),
    })
}

#[cfg(test)]
mod tests {
    use super::base_image_hint;

    #[test]
    fn the_examples_base_image_points_at_its_script() {
        assert_eq!(base_image_hint("rivetos-base:busybox", "local"), "create it with examples/base-image/build.sh");
        assert_eq!(
            base_image_hint("docker.io/library/rivetos-base:busybox", "hub"),
            "create it with examples/base-image/build.sh"
        );
        assert_eq!(
            base_image_hint("rivetos-base:v2", "local"),
            "create it with IMAGE=rivetos-base:v2 examples/base-image/build.sh"
        );
    }

    #[test]
    fn other_images_are_pulled_or_loaded() {
        let hint = base_image_hint("registry.example.net:5000/node:24-alpine", "edge1");
        assert_eq!(
            hint,
            "run `docker pull registry.example.net:5000/node:24-alpine` where a registry is reachable, or `docker load` it on node edge1 from an archive made with `docker save registry.example.net:5000/node:24-alpine`"
        );
        assert!(base_image_hint("rivetos-base-extra:busybox", "local").starts_with("run `docker pull"));
    }
}
