//! Executing a plan on Docker Engines, wave by wave; the steps of a wave run together.
//!
//! Every step is idempotent with respect to its end state (a leftover from an interrupted
//! run is removed first), and the plan decides how replacements happen: agents start their
//! new container next to the old one and only remove the old one once the new one passed
//! its health gate (the one a rollout uses, [`super::gate`]), so a revision that fails it
//! — at once on an exit, a restart or an unhealthy engine check — leaves the fleet as it was.
//!
//! A stop request ([`CancellationToken`]) is honoured between waves: no new wave starts and
//! the steps in flight run to their end state; the sequences that must not be cut (remove
//! the old container and rename its successor; remove, create and start) run in tasks of
//! their own ([`uncut`]). A delete that the engine refuses does not stop the others: it is
//! reported as left over, with the engine's reason.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::models::{EndpointSettings, NetworkConnectRequest};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder,
    RenameContainerOptionsBuilder, StopContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use futures_util::future::join_all;
use orchestrator::docker::{ContainerSpec, DockerObject, DockerResource};
use orchestrator::plan::{Action, Plan, Step, Strategy, Wait};
use orchestrator::resource::ResourceKey;

use super::Engine;
use super::container::{container_request, network_request, volume_request};
use super::gate::{GateOptions, wait_gate};
use super::health::{Readiness, Ready, wait_ready};
use crate::cancel::{CancellationToken, uncut};

/// Suffix of the container that replaces a running agent until it is healthy.
pub const NEXT_SUFFIX: &str = "-rivetctl-next";

/// Something that happened to one object, for progress output.
#[derive(Debug, Clone)]
pub struct ApplyEvent {
    pub key: ResourceKey,
    pub status: EventStatus,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventStatus {
    Started,
    Waiting,
    Done,
    Failed,
}

impl EventStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::Started => "started",
            EventStatus::Waiting => "waiting",
            EventStatus::Done => "done",
            EventStatus::Failed => "failed",
        }
    }
}

/// A step whose container did not become ready.
#[derive(Debug, Clone)]
pub struct StepFailure {
    pub key: ResourceKey,
    pub reason: String,
    pub logs: Vec<String>,
    /// The previous container is still there, serving.
    pub previous_kept: bool,
}

/// An object a delete step could not remove: it is still there.
#[derive(Debug, Clone)]
pub struct Leftover {
    pub key: ResourceKey,
    /// The engine's own words (e.g. "error while removing network: network x has active
    /// endpoints").
    pub reason: String,
    /// For a network: the containers the engine still lists on it (none in Docker Engine
    /// 20.10's stale-endpoint fault).
    pub attached: Vec<String>,
}

/// The names of the containers the engine lists on `network` (empty when it cannot say).
async fn attached(engine: &Engine, network: &str) -> Vec<String> {
    let Ok(info) = engine.call().inspect_network(network, None).await else { return Vec::new() };
    let mut names: Vec<String> =
        info.containers.unwrap_or_default().into_values().filter_map(|c| c.name).filter(|n| !n.is_empty()).collect();
    names.sort();
    names
}

/// What applying did.
#[derive(Debug, Default)]
pub struct ApplyReport {
    /// Steps that completed, with how long each took.
    pub done: Vec<(ResourceKey, Action, Duration)>,
    pub failures: Vec<StepFailure>,
    /// Objects that delete steps could not remove (the other steps still ran).
    pub left: Vec<Leftover>,
    /// Steps not started because an earlier wave failed.
    pub skipped: Vec<ResourceKey>,
    /// Steps not started because a stop was requested (Ctrl-C).
    pub not_started: Vec<ResourceKey>,
}

