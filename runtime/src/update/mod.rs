//! `rivetctl update` and `rivetctl rollback`: rolling source updates across the mesh.
//!
//! Order of work: take the deployment lock; refuse while an unfinished rollout exists
//! (unless resuming); resolve the revision; connect every node (SSH for remote ones); build
//! once on the control host; ship and verify the images on every node; bring the datahub
//! and the migrate step up to date; then drive the rollout state machine over the agents,
//! writing the journal after every step.

mod choose;
mod driver;
mod failures;
pub mod history;
pub mod journal;
mod kept;
mod list;
mod ops;
mod prepare;
pub mod record;
mod report;
pub mod rollback;

use std::collections::BTreeMap;
use std::sync::Arc;

use orchestrator::fleet::Fleet;
use orchestrator::mesh;
use orchestrator::rollout::{InstanceSpec, Observed, Policy, Rollout, Status};

pub use rollback::run as rollback;

use crate::cli::{GlobalArgs, UpdateArgs};
use crate::engines::Link;
use crate::exit::{ExitStatus, hinted};
use crate::printer::Printer;
use crate::progress::Progress;
use crate::project::{self, Project};
use crate::{lock, session, source, state};
use driver::{Options, Outcome};
use journal::{Journal, Kind};
use ops::Target;

/// The nodes an update reaches, and those it skips with the reason.
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

