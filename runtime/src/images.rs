//! Making sure every node has the images its containers run: build from source once per
//! engine (content-addressed: an existing tag is not rebuilt), and check that no image
//! would run as root.

use std::collections::BTreeSet;
use std::path::Path;

use futures_util::future::join_all;
use orchestrator::docker::DockerObject;
use orchestrator::fleet::Fleet;
use orchestrator::resource::{Resource, ResourceKey};
use targets::docker::Engine;
use targets::docker::build::{self, BuildError, Built};

use crate::exit::hinted;
use crate::progress::Progress;
use crate::session::Session;
use crate::source::Source;
use crate::state;

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

/// Builds (or finds) every image the fleet uses on every node's engine.
pub async fn prepare(session: &Session, progress: &Progress<'_>) -> anyhow::Result<Prepared> {
    let mut prepared = Prepared::default();
    let log_dir = state::logs(&session.project);
    let mut nodes: Vec<&String> = session.engines.keys().collect();
    nodes.sort();
    for node in nodes {
        let source = session.resolved.source.as_ref();
        let on_node = build_on(&session.engines[node], node, &session.fleet, source, &log_dir, progress).await?;
        prepared.built.extend(on_node.built);
        prepared.present.extend(on_node.present);
    }
    Ok(prepared)
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
    let builds = fleet.images.iter().map(|image| async move {
        if cancel.is_cancelled() {
            return Err(crate::exit::interrupted(format!(
                "interrupted before building {}; nothing was applied",
                image.reference
            )));
        }
        let key = ResourceKey { node: node.to_string(), kind: "image".into(), name: image.reference.clone() };
        if image.build.is_none() {
            if !build::has_image(engine, &image.reference).await {
                return Err(hinted(
                    format!("image {} is not on node {node}, and it is not built from source", image.reference),
                    "load it there first (docker pull / docker load), or set deployment.image.build_from_source: true",
                ));
            }
            return Ok((image.reference.clone(), false));
        }
        let source = source.expect("images with a build spec have a source");
        let on_line = |line: &str| progress.build_line(&image.reference, line);
        progress.note("build", &key, "started", "checking");
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

fn runs_as_root(user: &str) -> bool {
    let user = user.trim();
    user.is_empty() || user == "root" || user == "0" || user.starts_with("0:") || user.starts_with("root:")
}

/// Refuses containers whose image would run as root (no user set by rivetctl).
pub async fn check_users(session: &Session, desired: &[Resource<DockerObject>]) -> anyhow::Result<()> {
    let mut checked: BTreeSet<(String, String)> = BTreeSet::new();
    for resource in desired {
        let DockerObject::Container(spec) = &resource.payload else {
            continue;
        };
        if spec.user.is_some() || !checked.insert((resource.key.node.clone(), spec.image.clone())) {
            continue;
        }
        let engine = &session.engines[&resource.key.node];
        let user = build::image_user(engine, &spec.image).await?;
        if runs_as_root(&user) {
            return Err(hinted(
                format!("image {} runs as root (it sets no USER); rivetctl runs containers as non-root", spec.image),
                "add `USER <uid>:<gid>` (a non-root user) to its Dockerfile",
            ));
        }
    }
    Ok(())
}
