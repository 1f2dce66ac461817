//! The rollout operations on one agent container: stop the old one and keep it (renamed
//! `<name>-rivetctl-prev`) for a revert, create the new one meanwhile (`<name>-rivetctl-next`,
//! not started: creating is not downtime), start it, put the previous one back, probe.
//!
//! Every operation is idempotent, so a resumed rollout can repeat one safely. A failure is
//! classified: the node answers (the operation failed) or it does not (the rollout is
//! interrupted and `update --resume` finishes it).

use std::sync::Arc;
use std::time::Duration;

use bollard::query_parameters::{RenameContainerOptionsBuilder, StopContainerOptionsBuilder};
use orchestrator::docker::{self, DockerObject, labels};
use orchestrator::gate::ProbeReport;
use orchestrator::port::{Current, Rollouts, TargetError, Unit};
use orchestrator::resource::{FieldValue, Resource};

use super::{DockerTarget, Link, NEXT_SUFFIX, PREV_SUFFIX, container_of};
use crate::docker::apply::{create, create_and_start, remove_container};
use crate::probe;

type Server = bollard::errors::Error;

fn not_found(err: &bollard::errors::Error) -> bool {
    matches!(err, Server::DockerResponseServerError { status_code: 404, .. })
}

fn conflict(err: &bollard::errors::Error) -> bool {
    matches!(err, Server::DockerResponseServerError { status_code: 409, .. })
}

fn grace_secs(grace: Duration) -> u64 {
    u64::try_from(grace.as_millis().div_ceil(1000)).unwrap_or(u64::MAX)
}

/// The names of one unit's container and its companions.
struct Names {
    container: String,
    prev: String,
    next: String,
}

fn names(unit: &Unit<DockerObject>) -> Result<Names, TargetError> {
    let container = container_of(&unit.desired)?.name.clone();
    Ok(Names { prev: format!("{container}{PREV_SUFFIX}"), next: format!("{container}{NEXT_SUFFIX}"), container })
}

async fn rename(link: &Link, from: &str, to: &str) -> Result<(), bollard::errors::Error> {
    let options = RenameContainerOptionsBuilder::default().name(to).build();
    link.engine.call().rename_container(from, options).await
}

