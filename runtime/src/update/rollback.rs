//! `rivetctl rollback [--to REV] [--node NAME]`: return agents to the previous revision (or a
//! named one) whose image is still on the node, through the same batches and health gates as
//! an update. Also: keeping the last N revisions' images on each node.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bollard::query_parameters::{ListImagesOptionsBuilder, RemoveImageOptionsBuilder};
use orchestrator::rollout::{InstanceSpec, Rollout};

use super::journal::{self, Journal, Kind};
use super::{Target, connect_links, drive_and_report, driver, prepare, refuse_unfinished};
use crate::cli::{GlobalArgs, RollbackArgs, UpdateArgs};
use crate::engines::Link;
use crate::exit::{ExitStatus, hinted};
use crate::printer::Printer;
use crate::{lock, project, session, source, state};

/// One image of the agent repository on a node.
#[derive(Debug, Clone)]
struct Candidate {
    id: String,
    reference: String,
    revision: Option<String>,
    created: i64,
}

async fn candidates(link: &Link, repository: &str) -> anyhow::Result<Vec<Candidate>> {
    let filters = HashMap::from([("reference".to_string(), vec![repository.to_string()])]);
    let options = ListImagesOptionsBuilder::default().filters(&filters).build();
    let mut out: Vec<Candidate> = link
        .engine
        .call()
        .list_images(Some(options))
        .await?
        .into_iter()
        .filter_map(|image| {
            let reference = image.repo_tags.iter().find(|t| t.starts_with(&format!("{repository}:")))?.clone();
            Some(Candidate {
                id: image.id,
                reference,
                revision: image.labels.get("org.opencontainers.image.revision").cloned(),
                created: image.created,
            })
        })
        .collect();
    out.sort_by(|a, b| b.created.cmp(&a.created).then(a.reference.cmp(&b.reference)));
    Ok(out)
}

/// The image to return to: named by `--to` (a revision prefix, or an image tag), else the
/// newest one older than what runs now.
async fn choose(
    link: &Link,
    repository: &str,
    current: &str,
    to: Option<&str>,
    history: &[String],
) -> anyhow::Result<Option<String>> {
    let all = candidates(link, repository).await?;
    // What this deployment ran before on this node, if it was recorded and is still there.
    if to.is_none()
        && let Some(at) = history.iter().rposition(|i| i == current)
        && let Some(before) = history[..at].iter().rev().find(|i| all.iter().any(|c| &c.reference == *i))
    {
        return Ok(Some(before.clone()));
    }
    let current_id = link.engine.call().inspect_image(current).await.ok().and_then(|i| i.id);
    let chosen = match to {
        Some(wanted) => all.iter().find(|c| {
            c.revision.as_deref().is_some_and(|r| r.starts_with(wanted))
                || c.reference == wanted
                || c.reference.ends_with(&format!(":{wanted}"))
        }),
        None => {
            let now = all.iter().find(|c| Some(&c.id) == current_id.as_ref()).map_or(i64::MAX, |c| c.created);
            all.iter().find(|c| Some(&c.id) != current_id.as_ref() && c.created <= now)
        }
    };
    Ok(chosen.map(|c| c.reference.clone()))
}

/// The images a deployment has run on each node, newest last (`images.json` in its state
/// directory): only these are ever pruned, so other deployments' images on a shared engine
/// are never touched.
fn history_path(state_dir: &std::path::Path) -> std::path::PathBuf {
    state_dir.join("images.json")
}

