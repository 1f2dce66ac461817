//! What an update prints: the dry-run schedule, progress while it runs (a line per node on
//! a terminal, a line per event in CI, JSON Lines with `--output json`), and the final
//! table per node.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Instant;

use orchestrator::rollout::{InstanceSpec, NodeState, Policy, Rollout, Status};
use serde::Serialize;

use super::driver::Change;
use crate::printer::Printer;

/// The schedule of a rollout: batches, order, how many agents stay up at each step.
pub fn dry_run(
    specs: &[InstanceSpec],
    policy: &Policy,
    total_agents: usize,
    skipped: &[(String, String)],
    datahub: Option<&str>,
) -> String {
    let mut out = String::new();
    // Batches count agents: a unit serving several agents weighs as many (the machine's own
    // batching, `Rollout::new`).
    let weights: Vec<usize> = specs.iter().map(InstanceSpec::weight).collect();
    let batches = policy.batches_of(&weights);
    let _ = writeln!(
        out,
        "Rollout: {} of {total_agents} agents on {} node(s); max_parallel {}, canary {}{}, failure_action {}.",
        specs.len(),
        specs.iter().map(|s| s.node.as_str()).collect::<std::collections::BTreeSet<_>>().len(),
        policy.max_parallel,
        policy.canary,
        if policy.approve { " (pause for approval)" } else { "" },
        match policy.failure_action {
            orchestrator::config::model::FailureAction::Rollback => "rollback",
            orchestrator::config::model::FailureAction::Pause => "pause",
            orchestrator::config::model::FailureAction::Continue => "continue",
        }
    );
    if let Some(datahub) = datahub {
        let _ = writeln!(out, "  first: {datahub}");
    }
    for (n, batch) in batches.iter().enumerate() {
        let label = if n == 0 && policy.canary > 0 && batches.len() > 1 { " (canary)" } else { "" };
        let names: Vec<String> = batch.iter().map(|&i| format!("{}/{}", specs[i].node, specs[i].agent)).collect();
        let down: usize = batch.iter().map(|&i| weights[i]).sum();
        let _ = writeln!(
            out,
            "  batch {}{label}: {}  — {} of {total_agents} agents stay up",
            n + 1,
            names.join(", "),
            total_agents.saturating_sub(down)
        );
    }
    if specs.is_empty() {
        let _ = writeln!(out, "  nothing to roll out: every agent in scope already runs this revision.");
    }
    for (node, reason) in skipped {
        let _ = writeln!(out, "  skipped node {node}: {reason}");
    }
    out
}

#[derive(Serialize)]
struct InstanceEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    elapsed_ms: u128,
    node: &'a str,
    agent: &'a str,
    state: &'static str,
    detail: Option<&'a str>,
}

/// Reports instance changes and remembers when each node started and settled.
pub struct Live<'a> {
    printer: &'a Printer,
    start: Instant,
    times: Mutex<BTreeMap<String, (Instant, Instant)>>,
}

impl<'a> Live<'a> {
    pub fn new(printer: &'a Printer) -> Self {
        Live { printer, start: Instant::now(), times: Mutex::new(BTreeMap::new()) }
    }

    pub fn changes(&self, changes: &[Change]) {
        let now = Instant::now();
        for change in changes {
            {
                let mut times = self.times.lock().expect("times");
                let entry = times.entry(change.node.clone()).or_insert((now, now));
                entry.1 = now;
            }
            if self.printer.json() {
                let _ = self.printer.json_line(&InstanceEvent {
                    kind: "instance",
                    elapsed_ms: self.start.elapsed().as_millis(),
                    node: &change.node,
                    agent: &change.agent,
                    state: change.state.as_str(),
                    detail: change.detail.as_deref(),
                });
            } else {
                let detail = change.detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default();
                self.printer.info(&format!(
                    "[{:>6.1}s] {}/{}: {}{detail}",
                    self.start.elapsed().as_secs_f64(),
                    change.node,
                    change.agent,
                    change.state.as_str()
                ));
            }
        }
    }

