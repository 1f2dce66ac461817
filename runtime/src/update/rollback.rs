//! `rivetctl rollback [--to REV] [--node NAME] [--list]`: return agents to the previous
//! revision (or a named one) whose image is still on the node, through the same batches and
//! health gates as an update. The choice reads the rollback history (`choose`); what the
//! rollback finished on is recorded like any rollout's.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use orchestrator::rollout::{InstanceSpec, Rollout};

use super::choose::{self, Present};
use super::journal::{self, Journal, Kind};
use super::{Target, connect_links, drive_and_report, driver, history, kept, list, prepare, refuse_unfinished};
use crate::cli::{GlobalArgs, RollbackArgs, UpdateArgs};
use crate::exit::{ExitStatus, hinted};
use crate::printer::Printer;
use crate::{lock, project, session, source, state};

pub async fn run(printer: &Printer, global: &GlobalArgs, args: &RollbackArgs) -> anyhow::Result<ExitStatus> {
    let project = project::load(printer, &global.config)?;
    session::require_docker(&project, "rollback")?;
    let state_dir = state::dir(&project);
    let resolved = source::resolve(&project).await?;
    let fleet = crate::fleet::build(&project, &resolved)?;
    let (names, skipped) = super::scope(&fleet, &args.node, args.node.is_empty(), None)?;
    if args.list {
        let history = history::read(&state_dir)?;
        let links = connect_links(&fleet, &project, &names).await?;
        return list::run(printer, &fleet, &links, &names, &history).await;
    }
    let _lock = lock::acquire(&state_dir.join("locks"), &project.config.name, "rivetctl rollback")
        .map_err(crate::commands::lock::explain)?;
    let journal_path = journal::path(&state_dir);
    refuse_unfinished(&journal::read(&journal_path)?)?;
    let history = history::read(&state_dir)?;
    let links = connect_links(&fleet, &project, &names).await?;
    let repository = &fleet.config.raw.deployment.image.agent_image;
    let mut specs = Vec::new();
    let mut targets: Vec<Target> = Vec::new();
    let mut previous: BTreeMap<String, String> = BTreeMap::new();
    let mut on_nodes: BTreeMap<String, Vec<Present>> = BTreeMap::new();
    let mut warned: BTreeSet<(String, String)> = BTreeSet::new();
    for (node, agent, resource) in prepare::agent_resources(&fleet, &names) {
        let link = &links[&node];
        let container = prepare::target(&fleet, &node, Arc::clone(&resource)).container;
        let Some(current) = prepare::current(link, &container).await? else { continue };
        if let Some(revision) = &current.revision {
            previous.entry(node.clone()).or_insert(revision.clone());
        }
        if !on_nodes.contains_key(&node) {
            on_nodes.insert(node.clone(), kept::present(link, repository).await?);
        }
        let current_id = link.engine.call().inspect_image(&current.image).await.ok().and_then(|i| i.id);
        let chosen = choose::choose(
            &history.node(&node),
            &current.image,
            current_id.as_deref(),
            &on_nodes[&node],
            args.to.as_deref(),
        );
        let Some(chosen) = chosen else {
            return Err(hinted(
                format!("no earlier image of {repository} on node {node} to roll {agent} back to"),
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
        specs.push(InstanceSpec {
            node: node.clone(),
            agent: agent.clone(),
            agents: Vec::new(),
            from_version: prepare::image_version(&link.engine, &current.image).await,
            to_version: prepare::image_version(&link.engine, &chosen.image).await,
            from_image: current.image.clone(),
            to_image: chosen.image.clone(),
        });
        targets.push(prepare::target(&fleet, &node, Arc::new(prepare::with_image(&resource, &chosen.image))));
    }
    if specs.is_empty() {
        printer.data("Nothing to roll back.\n")?;
        return Ok(ExitStatus::Success);
    }
    let first = &links[&specs[0].node];
    let (label, _) = super::record::labels(&first.engine, &specs[0].to_image).await;
    let revision = label.unwrap_or_else(|| specs[0].to_image.clone());
    let policy = super::policy(&fleet, &UpdateArgs::default(), specs.len());
    let mut machine = Rollout::new(specs, policy, driver::now_ms());
    let mut journal =
        Journal::new(Kind::Rollback, &fleet.name, revision, names, skipped, previous.into_iter().collect());
    let commands = machine.start(driver::now_ms());
    let work = driver::Work { links: &links, targets: &targets };
    let record = driver::Record { journal: &mut journal, path: &journal_path };
    drive_and_report(printer, &mut machine, commands, work, record, true, None).await
}
