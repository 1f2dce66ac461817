//! A rollout from its units to its report, the same for `update`, `rollback` and `infra up`
//! replacing running agents: the instances (what each unit moves from and to), the policy,
//! the journal, the drive through the port, the report, the rollback history, and the exit
//! status (3 when it failed).

use std::collections::BTreeMap;
use std::time::Duration;

use orchestrator::port::{Port, Rollouts, StateStore, Unit};
use orchestrator::rollout::{Command, InstanceSpec, Policy, Rollout, Status};

use super::driver::{self, Options, Outcome};
use super::journal::{self, Journal, Kind};
use super::{failures, prepare, record, report};
use crate::exit::{ExitStatus, hinted};
use crate::printer::Printer;
use crate::session::{Context, Held, target_error};

/// The units of a rollout that have something to do, with their instances (index for
/// index), and per node the revision its agents ran before.
pub struct Planned<P> {
    pub specs: Vec<InstanceSpec>,
    pub units: Vec<Unit<P>>,
    pub previous: BTreeMap<String, String>,
    /// How many agents the units considered serve (those with nothing to do included).
    pub agents: usize,
}

/// Works out what each of `units` moves from and to (`unit.desired`); units that already
/// run exactly that are left out.
pub async fn plan<T: Rollouts>(target: &T, units: Vec<Unit<T::Payload>>) -> anyhow::Result<Planned<T::Payload>> {
    let mut planned = Planned { specs: Vec::new(), units: Vec::new(), previous: BTreeMap::new(), agents: 0 };
    for unit in units {
        planned.agents += unit.agents.len();
        let current = target.current(&unit).await.map_err(target_error)?;
        if let Some(revision) = current.as_ref().and_then(|c| c.revision.clone()) {
            planned.previous.entry(unit.node.clone()).or_insert(revision);
        }
        if let Some(spec) = prepare::instance(target, &unit, current).await? {
            planned.specs.push(spec);
            planned.units.push(unit);
        }
    }
    Ok(planned)
}

/// What a new rollout is, besides its units.
pub struct Start {
    pub kind: Kind,
    /// What the journal calls the revision rolled out.
    pub revision: String,
    /// The nodes in the rollout, in order, and those left out with the reason.
    pub nodes: Vec<String>,
    pub skipped: Vec<(String, String)>,
    pub policy: Policy,
    pub approve: bool,
    /// Prune the images beyond the newest `keep_images` after a successful update.
    pub keep_images: Option<usize>,
}

/// Refuses to start a rollout while another one is unfinished.
pub fn refuse_unfinished(existing: Option<&Journal>) -> anyhow::Result<()> {
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

/// Starts a rollout of `planned` (which has at least one instance) and drives it to its end.
pub async fn start<T: Port>(
    printer: &Printer,
    ctx: &Context,
    target: &T,
    held: &Held<'_, T::Store>,
    planned: Planned<T::Payload>,
    start: Start,
) -> anyhow::Result<ExitStatus> {
    // The journal found here is what the first write compares against; an unfinished one
    // stops this one. Read again: this run may have written it since the lock's load (an
    // `infra up` that finished an earlier one first).
    let existing = journal::read(held.store()).await?;
    refuse_unfinished(existing.as_ref().map(|s| &s.journal))?;
    let mut writer = journal::Writer::renewing(held, existing.map(|s| s.generation));
    let mut machine = Rollout::new(planned.specs, start.policy, driver::now_ms());
    let previous = planned.previous.into_iter().collect();
    let mut journal = Journal::new(start.kind, &ctx.fleet.name, start.revision, start.nodes, start.skipped, previous);
    let commands = machine.start(driver::now_ms());
    let drive = Drive { machine: &mut machine, commands, units: &planned.units, approve: start.approve };
    drive_and_report(printer, ctx, target, drive, &mut journal, &mut writer, start.keep_images).await
}

/// A machine ready to drive: its first commands and its units, index for index.
pub struct Drive<'a, P> {
    pub machine: &'a mut Rollout,
    pub commands: Vec<Command>,
    pub units: &'a [Unit<P>],
    pub approve: bool,
}

/// Drives a machine with output, records what it finished on in the rollback history (on
/// every path: update, resume, rollback, infra up), and concludes. After a successful
/// update the images beyond the newest `keep_images` are pruned.
pub async fn drive_and_report<T: Port>(
    printer: &Printer,
    ctx: &Context,
    target: &T,
    drive: Drive<'_, T::Payload>,
    journal: &mut Journal,
    writer: &mut journal::Writer<'_, T::Store>,
    keep_images: Option<usize>,
) -> anyhow::Result<ExitStatus> {
    let live = report::Live::new(printer);
    let options = Options {
        approve: drive.approve,
        probe_interval: Duration::from_millis(ctx.fleet.update.probe_interval),
        ..Options::default()
    };
    let machine = drive.machine;
    let record = driver::Record { journal: &mut *journal, writer };
    let outcome =
        driver::drive(machine, drive.commands, target, drive.units, record, options, &|c| live.changes(c)).await?;
    let status = match &outcome {
        Outcome::Finished(status) => report::status_word(*status),
        Outcome::Interrupted(_) => "interrupted",
    };
    failures::print(printer, machine)?;
    report::finish(printer, &live, machine, status, &journal.revision, &journal.previous, &journal.skipped)?;
    let exit = conclude(printer, &outcome);
    record::finished(printer, target, machine, journal, keep_images).await;
    Ok(exit)
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

/// Refuses to change the deployment while a rollout is unfinished (its journal and the
/// previous instances it keeps are what `--resume` needs).
pub fn refuse_while_rolling_out<S: StateStore>(held: &Held<'_, S>) -> anyhow::Result<()> {
    let existing = journal::from_documents(held.documents(), &held.store().location())?;
    refuse_unfinished(existing.as_ref().map(|s| &s.journal))
}