    fn node_time(&self, node: &str) -> Option<f64> {
        self.times.lock().expect("times").get(node).map(|(a, b)| b.duration_since(*a).as_secs_f64())
    }
}

#[derive(Debug, Serialize)]
struct NodeResult {
    node: String,
    previous: String,
    new: String,
    result: String,
    seconds: Option<f64>,
    /// The agents' image before and after (after: only when done), and their versions.
    previous_image: Option<String>,
    new_image: Option<String>,
    previous_version: Option<String>,
    new_version: Option<String>,
}

#[derive(Serialize)]
struct ResultDocument {
    #[serde(rename = "type")]
    kind: &'static str,
    status: String,
    failures: usize,
    nodes: Vec<NodeResult>,
    skipped: Vec<(String, String)>,
}

fn result_of(state: NodeState) -> &'static str {
    match state {
        NodeState::Done => "done",
        NodeState::RolledBack => "rolled back",
        NodeState::Failed => "failed",
        NodeState::Pending | NodeState::Shipped => "untouched",
        _ => "interrupted",
    }
}

/// The final table per node (or the JSON result line).
pub fn finish(
    printer: &Printer,
    live: &Live<'_>,
    machine: &Rollout,
    status: &str,
    revision: &str,
    previous: &[(String, String)],
    skipped: &[(String, String)],
) -> Result<(), crate::printer::StdoutError> {
    let short = |r: &str| r.chars().take(12).collect::<String>();
    let nodes: Vec<NodeResult> = machine
        .nodes()
        .into_iter()
        .map(|n| {
            let spec = &machine.instances()[n.instances[0]].spec;
            let done = n.state == NodeState::Done;
            NodeResult {
                previous: previous.iter().find(|(node, _)| *node == n.node).map_or("-".into(), |(_, r)| short(r)),
                new: if done { short(revision) } else { "-".into() },
                result: result_of(n.state).into(),
                seconds: live.node_time(&n.node),
                previous_image: Some(spec.from_image.clone()),
                new_image: done.then(|| spec.to_image.clone()),
                previous_version: spec.from_version.clone(),
                new_version: if done { spec.to_version.clone() } else { None },
                node: n.node,
            }
        })
        .collect();
    if printer.json() {
        return printer.json_line(&ResultDocument {
            kind: "result",
            status: status.into(),
            failures: machine.failures(),
            nodes,
            skipped: skipped.to_vec(),
        });
    }
    printer.data(&table(&nodes, skipped))
}

/// What changed on a node whose revision stayed the same (a rebuilt dirty tree, or a
/// changed build input): the version and the image, so the row shows the rollout did
/// something.
fn same_revision_change(n: &NodeResult) -> Option<String> {
    let new_image = n.new_image.as_deref()?;
    if n.previous != n.new {
        return None;
    }
    let previous_image = n.previous_image.as_deref().unwrap_or("-");
    let mut parts = Vec::new();
    if n.previous_version != n.new_version {
        let version = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        parts.push(format!("version {} → {}", version(&n.previous_version), version(&n.new_version)));
    }
    if previous_image != new_image {
        // The repository once when both images share it: `rivetos-agent:abc → :def`.
        let tail = match (previous_image.rsplit_once(':'), new_image.rsplit_once(':')) {
            (Some((a, _)), Some((b, tag))) if a == b => format!(":{tag}"),
            _ => new_image.to_string(),
        };
        parts.push(format!("image {previous_image} → {tail}"));
    }
    if parts.is_empty() {
        parts.push("same revision and image: only the configuration changed".into());
    }
    Some(parts.join(", "))
}

/// The final table.
fn table(nodes: &[NodeResult], skipped: &[(String, String)]) -> String {
    let mut out = format!("{:<12} {:<14} {:<14} {:<12} {:>8}\n", "NODE", "PREVIOUS", "NEW", "RESULT", "TIME");
    for n in nodes {
        let time = n.seconds.map_or("-".into(), |s| format!("{s:.1}s"));
        out.push_str(&format!("{:<12} {:<14} {:<14} {:<12} {:>8}\n", n.node, n.previous, n.new, n.result, time));
        if let Some(change) = same_revision_change(n) {
            out.push_str(&format!("{:<12} {change}\n", ""));
        }
    }
    for (node, reason) in skipped {
        out.push_str(&format!("{node:<12} {:<14} {:<14} {:<12} {:>8}  ({reason})\n", "-", "-", "skipped", "-"));
    }
    out
}