/// The engine's message of an API error (without bollard's wrapping).
pub fn engine_reason(err: &bollard::errors::Error) -> String {
    match err {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// Engine API failures (not health failures: those are [`StepFailure`]s).
#[derive(Debug, thiserror::Error)]
#[error("{what} {name} on node {node}")]
pub struct ApplyError {
    pub what: &'static str,
    pub name: String,
    pub node: String,
    #[source]
    pub source: bollard::errors::Error,
}

/// Settings of one apply run.
#[derive(Clone)]
pub struct ApplyOptions {
    /// How long a container may take to become healthy (or to finish, or to pass its gate).
    pub health_deadline: Duration,
    /// How steps that wait for [`Wait::Gate`] (agent containers) are gated. A plan with such
    /// steps and no gate settings fails them, saying so.
    pub gate: Option<GateOptions>,
}

fn is_not_found(err: &bollard::errors::Error) -> bool {
    matches!(err, bollard::errors::Error::DockerResponseServerError { status_code: 404, .. })
}

fn api<'a>(what: &'static str, key: &'a ResourceKey) -> impl FnOnce(bollard::errors::Error) -> ApplyError + 'a {
    move |source| ApplyError { what, name: key.name.clone(), node: key.node.clone(), source }
}

/// Stops (SIGTERM, then SIGKILL after the grace period) and removes a container; absent is fine.
pub async fn remove_container(engine: &Engine, name: &str, grace_secs: u64) -> Result<(), bollard::errors::Error> {
    let stop = StopContainerOptionsBuilder::default().t(grace_secs as i32).build();
    match engine.call().stop_container(name, Some(stop)).await {
        Ok(()) => {}
        Err(e) if is_not_found(&e) => return Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 304, .. }) => {}
        Err(e) => return Err(e),
    }
    let remove = RemoveContainerOptionsBuilder::default().force(true).build();
    match engine.call().remove_container(name, Some(remove)).await {
        Ok(()) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

/// A tar of files (and their parent directories) to unpack at `/`.
fn files_tar(files: &[orchestrator::docker::FileCopy]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut dirs = std::collections::BTreeSet::new();
    for file in files {
        let path = file.path.trim_start_matches('/');
        let mut parent = std::path::Path::new(path).parent();
        let mut chain = Vec::new();
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            chain.push(dir.to_path_buf());
            parent = dir.parent();
        }
        for dir in chain.into_iter().rev() {
            if dirs.insert(dir.clone()) {
                let mut header = tar::Header::new_gnu();
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                let _ = builder.append_data(&mut header, &dir, std::io::empty());
            }
        }
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_size(file.contents.len() as u64);
        let _ = builder.append_data(&mut header, path, file.contents.as_bytes());
    }
    builder.into_inner().unwrap_or_default()
}

/// Creates a container under `name`, copies its files in, joins its networks, starts it.
pub async fn create_and_start(
    engine: &Engine,
    name: &str,
    spec: &ContainerSpec,
    resource: &DockerResource,
) -> Result<(), ApplyError> {
    create(engine, name, spec, resource).await?;
    engine.call().start_container(name, None).await.map_err(api("cannot start container", &resource.key))?;
    Ok(())
}

/// Creates a container under `name`, copies its files in and joins its networks, without
/// starting it (so it can be prepared while its predecessor still runs).
pub async fn create(
    engine: &Engine,
    name: &str,
    spec: &ContainerSpec,
    resource: &DockerResource,
) -> Result<(), ApplyError> {
    let key = &resource.key;
    let options = CreateContainerOptionsBuilder::default().name(name).build();
    engine
        .call()
        .create_container(Some(options), container_request(spec, &resource.fields))
        .await
        .map_err(api("cannot create container", key))?;
    if !spec.files.is_empty() {
        let upload = UploadToContainerOptionsBuilder::default().path("/").build();
        let body = bollard::body_full(files_tar(&spec.files).into());
        engine
            .call()
            .upload_to_container(name, Some(upload), body)
            .await
            .map_err(api("cannot copy files into container", key))?;
    }
    for (network, aliases) in spec.networks.iter().skip(1) {
        let request = NetworkConnectRequest {
            container: name.to_string(),
            endpoint_config: Some(EndpointSettings { aliases: Some(aliases.clone()), ..Default::default() }),
        };
        engine.call().connect_network(network, request).await.map_err(api("cannot connect to network", key))?;
    }
    Ok(())
}

/// [`create_and_start`] in a task of its own: a container is never left created but not
/// started because the caller went away.
async fn create_and_start_uncut(engine: &Engine, name: &str, resource: &DockerResource) -> Result<(), ApplyError> {
    let (engine, name, resource) = (engine.clone(), name.to_string(), resource.clone());
    uncut(async move {
        let DockerObject::Container(spec) = &resource.payload else { unreachable!("only containers are started") };
        create_and_start(&engine, &name, spec, &resource).await
    })
    .await
}

/// Removes the container `name` and renames `next` to it, in a task of its own: the agent
/// is never left removed while its successor still waits under the temporary name.
async fn swap_in(
    engine: &Engine,
    name: &str,
    next: &str,
    grace_secs: u64,
) -> Result<(), (&'static str, bollard::errors::Error)> {
    let (engine, name, next) = (engine.clone(), name.to_string(), next.to_string());
    uncut(async move {
        remove_container(&engine, &name, grace_secs).await.map_err(|e| ("cannot remove container", e))?;
        let rename = RenameContainerOptionsBuilder::default().name(&name).build();
        engine.call().rename_container(&next, rename).await.map_err(|e| ("cannot rename container", e))
    })
    .await
}

/// Waits for what the step says: the engine's health, completion, or the health gate.
async fn wait_for(
    engine: &Engine,
    step: &Step<DockerObject>,
    spec: &ContainerSpec,
    name: &str,
    options: &ApplyOptions,
) -> Result<Readiness, ApplyError> {
    let key = &step.key;
    let deadline = options.health_deadline;
    let ready = match step.wait {
        Wait::Nothing => return Ok(Readiness::Ready),
        Wait::Healthy => Ready::Healthy,
        Wait::Completed => Ready::Completed,
        Wait::Gate => {
            let Some(gate) = &options.gate else {
                let reason = "the plan asks for the health gate but no gate settings were given (a bug in rivetctl)";
                return Ok(Readiness::Failed { reason: reason.to_string(), logs: Vec::new() });
            };
            let network = spec.networks.first().map_or("", |(network, _)| network.as_str());
            return wait_gate(engine, gate, name, network, &spec.image, deadline)
                .await
                .map_err(api("cannot probe container", key));
        }
    };
    wait_ready(engine, name, ready, deadline).await.map_err(api("cannot inspect container", key))
}

/// Runs one step. `Ok(Some(failure))` when a container did not become ready.
async fn run_step(
    engine: &Engine,
    step: &Step<DockerObject>,
    options: &ApplyOptions,
    emit: &(dyn Fn(ApplyEvent) + Sync),
) -> Result<Option<StepFailure>, ApplyError> {
    let key = &step.key;
    let event = |status, detail: String| emit(ApplyEvent { key: key.clone(), status, detail });
    if step.action == Action::Delete {
        event(EventStatus::Started, "removing".into());
        match key.kind.as_str() {
            orchestrator::docker::KIND_CONTAINER => {
                remove_container(engine, &key.name, 30).await.map_err(api("cannot remove container", key))?
            }
            orchestrator::docker::KIND_NETWORK => match engine.call().remove_network(&key.name).await {
                Err(e) if !is_not_found(&e) => {
                    return Err(api("cannot remove network", key)(e));
                }
                _ => {}
            },
            _ => {
                let options = RemoveVolumeOptionsBuilder::default().force(false).build();
                match engine.call().remove_volume(&key.name, Some(options)).await {
                    Err(e) if !is_not_found(&e) => return Err(api("cannot remove volume", key)(e)),
                    _ => {}
                }
            }
        }
        return Ok(None);
    }
    let resource = step.desired.as_ref().expect("non-delete steps carry the desired resource");
    match &resource.payload {
        DockerObject::Network(spec) => {
            if step.action == Action::Replace {
                let _ = engine.call().remove_network(&spec.name).await;
            }
            event(EventStatus::Started, "creating network".into());
            engine
                .call()
                .create_network(network_request(spec, &resource.fields))
                .await
                .map_err(api("cannot create network", key))?;
            Ok(None)
        }
        DockerObject::Volume(spec) => {
            event(EventStatus::Started, "creating volume".into());
            engine
                .call()
                .create_volume(volume_request(spec, &resource.fields))
                .await
                .map_err(api("cannot create volume", key))?;
            Ok(None)
        }
        DockerObject::Container(spec) => run_container(engine, step, resource, spec, options, &event).await,
    }
}

async fn run_container(
    engine: &Engine,
    step: &Step<DockerObject>,
    resource: &DockerResource,
    spec: &ContainerSpec,
    options: &ApplyOptions,
    event: &dyn Fn(EventStatus, String),
) -> Result<Option<StepFailure>, ApplyError> {
    let key = &step.key;
    let wait = |name: String| async move { wait_for(engine, step, spec, &name, options).await };
    // Drift only (stopped by hand, spec unchanged): start the same container again.
    if step.action == Action::Update && step.changes.is_empty() && step.observed.is_some() {
        event(EventStatus::Started, "starting (was stopped)".into());
        engine.call().start_container(&key.name, None).await.map_err(api("cannot start container", key))?;
        event(EventStatus::Waiting, "waiting for health".into());
        return Ok(match wait(key.name.clone()).await? {
            Readiness::Ready => None,
            Readiness::Failed { reason, logs } => {
                Some(StepFailure { key: key.clone(), reason, logs, previous_kept: false })
            }
        });
    }
    let previous = step.observed.is_some();
    let next_name = format!("{}{NEXT_SUFFIX}", spec.name);
    // A leftover of an interrupted run is never what we want.
    remove_container(engine, &next_name, 0).await.map_err(api("cannot remove container", key))?;
    if previous && step.strategy == Strategy::CreateBeforeDestroy {
        event(EventStatus::Started, "starting the new container next to the old one".into());
        create_and_start_uncut(engine, &next_name, resource).await?;
        event(EventStatus::Waiting, "waiting for health".into());
        if let Readiness::Failed { reason, logs } = wait(next_name.clone()).await? {
            remove_container(engine, &next_name, 0).await.map_err(api("cannot remove container", key))?;
            return Ok(Some(StepFailure { key: key.clone(), reason, logs, previous_kept: true }));
        }
        swap_in(engine, &spec.name, &next_name, spec.stop_grace_secs).await.map_err(|(what, e)| api(what, key)(e))?;
        return Ok(None);
    }
    if previous {
        event(EventStatus::Started, "stopping the old container".into());
    }
    remove_container(engine, &spec.name, spec.stop_grace_secs).await.map_err(api("cannot remove container", key))?;
    event(EventStatus::Started, "starting".into());
    create_and_start_uncut(engine, &spec.name, resource).await?;
    match step.wait {
        Wait::Nothing => {}
        Wait::Completed => event(EventStatus::Waiting, "running to completion".into()),
        Wait::Healthy | Wait::Gate => event(EventStatus::Waiting, "waiting for health".into()),
    }
    Ok(match wait(spec.name.clone()).await? {
        Readiness::Ready => None,
        Readiness::Failed { reason, logs } => {
            // A new container that never became ready is removed: the fleet stays as it was.
            if !previous {
                remove_container(engine, &spec.name, 0).await.map_err(api("cannot remove container", key))?;
            }
            Some(StepFailure { key: key.clone(), reason, logs, previous_kept: false })
        }
    })
}

/// Applies a plan across engines (by node name), emitting events; stops after the first
/// wave with a failure, and before the next wave once `cancel` is cancelled. Deletes the
/// engine refuses are collected in [`ApplyReport::left`] and do not stop later waves.
pub async fn apply(
    engines: &HashMap<String, Engine>,
    plan: &Plan<DockerObject>,
    options: &ApplyOptions,
    cancel: &CancellationToken,
    emit: &(dyn Fn(ApplyEvent) + Sync),
) -> Result<ApplyReport, ApplyError> {
    let mut report = ApplyReport::default();
    for (_, steps) in plan.waves() {
        if !report.failures.is_empty() {
            report.skipped.extend(steps.iter().map(|s| s.key.clone()));
            continue;
        }
        if cancel.is_cancelled() {
            report.not_started.extend(steps.iter().map(|s| s.key.clone()));
            continue;
        }
        let runs = steps.iter().map(|step| async move {
            let engine = engines.get(&step.key.node).expect("an engine for every node of the plan");
            let started = Instant::now();
            let result = run_step(engine, step, options, emit).await;
            (step, started.elapsed(), result)
        });
        let mut first_error = None;
        for (step, elapsed, result) in join_all(runs).await {
            match result {
                Ok(None) => {
                    emit(ApplyEvent {
                        key: step.key.clone(),
                        status: EventStatus::Done,
                        detail: format!("{} in {:.1}s", step.action.as_str(), elapsed.as_secs_f64()),
                    });
                    report.done.push((step.key.clone(), step.action, elapsed));
                }
                Ok(Some(failure)) => {
                    emit(ApplyEvent {
                        key: step.key.clone(),
                        status: EventStatus::Failed,
                        detail: failure.reason.clone(),
                    });
                    report.failures.push(failure);
                }
                Err(err) if step.action == Action::Delete => {
                    let reason = engine_reason(&err.source);
                    emit(ApplyEvent { key: step.key.clone(), status: EventStatus::Failed, detail: reason.clone() });
                    let attached = match step.key.kind.as_str() {
                        orchestrator::docker::KIND_NETWORK => attached(&engines[&step.key.node], &step.key.name).await,
                        _ => Vec::new(),
                    };
                    report.left.push(Leftover { key: step.key.clone(), reason, attached });
                }
                Err(err) => {
                    emit(ApplyEvent { key: step.key.clone(), status: EventStatus::Failed, detail: format!("{err}") });
                    first_error.get_or_insert(err);
                }
            }
        }
        if let Some(err) = first_error {
            return Err(err);
        }
    }
    Ok(report)
}