fn read_history(state_dir: &std::path::Path) -> BTreeMap<String, Vec<String>> {
    std::fs::read_to_string(history_path(state_dir))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

/// Records `image` as deployed on `node`, and removes this deployment's images beyond the
/// newest `keep` that no container uses.
/// Records `image` as the agents' image on `node` (after `infra up` or an update).
pub fn remember(state_dir: &std::path::Path, node: &str, image: &str) -> anyhow::Result<()> {
    let mut history = read_history(state_dir);
    let list = history.entry(node.to_string()).or_default();
    if list.last().map(String::as_str) != Some(image) {
        list.retain(|i| i != image);
        list.push(image.to_string());
        std::fs::create_dir_all(state_dir)?;
        std::fs::write(history_path(state_dir), serde_json::to_string_pretty(&history)?)?;
    }
    Ok(())
}

pub async fn remember_and_prune(
    state_dir: &std::path::Path,
    link: &Link,
    image: &str,
    keep: usize,
) -> anyhow::Result<Vec<String>> {
    let mut history = read_history(state_dir);
    let list = history.entry(link.name.clone()).or_default();
    list.retain(|i| i != image);
    list.push(image.to_string());
    let used: Vec<String> = link
        .engine
        .call()
        .list_containers(Some(bollard::query_parameters::ListContainersOptionsBuilder::default().all(true).build()))
        .await?
        .into_iter()
        .filter_map(|c| c.image)
        .collect();
    let mut removed = Vec::new();
    let excess = list.len().saturating_sub(keep);
    let old: Vec<String> = list.drain(..excess).collect();
    for candidate in old {
        if used.contains(&candidate) {
            list.insert(0, candidate);
            continue;
        }
        let options = RemoveImageOptionsBuilder::default().build();
        if link.engine.call().remove_image(&candidate, Some(options), None).await.is_ok() {
            removed.push(candidate);
        }
    }
    std::fs::write(history_path(state_dir), serde_json::to_string_pretty(&history)?)?;
    Ok(removed)
}

pub async fn run(printer: &Printer, global: &GlobalArgs, args: &RollbackArgs) -> anyhow::Result<ExitStatus> {
    let project = project::load(printer, &global.config)?;
    session::require_docker(&project, "rollback")?;
    let state_dir = state::dir(&project);
    let _lock = lock::acquire(&state_dir.join("locks"), &project.config.name, "rivetctl rollback")
        .map_err(crate::commands::lock::explain)?;
    let journal_path = journal::path(&state_dir);
    refuse_unfinished(&journal::read(&journal_path)?)?;
    let resolved = source::resolve(&project).await?;
    let fleet = crate::fleet::build(&project, &resolved)?;
    let update_args = UpdateArgs { node: args.node.clone(), mesh: args.node.is_empty(), ..UpdateArgs::default() };
    let (names, skipped) = super::scope(&fleet, &update_args.node, update_args.mesh, None)?;
    let links = connect_links(&fleet, &project, &names).await?;
    let repository = &fleet.config.raw.deployment.image.agent_image;
    let mut specs = Vec::new();
    let mut targets: Vec<Target> = Vec::new();
    let mut previous: BTreeMap<String, String> = BTreeMap::new();
    for (node, agent, resource) in prepare::agent_resources(&fleet, &names) {
        let link = &links[&node];
        let container = prepare::target(&fleet, &node, Arc::clone(&resource)).container;
        let Some(current) = prepare::current(link, &container).await? else { continue };
        if let Some(revision) = &current.revision {
            previous.entry(node.clone()).or_insert(revision.clone());
        }
        let history = read_history(&state_dir).remove(&node).unwrap_or_default();
        let Some(image) = choose(link, repository, &current.image, args.to.as_deref(), &history).await? else {
            return Err(hinted(
                format!("no earlier image of {repository} on node {node} to roll {agent} back to"),
                match &args.to {
                    Some(to) => format!("no image there has revision or tag {to}; `docker images {repository}` on the node lists them"),
                    None => "rivetctl keeps the last deployment.update.keep_images revisions; this node has only the current one".into(),
                },
            ));
        };
        if image == current.image {
            continue;
        }
        specs.push(InstanceSpec {
            node: node.clone(),
            agent: agent.clone(),
            from_version: prepare::image_version(&link.engine, &current.image).await,
            to_version: prepare::image_version(&link.engine, &image).await,
            from_image: current.image.clone(),
            to_image: image.clone(),
        });
        targets.push(prepare::target(&fleet, &node, Arc::new(prepare::with_image(&resource, &image))));
    }
    if specs.is_empty() {
        printer.data("Nothing to roll back.\n")?;
        return Ok(ExitStatus::Success);
    }
    let first = &links[&specs[0].node];
    let label = first
        .engine
        .call()
        .inspect_image(&specs[0].to_image)
        .await
        .ok()
        .and_then(|i| i.config?.labels?.get("org.opencontainers.image.revision").cloned());
    let revision = label.unwrap_or_else(|| specs[0].to_image.clone());
    let policy = super::policy(&fleet, &UpdateArgs::default(), specs.len());
    let mut machine = Rollout::new(specs, policy, driver::now_ms());
    let mut journal =
        Journal::new(Kind::Rollback, &fleet.name, revision, names, skipped, previous.into_iter().collect());
    let commands = machine.start(driver::now_ms());
    let work = driver::Work { links: &links, targets: &targets };
    let record = driver::Record { journal: &mut journal, path: &journal_path };
    let status = drive_and_report(printer, &mut machine, commands, work, record, true).await?;
    // What each agent runs now, so a later rollback knows what came before.
    for instance in machine.instances().iter().filter(|i| i.state == orchestrator::rollout::InstanceState::Done) {
        let _ = remember(&state_dir, &instance.spec.node, &instance.spec.to_image);
    }
    Ok(status)
}