async fn exists(link: &Link, name: &str) -> Result<bool, bollard::errors::Error> {
    match link.engine.call().inspect_container(name, None).await {
        Ok(_) => Ok(true),
        Err(e) if not_found(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

impl DockerTarget<'_> {
    async fn stop_and_keep(&self, link: &Link, names: &Names, grace: u64) -> Result<(), String> {
        let stop = StopContainerOptionsBuilder::default().t(grace as i32).build();
        match link.engine.call().stop_container(&names.container, Some(stop)).await {
            Ok(()) | Err(Server::DockerResponseServerError { status_code: 304, .. }) => {}
            // Stopped and renamed already (a repeated command).
            Err(e) if not_found(&e) => return Ok(()),
            Err(e) => return Err(e.to_string()),
        }
        match rename(link, &names.container, &names.prev).await {
            Ok(()) => Ok(()),
            // A previous container from an earlier attempt: this one replaces it.
            Err(e) if conflict(&e) => {
                remove_container(&link.engine, &names.prev, 0).await.map_err(|e| e.to_string())?;
                rename(link, &names.container, &names.prev).await.map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Creates the new container under its `-next` name, not started. Best effort:
    /// starting creates it when this did not work.
    async fn prepare_next(&self, link: &Link, names: &Names, unit: &Unit<DockerObject>) -> Result<(), String> {
        remove_container(&link.engine, &names.next, 0).await.map_err(|e| e.to_string())?;
        let spec = container_of(&unit.desired).map_err(|e| e.to_string())?;
        create(&link.engine, &names.next, spec, &unit.desired).await.map_err(|e| format!("{e:#}"))
    }
}

impl Rollouts for DockerTarget<'_> {
    fn units(&self, desired: &[Arc<Resource<DockerObject>>]) -> Vec<Unit<DockerObject>> {
        Unit::per_agent(desired, |_| true)
    }

    fn with_image(&self, resource: &Resource<DockerObject>, image: &str) -> Resource<DockerObject> {
        let mut copy = resource.clone();
        if let DockerObject::Container(spec) = &mut copy.payload {
            spec.image = image.to_string();
        }
        copy.fields.insert("image".into(), FieldValue::plain(image));
        copy
    }

    async fn current(&self, unit: &Unit<DockerObject>) -> Result<Option<Current>, TargetError> {
        let link = self.link(&unit.node)?;
        let names = names(unit)?;
        for name in [&names.container, &names.prev] {
            match link.engine.call().inspect_container(name, None).await {
                Ok(info) => {
                    let config = info.config.unwrap_or_default();
                    let found = config.labels.unwrap_or_default();
                    return Ok(Some(Current {
                        image: config.image.unwrap_or_default(),
                        spec_hash: found.get(labels::SPEC_HASH).cloned(),
                        revision: found.get(labels::REVISION).cloned(),
                        running: info.state.and_then(|s| s.running).unwrap_or(false),
                    }));
                }
                Err(e) if not_found(&e) => continue,
                Err(e) => return Err(link.classify(format!("cannot inspect {name} on node {}: {e}", unit.node)).await),
            }
        }
        Ok(None)
    }

    async fn version(&self, node: &str, image: &str) -> Option<String> {
        let link = self.links.get(node)?;
        crate::docker::gate::image_version(&link.engine, image).await
    }

    async fn stop_old(&self, unit: &Unit<DockerObject>, grace: Duration) -> Result<(), TargetError> {
        let link = self.link(&unit.node)?;
        let names = names(unit)?;
        // The new container is created while the old one stops: creating is not downtime.
        let (stopped, _prepared) =
            tokio::join!(self.stop_and_keep(link, &names, grace_secs(grace)), self.prepare_next(link, &names, unit));
        match stopped {
            Ok(()) => Ok(()),
            Err(message) => Err(link.classify(message).await),
        }
    }

    async fn stop_new(&self, unit: &Unit<DockerObject>, grace: Duration) -> Result<(), TargetError> {
        let link = self.link(&unit.node)?;
        let names = names(unit)?;
        match remove_container(&link.engine, &names.container, grace_secs(grace)).await {
            Ok(()) => Ok(()),
            Err(e) => Err(link.classify(e).await),
        }
    }

    async fn start_new(&self, unit: &Unit<DockerObject>) -> Result<(), TargetError> {
        let link = self.link(&unit.node)?;
        let names = names(unit)?;
        let result: Result<(), String> = async {
            let prepared = match link.engine.call().inspect_container(&names.next, None).await {
                Ok(info) => {
                    info.config.and_then(|c| c.labels).and_then(|l| l.get(labels::SPEC_HASH).cloned())
                        == Some(unit.desired.spec_hash())
                }
                Err(_) => false,
            };
            if prepared {
                if let Err(error) = rename(link, &names.next, &names.container).await {
                    // A leftover under the agent's name (a repeated command): it goes.
                    if !conflict(&error) {
                        return Err(error.to_string());
                    }
                    remove_container(&link.engine, &names.container, 0).await.map_err(|e| e.to_string())?;
                    rename(link, &names.next, &names.container).await.map_err(|e| e.to_string())?;
                }
                return link.engine.call().start_container(&names.container, None).await.map_err(|e| e.to_string());
            }
            remove_container(&link.engine, &names.container, 0).await.map_err(|e| e.to_string())?;
            remove_container(&link.engine, &names.next, 0).await.map_err(|e| e.to_string())?;
            let spec = container_of(&unit.desired).map_err(|e| e.to_string())?;
            create_and_start(&link.engine, &names.container, spec, &unit.desired).await.map_err(|e| format!("{e:#}"))
        }
        .await;
        match result {
            Ok(()) => Ok(()),
            Err(message) => Err(link.classify(message).await),
        }
    }

    async fn start_previous(&self, unit: &Unit<DockerObject>, image: &str) -> Result<(), TargetError> {
        let link = self.link(&unit.node)?;
        let names = names(unit)?;
        let result: Result<(), String> = async {
            remove_container(&link.engine, &names.container, 0).await.map_err(|e| e.to_string())?;
            if exists(link, &names.prev).await.map_err(|e| e.to_string())? {
                rename(link, &names.prev, &names.container).await.map_err(|e| e.to_string())?;
                return link.engine.call().start_container(&names.container, None).await.map_err(|e| e.to_string());
            }
            // The previous container is gone (removed by hand): the desired one on the old image.
            let resource = self.with_image(&unit.desired, image);
            let spec = container_of(&resource).map_err(|e| e.to_string())?;
            create_and_start(&link.engine, &names.container, spec, &resource).await.map_err(|e| format!("{e:#}"))
        }
        .await;
        match result {
            Ok(()) => Ok(()),
            Err(message) => Err(link.classify(message).await),
        }
    }

    async fn probe(&self, unit: &Unit<DockerObject>) -> Result<ProbeReport, TargetError> {
        let link = self.link(&unit.node)?;
        let names = names(unit)?;
        let network = docker::network_name(self.fleet, &unit.node);
        let target = probe::Target {
            container: &names.container,
            network: &network,
            port: self.gate.port,
            live_path: &self.gate.live_path,
            health_path: &self.gate.health_path,
        };
        match probe::probe(&link.engine, &link.reach, &target, self.gate.probe_timeout).await {
            Ok(report) => Ok(report),
            Err(e) if not_found(&e) => Ok(ProbeReport::default()),
            Err(e) => match link.classify(e).await {
                // A probe that fails on a node that answers is a failed probe, not an error.
                error if error.is_unreachable() => Err(error),
                _ => Ok(ProbeReport::default()),
            },
        }
    }

    async fn settle(&self, unit: &Unit<DockerObject>, done: bool) -> Result<(), TargetError> {
        let link = self.link(&unit.node)?;
        let names = names(unit)?;
        let mut result = remove_container(&link.engine, &names.next, 0).await;
        if done && result.is_ok() {
            result = remove_container(&link.engine, &names.prev, 0).await;
        }
        match result {
            Ok(()) => Ok(()),
            Err(e) => Err(link.classify(e).await),
        }
    }
}
