//! `rivetctl rollback [--to REV] [--node NAME] [--list]`: return agents to the previous
//! revision (or a named one) whose image is still on the node, through the same batches and
//! health gates as an update. The choice reads the rollback history (`choose`) and the
//! images the target keeps (`Artifacts::stored_images`); what the rollback finished on is
//! recorded like any rollout's.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use orchestrator::port::{Port, Unit};
use targets::factory::Visit;

use super::choose::{self, Present};
use super::journal::Kind;
use super::rollout::{self, Planned};
use super::{Scope, history, list, prepare};
use crate::cli::{GlobalArgs, RollbackArgs, UpdateArgs};
use crate::exit::{ExitStatus, hinted};
use crate::printer::Printer;
use crate::session::{self, Context, Held, target_error};

/// `rivetctl rollback`.
pub async fn run(printer: &Printer, global: &GlobalArgs, args: &RollbackArgs) -> anyhow::Result<ExitStatus> {
    let ctx = session::load(printer, global, "rollback").await?;
    let scope = super::scope(&ctx.fleet, &args.node, args.node.is_empty(), None)?;
    let nodes = scope.0.clone();
    session::connect(&ctx, Some(&nodes), Rollback { printer, ctx: &ctx, args, scope }).await?
}

struct Rollback<'a> {
    printer: &'a Printer,
    ctx: &'a Context,
    args: &'a RollbackArgs,
    scope: Scope,
}

impl Visit for Rollback<'_> {
    type Output = anyhow::Result<ExitStatus>;

    async fn visit<T: Port>(self, target: &T) -> Self::Output {
        let (names, skipped) = self.scope;
        if self.args.list {
            let history = history::read(target.store()).await?;
            return list::run(self.printer, &self.ctx.fleet, target, &names, &history).await;
        }
        // `--list` changes nothing: it takes no lock.
        let (printer, ctx, args) = (self.printer, self.ctx, self.args);
        let store = target.store();
        session::locked(printer, ctx, store, "rollback", async |held| {
            rollback(printer, ctx, target, held, args, names, skipped).await
        })
        .await
    }
}

pub(super) async fn rollback<T: Port>(
    printer: &Printer,
    ctx: &Context,
    target: &T,
    held: &Held<'_, T::Store>,
    args: &RollbackArgs,
    names: Vec<String>,
    skipped: Vec<(String, String)>,
) -> anyhow::Result<ExitStatus> {
    let fleet = &ctx.fleet;
    rollout::refuse_while_rolling_out(held)?;
    let history = history::read(target.store()).await?;
    let repository = &prepare::agent_repository(fleet);
    let mut planned = Planned { specs: Vec::new(), units: Vec::new(), previous: BTreeMap::new(), agents: 0 };
    let mut on_nodes: BTreeMap<String, Vec<Present>> = BTreeMap::new();
    let mut warned: BTreeSet<(String, String)> = BTreeSet::new();
    for unit in prepare::agent_units(target, fleet, &names) {
        let node = unit.node.clone();
        let Some(current) = target.current(&unit).await.map_err(target_error)? else { continue };
        if let Some(revision) = &current.revision {
            planned.previous.entry(node.clone()).or_insert(revision.clone());
        }
        if !on_nodes.contains_key(&node) {
            let present = target.stored_images(&node, repository).await.map_err(target_error)?;
            on_nodes.insert(node.clone(), present);
        }
        let current_id = target.image_facts(&node, &current.image).await.and_then(|f| f.id);
        let chosen = choose::choose(
            &history.node(&node),
            &current.image,
            current_id.as_deref(),
            &on_nodes[&node],
            args.to.as_deref(),
        );
        let Some(chosen) = chosen else {
            return Err(hinted(
                format!("no earlier image of {repository} on node {node} to roll {} back to", prepare::unit_name(&unit)),
                match &args.to {
                    Some(to) => format!("no image there has revision or tag {to}; `rivetctl rollback --list` shows the candidates"),
                    None => "rivetctl keeps the last deployment.update.keep_images revisions and never returns to one that was rejected; `rivetctl rollback --list` shows them, `--to` names one".into(),
                },
            ));
        };
        if chosen.image == current.image {
            continue;
        }
        if let Some(why) = &chosen.rejected
            && warned.insert((node.clone(), chosen.image.clone()))
        {
            printer.diagnostic(&format!(
                "warning: {} was rejected on node {node} ({why}); rolling back to it because --to names it",
                chosen.image
            ));
        }
        let from_version = target.version(&node, &current.image).await;
        let to_version = target.version(&node, &chosen.image).await;
        let desired = Arc::new(target.with_image(&unit.desired, &chosen.image));
        let unit = Unit { desired, ..unit };
        let spec = prepare::instance_spec(&unit, (current.image.clone(), from_version), (chosen.image, to_version));
        planned.agents += unit.agents.len();
        planned.specs.push(spec);
        planned.units.push(unit);
    }
    if planned.specs.is_empty() {
        printer.data("Nothing to roll back.\n")?;
        return Ok(ExitStatus::Success);
    }
    let first = &planned.specs[0];
    let label = target.image_facts(&first.node, &first.to_image).await.and_then(|f| f.revision);
    let revision = label.unwrap_or_else(|| first.to_image.clone());
    let policy = super::policy(fleet, &UpdateArgs::default(), planned.specs.len());
    let start = rollout::Start {
        kind: Kind::Rollback,
        revision,
        nodes: names,
        skipped,
        policy,
        approve: true,
        keep_images: None,
    };
    rollout::start(printer, ctx, target, held, planned, start).await
}