async fn connect_links(fleet: &Fleet, project: &Project, names: &[String]) -> anyhow::Result<BTreeMap<String, Link>> {
    let options = crate::engines::ssh_options(fleet, &project.dir);
    let mut links = BTreeMap::new();
    for name in names {
        let node = crate::engines::docker_engines(fleet)
            .iter()
            .find(|e| e.name == *name)
            .expect("scope holds configured nodes");
        links.insert(name.clone(), crate::engines::connect(node, &options).await?);
    }
    Ok(links)
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

/// Refuses to change the deployment while a rollout is unfinished (its journal and the
/// previous containers it keeps are what `--resume` needs).
pub fn refuse_while_rolling_out(state_dir: &std::path::Path) -> anyhow::Result<()> {
    refuse_unfinished(&journal::read(&journal::path(state_dir))?)
}

/// Refuses to start a rollout while another one is unfinished.
fn refuse_unfinished(existing: &Option<Journal>) -> anyhow::Result<()> {
    if let Some(journal) = existing {
        let machine = journal.machine()?;
        if !machine.status().is_final() {
            let done = machine.instances().iter().filter(|i| i.state.is_settled()).count();
            return Err(hinted(
                format!(
                    "an unfinished {} of revision {} started {} is {} ({done} of {} agents settled)",
                    journal.kind.as_str(),
                    journal.revision,
                    journal.started,
                    report::status_word(machine.status()),
                    machine.instances().len()
                ),
                "finish it with `rivetctl update --resume` (add --approve to approve a waiting canary), or drop it with `rivetctl update --abandon` (containers stay as they are)",
            ));
        }
    }
    Ok(())
}

/// The exit status of a finished drive, after printing the outcome.
fn conclude(printer: &Printer, outcome: &Outcome) -> ExitStatus {
    match outcome {
        Outcome::Finished(Status::Succeeded) => {
            printer.info("Every node runs the new revision and is healthy.");
            ExitStatus::Success
        }
        Outcome::Finished(Status::AwaitingApproval) => {
            printer.info("The canary batch is healthy. Continue with `rivetctl update --resume --approve`.");
            ExitStatus::Success
        }
        Outcome::Finished(Status::Paused) => {
            printer.error(
                "the rollout is paused after a failure (failed agents were returned to their previous revision)",
            );
            printer.hint("fix the cause and `rivetctl update --resume`, or `rivetctl update --abandon`");
            ExitStatus::RolloutFailed
        }
        Outcome::Finished(status) => {
            let status = report::status_word(*status);
            if printer.json() {
                printer.error(&format!(
                    "the rollout {status}: the per-node results are in the `\"type\":\"result\"` line on stdout (`nodes[].result`), each agent's states in the `\"type\":\"instance\"` lines"
                ));
            } else {
                printer.error(&format!("the rollout {status}: see the table above"));
            }
            ExitStatus::RolloutFailed
        }
        Outcome::Interrupted(reason) => {
            printer.error(&format!("the rollout was interrupted: {reason}"));
            printer.hint("the journal is intact; run `rivetctl update --resume` to finish it");
            ExitStatus::RolloutFailed
        }
    }
}

/// Drives a machine with output, records what it finished on in the rollback history (on
/// every path: update, resume, rollback), and concludes. After a successful update the
/// images beyond the newest `keep_images` are pruned.
async fn drive_and_report(
    printer: &Printer,
    machine: &mut Rollout,
    commands: Vec<orchestrator::rollout::Command>,
    work: driver::Work<'_>,
    record: driver::Record<'_>,
    approve: bool,
    keep_images: Option<usize>,
) -> anyhow::Result<ExitStatus> {
    let live = report::Live::new(printer);
    let options = Options { approve, ..Options::default() };
    let outcome = driver::drive(
        machine,
        commands,
        work,
        driver::Record { journal: &mut *record.journal, path: record.path },
        options,
        &|c| live.changes(c),
    )
    .await?;
    let status = match &outcome {
        Outcome::Finished(status) => report::status_word(*status),
        Outcome::Interrupted(_) => "interrupted",
    };
    let journal = &*record.journal;
    failures::print(printer, machine)?;
    report::finish(printer, &live, machine, status, &journal.revision, &journal.previous, &journal.skipped)?;
    let exit = conclude(printer, &outcome);
    let state_dir = record.path.parent().expect("the journal lives in the state directory");
    self::record::finished(printer, state_dir, work.links, machine, journal, keep_images).await;
    Ok(exit)
}

pub async fn run(printer: &Printer, global: &GlobalArgs, args: &UpdateArgs) -> anyhow::Result<ExitStatus> {
    let project = project::load(printer, &global.config)?;
    session::require_docker(&project, "update")?;
    let state_dir = state::dir(&project);
    let _lock = lock::acquire(&state_dir.join("locks"), &project.config.name, "rivetctl update")
        .map_err(crate::commands::lock::explain)?;
    let journal_path = journal::path(&state_dir);
    let existing = journal::read(&journal_path)?;
    if args.abandon {
        return abandon(printer, &journal_path, existing);
    }
    // A corrupt rollback history stops the rollout before anything changes.
    history::read(&state_dir)?;
    if args.resume {
        return resume(printer, &project, &journal_path, existing, args.approve).await;
    }
    refuse_unfinished(&existing)?;

    let resolved = source::resolve(&project).await?;
    let fleet = crate::fleet::build(&project, &resolved)?;
    let (names, skipped) = scope(&fleet, &args.node, args.mesh, args.mesh_file.as_deref())?;
    let links = connect_links(&fleet, &project, &names).await?;
    let agents = prepare::agent_resources(&fleet, &names);
    let progress = Progress::new(printer);
    if !args.dry_run {
        let control = crate::engines::control_host(&fleet).await?;
        crate::images::build_on(
            &control,
            "control-host",
            &fleet,
            resolved.source.as_ref(),
            &state::logs(&project),
            &progress,
        )
        .await?;
        prepare::ship_all(&control, &fleet, &links, &progress).await?;
    }
    let mut specs: Vec<InstanceSpec> = Vec::new();
    let mut targets: Vec<Target> = Vec::new();
    let mut previous: BTreeMap<String, String> = BTreeMap::new();
    for (node, agent, resource) in &agents {
        let link = &links[node];
        if let Some(current) = prepare::current(link, &target_name(resource)).await?
            && let Some(revision) = current.revision
        {
            previous.entry(node.clone()).or_insert(revision);
        }
        if let Some(spec) = prepare::instance(link, node, agent, resource).await? {
            specs.push(spec);
            targets.push(prepare::target(&fleet, node, Arc::clone(resource)));
        }
    }
    let policy = policy(&fleet, args, specs.len());
    if args.dry_run {
        let hub = fleet
            .datahub
            .as_ref()
            .filter(|h| names.contains(&h.node))
            .map(|_| "the datahub and the migrate step, if their spec changed");
        printer.data(&report::dry_run(&specs, &policy, agents.len(), &skipped, hub))?;
        return Ok(ExitStatus::Success);
    }
    if !prepare::datahub_first(&fleet, &links, &progress).await? {
        progress.finish();
        printer.error("the datahub or the migrate step did not become healthy; no agent was touched");
        return Ok(ExitStatus::RolloutFailed);
    }
    progress.finish();
    if specs.is_empty() {
        printer.data(&format!("Nothing to update: every agent in scope runs revision {}.\n", fleet.revision))?;
        return Ok(ExitStatus::Success);
    }
    let mut machine = Rollout::new(specs, policy, driver::now_ms());
    let mut journal =
        Journal::new(Kind::Update, &fleet.name, fleet.revision.clone(), names, skipped, previous.into_iter().collect());
    let commands = machine.start(driver::now_ms());
    drive_and_report(
        printer,
        &mut machine,
        commands,
        driver::Work { links: &links, targets: &targets },
        driver::Record { journal: &mut journal, path: &journal_path },
        args.approve,
        Some(fleet.update.keep_images as usize),
    )
    .await
}

fn target_name(resource: &orchestrator::docker::DockerResource) -> String {
    match &resource.payload {
        orchestrator::docker::DockerObject::Container(spec) => spec.name.clone(),
        _ => resource.key.name.clone(),
    }
}

fn abandon(printer: &Printer, path: &std::path::Path, existing: Option<Journal>) -> anyhow::Result<ExitStatus> {
    let Some(journal) = existing else {
        printer.info("There is no rollout to abandon.");
        return Ok(ExitStatus::Success);
    };
    let machine = journal.machine()?;
    std::fs::remove_file(path)?;
    printer.info(&format!(
        "Abandoned the {} of revision {} ({}); containers stay as they are — `rivetctl status` shows them.",
        journal.kind.as_str(),
        journal.revision,
        report::status_word(machine.status())
    ));
    Ok(ExitStatus::Success)
}

/// Continues the rollout in the journal.
async fn resume(
    printer: &Printer,
    project: &Project,
    path: &std::path::Path,
    existing: Option<Journal>,
    approve: bool,
) -> anyhow::Result<ExitStatus> {
    let Some(mut journal) = existing else {
        return Err(hinted("there is no rollout to resume", "start one with `rivetctl update`"));
    };
    let mut machine = journal.machine()?;
    if machine.status().is_final() {
        printer.info(&format!(
            "The {} of revision {} already {}.",
            journal.kind.as_str(),
            journal.revision,
            report::status_word(machine.status())
        ));
        return Ok(if machine.status() == Status::Succeeded { ExitStatus::Success } else { ExitStatus::RolloutFailed });
    }
    let resolved = source::resolve(project).await?;
    let fleet = crate::fleet::build(project, &resolved)?;
    let links = connect_links(&fleet, project, &journal.nodes).await?;
    let agents = prepare::agent_resources(&fleet, &journal.nodes);
    let mut targets = Vec::new();
    let mut observed = Vec::new();
    for (i, instance) in machine.instances().iter().enumerate() {
        let spec = &instance.spec;
        let Some((_, _, resource)) = agents.iter().find(|(node, agent, _)| *node == spec.node && *agent == spec.agent)
        else {
            return Err(hinted(
                format!("agent {} on node {} is in the rollout but no longer in the config", spec.agent, spec.node),
                "restore the config, or `rivetctl update --abandon`",
            ));
        };
        let resource = if prepare::with_image(resource, &spec.to_image).spec_hash() == resource.spec_hash() {
            Arc::clone(resource)
        } else if journal.kind == Kind::Update {
            return Err(hinted(
                format!(
                    "the config or source changed since this update started: {} would now run {}",
                    spec.agent,
                    image_of(resource)
                ),
                "restore them to finish it, or `rivetctl update --abandon` and start a new update",
            ));
        } else {
            Arc::new(prepare::with_image(resource, &spec.to_image))
        };
        let target = prepare::target(&fleet, &spec.node, resource);
        let (image, running) = match links[&spec.node].engine.call().inspect_container(&target.container, None).await {
            Ok(info) => (info.config.and_then(|c| c.image), info.state.and_then(|s| s.running).unwrap_or(false)),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => (None, false),
            Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot read node {}", spec.node))),
        };
        observed.push(Observed { instance: i, image, running });
        targets.push(target);
    }
    printer.info(&format!("Resuming the {} of revision {}.", journal.kind.as_str(), journal.revision));
    let commands = machine.resume(&observed, driver::now_ms());
    let work = driver::Work { links: &links, targets: &targets };
    let record = driver::Record { journal: &mut journal, path };
    drive_and_report(printer, &mut machine, commands, work, record, approve, Some(fleet.update.keep_images as usize))
        .await
}

fn image_of(resource: &orchestrator::docker::DockerResource) -> String {
    match &resource.payload {
        orchestrator::docker::DockerObject::Container(spec) => spec.image.clone(),
        _ => String::new(),
    }
}
