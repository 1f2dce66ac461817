//! Before anything is stopped: provide the images where the rollout needs them (built once,
//! shipped to every node and verified there), bring the datahub and the migrate step to the
//! new revision, and work out which units move from which image to which. All of it through
//! the port: the target decides what an image, a unit and a running instance are.

use std::sync::Arc;

use orchestrator::fleet::Fleet;
use orchestrator::plan::{self, PlanOptions};
use orchestrator::port::{Artifacts, Current, ImageEvent, ImageRequest, Port, Provide, Rollouts, Target, Unit};
use orchestrator::resource::{Component, Resource};
use orchestrator::rollout::InstanceSpec;

use crate::execute::{self, ExecuteOptions};
use crate::exit::hinted;
use crate::progress::Progress;
use crate::session::{Context, target_error};

/// The agents' desired objects on `nodes`, in node order (as given), then by agent id.
pub fn agent_resources<T: Target>(target: &T, fleet: &Fleet, nodes: &[String]) -> Vec<Arc<Resource<T::Payload>>> {
    let mut all: Vec<Resource<T::Payload>> = target
        .lower(fleet)
        .into_iter()
        .filter(|r| matches!(r.component, Component::Agent(_)) && nodes.contains(&r.key.node))
        .collect();
    let order = |r: &Resource<T::Payload>| {
        let agent = match &r.component {
            Component::Agent(id) => id.clone(),
            _ => String::new(),
        };
        (nodes.iter().position(|n| *n == r.key.node), agent)
    };
    all.sort_by_key(order);
    all.into_iter().map(Arc::new).collect()
}

/// The units serving the agents on `nodes`, in that order.
pub fn agent_units<T: Rollouts>(target: &T, fleet: &Fleet, nodes: &[String]) -> Vec<Unit<T::Payload>> {
    target.units(&agent_resources(target, fleet, nodes))
}

/// The repository of the fleet's agent image (its reference without the tag: with the
/// registry for prebuilt images), whose images `rollback` chooses among.
pub fn agent_repository(fleet: &Fleet) -> String {
    let agent = fleet.images.iter().find(|i| i.component == orchestrator::fleet::Component::Agent);
    match agent.and_then(|i| i.reference.rsplit_once(':')) {
        Some((repository, _)) => repository.to_string(),
        None => fleet.config.raw.deployment.image.agent_image.clone(),
    }
}

/// The name of a unit in the rollout machine and its journal (`InstanceSpec::agent`): its
/// agent, or its agents joined with `+` where one unit serves several.
pub fn unit_name<P>(unit: &Unit<P>) -> String {
    unit.agents.join("+")
}

/// The image a desired object runs (its recorded `image` field, which
/// [`Rollouts::with_image`] sets).
pub fn image_of<P>(resource: &Resource<P>) -> String {
    resource.fields.get("image").map(|f| f.text.to_string()).unwrap_or_default()
}

/// The one place an instance of the machine is made from a unit (what it moves from and to).
pub fn instance_spec<P>(unit: &Unit<P>, from: (String, Option<String>), to: (String, Option<String>)) -> InstanceSpec {
    InstanceSpec {
        node: unit.node.clone(),
        agent: unit_name(unit),
        agents: if unit.agents.len() > 1 { unit.agents.clone() } else { Vec::new() },
        from_image: from.0,
        to_image: to.0,
        from_version: from.1,
        to_version: to.1,
    }
}

/// Builds the fleet's images once on the control host, ships them to `nodes` and verifies
/// them there, before anything on them is stopped. Ctrl-C starts no new build or ship.
pub async fn provide<T: Artifacts>(
    target: &T,
    ctx: &Context,
    nodes: &[String],
    progress: &Progress<'_>,
) -> anyhow::Result<()> {
    let _graceful = crate::interrupt::graceful();
    let cancel = crate::interrupt::token();
    let log_dir = crate::state::logs(&ctx.project);
    let provide = Provide::OnceThenShip { nodes: nodes.to_vec() };
    let request = ImageRequest {
        images: &ctx.fleet.images,
        source_root: ctx.resolved.source.as_ref().map(|s| s.root.as_path()),
        revision: &ctx.fleet.revision,
        log_dir: &log_dir,
        provide: &provide,
    };
    // `build`, `push` (for nodes that pull), `ship` or `pull` events, as the target names them.
    let events = |event: ImageEvent<'_>| progress.image(&event);
    target.provide_images(&request, &|| cancel.is_cancelled(), &events).await.map_err(|err| {
        if err.kind == orchestrator::port::ErrorKind::Failed && err.hint.is_none() {
            hinted(err.message, "nothing was stopped; fix the node and run the update again")
        } else {
            target_error(err)
        }
    })
}

/// Brings everything but the agents on the datahub's node to the desired state (networks,
/// volumes, datahub, migrate step), waiting for health: migrations run before any agent
/// changes. Returns false when a step failed its wait. Nothing to do when the datahub's
/// node is not in `nodes`.
pub async fn datahub_first<T: Port>(
    target: &T,
    before: &impl execute::BeforeStep,
    fleet: &Fleet,
    nodes: &[String],
    progress: &Progress<'_>,
) -> anyhow::Result<bool> {
    let Some(hub) = fleet.datahub.as_ref().map(|h| h.node.clone()).filter(|hub| nodes.contains(hub)) else {
        return Ok(true);
    };
    let is_agent = |c: &Component| matches!(c, Component::Agent(_));
    let desired: Vec<_> =
        target.lower(fleet).into_iter().filter(|r| r.key.node == hub && !is_agent(&r.component)).collect();
    let observed: Vec<_> = target
        .observe()
        .await
        .map_err(target_error)?
        .into_iter()
        .filter(|o| o.key.node == hub && !is_agent(&o.component))
        .collect();
    let options =
        PlanOptions { prune: false, wait_deadline_ms: fleet.update.healthy_deadline, ..PlanOptions::default() };
    let plan = plan::plan(&fleet.name, target.kind(), desired, &observed, options);
    if plan.is_empty() {
        return Ok(true);
    }
    let options = ExecuteOptions { max_parallel: (fleet.config.raw.deployment.apply.max_parallel as usize).max(1) };
    let _graceful = crate::interrupt::graceful();
    let cancel = crate::interrupt::token();
    let report = execute::execute(target, &plan, &options, before, &cancel, &|event| progress.step(&event))
        .await
        .map_err(target_error)?;
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

/// The instance of one unit moving from what runs now (`current`, as
/// [`Rollouts::current`] said) to `unit.desired`, or `None` when it already runs exactly that.
pub async fn instance<T: Rollouts>(
    target: &T,
    unit: &Unit<T::Payload>,
    current: Option<Current>,
) -> anyhow::Result<Option<InstanceSpec>> {
    let Some(now) = current else {
        return Err(hinted(
            format!("agent {} is not deployed on node {}", unit_name(unit), unit.node),
            "`update` moves running agents to a new revision; run `rivetctl infra up` to create them",
        ));
    };
    if now.spec_hash.as_deref() == Some(unit.desired.spec_hash().as_str()) && now.running {
        return Ok(None);
    }
    let to = image_of(&unit.desired);
    let from_version = target.version(&unit.node, &now.image).await;
    let to_version = target.version(&unit.node, &to).await;
    Ok(Some(instance_spec(unit, (now.image, from_version), (to, to_version))))
}
