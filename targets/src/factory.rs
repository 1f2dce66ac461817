//! The factory: from a fleet to its connected target, handed to the runtime as a value
//! implementing the port ([`orchestrator::port::Port`]). The runtime names no adapter type:
//! it passes a [`Visit`]or, which is called with whichever adapter the fleet's target needs.

use std::path::Path;

use orchestrator::config::Target as TargetKind;
use orchestrator::fleet::Fleet;
use orchestrator::port::{Port, TargetError};
use orchestrator::resource::Resource;

use crate::render::compose::Sink;
use crate::render::{self, RenderError};

use crate::docker::port::DockerTarget;
use crate::kubernetes::{ConnectOptions, KubernetesTarget};
use crate::proxmox::target::ProxmoxTarget;

/// How to reach a Kubernetes cluster and apply there (`--context`, `--force-conflicts`,
/// `--skip-unserved`, `--no-push`).
pub type KubernetesOptions = ConnectOptions;

/// What the runtime does with a connected target: called once with the adapter.
#[allow(async_fn_in_trait)] // driven on one thread (see `orchestrator::port`)
pub trait Visit {
    type Output;

    async fn visit<T: Port>(self, target: &T) -> Self::Output;
}

/// How to open a target.
#[derive(Debug, Clone, Copy)]
pub struct OpenOptions<'a> {
    /// The config's directory: relative paths in it (SSH keys, known_hosts, TLS files) are
    /// relative to this.
    pub config_dir: &'a Path,
    /// Connect to these nodes only (`update --node`); `None`: every node of the fleet. The
    /// primary node (state store) is always connected.
    pub nodes: Option<&'a [String]>,
    /// Kubernetes: the context and the apply flags (`--context`, `--force-conflicts`,
    /// `--skip-unserved`, `--no-push`); other targets ignore them.
    pub kubernetes: &'a ConnectOptions,
}

/// Connects to the fleet's target and runs `visitor` with it.
pub async fn open<V: Visit>(fleet: &Fleet, options: &OpenOptions<'_>, visitor: V) -> Result<V::Output, TargetError> {
    match fleet.target() {
        TargetKind::Docker => {
            let target = DockerTarget::open(fleet, options.config_dir, options.nodes).await?;
            Ok(visitor.visit(&target).await)
        }
        TargetKind::Kubernetes => {
            let target = KubernetesTarget::open(fleet, options.config_dir, options.kubernetes.clone()).await?;
            Ok(visitor.visit(&target).await)
        }
        TargetKind::Proxmox => {
            let target = ProxmoxTarget::open(fleet, options.config_dir).await?;
            Ok(visitor.visit(&target).await)
        }
        other => Err(not_applied(other)),
    }
}

/// The error of a target that has no adapter yet.
fn not_applied(target: TargetKind) -> TargetError {
    TargetError::failed(format!("applying to the {} target is not implemented yet", target.as_str()))
        .with_hint("`rivetctl infra preview --out DIR` renders its manifests/parameters for you to apply")
}

/// One line of `rivetctl doctor` about the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked (`engine n1`, `base image rivetos-base:busybox`).
    pub name: String,
    /// What was found, or `Err((what is wrong, how to fix it))`.
    pub result: Result<String, (String, Option<String>)>,
}

impl Check {
    pub fn ok(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check { name: name.into(), result: Ok(detail.into()) }
    }

    pub fn failed(name: impl Into<String>, detail: impl Into<String>, fix: Option<String>) -> Check {
        Check { name: name.into(), result: Err((detail.into(), fix)) }
    }
}

/// What `doctor` checks of the fleet's target, node by node (a node that does not answer
/// is one failed check, not the end): empty for targets with no apply yet.
/// `source_root` is the checkout images build from; `base_image_hint(image, node)` says
/// how to get a missing base image onto a node.
pub async fn checks(
    fleet: &Fleet,
    options: &OpenOptions<'_>,
    source_root: Option<&Path>,
    base_image_hint: &dyn Fn(&str, &str) -> String,
) -> Vec<Check> {
    match fleet.target() {
        TargetKind::Docker => {
            crate::docker::port::doctor::checks(fleet, options.config_dir, source_root, base_image_hint).await
        }
        TargetKind::Kubernetes => crate::kubernetes::doctor::checks(fleet, options.kubernetes).await,
        TargetKind::Proxmox => crate::proxmox::doctor::checks(fleet, options.config_dir).await,
        _ => Vec::new(),
    }
}

/// What the runtime does with the fleet's desired objects when no target is connected
/// (`infra preview --offline`, or a cluster or API that cannot be reached): called once,
/// with the target's name and what its lowering made.
pub trait Unconnected {
    type Output;

