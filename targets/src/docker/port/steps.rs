//! Observing and applying on Docker: one plan step at a time, to its end state.
//!
//! Every step is idempotent with respect to its end state (a leftover of an interrupted run
//! is removed first). Replacing a running agent is not done here: `infra up` and `update`
//! hand those to the rollout engine ([`super::units`]), which never runs two instances of one
//! agent. Here a changed container is stopped (SIGTERM, the step's grace period) and created
//! again; the sequences that must not be cut (remove, create and start) run in tasks of
//! their own ([`uncut`]).

use std::time::Duration;

use bollard::query_parameters::RemoveVolumeOptionsBuilder;
use orchestrator::docker::{DockerObject, KIND_CONTAINER, KIND_NETWORK};
use orchestrator::fleet::Fleet;
use orchestrator::plan::{Action, Step, Wait};
use orchestrator::port::{Readiness, Target, TargetError};
use orchestrator::resource::{ObservedResource, Resource};

use super::{DockerTarget, Link, NEXT_SUFFIX, container_of};
use crate::cancel::uncut;
use crate::docker::Engine;
use crate::docker::apply::{create_and_start, engine_reason, remove_container};
use crate::docker::container::{network_request, volume_request};
use crate::docker::gate::wait_gate;
use crate::docker::health::{self, Ready};

fn is_not_found(err: &bollard::errors::Error) -> bool {
    matches!(err, bollard::errors::Error::DockerResponseServerError { status_code: 404, .. })
}

/// An engine error of `what` on the step's object, in the engine's words.
async fn failure(
    link: &Link,
    what: &str,
    step_key: &orchestrator::resource::ResourceKey,
    err: bollard::errors::Error,
) -> TargetError {
    link.classify(format!("{what} {} on node {}: {}", step_key.name, step_key.node, engine_reason(&err))).await
}

/// The names of the containers the engine lists on `network` (empty when it cannot say).
async fn attached(link: &Link, network: &str) -> Vec<String> {
    let Ok(info) = link.engine.call().inspect_network(network, None).await else { return Vec::new() };
    let mut names: Vec<String> =
        info.containers.unwrap_or_default().into_values().filter_map(|c| c.name).filter(|n| !n.is_empty()).collect();
    names.sort();
    names
}

/// Seconds of a grace period in milliseconds, rounded up (the engine counts seconds).
fn grace_secs(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

impl Target for DockerTarget<'_> {
    type Payload = DockerObject;

    fn kind(&self) -> &'static str {
        "docker"
    }

    fn lower(&self, fleet: &Fleet) -> Vec<Resource<DockerObject>> {
        orchestrator::docker::resources(fleet)
    }

    async fn observe(&self) -> Result<Vec<ObservedResource>, TargetError> {
        self.all_connected()?;
        let mut observed = Vec::new();
        for link in self.links.values() {
            let found = crate::docker::observe(&link.engine, &self.fleet.name).await;
            match found {
                Ok(found) => observed.extend(found),
                Err(err) => return Err(link.classify(err).await),
            }
        }
        observed.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(observed)
    }

    async fn apply(&self, step: &Step<DockerObject>) -> Result<(), TargetError> {
        let link = self.link(&step.key.node)?;
        let engine = &link.engine;
        let key = &step.key;
        if step.action == Action::Delete {
            let result = match key.kind.as_str() {
                KIND_CONTAINER => remove_container(engine, &key.name, grace_secs(step.grace_ms)).await,
                KIND_NETWORK => match engine.call().remove_network(&key.name).await {
                    Err(e) if !is_not_found(&e) => Err(e),
                    _ => Ok(()),
                },
                _ => {
                    let options = RemoveVolumeOptionsBuilder::default().force(false).build();
                    match engine.call().remove_volume(&key.name, Some(options)).await {
                        Err(e) if !is_not_found(&e) => Err(e),
                        _ => Ok(()),
                    }
                }
            };
            return match result {
                Ok(()) => Ok(()),
                Err(err) => {
                    let mut error = failure(link, &format!("cannot remove {}", key.kind), key, err).await;
                    let attached = if key.kind == KIND_NETWORK { attached(link, &key.name).await } else { Vec::new() };
                    if !attached.is_empty() {
                        error.message.push_str(&format!(" (attached: {})", attached.join(", ")));
                    }
                    if error.hint.is_none() {
                        error.hint = Some(delete_remedy(&key.kind, &key.name, &error.message, &attached));
                    }
                    Err(error)
                }
            };
        }
        let resource = step.desired.as_ref().expect("non-delete steps carry the desired resource");
        match &resource.payload {
            DockerObject::Network(spec) => {
                if step.action == Action::Replace {
                    let _ = engine.call().remove_network(&spec.name).await;
                }
                match engine.call().create_network(network_request(spec, &resource.fields)).await {
                    Ok(_) => Ok(()),
                    Err(err) => Err(failure(link, "cannot create network", key, err).await),
                }
            }
            DockerObject::Volume(spec) => {
                match engine.call().create_volume(volume_request(spec, &resource.fields)).await {
                    Ok(_) => Ok(()),
                    Err(err) => Err(failure(link, "cannot create volume", key, err).await),
                }
            }
            DockerObject::Container(spec) => {
                // Drift only (stopped by hand, spec unchanged): start the same container again.
                if step.action == Action::Update && step.changes.is_empty() && step.observed.is_some() {
                    return match engine.call().start_container(&key.name, None).await {
                        Ok(()) => Ok(()),
                        Err(err) => Err(failure(link, "cannot start container", key, err).await),
                    };
                }
                // A leftover of an interrupted run is never what we want.
                let next = format!("{}{NEXT_SUFFIX}", spec.name);
                if let Err(err) = remove_container(engine, &next, 0).await {
                    return Err(failure(link, "cannot remove container", key, err).await);
                }
                let (engine, name, grace, resource) =
                    (engine.clone(), spec.name.clone(), grace_secs(step.grace_ms), Resource::clone(resource));
                let replaced = uncut(async move {
                    remove_container(&engine, &name, grace).await.map_err(|e| ("cannot remove container", e))?;
                    let spec = container_of_owned(&resource);
                    create_and_start(&engine, &name, spec, &resource).await.map_err(|e| (e.what, e.source))
                })
                .await;
                match replaced {
                    Ok(()) => Ok(()),
                    Err((what, err)) => Err(failure(link, what, key, err).await),
                }
            }
        }
    }

    async fn wait(&self, step: &Step<DockerObject>, deadline: Duration) -> Result<Readiness, TargetError> {
        let Some(resource) = &step.desired else { return Ok(Readiness::Ready) };
        let DockerObject::Container(spec) = &resource.payload else { return Ok(Readiness::Ready) };
        let link = self.link(&step.key.node)?;
        let ready = match step.wait {
            Wait::Nothing => return Ok(Readiness::Ready),
            Wait::Healthy => Ready::Healthy,
            Wait::Completed => Ready::Completed,
            Wait::Gate => {
                let network = spec.networks.first().map_or("", |(network, _)| network.as_str());
                return match wait_gate(&link.engine, &self.gate, &spec.name, network, &spec.image, deadline).await {
                    Ok(readiness) => Ok(readiness.into()),
                    Err(err) => Err(failure(link, "cannot probe container", &step.key, err).await),
                };
            }
        };
        match health::wait_ready(&link.engine, &spec.name, ready, deadline).await {
            Ok(readiness) => Ok(readiness.into()),
            Err(err) => Err(failure(link, "cannot inspect container", &step.key, err).await),
        }
    }

    async fn discard(&self, step: &Step<DockerObject>) -> Result<(), TargetError> {
        let Some(resource) = &step.desired else { return Ok(()) };
        let spec = container_of(resource)?;
        let link = self.link(&step.key.node)?;
        match remove_container(&link.engine, &spec.name, 0).await {
            Ok(()) => Ok(()),
            Err(err) => Err(failure(link, "cannot remove container", &step.key, err).await),
        }
    }

    fn calls(&self) -> usize {
        self.links.values().map(|link| link.engine.calls()).sum::<usize>() + self.control.get().map_or(0, Engine::calls)
    }
}

