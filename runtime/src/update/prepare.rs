//! Before anything is stopped (after the images are built once on the control host, with
//! `images::build_on`): ship the images to every node and verify them, bring the datahub and the migrate step to the new revision, and
//! work out which agents move from which image to which.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use orchestrator::docker::{self, DockerObject, DockerResource, labels};
use orchestrator::fleet::Fleet;
use orchestrator::plan::{self, PlanOptions};
use orchestrator::resource::{Component, FieldValue};
use orchestrator::rollout::InstanceSpec;
use targets::docker::Engine;
use targets::docker::apply::{self, ApplyOptions};
use targets::docker::ship::{self, Shipped};

use super::ops::{PREV_SUFFIX, Target};
use crate::engines::Link;
use crate::exit::hinted;
use crate::progress::Progress;

/// The version an image says it holds (`org.opencontainers.image.version`), if any: the
/// one the gate expects (`infra up` reads it the same way).
pub async fn image_version(engine: &Engine, image: &str) -> Option<String> {
    targets::docker::gate::image_version(engine, image).await
}

/// Ships every image to every node and checks the image IDs there.
pub async fn ship_all(
    control: &Engine,
    fleet: &Fleet,
    links: &BTreeMap<String, Link>,
    progress: &Progress<'_>,
) -> anyhow::Result<()> {
    // A ship in flight runs to its end (the engine loads an image whole or not at all);
    // after Ctrl-C no new one starts.
    let _graceful = crate::interrupt::graceful();
    let cancel = crate::interrupt::token();
    for link in links.values() {
        for image in &fleet.images {
            if cancel.is_cancelled() {
                return Err(crate::exit::interrupted(format!(
                    "interrupted before shipping {} to node {}; nothing was stopped",
                    image.reference, link.name
                )));
            }
            let key = orchestrator::resource::ResourceKey {
                node: link.name.clone(),
                kind: "image".into(),
                name: image.reference.clone(),
            };
            let shipped = ship::ship(control, &link.engine, &image.reference).await.map_err(|err| {
                hinted(
                    format!("node {}: {err}", link.name),
                    "nothing was stopped; fix the node and run the update again",
                )
            })?;
            let detail = match shipped {
                Shipped::Present => "present (same image ID)".to_string(),
                Shipped::Sent { bytes } => format!("shipped ({:.1} MB), image ID verified", bytes as f64 / 1e6),
            };
            progress.note("ship", &key, "done", &detail);
        }
    }
    Ok(())
}

/// Brings everything but the agents on the datahub's node to the desired state (networks,
/// volumes, datahub, migrate step), waiting for health: migrations run before any agent
/// changes. Returns false when a container failed its gate.
pub async fn datahub_first(
    fleet: &Fleet,
    links: &BTreeMap<String, Link>,
    progress: &Progress<'_>,
) -> anyhow::Result<bool> {
    let Some(hub) = fleet.datahub.as_ref().map(|h| h.node.clone()) else { return Ok(true) };
    let Some(link) = links.get(&hub) else { return Ok(true) };
    let desired: Vec<DockerResource> = docker::resources(fleet)
        .into_iter()
        .filter(|r| r.key.node == hub && !matches!(r.component, Component::Agent(_)))
        .collect();
    let observed: Vec<_> = targets::docker::observe(&link.engine, &fleet.name)
        .await?
        .into_iter()
        .filter(|o| !matches!(o.component, Component::Agent(_)))
        .collect();
    let plan = plan::plan(
        &fleet.name,
        "docker",
        desired,
        &observed,
        PlanOptions { prune: false, delete_data: false, ..PlanOptions::default() },
    );
    if plan.is_empty() {
        return Ok(true);
    }
    let engines: HashMap<String, Engine> = HashMap::from([(hub.clone(), link.engine.clone())]);
    let reaches = HashMap::from([(hub.clone(), link.reach.clone())]);
    let options = ApplyOptions {
        health_deadline: Duration::from_millis(fleet.update.healthy_deadline),
        gate: Some(crate::session::gate_options(fleet, reaches)),
    };
    let _graceful = crate::interrupt::graceful();
    let cancel = crate::interrupt::token();
    let report = apply::apply(&engines, &plan, &options, &cancel, &|event| progress.step(&event)).await?;
    if !report.not_started.is_empty() {
        return Err(crate::exit::interrupted(
            "interrupted before the datahub was brought to the new revision; no agent was touched",
        ));
    }
    for failure in &report.failures {
        progress.note("step", &failure.key, "failed", &failure.reason);
    }
    Ok(report.failures.is_empty())
}