/// A word for a machine status.
pub fn status_word(status: Status) -> &'static str {
    match status {
        Status::Running => "running",
        Status::AwaitingApproval => "awaiting approval",
        Status::Paused => "paused",
        Status::Interrupted => "interrupted",
        Status::Succeeded => "succeeded",
        Status::RolledBack => "rolled back",
        Status::Failed => "failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(previous: &str, new: &str, images: (&str, Option<&str>), versions: (&str, &str)) -> NodeResult {
        NodeResult {
            node: "n1".into(),
            previous: previous.into(),
            new: new.into(),
            result: if images.1.is_some() { "done" } else { "rolled back" }.into(),
            seconds: Some(4.25),
            previous_image: Some(images.0.into()),
            new_image: images.1.map(Into::into),
            previous_version: Some(versions.0.into()),
            new_version: Some(versions.1.into()),
        }
    }

    #[test]
    fn the_same_revision_shows_what_changed() {
        let rows =
            [row("b468875d5b67", "b468875d5b67", ("rivetos-agent:abc", Some("rivetos-agent:def")), ("0.1.0", "0.1.1"))];
        let text = table(&rows, &[]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], "n1           b468875d5b67   b468875d5b67   done             4.2s");
        assert_eq!(lines[2], "             version 0.1.0 → 0.1.1, image rivetos-agent:abc → :def");

        // Only the image (same version); another repository is named in full.
        let rows = [row("r", "r", ("a:1", Some("b:2")), ("1", "1"))];
        assert!(table(&rows, &[]).contains("image a:1 → b:2\n"), "{}", table(&rows, &[]));
        let rows = [row("r", "r", ("a:1", Some("a:1")), ("1", "1"))];
        assert!(table(&rows, &[]).contains("only the configuration changed"));
    }

    #[test]
    fn different_revisions_or_unfinished_nodes_add_no_line() {
        let rows = [
            row("8b26fcc642ac", "9c1d0e77aa12", ("a:1", Some("a:2")), ("1", "2")),
            row("8b26fcc642ac", "-", ("a:1", None), ("1", "2")),
        ];
        assert_eq!(table(&rows, &[]).lines().count(), 3, "{}", table(&rows, &[]));
    }

    #[test]
    fn a_dry_run_counts_max_parallel_in_agents_of_multi_agent_units() {
        let spec = |node: &str, agents: &[&str]| InstanceSpec {
            node: node.into(),
            agent: agents.join("+"),
            agents: if agents.len() > 1 { agents.iter().map(|a| a.to_string()).collect() } else { Vec::new() },
            from_image: "a:1".into(),
            to_image: "a:2".into(),
            from_version: None,
            to_version: None,
        };
        // A node serving two agents, then two nodes serving one each.
        let specs = [spec("n1", &["a", "b"]), spec("n2", &["c"]), spec("n3", &["d"])];
        let policy = Policy {
            max_parallel: 2,
            canary: 1,
            approve: false,
            min_healthy_time_ms: 0,
            healthy_deadline_ms: 1000,
            progress_deadline_ms: 1000,
            stop_grace_ms: 1000,
            failure_action: orchestrator::config::model::FailureAction::Rollback,
            max_failure_ratio: 0.0,
        };
        let text = dry_run(&specs, &policy, 4, &[], None);
        let batches: Vec<&str> = text.lines().filter(|l| l.trim_start().starts_with("batch")).collect();
        assert_eq!(
            batches,
            ["  batch 1 (canary): n1/a+b  — 2 of 4 agents stay up", "  batch 2: n2/c, n3/d  — 2 of 4 agents stay up",],
            "{text}"
        );
    }
}
