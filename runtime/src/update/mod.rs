//! `rivetctl update` and `rivetctl rollback`: rolling source updates across the mesh, and
//! the rollout that `infra up` uses to replace running agents ([`roll_out`]).
//!
//! Order of work: load the project and its fleet; take the deployment lock; connect to the
//! target through `targets`' factory (the runtime names no adapter: every step below goes
//! through the port, [`orchestrator::port`]); refuse while an unfinished rollout exists
//! (unless resuming); build once and ship the images to every node in scope
//! (`Provide::OnceThenShip`); bring the datahub and the migrate step up to date through the
//! plan executor; then drive the rollout state machine over the agents' units, writing the
//! journal on the target whenever its durable state changes (`journal`).

mod choose;
#[cfg(test)]
mod docker_checks;
mod driver;
mod failures;
pub mod history;
pub mod journal;
mod kept;
mod list;
mod prepare;
pub mod record;
mod report;
mod resume;
pub mod rollback;
mod rollout;
#[cfg(test)]
mod test_store;
#[cfg(test)]
mod tests;

use orchestrator::fleet::Fleet;
use orchestrator::mesh;
use orchestrator::port::{Port, StateStore, Unit};
use orchestrator::rollout::Policy;
use targets::factory::Visit;

pub use rollback::run as rollback;
pub use rollout::refuse_while_rolling_out;

use crate::cli::{GlobalArgs, UpdateArgs};
use crate::exit::{ExitStatus, hinted};
use crate::printer::Printer;
use crate::progress::Progress;
use crate::session::{self, Context, Held};
use journal::Kind;

/// Nodes an update reaches, and nodes it skips (with the reason).
type Scope = (Vec<String>, Vec<(String, String)>);

fn scope(
    fleet: &Fleet,
    args_nodes: &[String],
    mesh_flag: bool,
    mesh_file: Option<&std::path::Path>,
) -> anyhow::Result<Scope> {
    let all: Vec<String> =
        fleet.nodes.iter().filter(|n| !n.agents.is_empty() || n.role.runs_datahub()).map(|n| n.name.clone()).collect();
    let chosen: Vec<String> = if !args_nodes.is_empty() {
        for name in args_nodes {
            if fleet.node(name).is_none() {
                return Err(hinted(format!("unknown node \"{name}\""), format!("nodes: {}", all.join(", "))));
            }
        }
        all.iter().filter(|n| args_nodes.contains(n)).cloned().collect()
    } else if mesh_flag || all.len() == 1 {
        all.clone()
    } else {
        return Err(hinted(
            format!("the deployment has {} nodes ({})", all.len(), all.join(", ")),
            "pass --mesh to update every node, or --node NAME for one",
        ));
    };
    let Some(path) = mesh_file else { return Ok((chosen, Vec::new())) };
    let text = std::fs::read_to_string(path)
        .map_err(|e| hinted(format!("cannot read {}: {e}", path.display()), "pass the path of RivetOS's mesh.json"))?;
    let registry = mesh::parse(&text)
        .map_err(|e| hinted(format!("{}: {e}", path.display()), "pass the path of RivetOS's mesh.json"))?;
    let (reachable, skipped) = registry.filter(chosen.iter().map(String::as_str));
    Ok((reachable, skipped.into_iter().map(|s| (s.node, s.reason)).collect()))
}

fn policy(fleet: &Fleet, args: &UpdateArgs, total: usize) -> Policy {
    let mut settings = fleet.update.clone();
    if let Some(value) = &args.max_parallel {
        settings.max_parallel = value.clone();
    }
    if let Some(value) = args.canary {
        settings.canary = value;
    }
    if let Some(value) = args.failure_action {
        settings.failure_action = value.into();
    }
    Policy::from_settings(&settings, total)
}

/// Rolls `units` (agents that ran before and whose desired object changed) out through the
/// rollout engine, as `update` does after its preparation: canary, `max_parallel`, the
/// health gate, rollback on failure, the journal on the target (`kind` in it; `update
/// --resume` resumes it), the report, the rollback history, exit 3 on failure. The caller
/// holds the deployment's lock and has provided the images and brought the rest of the
/// deployment (datahub, migrate step) up to date.
pub async fn roll_out<T: Port>(
    printer: &Printer,
    ctx: &Context,
    target: &T,
    held: &Held<'_, T::Store>,
    units: Vec<Unit<T::Payload>>,
    kind: Kind,
    approve: bool,
) -> anyhow::Result<ExitStatus> {
    let fleet = &ctx.fleet;
    let planned = rollout::plan(target, units).await?;
    if planned.specs.is_empty() {
        return Ok(ExitStatus::Success);
    }
    let mut nodes: Vec<String> = Vec::new();
    for unit in &planned.units {
        if !nodes.contains(&unit.node) {
            nodes.push(unit.node.clone());
        }
    }
    let start = rollout::Start {
        kind,
        revision: fleet.revision.clone(),
        nodes,
        skipped: Vec::new(),
        policy: policy(fleet, &UpdateArgs::default(), planned.specs.len()),
        approve,
        keep_images: (kind == Kind::Update).then_some(fleet.update.keep_images as usize),
    };
    rollout::start(printer, ctx, target, held, planned, start).await
}

