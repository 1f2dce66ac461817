//! `rivetctl infra destroy`: remove what the deployment owns; keep data unless --volumes.
//!
//! Every step that can run runs: an object the target refuses to remove does not keep the
//! others (the data asked for with `--volumes` included) from being removed; what is left is
//! listed with the target's reason and a remedy, and the command exits 1. With `--volumes`
//! the deployment's state on the target (lock, journal, history) is data too and goes.
//! Ctrl-C stops after the removals in flight.

use orchestrator::plan::{self, PlanOptions};
use orchestrator::port::{Port, Target};
use targets::factory::Visit;

use crate::cli::{DestroyArgs, GlobalArgs};
use crate::commands::leftover;
use crate::confirm::confirm;
use crate::execute::execute;
use crate::exit::{ExitStatus, Reported};
use crate::interrupt;
use crate::printer::Printer;
use crate::progress::Progress;
use crate::session::{self, Context, Held, state_error, target_error};

pub async fn run(printer: &Printer, global: &GlobalArgs, args: &DestroyArgs) -> anyhow::Result<ExitStatus> {
    let ctx = session::load(printer, global, "infra destroy").await?;
    session::connect(&ctx, None, Destroy { printer, ctx: &ctx, args }).await?
}

struct Destroy<'a> {
    printer: &'a Printer,
    ctx: &'a Context,
    args: &'a DestroyArgs,
}

impl Visit for Destroy<'_> {
    type Output = anyhow::Result<ExitStatus>;

    async fn visit<T: Port>(self, target: &T) -> Self::Output {
        let (printer, ctx, args) = (self.printer, self.ctx, self.args);
        let store = target.store();
        session::locked(printer, ctx, store, "infra destroy", async |held| {
            destroy(printer, ctx, target, held, args).await
        })
        .await
    }
}

/// `infra destroy` on a connected target.
pub async fn destroy<T: Port>(
    printer: &Printer,
    ctx: &Context,
    target: &T,
    held: &Held<'_, T::Store>,
    args: &DestroyArgs,
) -> anyhow::Result<ExitStatus> {
    let name = &ctx.fleet.name;
    crate::update::refuse_while_rolling_out(held)?;
    let observed = target.observe().await.map_err(target_error)?;
    let options = PlanOptions { delete_data: args.volumes, ..ctx.plan_options() };
    let plan = plan::plan_destroy_with::<<T as Target>::Payload>(name, target.kind(), &observed, options);
    let kept: Vec<String> = plan.kept.iter().map(|k| format!("{} {}", k.key.kind, k.key.name)).collect();
    if plan.is_empty() {
        if args.volumes {
            held.destroy_state().await.map_err(state_error)?;
        }
        printer.data(&format!("Nothing to destroy: deployment \"{name}\" owns no containers or networks.\n"))?;
        if !kept.is_empty() {
            keep(printer, target, &plan.kept).await?;
            printer.data(&format!("Kept (data; remove with --volumes): {}\n", kept.join(", ")))?;
        }
        return Ok(ExitStatus::Success);
    }
    let items: Vec<String> = plan.steps.iter().map(|s| format!("delete {} {}", s.key.kind, s.key.name)).collect();
    confirm(args.yes, &format!("destroy deployment \"{name}\""), &items)?;
    let progress = Progress::new(printer);
    let options = ctx.execute_options();
    let cancel = interrupt::token();
    let report = {
        let _graceful = interrupt::graceful();
        execute(target, &plan, &options, held, &cancel, &|event| progress.step(&event)).await.map_err(target_error)?
    };
    progress.finish();
    let command = if args.volumes { "infra destroy --volumes" } else { "infra destroy" };
    printer.data(&format!("Destroyed {} object(s) of \"{name}\".\n", report.done.len()))?;
    if args.volumes && !cancel.is_cancelled() {
        // The deployment's own documents (lock, journal, history) are data too.
        held.destroy_state().await.map_err(state_error)?;
    }
    let data_left = report.left.iter().any(|l| plan.steps.iter().any(|s| s.key == l.key && s.stateful));
    if !kept.is_empty() {
        if !cancel.is_cancelled() {
            keep(printer, target, &plan.kept).await?;
        }
        printer.data(&format!("Kept (data; remove with --volumes): {}\n", kept.join(", ")))?;
    } else if args.volumes && report.not_started.is_empty() && !data_left {
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

/// Has the target put the data it keeps at rest (a Proxmox datahub container stopped), and
/// says what it did.
async fn keep<T: Port>(
    printer: &Printer,
    target: &T,
    kept: &[orchestrator::resource::ObservedResource],
) -> anyhow::Result<()> {
    for line in target.keep(kept).await.map_err(target_error)? {
        printer.info(&line);
    }
    Ok(())
}
