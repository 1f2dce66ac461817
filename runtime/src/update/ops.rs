//! What the driver does to one agent container when the state machine asks: stop the old
//! one and keep it (renamed `<name>-rivetctl-prev`) for a revert, start the new one from
//! the desired spec, put the previous one back, probe health.
//!
//! Every operation is idempotent, so a resumed rollout can repeat one safely.

use std::sync::Arc;
use std::time::Duration;

use bollard::query_parameters::RenameContainerOptionsBuilder;
use orchestrator::docker::{DockerObject, DockerResource};
use orchestrator::resource::FieldValue;
use orchestrator::rollout::ProbeReport;
use targets::docker::apply::{ApplyError, create, create_and_start, remove_container};
use targets::probe;

use crate::engines::Link;

/// Suffix of an agent's previous container while its instance is in a rollout.
pub const PREV_SUFFIX: &str = "-rivetctl-prev";
/// Suffix of the new container, created (not started) while the old one stops.
pub const NEXT_SUFFIX: &str = targets::docker::apply::NEXT_SUFFIX;

/// One instance's container and what it should become.
#[derive(Clone)]
pub struct Target {
    pub node: String,
    pub container: String,
    /// The agents' network, whose address probes use.
    pub network: String,
    /// The desired (new) container.
    pub resource: Arc<DockerResource>,
    pub health_port: u16,
    pub live_path: String,
    pub health_path: String,
    /// Least time between two probes (`deployment.update.probe_interval`).
    pub probe_interval: Duration,
    /// How long one probe may take (`deployment.update.probe_timeout`).
    pub probe_timeout: Duration,
}

impl Target {
    pub fn prev(&self) -> String {
        format!("{}{PREV_SUFFIX}", self.container)
    }

    pub fn next(&self) -> String {
        format!("{}{NEXT_SUFFIX}", self.container)
    }
}

/// What to do, decided when the machine issued the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Stop the running (old) container and keep it for a revert.
    StopOld {
        grace_ms: u64,
    },
    /// Stop and remove the new container (it failed, or the rollout is reverting).
    StopNew {
        grace_ms: u64,
    },
    /// Start the new container.
    StartNew,
    /// Put the previous container back (or start `image` if it is gone).
    StartPrevious {
        image: String,
    },
    Probe,
}

/// Why an operation did not succeed.
#[derive(Debug)]
pub enum OpError {
    /// The operation failed; the node answers.
    Failed(String),
    /// The node does not answer: the rollout is interrupted, not failed.
    Unreachable(String),
}