    fn lowered<P>(self, target: &'static str, desired: Vec<Resource<P>>) -> Self::Output;
}

/// Lowers the fleet for its target without connecting to anything and hands the objects
/// to `visitor`; `None` for `target: manual`, which has no objects.
pub fn lower_unconnected<V: Unconnected>(fleet: &Fleet, visitor: V) -> Result<Option<V::Output>, RenderError> {
    Ok(match fleet.target() {
        TargetKind::Docker => Some(visitor.lowered("docker", orchestrator::docker::resources(fleet))),
        TargetKind::Kubernetes => Some(visitor.lowered("kubernetes", render::kubernetes::resources(fleet)?)),
        TargetKind::Proxmox => Some(visitor.lowered("proxmox", render::proxmox::resources(fleet)?)),
        TargetKind::Manual => None,
    })
}

/// Writes the files `infra preview --out` makes for the fleet's target into `sink`: the
/// compose files (each service as it is rendered) and the config beside them for Docker,
/// the manifests for Kubernetes, the container parameters and systemd units for Proxmox,
/// the systemd units for `manual`. `config_name` and `config_text` are the config file's.
pub fn write_artifacts<S: Sink>(
    fleet: &Fleet,
    config_name: &str,
    config_text: &str,
    sink: &mut S,
) -> Result<(), S::Error> {
    let artifacts = match fleet.target() {
        TargetKind::Docker => {
            let resources = orchestrator::docker::resources(fleet);
            return render::compose::write(fleet, &resources, config_name, config_text, sink);
        }
        TargetKind::Kubernetes => render::kubernetes::artifacts(fleet)?,
        TargetKind::Proxmox => {
            let mut all = render::proxmox::artifacts(fleet)?;
            all.extend(render::proxmox::unit_artifacts(fleet));
            all
        }
        TargetKind::Manual => render::systemd::artifacts(fleet)?,
    };
    for artifact in artifacts {
        sink.start(&artifact.path, artifact.secret)?;
        sink.write(&artifact.contents)?;
    }
    Ok(())
}

/// Where `infra preview --out` writes the target's files, and the config they carry.
pub struct Files<'a, S> {
    pub sink: &'a mut S,
    /// The config file's name and text (Docker copies it beside the compose file).
    pub config_name: &'a str,
    pub config_text: &'a str,
}

/// What runs with a connected target and the fleet's objects as its lowering made them.
#[allow(async_fn_in_trait)] // driven on one thread (see `orchestrator::port`)
pub trait VisitLowered {
    type Output;

    async fn visit<T: Port>(self, target: &T, desired: Vec<Resource<T::Payload>>) -> Self::Output;
}

/// Lowers the fleet once, writes the target's files from those very objects into `files`
/// (when given), then connects the target and runs `visitor` with it and the objects:
/// `infra preview --out` against a live target lowers a large fleet once, not twice.
/// The outer error is the sink's, the inner one the target's.
pub async fn open_lowered<V: VisitLowered, S: Sink>(
    fleet: &Fleet,
    options: &OpenOptions<'_>,
    files: Option<Files<'_, S>>,
    visitor: V,
) -> Result<Result<V::Output, TargetError>, S::Error> {
    match fleet.target() {
        TargetKind::Docker => {
            let desired = orchestrator::docker::resources(fleet);
            if let Some(files) = files {
                render::compose::write(fleet, &desired, files.config_name, files.config_text, files.sink)?;
            }
            Ok(match DockerTarget::open(fleet, options.config_dir, options.nodes).await {
                Ok(target) => Ok(visitor.visit(&target, desired).await),
                Err(err) => Err(err),
            })
        }
        TargetKind::Kubernetes => {
            // The server decides the manifests (API versions, fields): connect first.
            match KubernetesTarget::open(fleet, options.config_dir, options.kubernetes.clone()).await {
                Ok(target) => rendered(fleet, &target, target.artifacts(), files, visitor).await,
                Err(err) => Ok(Err(err)),
            }
        }
        TargetKind::Proxmox => {
            // vmids and addresses come from the containers found: connect first.
            match ProxmoxTarget::open(fleet, options.config_dir).await {
                Ok(target) => rendered(fleet, &target, target.artifacts(), files, visitor).await,
                Err(err) => Ok(Err(err)),
            }
        }
        other => Ok(Err(not_applied(other))),
    }
}

/// Writes the files a connected `target` rendered (when asked to) and hands its lowering to
/// `visitor`: the targets whose files depend on what the target holds.
async fn rendered<T: Port, V: VisitLowered, S: Sink>(
    fleet: &Fleet,
    target: &T,
    artifacts: Result<Vec<render::Artifact>, RenderError>,
    files: Option<Files<'_, S>>,
    visitor: V,
) -> Result<Result<V::Output, TargetError>, S::Error>
where
    S::Error: From<RenderError>,
{
    let desired = target.lower(fleet);
    if let Some(files) = files {
        for artifact in artifacts? {
            files.sink.start(&artifact.path, artifact.secret)?;
            files.sink.write(&artifact.contents)?;
        }
    }
    Ok(Ok(visitor.visit(target, desired).await))
}
