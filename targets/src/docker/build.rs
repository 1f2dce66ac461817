//! Building images from source through the Engine API, with content-addressed tags: an
//! image whose tag (the content hash) already exists is not built again.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use bollard::query_parameters::BuildImageOptionsBuilder;
use futures_util::StreamExt;
use orchestrator::fleet::ImageSpec;

use super::Engine;
use crate::build::context;

/// Lines of the build log shown when a build fails.
pub const FAILURE_TAIL: usize = 30;

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot prepare the build context of {image}")]
    Context {
        image: String,
        #[source]
        source: context::ContextError,
    },
    #[error("building {image} failed: {message}")]
    Failed { image: String, message: String, tail: Vec<String>, log: PathBuf },
    #[error("cannot write the build log {path}")]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What a build produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Built {
    /// The tag existed already: nothing was built.
    Present,
    /// Built now; the full log is at this path.
    Built { log: PathBuf },
}

/// Whether the engine has the image (by reference).
pub async fn has_image(engine: &Engine, reference: &str) -> bool {
    engine.call().inspect_image(reference).await.is_ok()
}

/// The user an image runs as (`""` when it sets none, which means root).
pub async fn image_user(engine: &Engine, reference: &str) -> Result<String, bollard::errors::Error> {
    let image = engine.call().inspect_image(reference).await?;
    Ok(image.config.and_then(|c| c.user).unwrap_or_default())
}

/// Builds `image` from the tree at `root` unless its tag exists; `progress` receives each
/// line of build output.
pub async fn build(
    engine: &Engine,
    image: &ImageSpec,
    root: &Path,
    revision: &str,
    log_dir: &Path,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Built, BuildError> {
    let Some(spec) = &image.build else {
        return Ok(Built::Present);
    };
    if has_image(engine, &image.reference).await {
        return Ok(Built::Present);
    }
    let reference = image.reference.clone();
    let scanned = context::scan(root, &spec.dockerfile)
        .map_err(|source| BuildError::Context { image: reference.clone(), source })?;
    let tar = context::tar(&scanned).map_err(|source| BuildError::Context { image: reference.clone(), source })?;
    let mut args: HashMap<String, String> = spec.build_args.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    args.insert("RIVETOS_REVISION".into(), revision.to_string());
    // One label only: each costs a build step on the classic builder.
    let labels = HashMap::from([("org.opencontainers.image.revision".to_string(), revision.to_string())]);
    let options = BuildImageOptionsBuilder::default()
        .dockerfile(&spec.dockerfile)
        .t(&reference)
        .buildargs(&args)
        .labels(&labels)
        .rm(true)
        .forcerm(true)
        .build();
    let log_path = log_dir.join(format!("build-{}-{}.log", image.component.as_str(), &spec.content_hash[..12]));
    std::fs::create_dir_all(log_dir).map_err(|source| BuildError::Log { path: log_dir.to_path_buf(), source })?;
    let mut log =
        std::fs::File::create(&log_path).map_err(|source| BuildError::Log { path: log_path.clone(), source })?;
    let log_err = |source| BuildError::Log { path: log_path.clone(), source };
    let mut tail: Vec<String> = Vec::new();
    let mut remember = |line: &str, log: &mut std::fs::File| -> std::io::Result<()> {
        writeln!(log, "{line}")?;
        tail.push(line.to_string());
        if tail.len() > FAILURE_TAIL {
            tail.remove(0);
        }
        progress(line);
        Ok(())
    };
    let mut stream = engine.call().build_image(options, None, Some(bollard::body_full(tar.into())));
    let mut failure = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(text) = info.stream.as_deref() {
                    for line in text.lines().filter(|l| !l.trim().is_empty()) {
                        remember(line, &mut log).map_err(log_err)?;
                    }
                }
                if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                    remember(&detail, &mut log).map_err(log_err)?;
                    failure = Some(detail);
                }
            }
            Err(bollard::errors::Error::DockerStreamError { error }) => {
                remember(&error, &mut log).map_err(log_err)?;
                failure = Some(error);
                break;
            }
            Err(other) => {
                let text = other.to_string();
                remember(&text, &mut log).map_err(log_err)?;
                failure = Some(text);
                break;
            }
        }
    }
    if failure.is_none() && !has_image(engine, &reference).await {
        failure = Some("the engine reported no error but the image is missing".into());
    }
    match failure {
        Some(message) => Err(BuildError::Failed { image: reference, message, tail, log: log_path }),
        None => Ok(Built::Built { log: log_path }),
    }
}