fn grace_secs(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

async fn classify(link: &Link, err: impl std::fmt::Display) -> OpError {
    if link.reachable().await {
        OpError::Failed(err.to_string())
    } else {
        OpError::Unreachable(format!("node {} ({}) does not answer: {err}", link.name, link.engine.address))
    }
}

async fn exists(link: &Link, name: &str) -> Result<Option<String>, bollard::errors::Error> {
    match link.engine.call().inspect_container(name, None).await {
        Ok(info) => Ok(Some(info.config.and_then(|c| c.image).unwrap_or_default())),
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

async fn rename(link: &Link, from: &str, to: &str) -> Result<(), bollard::errors::Error> {
    let options = RenameContainerOptionsBuilder::default().name(to).build();
    link.engine.call().rename_container(from, options).await
}

fn spec_of(resource: &DockerResource) -> &orchestrator::docker::ContainerSpec {
    match &resource.payload {
        DockerObject::Container(spec) => spec,
        _ => unreachable!("agent resources are containers"),
    }
}

/// Runs one operation. `Ok(None)` for stop/start success, `Ok(Some(report))` for probes.
pub async fn run(link: &Link, target: &Target, op: &Op) -> Result<Option<ProbeReport>, OpError> {
    let result: Result<Option<ProbeReport>, String> = match op {
        Op::StopOld { grace_ms } => {
            // The new container is created while the old one stops: creating is not downtime.
            let (stopped, _prepared) =
                tokio::join!(stop_old(link, target, grace_secs(*grace_ms)), prepare_next(link, target));
            stopped.map(|()| None)
        }
        Op::StopNew { grace_ms } => remove_container(&link.engine, &target.container, grace_secs(*grace_ms))
            .await
            .map(|()| None)
            .map_err(|e| e.to_string()),
        Op::StartNew => start_new(link, target).await.map(|()| None),
        Op::StartPrevious { image } => start_previous(link, target, image).await.map(|()| None),
        Op::Probe => {
            let probe_target = probe::Target {
                container: &target.container,
                network: &target.network,
                port: target.health_port,
                live_path: &target.live_path,
                health_path: &target.health_path,
            };
            match probe::probe(&link.engine, &link.reach, &probe_target, target.probe_timeout).await {
                Ok(report) => Ok(Some(report)),
                Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {
                    Ok(Some(ProbeReport::default()))
                }
                Err(e) => Err(e.to_string()),
            }
        }
    };
    match result {
        Ok(value) => Ok(value),
        Err(message) => Err(classify(link, message).await),
    }
}

async fn stop_old(link: &Link, target: &Target, grace: u64) -> Result<(), String> {
    use bollard::errors::Error::DockerResponseServerError as Server;
    let prev = target.prev();
    let stop = bollard::query_parameters::StopContainerOptionsBuilder::default().t(grace as i32).build();
    match link.engine.call().stop_container(&target.container, Some(stop)).await {
        Ok(()) | Err(Server { status_code: 304, .. }) => {}
        // Stopped and renamed already (a repeated command).
        Err(Server { status_code: 404, .. }) => return Ok(()),
        Err(e) => return Err(e.to_string()),
    }
    match rename(link, &target.container, &prev).await {
        Ok(()) => Ok(()),
        // A previous container from an earlier attempt: this one replaces it.
        Err(Server { status_code: 409, .. }) => {
            remove_container(&link.engine, &prev, 0).await.map_err(|e| e.to_string())?;
            rename(link, &target.container, &prev).await.map_err(|e| e.to_string())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Creates the new container under its `-next` name, not started. Best effort: starting
/// creates it when this did not work.
async fn prepare_next(link: &Link, target: &Target) -> Result<(), String> {
    remove_container(&link.engine, &target.next(), 0).await.map_err(|e| e.to_string())?;
    let resource = &target.resource;
    create(&link.engine, &target.next(), spec_of(resource), resource).await.map_err(|e: ApplyError| format!("{e:#}"))
}

async fn start_new(link: &Link, target: &Target) -> Result<(), String> {
    use bollard::errors::Error::DockerResponseServerError as Server;
    let next = target.next();
    let prepared = match link.engine.call().inspect_container(&next, None).await {
        Ok(info) => {
            info.config.and_then(|c| c.labels).and_then(|l| l.get(orchestrator::docker::labels::SPEC_HASH).cloned())
                == Some(target.resource.spec_hash())
        }
        Err(_) => false,
    };
    if prepared {
        if let Err(error) = rename(link, &next, &target.container).await {
            // A leftover under the agent's name (a repeated command): it goes.
            let Server { status_code: 409, .. } = error else { return Err(error.to_string()) };
            remove_container(&link.engine, &target.container, 0).await.map_err(|e| e.to_string())?;
            rename(link, &next, &target.container).await.map_err(|e| e.to_string())?;
        }
        return link.engine.call().start_container(&target.container, None).await.map_err(|e| e.to_string());
    }
    remove_container(&link.engine, &target.container, 0).await.map_err(|e| e.to_string())?;
    remove_container(&link.engine, &next, 0).await.map_err(|e| e.to_string())?;
    let resource = &target.resource;
    create_and_start(&link.engine, &target.container, spec_of(resource), resource)
        .await
        .map_err(|e: ApplyError| format!("{e:#}"))
}

async fn start_previous(link: &Link, target: &Target, image: &str) -> Result<(), String> {
    remove_container(&link.engine, &target.container, 0).await.map_err(|e| e.to_string())?;
    let prev = target.prev();
    if exists(link, &prev).await.map_err(|e| e.to_string())?.is_some() {
        rename(link, &prev, &target.container).await.map_err(|e| e.to_string())?;
        return link.engine.call().start_container(&target.container, None).await.map_err(|e| e.to_string());
    }
    // The previous container is gone (removed by hand): the desired one on the old image.
    let mut resource = (*target.resource).clone();
    if let DockerObject::Container(spec) = &mut resource.payload {
        spec.image = image.to_string();
    }
    resource.fields.insert("image".into(), FieldValue::plain(image));
    create_and_start(&link.engine, &target.container, spec_of(&resource), &resource).await.map_err(|e| format!("{e:#}"))
}

/// Removes the kept previous container of a finished instance.
pub async fn forget_previous(link: &Link, target: &Target) -> Result<(), String> {
    remove_container(&link.engine, &target.prev(), 0).await.map_err(|e| e.to_string())
}

/// Removes a prepared new container that was never started.
pub async fn forget_next(link: &Link, target: &Target) -> Result<(), String> {
    remove_container(&link.engine, &target.next(), 0).await.map_err(|e| e.to_string())
}
