//! `rivetctl infra up`: build what is needed, apply the plan, wait until healthy.
//!
//! The plan is executed in two parts (issue 8, section 4):
//! 1. Everything but the changes of running agents goes through the plan executor
//!    ([`crate::execute`]): infrastructure, the datahub and the migrate step, agents that are
//!    only created (in parallel, at most `deployment.apply.max_parallel` at once, so a first
//!    `up` is as fast as before), drift restarts, and removals.
//! 2. Agents that run and whose spec changed are replaced by the rollout engine, as `update`
//!    replaces them: canary first, `deployment.update.max_parallel` agents at a time, the same
//!    health gate, rollback on failure, exit 3; two instances of one agent never run at once.
//!
//! Part 1 comes first so the datahub and the migrate step are current before any running
//! agent changes, the order `update` keeps.

use std::collections::BTreeMap;
use std::sync::Arc;

use orchestrator::plan::{self, Action, RenderOptions, render_text};
use orchestrator::port::{Port, Provide};
use serde::Serialize;
use targets::factory::Visit;

use crate::cli::{GlobalArgs, UpArgs};
use crate::commands::leftover;
use crate::confirm::confirm;
use crate::execute::{ExecuteReport, execute};
use crate::exit::{ExitStatus, Reported};
use crate::printer::Printer;
use crate::progress::Progress;
use crate::session::{self, Context, Held, target_error};
use crate::update::journal::Kind;
use crate::{images, interrupt};

/// The final line of `up` in `--output json`.
#[derive(Serialize)]
struct UpDocument {
    #[serde(rename = "type")]
    kind: &'static str,
    deployment: String,
    changed: bool,
    summary: BTreeMap<&'static str, usize>,
    failures: Vec<FailureDocument>,
    /// Objects that delete steps could not remove.
    left: Vec<leftover::LeftDocument>,
    /// Stopped by Ctrl-C/SIGTERM after the steps in flight.
    interrupted: bool,
    /// Steps not started because of the stop request.
    not_started: Vec<String>,
    /// Running agents handed to the rollout engine (its report precedes this line).
    rolled_out: Vec<String>,
    elapsed_ms: u128,
    api_calls: usize,
}

#[derive(Serialize)]
struct FailureDocument {
    name: String,
    node: String,
    reason: String,
    /// Always false: a step of the executor replaces nothing that keeps serving (running
    /// agents that change go through the rollout, which reports its own rollbacks).
    previous_kept: bool,
    logs: Vec<String>,
}

pub async fn run(printer: &Printer, global: &GlobalArgs, args: &UpArgs) -> anyhow::Result<ExitStatus> {
    let mut ctx = session::load(printer, global, "infra up").await?;
    ctx.kubernetes.force_conflicts = args.kubernetes.force_conflicts;
    ctx.kubernetes.skip_unserved = args.kubernetes.skip_unserved;
    ctx.kubernetes.no_push = args.kubernetes.no_push;
    ctx.kubernetes.refuse_conflicts = true;
    session::connect(&ctx, None, Up { printer, ctx: &ctx, args }).await?
}

struct Up<'a> {
    printer: &'a Printer,
    ctx: &'a Context,
    args: &'a UpArgs,
}

impl Visit for Up<'_> {
    type Output = anyhow::Result<ExitStatus>;

    async fn visit<T: Port>(self, target: &T) -> Self::Output {
        let (printer, ctx, args) = (self.printer, self.ctx, self.args);
        session::locked(printer, ctx, target.store(), "infra up", async |held| {
            up(printer, ctx, target, held, args).await
        })
        .await
    }
}

/// `infra up` on a connected target.
pub async fn up<T: Port>(
    printer: &Printer,
    ctx: &Context,
    target: &T,
    held: &Held<'_, T::Store>,
    args: &UpArgs,
) -> anyhow::Result<ExitStatus> {
    let fleet = &ctx.fleet;
    if let Some(failed) = crate::update::finish_earlier_up(printer, ctx, target, held).await? {
        return Ok(failed);
    }
    let progress = Progress::new(printer);
    let desired = target.lower(fleet);
    if !args.no_build {
        images::provide(ctx, target, &Provide::OnEachNode, &progress).await?;
    }
    images::check_users(target, &desired).await?;
    let observed = target.observe().await.map_err(target_error)?;
    let plan = plan::plan(&fleet.name, target.kind(), desired, &observed, ctx.plan_options());
    let deployment = fleet.name.clone();
    if plan.is_empty() {
        progress.finish();
        if printer.json() {
            printer.json_line(&UpDocument {
                kind: "result",
                deployment,
                changed: false,
                summary: BTreeMap::new(),
                failures: Vec::new(),
                left: Vec::new(),
                interrupted: false,
                not_started: Vec::new(),
                rolled_out: Vec::new(),
                elapsed_ms: progress.elapsed().as_millis(),
                api_calls: target.calls(),
            })?;
        } else {
            printer.data(&format!(
                "No changes: deployment \"{deployment}\" matches the configuration ({} objects).\n",
                plan.unchanged
            ))?;
        }
        return Ok(ExitStatus::Success);
    }
    if !printer.json() {
        printer.data(&render_text(&plan, RenderOptions { color: printer.color_out }))?;
    }
    let needs_consent: Vec<String> = plan
        .steps
        .iter()
        .filter(|s| s.is_destructive() || s.action == Action::Delete)
        .map(|s| format!("{} {} {}", s.action.as_str(), s.key.kind, s.key.name))
        .collect();
    confirm(args.yes, "make these destructive changes", &needs_consent)?;
    // Running agents that change go to the rollout engine (the last wave); the rest runs here.
    let (plan, rollout) = plan.split_rollout();
    let options = ctx.execute_options();
    let cancel = interrupt::token();
    let mut report = {
        let _graceful = interrupt::graceful();
        execute(target, &plan, &options, held, &cancel, &|event| progress.step(&event)).await.map_err(target_error)?
    };
    progress.finish();
    let interrupted = cancel.is_cancelled();
    // The rollout is the last wave: it starts only after everything else succeeded.
    let rolls = report.failures.is_empty() && report.left.is_empty() && !interrupted;
    let rolled_out: Vec<String> = rollout.iter().map(|s| s.key.name.clone()).collect();
    if !rolls {
        let waiting = rollout.iter().map(|s| s.key.clone());
        if interrupted { report.not_started.extend(waiting) } else { report.skipped.extend(waiting) }
    }
    let mut summary: BTreeMap<&'static str, usize> = BTreeMap::new();
    for (_, action, _) in &report.done {
        *summary.entry(action.as_str()).or_default() += 1;
    }
    if !rolls {
        return finish(printer, ctx, target, &progress, &report, summary, Vec::new(), interrupted).await;
    }
    if rollout.is_empty() {
        return finish(printer, ctx, target, &progress, &report, summary, Vec::new(), false).await;
    }
    let agents: Vec<Arc<_>> = rollout.iter().filter_map(|s| s.desired.clone()).collect();
    let units = target.units(&agents);
    let status = crate::update::roll_out(printer, ctx, target, held, units, Kind::Up, false).await?;
    if status != ExitStatus::Success {
        // The rollout printed what failed and what was rolled back.
        return Ok(status);
    }
    for step in &rollout {
        *summary.entry(step.action.as_str()).or_default() += 1;
    }
    finish(printer, ctx, target, &progress, &report, summary, rolled_out, false).await
}

