//! Making sure the target has the images its objects run, through the port: built from
//! source where they run (content-addressed: an image already there is not built again),
//! and no image that would run as root.

use orchestrator::port::{Artifacts, ImageRequest, Provide, Target};
use orchestrator::resource::Resource;

use crate::progress::Progress;
use crate::session::{Context, target_error};
use crate::state;

/// Which of the fleet's images were built by [`provide`] (the others were there already).
#[derive(Debug, Default)]
pub struct Provided {
    pub built: Vec<String>,
}

/// Makes every image of the fleet available on the target, `provide` saying where; Ctrl-C
/// cancels the builds in flight (an unfinished build tags nothing) and starts none.
pub async fn provide<T: Artifacts>(
    ctx: &Context,
    target: &T,
    provide: &Provide,
    progress: &Progress<'_>,
) -> anyhow::Result<Provided> {
    let nodes: Vec<&str> = match provide {
        Provide::OnEachNode => ctx.fleet.nodes.iter().map(|n| n.name.as_str()).collect(),
        Provide::OnceThenShip { nodes } => nodes.iter().map(String::as_str).collect(),
    };
    // An image missing on a node before is one this run builds (or ships) there.
    let mut missing = Vec::new();
    for image in &ctx.fleet.images {
        for node in &nodes {
            if target.image_facts(node, &image.reference).await.is_none() {
                missing.push(image.reference.clone());
                break;
            }
        }
    }
    let log_dir = state::logs(&ctx.project);
    let request = ImageRequest {
        images: &ctx.fleet.images,
        source_root: ctx.resolved.source.as_ref().map(|s| s.root.as_path()),
        revision: &ctx.fleet.revision,
        log_dir: &log_dir,
        provide,
    };
    let _graceful = crate::interrupt::graceful();
    let cancel = crate::interrupt::token();
    target
        .provide_images(&request, &|| cancel.is_cancelled(), &|event| progress.image(&event))
        .await
        .map_err(target_error)?;
    Ok(Provided { built: missing })
}

/// Refuses objects whose image would run as root (no user set by rivetctl).
pub async fn check_users<T: Artifacts>(target: &T, desired: &[Resource<<T as Target>::Payload>]) -> anyhow::Result<()> {
    target.check_users(desired).await.map_err(target_error)
}

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

/// Building on one Docker Engine, for `update/`'s Docker code until it runs on the port
/// (helper rt-rollout removes its callers; then this module goes, with `engines.rs`).
pub mod legacy {
    use std::path::Path;

    use futures_util::future::join_all;
    use orchestrator::fleet::Fleet;
    use orchestrator::resource::ResourceKey;
    use targets::docker::Engine;
    use targets::docker::base_images::{self, BaseImageError};
    use targets::docker::build::{self, BuildError, Built};

    use super::base_image_hint;
    use crate::exit::hinted;
    use crate::progress::Progress;
    use crate::source::Source;

    /// Outcome of preparing images: which were built (vs. already present).
    #[derive(Debug, Default)]
    pub struct Prepared {
        pub built: Vec<String>,
        pub present: Vec<String>,
    }

    /// A build failure with the last lines of its log and where the full log is.
    pub fn build_failure(err: BuildError) -> anyhow::Error {
        match err {
            BuildError::Failed { image, message, tail, log } => hinted(
                format!(
                    "building {image} failed: {message}\n--- last {} lines of the build log ---\n{}",
                    tail.len(),
                    tail.join("\n")
                ),
                format!("the full build log is {}", log.display()),
            ),
            BuildError::Interrupted { image } => crate::exit::interrupted(format!(
                "interrupted: the build of {image} was cancelled (the engine tags only finished images); nothing was applied"
            )),
            other => anyhow::Error::new(other),
        }
    }

    /// A base image that is missing and could not be pulled, with how to provide it.
    fn base_image_failure(err: BaseImageError) -> anyhow::Error {
        match err {
            BaseImageError::Unavailable { ref base, ref node, .. } => {
                let hint = base_image_hint(base, node);
                hinted(err.to_string(), hint)
            }
            other => anyhow::Error::new(other),
        }
    }

    /// Builds (or finds) every image of the fleet on one engine (`node` names it in messages);
    /// the images build in parallel.
    pub async fn build_on(
        engine: &Engine,
        node: &str,
        fleet: &Fleet,
        source: Option<&Source>,
        log_dir: &Path,
        progress: &Progress<'_>,
    ) -> anyhow::Result<Prepared> {
        // Ctrl-C cancels the builds in flight (an unfinished build leaves no tag) and starts none.
        let _graceful = crate::interrupt::graceful();
        let cancel = crate::interrupt::token();
        let cancel = &cancel;
        // First, one image after the other: which need a build, and are their base images
        // there? A missing base image stops here, before any build has started.
        let mut needs_build = Vec::new();
        for image in &fleet.images {
            let key = ResourceKey { node: node.to_string(), kind: "image".into(), name: image.reference.clone() };
            if image.build.is_none() {
                if !build::has_image(engine, &image.reference).await {
                    return Err(hinted(
                        format!("image {} is not on node {node}, and it is not built from source", image.reference),
                        "load it there first (docker pull / docker load), or set deployment.image.build_from_source: true",
                    ));
                }
                needs_build.push(false);
                continue;
            }
            progress.note("build", &key, "started", "checking");
            if build::has_image(engine, &image.reference).await {
                progress.note("build", &key, "done", "up to date (content hash unchanged)");
                needs_build.push(false);
                continue;
            }
            let source = source.expect("images with a build spec have a source");
            let on_line = |line: &str| progress.build_line(&image.reference, line);
            base_images::ensure(engine, image, &source.root, &on_line).await.map_err(base_image_failure)?;
            needs_build.push(true);
        }
        // Then the builds, in parallel.
        let builds = fleet.images.iter().zip(needs_build).map(|(image, needed)| async move {
            if !needed {
                return Ok::<_, anyhow::Error>((image.reference.clone(), false));
            }
            if cancel.is_cancelled() {
                return Err(crate::exit::interrupted(format!(
                    "interrupted before building {}; nothing was applied",
                    image.reference
                )));
            }
            let key = ResourceKey { node: node.to_string(), kind: "image".into(), name: image.reference.clone() };
            let source = source.expect("images with a build spec have a source");
            let on_line = |line: &str| progress.build_line(&image.reference, line);
            let built = build::build(engine, image, &source.root, &fleet.revision, log_dir, cancel, &on_line)
                .await
                .map_err(build_failure)?;
            let fresh = matches!(built, Built::Built { .. });
            let detail = if fresh { "built" } else { "up to date (content hash unchanged)" };
            progress.note("build", &key, "done", detail);
            Ok((image.reference.clone(), fresh))
        });
        let mut prepared = Prepared::default();
        for result in join_all(builds).await {
            let (reference, fresh) = result?;
            if fresh {
                prepared.built.push(reference);
            } else {
                prepared.present.push(reference);
            }
        }
        if cancel.is_cancelled() {
            return Err(crate::exit::interrupted(format!(
                "interrupted after the builds on node {node} finished; nothing was applied"
            )));
        }
        Ok(prepared)
    }
}

pub use legacy::build_on;

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