/// The agents of the fleet on `nodes`, with their desired container, in node order.
pub fn agent_resources(fleet: &Fleet, nodes: &[String]) -> Vec<(String, String, Arc<DockerResource>)> {
    let mut all: Vec<(String, String, Arc<DockerResource>)> = docker::resources(fleet)
        .into_iter()
        .filter_map(|r| match &r.component {
            Component::Agent(id) if nodes.contains(&r.key.node) => Some((r.key.node.clone(), id.clone(), Arc::new(r))),
            _ => None,
        })
        .collect();
    all.sort_by_key(|(node, agent, _)| (nodes.iter().position(|n| n == node), agent.clone()));
    all
}

/// A resource with another image (the spec, and the recorded field).
pub fn with_image(resource: &DockerResource, image: &str) -> DockerResource {
    let mut copy = resource.clone();
    if let DockerObject::Container(spec) = &mut copy.payload {
        spec.image = image.to_string();
    }
    copy.fields.insert("image".into(), FieldValue::plain(image));
    copy
}

/// The probe/operation target of one agent.
pub fn target(fleet: &Fleet, node: &str, resource: Arc<DockerResource>) -> Target {
    let container = match &resource.payload {
        DockerObject::Container(spec) => spec.name.clone(),
        _ => unreachable!("agent resources are containers"),
    };
    Target {
        node: node.to_string(),
        container,
        network: docker::network_name(fleet, node),
        resource,
        health_port: fleet.health.port,
        live_path: fleet.health.live_path.clone(),
        health_path: fleet.health.path.clone(),
        probe_interval: Duration::from_millis(fleet.update.probe_interval),
        probe_timeout: Duration::from_millis(fleet.update.probe_timeout),
    }
}

/// What runs now for one agent: its image, spec hash, revision label, whether it runs.
#[derive(Debug, Clone)]
pub struct Current {
    pub image: String,
    pub spec_hash: Option<String>,
    pub revision: Option<String>,
    pub running: bool,
}

/// Reads an agent's current container (or its kept previous one).
pub async fn current(link: &Link, container: &str) -> anyhow::Result<Option<Current>> {
    for name in [container.to_string(), format!("{container}{PREV_SUFFIX}")] {
        match link.engine.call().inspect_container(&name, None).await {
            Ok(info) => {
                let config = info.config.unwrap_or_default();
                let labels_ = config.labels.unwrap_or_default();
                return Ok(Some(Current {
                    image: config.image.unwrap_or_default(),
                    spec_hash: labels_.get(labels::SPEC_HASH).cloned(),
                    revision: labels_.get(labels::REVISION).cloned(),
                    running: info.state.and_then(|s| s.running).unwrap_or(false),
                }));
            }
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => continue,
            Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot inspect {name} on node {}", link.name))),
        }
    }
    Ok(None)
}

/// The instance of one agent moving from what runs now to `resource`'s image, or `None`
/// when it already runs exactly that.
pub async fn instance(
    link: &Link,
    node: &str,
    agent: &str,
    resource: &DockerResource,
) -> anyhow::Result<Option<InstanceSpec>> {
    let DockerObject::Container(spec) = &resource.payload else { return Ok(None) };
    let Some(now) = current(link, &spec.name).await? else {
        return Err(hinted(
            format!("agent {agent} is not deployed on node {node} (no container {})", spec.name),
            "`update` moves running agents to a new revision; run `rivetctl infra up` to create them",
        ));
    };
    if now.spec_hash.as_deref() == Some(resource.spec_hash().as_str()) && now.running {
        return Ok(None);
    }
    Ok(Some(InstanceSpec {
        node: node.to_string(),
        agent: agent.to_string(),
        agents: Vec::new(),
        from_version: image_version(&link.engine, &now.image).await,
        to_version: image_version(&link.engine, &spec.image).await,
        from_image: now.image,
        to_image: spec.image.clone(),
    }))
}
