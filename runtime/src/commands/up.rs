//! `rivetctl infra up`: build what is needed, apply the plan, wait until healthy.

use std::collections::BTreeMap;
use std::time::Duration;

use orchestrator::plan::{self, Action, PlanOptions, RenderOptions, render_text};
use serde::Serialize;
use targets::docker::apply::{self, ApplyOptions, NEXT_SUFFIX};

use crate::cli::{GlobalArgs, UpArgs};
use crate::commands::leftover;
use crate::confirm::confirm;
use crate::exit::{ExitStatus, Reported};
use crate::printer::Printer;
use crate::progress::Progress;
use crate::session::Session;
use crate::{images, interrupt, state};

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
    elapsed_ms: u128,
    api_calls: usize,
}

#[derive(Serialize)]
struct FailureDocument {
    name: String,
    node: String,
    reason: String,
    previous_kept: bool,
    logs: Vec<String>,
}

pub async fn run(printer: &Printer, global: &GlobalArgs, args: &UpArgs) -> anyhow::Result<ExitStatus> {
    let session = Session::open_to_change(printer, global, "infra up").await?;
    let progress = Progress::new(printer);
    let desired = session.desired();
    if !args.no_build {
        images::prepare(&session, &progress).await?;
    }
    images::check_users(&session, &desired).await?;
    let observed = session.observe().await?;
    let plan = plan::plan(&session.fleet.name, "docker", desired, &observed, PlanOptions::default());
    let deployment = session.fleet.name.clone();
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
                elapsed_ms: progress.elapsed().as_millis(),
                api_calls: session.api_calls(),
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
        .filter(|s| s.is_destructive() || (s.action == Action::Delete && !s.key.name.ends_with(NEXT_SUFFIX)))
        .map(|s| format!("{} {} {}", s.action.as_str(), s.key.kind, s.key.name))
        .collect();
    confirm(args.yes, "make these destructive changes", &needs_consent)?;
    let options = ApplyOptions {
        health_deadline: Duration::from_millis(session.fleet.health.deadline),
        gate: Some(session.gate_options()),
    };
    let cancel = interrupt::token();
    let report = {
        let _graceful = interrupt::graceful();
        apply::apply(&session.engines, &plan, &options, &cancel, &|event| progress.step(&event)).await?
    };
    progress.finish();
    let interrupted = cancel.is_cancelled();
    let mut summary: BTreeMap<&'static str, usize> = BTreeMap::new();
    for (_, action, _) in &report.done {
        *summary.entry(action.as_str()).or_default() += 1;
    }
    if printer.json() {
        printer.json_line(&UpDocument {
            kind: "result",
            deployment: deployment.clone(),
            changed: true,
            summary: summary.clone(),
            failures: report
                .failures
                .iter()
                .map(|f| FailureDocument {
                    name: f.key.name.clone(),
                    node: f.key.node.clone(),
                    reason: f.reason.clone(),
                    previous_kept: f.previous_kept,
                    logs: f.logs.clone(),
                })
                .collect(),
            left: report.left.iter().map(|l| leftover::document(l, "infra up")).collect(),
            interrupted,
            not_started: report.not_started.iter().map(|k| k.name.clone()).collect(),
            elapsed_ms: progress.elapsed().as_millis(),
            api_calls: session.api_calls(),
        })?;
    }
    if interrupted {
        return Ok(say_interrupted(printer, &report));
    }
    if report.failures.is_empty() && !report.left.is_empty() {
        leftover::print(printer, &report.left, "infra up");
        return Err(Reported.into());
    }
    if report.failures.is_empty() {
        // What the agents run now, for `rollback` later.
        let nodes: Vec<&str> =
            session.fleet.nodes.iter().filter(|n| !n.agents.is_empty()).map(|n| n.name.as_str()).collect();
        let image = &session.fleet.images[0].reference;
        if let Err(err) = crate::update::record::up(
            &state::dir(&session.project),
            &session.engines,
            &nodes,
            image,
            &session.fleet.revision,
        )
        .await
        {
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
        if failure.previous_kept {
            printer.info("  the previous container was kept and is still serving");
        }
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

/// What an interrupted `up` did and did not do; the exit status.
fn say_interrupted(printer: &Printer, report: &apply::ApplyReport) -> ExitStatus {
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