/// Reports the executed plan and returns the exit status.
#[allow(clippy::too_many_arguments)]
async fn finish<T: Port>(
    printer: &Printer,
    ctx: &Context,
    target: &T,
    progress: &Progress<'_>,
    report: &ExecuteReport,
    summary: BTreeMap<&'static str, usize>,
    rolled_out: Vec<String>,
    interrupted: bool,
) -> anyhow::Result<ExitStatus> {
    if printer.json() {
        printer.json_line(&UpDocument {
            kind: "result",
            deployment: ctx.fleet.name.clone(),
            changed: true,
            summary: summary.clone(),
            failures: report
                .failures
                .iter()
                .map(|f| FailureDocument {
                    name: f.key.name.clone(),
                    node: f.key.node.clone(),
                    reason: f.reason.clone(),
                    previous_kept: false,
                    logs: f.logs.clone(),
                })
                .collect(),
            left: report.left.iter().map(|l| leftover::document(l, "infra up")).collect(),
            interrupted,
            not_started: report.not_started.iter().map(|k| k.name.clone()).collect(),
            rolled_out,
            elapsed_ms: progress.elapsed().as_millis(),
            api_calls: target.calls(),
        })?;
    }
    if interrupted {
        return Ok(say_interrupted(printer, report));
    }
    if report.failures.is_empty() && !report.left.is_empty() {
        leftover::print(printer, &report.left, "infra up");
        return Err(Reported.into());
    }
    if report.failures.is_empty() {
        if let Err(err) = record_applied(ctx, target).await {
            printer.error(&format!("the deployed image could not be recorded for `rollback`: {err:#}"));
        }
        let done: Vec<String> = summary.iter().map(|(a, n)| format!("{n} {a}d")).collect();
        printer.info(&format!(
            "Applied in {:.1}s: {}. Every container is healthy.",
            progress.elapsed().as_secs_f64(),
            done.join(", ")
        ));
        return Ok(ExitStatus::Success);
    }
    for failure in &report.failures {
        printer.error(&format!("{} on node {}: {}", failure.key.name, failure.key.node, failure.reason));
        if !failure.logs.is_empty() && !printer.json() {
            printer.info(&format!("  last {} log lines:", failure.logs.len()));
            for line in &failure.logs {
                printer.info(&format!("    {line}"));
            }
        }
    }
    if !report.skipped.is_empty() {
        printer.info(&format!(
            "Not started because of the failure: {}",
            report.skipped.iter().map(|k| k.name.as_str()).collect::<Vec<_>>().join(", ")
        ));
    }
    Ok(ExitStatus::RolloutFailed)
}

/// Records what the agents run now, for `rollback` later.
async fn record_applied<T: Port>(ctx: &Context, target: &T) -> anyhow::Result<()> {
    let fleet = &ctx.fleet;
    let nodes: Vec<&str> = fleet.nodes.iter().filter(|n| !n.agents.is_empty()).map(|n| n.name.as_str()).collect();
    let image = &fleet.images[0].reference;
    crate::update::record::up(target, &nodes, image, &fleet.revision).await
}

/// What an interrupted `up` did and did not do; the exit status.
fn say_interrupted(printer: &Printer, report: &ExecuteReport) -> ExitStatus {
    leftover::print(printer, &report.left, "infra up");
    let done: Vec<&str> = report.done.iter().map(|(k, _, _)| k.name.as_str()).collect();
    printer.error(&format!(
        "interrupted: {} step(s) finished{}; {} not started{}",
        done.len(),
        if done.is_empty() { String::new() } else { format!(" ({})", done.join(", ")) },
        report.not_started.len(),
        if report.not_started.is_empty() {
            String::new()
        } else {
            format!(" ({})", report.not_started.iter().map(|k| k.name.as_str()).collect::<Vec<_>>().join(", "))
        },
    ));
    for failure in &report.failures {
        printer.info(&format!("  {} on node {}: {}", failure.key.name, failure.key.node, failure.reason));
    }
    printer.hint("no step was cut half-way; run `rivetctl infra up` again to finish");
    ExitStatus::Interrupted
}
