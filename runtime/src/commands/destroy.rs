//! `rivetctl infra destroy`: remove what the deployment owns; keep data unless --volumes.
//!
//! Every step that can run runs: an object the engine refuses to remove does not keep the
//! others (the data volumes asked for with `--volumes` included) from being removed; what is
//! left is listed with the engine's reason and a remedy, and the command exits 1. Ctrl-C
//! stops after the removals in flight.

use std::time::Duration;

use orchestrator::plan;
use targets::docker::apply::{self, ApplyOptions};

use crate::cli::{DestroyArgs, GlobalArgs};
use crate::commands::leftover;
use crate::confirm::confirm;
use crate::exit::{ExitStatus, Reported};
use crate::interrupt;
use crate::printer::Printer;
use crate::progress::Progress;
use crate::session::Session;

pub async fn run(printer: &Printer, global: &GlobalArgs, args: &DestroyArgs) -> anyhow::Result<ExitStatus> {
    let session = Session::open_to_change(printer, global, "infra destroy").await?;
    let observed = session.observe().await?;
    let plan = plan::plan_destroy(&session.fleet.name, "docker", &observed, args.volumes);
    let kept: Vec<String> = plan.kept.iter().map(|k| format!("{} {}", k.key.kind, k.key.name)).collect();
    if plan.is_empty() {
        printer.data(&format!(
            "Nothing to destroy: deployment \"{}\" owns no containers or networks.\n",
            session.fleet.name
        ))?;
        if !kept.is_empty() {
            printer.data(&format!("Kept (data; remove with --volumes): {}\n", kept.join(", ")))?;
        }
        return Ok(ExitStatus::Success);
    }
    let items: Vec<String> = plan.steps.iter().map(|s| format!("delete {} {}", s.key.kind, s.key.name)).collect();
    confirm(args.yes, &format!("destroy deployment \"{}\"", session.fleet.name), &items)?;
    let progress = Progress::new(printer);
    let options = ApplyOptions { health_deadline: Duration::from_secs(60), gate: None };
    let cancel = interrupt::token();
    let report = {
        let _graceful = interrupt::graceful();
        apply::apply(&session.engines, &plan, &options, &cancel, &|event| progress.step(&event)).await?
    };
    progress.finish();
    let command = if args.volumes { "infra destroy --volumes" } else { "infra destroy" };
    printer.data(&format!("Destroyed {} object(s) of \"{}\".\n", report.done.len(), session.fleet.name))?;
    if !kept.is_empty() {
        printer.data(&format!("Kept (data; remove with --volumes): {}\n", kept.join(", ")))?;
    } else if args.volumes
        && report.not_started.is_empty()
        && report.left.iter().all(|l| l.key.kind != orchestrator::docker::KIND_VOLUME)
    {
        printer.data("Data volumes were deleted (--volumes).\n")?;
    }
    leftover::print(printer, &report.left, command);
    if cancel.is_cancelled() {
        let not_started: Vec<&str> = report.not_started.iter().map(|k| k.name.as_str()).collect();
        printer.error(&format!(
            "interrupted: {} object(s) removed; {} not started{}",
            report.done.len(),
            not_started.len(),
            if not_started.is_empty() { String::new() } else { format!(" ({})", not_started.join(", ")) }
        ));
        printer.hint(&format!(
            "no removal was cut half-way; run `rivetctl {command}` again to finish, or `rivetctl infra up` to bring the deployment back"
        ));
        return Ok(ExitStatus::Interrupted);
    }
    if !report.left.is_empty() {
        return Err(Reported.into());
    }
    Ok(ExitStatus::Success)
}
