//! Building images from source through the Engine API, with content-addressed tags: an
//! image whose tag (the content hash) already exists is not built again.
//!
//! The context is walked and tarred on the blocking pool, off the async runtime. A stop
//! request ends a build in flight by closing its request: the engine cancels the build,
//! and since it applies the tag only to a finished image, no tag is left half-made.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use bollard::query_parameters::BuildImageOptionsBuilder;
use futures_util::StreamExt;
use orchestrator::fleet::ImageSpec;

use super::Engine;
use crate::build::context;
use crate::cancel::CancellationToken;

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
    #[error("the build of {image} was interrupted; the engine tagged nothing")]
    Interrupted { image: String },
    #[error("the build context of {image} could not be read (the reading task failed)")]
    Task {
        image: String,
        #[source]
        source: tokio::task::JoinError,
    },
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

/// Walks and tars the context of `dockerfile` under `root` on the blocking pool.
async fn context_tar(root: &Path, dockerfile: &str, image: &str) -> Result<Vec<u8>, BuildError> {
    let (root, dockerfile) = (root.to_path_buf(), dockerfile.to_string());
    tokio::task::spawn_blocking(move || context::scan(&root, &dockerfile).and_then(|scanned| context::tar(&scanned)))
        .await
        .map_err(|source| BuildError::Task { image: image.to_string(), source })?
        .map_err(|source| BuildError::Context { image: image.to_string(), source })
}

/// Builds `image` from the tree at `root` unless its tag exists; `progress` receives each
/// line of build output. Once `cancel` is cancelled the build is abandoned
/// ([`BuildError::Interrupted`]).
pub async fn build(
    engine: &Engine,
    image: &ImageSpec,
    root: &Path,
    revision: &str,
    log_dir: &Path,
    cancel: &CancellationToken,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Built, BuildError> {
    let Some(spec) = &image.build else {
        return Ok(Built::Present);
    };
    if has_image(engine, &image.reference).await {
        return Ok(Built::Present);
    }
    let reference = image.reference.clone();
    let tar = context_tar(root, &spec.dockerfile, &reference).await?;
    if cancel.is_cancelled() {
        return Err(BuildError::Interrupted { image: reference });
    }
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
    loop {
        let item = tokio::select! {
            // Dropping the stream closes the request; the engine then cancels the build.
            () = cancel.cancelled() => {
                drop(stream);
                let _ = remember("interrupted: build cancelled (Ctrl-C)", &mut log);
                return Err(BuildError::Interrupted { image: reference });
            }
            item = stream.next() => item,
        };
        let Some(item) = item else { break };
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
