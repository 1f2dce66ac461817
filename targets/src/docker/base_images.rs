//! Base images before a build: every image a Dockerfile builds FROM must be on the engine.
//! One that is missing is pulled here, before the build starts, so that when it cannot be
//! pulled (no registry, no network, no such image) the error names the image, the node and
//! the engine's reason in one line, instead of the engine's raw pull error in a build log.

use std::path::{Path, PathBuf};

use bollard::query_parameters::CreateImageOptionsBuilder;
use futures_util::StreamExt;
use orchestrator::fleet::ImageSpec;

use super::Engine;
use super::build::has_image;
use crate::build::dockerfile;

/// Why the base images of a build are not all there.
#[derive(Debug, thiserror::Error)]
pub enum BaseImageError {
    #[error("cannot read the Dockerfile {path} of the {component} image")]
    Dockerfile {
        component: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the {component} image builds FROM {base}, which is not on the engine (node {node}) and could not be pulled: {reason}"
    )]
    Unavailable { component: &'static str, base: String, node: String, reason: String },
}

/// Makes sure every base image of `image` (built from the tree at `root`) is on the engine,
/// pulling those that are missing; returns the ones it pulled. `progress` receives a line
/// per pull. An image without a build spec has no base images to check.
pub async fn ensure(
    engine: &Engine,
    image: &ImageSpec,
    root: &Path,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Vec<String>, BaseImageError> {
    let Some(spec) = &image.build else {
        return Ok(Vec::new());
    };
    let component = image.component.as_str();
    let path = root.join(&spec.dockerfile);
    let text = std::fs::read_to_string(&path).map_err(|source| BaseImageError::Dockerfile {
        component,
        path: path.clone(),
        source,
    })?;
    let mut pulled = Vec::new();
    for base in dockerfile::base_images(&text, &spec.build_args) {
        if has_image(engine, &base).await {
            continue;
        }
        progress(&format!("pulling base image {base} (not on node {})", engine.node));
        pull(engine, &base).await.map_err(|reason| BaseImageError::Unavailable {
            component,
            base: base.clone(),
            node: engine.node.clone(),
            reason,
        })?;
        pulled.push(base);
    }
    Ok(pulled)
}

/// Pulls one image; the error is the engine's reason as one line.
async fn pull(engine: &Engine, reference: &str) -> Result<(), String> {
    // Without a tag the engine would pull every tag of the repository.
    let options = CreateImageOptionsBuilder::default().from_image(&with_tag(reference)).build();
    let mut stream = engine.call().create_image(Some(options), None, None);
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(message) = info.error_detail.and_then(|d| d.message) {
                    return Err(one_line(&message));
                }
            }
            Err(bollard::errors::Error::DockerStreamError { error }) => return Err(one_line(&error)),
            Err(bollard::errors::Error::DockerResponseServerError { message, .. }) => return Err(one_line(&message)),
            Err(other) => return Err(one_line(&other.to_string())),
        }
    }
    if has_image(engine, reference).await {
        Ok(())
    } else {
        Err("the engine reported no error, but the image is still missing".into())
    }
}

/// `name` → `name:latest`; references with a tag or a digest are kept.
fn with_tag(reference: &str) -> String {
    let last = reference.rsplit('/').next().unwrap_or(reference);
    if last.contains(':') || reference.contains('@') { reference.to_string() } else { format!("{reference}:latest") }
}

fn one_line(message: &str) -> String {
    let line = message.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("no reason given");
    line.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pulls_name_a_tag() {
        assert_eq!(with_tag("alpine"), "alpine:latest");
        assert_eq!(with_tag("localhost:5000/team/app"), "localhost:5000/team/app:latest");
        assert_eq!(with_tag("localhost:5000/team/app:2"), "localhost:5000/team/app:2");
        assert_eq!(with_tag("alpine@sha256:0123"), "alpine@sha256:0123");
    }

    #[test]
    fn reasons_are_one_line() {
        assert_eq!(one_line("\n  Get \"https://x/v2/\": no such host\nmore\n"), "Get \"https://x/v2/\": no such host");
        assert_eq!(one_line(""), "no reason given");
    }
}
