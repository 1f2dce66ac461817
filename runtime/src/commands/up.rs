//! `rivetctl infra up`: build what is needed, apply the plan, wait until healthy.

use std::collections::BTreeMap;
use std::time::Duration;

use orchestrator::plan::{self, Action, PlanOptions, RenderOptions, render_text};
use serde::Serialize;
use targets::docker::apply::{self, ApplyOptions, NEXT_SUFFIX};

use crate::cli::{GlobalArgs, UpArgs};
use crate::confirm::confirm;
use crate::exit::ExitStatus;
use crate::printer::Printer;
use crate::progress::Progress;
use crate::session::Session;
use crate::{images, state};

/// The final line of `up` in `--output json`.
#[derive(Serialize)]
struct UpDocument {
    #[serde(rename = "type")]
    kind: &'static str,
    deployment: String,
    changed: bool,
    summary: BTreeMap<&'static str, usize>,
    failures: Vec<FailureDocument>,
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
    let report = apply::apply(&session.engines, &plan, &options, &|event| progress.step(&event)).await?;
    progress.finish();
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
            elapsed_ms: progress.elapsed().as_millis(),
            api_calls: session.api_calls(),
        })?;
    }
    if report.failures.is_empty() {
        // What the agents run now, for `rollback` later.
        for node in session.fleet.nodes.iter().filter(|n| !n.agents.is_empty()) {
            let _ = crate::update::rollback::remember(
                &state::dir(&session.project),
                &node.name,
                &session.fleet.images[0].reference,
            );
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