/// For `infra up`, before it plans: an unfinished rollout that an earlier `infra up`
/// journaled (it was interrupted, or its runner died) is finished first, as `update
/// --resume` would; any other unfinished rollout refuses the `up`. `Some(status)` when the
/// earlier rollout did not succeed (the `up` ends there), `None` to go on.
pub async fn finish_earlier_up<T: Port>(
    printer: &Printer,
    ctx: &Context,
    target: &T,
    held: &Held<'_, T::Store>,
) -> anyhow::Result<Option<ExitStatus>> {
    let existing = journal::from_documents(held.documents(), &target.store().location())?;
    let Some(stored) = existing else { return Ok(None) };
    if stored.journal.kind != Kind::Up || stored.journal.machine()?.status().is_final() {
        rollout::refuse_unfinished(Some(&stored.journal))?;
        return Ok(None);
    }
    printer.info("An earlier `infra up` left its rollout unfinished: finishing it first.");
    match resume::run(printer, ctx, target, held, Some(stored), false).await? {
        ExitStatus::Success => Ok(None),
        failed => Ok(Some(failed)),
    }
}

/// `rivetctl update`.
pub async fn run(printer: &Printer, global: &GlobalArgs, args: &UpdateArgs) -> anyhow::Result<ExitStatus> {
    let mut ctx = session::load(printer, global, "update").await?;
    ctx.kubernetes.no_push = args.no_push;
    ctx.kubernetes.refuse_conflicts = true;
    // Resuming or abandoning reaches every node: the journal (on the target) says which
    // were in the rollout.
    let scope = if args.resume || args.abandon {
        None
    } else {
        Some(scope(&ctx.fleet, &args.node, args.mesh, args.mesh_file.as_deref())?)
    };
    let nodes = scope.as_ref().map(|(names, _)| names.as_slice());
    session::connect(&ctx, nodes, Update { printer, ctx: &ctx, args, scope: scope.clone() }).await?
}

/// `update` with the connected target.
struct Update<'a> {
    printer: &'a Printer,
    ctx: &'a Context,
    args: &'a UpdateArgs,
    scope: Option<Scope>,
}

impl Visit for Update<'_> {
    type Output = anyhow::Result<ExitStatus>;

    async fn visit<T: Port>(self, target: &T) -> Self::Output {
        let Update { printer, ctx, args, scope } = self;
        session::locked(printer, ctx, target.store(), "update", async |held| {
            update(printer, ctx, target, held, args, scope).await
        })
        .await
    }
}

async fn update<T: Port>(
    printer: &Printer,
    ctx: &Context,
    target: &T,
    held: &Held<'_, T::Store>,
    args: &UpdateArgs,
    scope: Option<Scope>,
) -> anyhow::Result<ExitStatus> {
    let fleet = &ctx.fleet;
    let store = target.store();
    let existing = journal::from_documents(held.documents(), &store.location())?;
    if args.abandon {
        return abandon(printer, store, existing).await;
    }
    // A corrupt rollback history stops the rollout before anything changes.
    history::from_documents(held.documents(), &store.location())?;
    if args.resume {
        return resume::run(printer, ctx, target, held, existing, args.approve).await;
    }
    rollout::refuse_unfinished(existing.as_ref().map(|s| &s.journal))?;
    let (names, skipped) = scope.expect("an update that does not resume has its scope");
    let units = prepare::agent_units(target, fleet, &names);
    let progress = Progress::new(printer);
    if !args.dry_run {
        prepare::provide(target, ctx, &names, &progress).await?;
    }
    let planned = rollout::plan(target, units).await?;
    let policy = policy(fleet, args, planned.specs.len());
    if args.dry_run {
        let hub = fleet
            .datahub
            .as_ref()
            .filter(|h| names.contains(&h.node))
            .map(|_| "the datahub and the migrate step, if their spec changed");
        printer.data(&report::dry_run(&planned.specs, &policy, planned.agents, &skipped, hub))?;
        return Ok(ExitStatus::Success);
    }
    if !prepare::datahub_first(target, held, fleet, &names, &progress).await? {
        progress.finish();
        printer.error("the datahub or the migrate step did not become healthy; no agent was touched");
        return Ok(ExitStatus::RolloutFailed);
    }
    progress.finish();
    if planned.specs.is_empty() {
        printer.data(&format!("Nothing to update: every agent in scope runs revision {}.\n", fleet.revision))?;
        return Ok(ExitStatus::Success);
    }
    let start = rollout::Start {
        kind: Kind::Update,
        revision: fleet.revision.clone(),
        nodes: names,
        skipped,
        policy,
        approve: args.approve,
        keep_images: Some(fleet.update.keep_images as usize),
    };
    rollout::start(printer, ctx, target, held, planned, start).await
}

async fn abandon<S: orchestrator::port::StateStore>(
    printer: &Printer,
    store: &S,
    existing: Option<journal::Stored>,
) -> anyhow::Result<ExitStatus> {
    let Some(stored) = existing else {
        printer.info("There is no rollout to abandon.");
        return Ok(ExitStatus::Success);
    };
    let machine = stored.journal.machine()?;
    journal::remove(store, stored.generation).await?;
    printer.info(&format!(
        "Abandoned the {} of revision {} ({}); containers stay as they are — `rivetctl status` shows them.",
        stored.journal.kind.as_str(),
        stored.journal.revision,
        report::status_word(machine.status())
    ));
    Ok(ExitStatus::Success)
}
