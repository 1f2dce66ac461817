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