fn container_of_owned(resource: &Resource<DockerObject>) -> &orchestrator::docker::ContainerSpec {
    match &resource.payload {
        DockerObject::Container(spec) => spec,
        _ => unreachable!("only containers are started"),
    }
}

impl From<health::Readiness> for Readiness {
    fn from(readiness: health::Readiness) -> Self {
        match readiness {
            health::Readiness::Ready => Readiness::Ready,
            health::Readiness::Failed { reason, logs } => Readiness::Failed { reason, logs },
        }
    }
}

/// What to do about an object a delete could not remove, with Docker's own tools (the
/// runtime adds "then run the command again").
fn delete_remedy(kind: &str, name: &str, reason: &str, attached: &[String]) -> String {
    let reason = reason.to_lowercase();
    match kind {
        KIND_NETWORK if !attached.is_empty() => {
            let disconnect: Vec<String> =
                attached.iter().map(|c| format!("`docker network disconnect -f {name} {c}`")).collect();
            format!("containers rivetctl does not own are attached: {}", disconnect.join(", "))
        }
        KIND_NETWORK if reason.contains("active endpoints") => format!(
            "`docker network inspect {name}` shows the endpoints; `docker network disconnect -f {name} <endpoint>` for each"
        ),
        KIND_NETWORK => format!("`docker network inspect {name}` shows what holds it"),
        KIND_CONTAINER => format!("`docker inspect {name}` shows its state; `docker rm -f {name}`"),
        _ if reason.contains("in use") => {
            format!("`docker ps -a --filter volume={name}` shows the containers using it; remove them")
        }
        _ => format!("`docker volume inspect {name}` shows it; fix the cause"),
    }
}

#[cfg(test)]
mod remedy_tests {
    use super::*;

    #[test]
    fn each_kind_of_leftover_gets_a_remedy_naming_the_object() {
        let busy = delete_remedy(KIND_NETWORK, "n1", "has active endpoints", &["web".into()]);
        assert_eq!(busy, "containers rivetctl does not own are attached: `docker network disconnect -f n1 web`");
        let endpoints = delete_remedy(KIND_NETWORK, "n1", "network n1 id abc has active endpoints", &[]);
        assert!(endpoints.contains("docker network disconnect -f n1 <endpoint>"), "{endpoints}");
        assert!(
            delete_remedy("volume", "v1", "volume is in use - [abc]", &[]).contains("docker ps -a --filter volume=v1")
        );
        assert!(delete_remedy(KIND_CONTAINER, "c1", "removal in progress", &[]).contains("docker rm -f c1"));
    }
}
