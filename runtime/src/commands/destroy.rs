//! `rivetctl infra destroy`: remove what the deployment owns; keep data unless --volumes.

use std::time::Duration;

use orchestrator::plan;
use targets::docker::apply::{self, ApplyOptions};

use crate::cli::{DestroyArgs, GlobalArgs};
use crate::confirm::confirm;
use crate::exit::ExitStatus;
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
    apply::apply(&session.engines, &plan, &options, &|event| progress.step(&event)).await?;
    progress.finish();
    printer.data(&format!("Destroyed {} object(s) of \"{}\".\n", plan.steps.len(), session.fleet.name))?;
    if kept.is_empty() {
        if args.volumes {
            printer.data("Data volumes were deleted (--volumes).\n")?;
        }
    } else {
        printer.data(&format!("Kept (data; remove with --volumes): {}\n", kept.join(", ")))?;
    }
    Ok(ExitStatus::Success)
}
