//! `rivetctl rollback --list`: per node, the images `rollback` can return to, from the
//! rollback history and the images still on the node: revision, version, when it became
//! current (or was rejected), and markers for what runs now, what was rejected and what a
//! plain `rollback` would pick. One JSON line per image with `--output json`.

use std::collections::BTreeSet;

use orchestrator::fleet::Fleet;
use orchestrator::port::Port;
use serde::Serialize;

use super::history::{History, ImageRecord};
use super::{choose, prepare};
use crate::exit::ExitStatus;
use crate::printer::Printer;
use crate::session::target_error;

/// One line of `rollback --list --output json` (docs/output.md).
#[derive(Debug, Serialize)]
struct Candidate {
    node: String,
    image: String,
    revision: Option<String>,
    version: Option<String>,
    /// When it was recorded (RFC 3339), `null` for records of an earlier rivetctl.
    at: Option<String>,
    by: Option<String>,
    outcome: String,
    /// An agent on the node runs it.
    current: bool,
    /// It was rejected on the node: `rollback` picks it only with `--to`.
    rejected: bool,
    /// What `rollback` without `--to` would return the node's agents to.
    rollback_target: bool,
}

fn when(at: Option<&str>) -> String {
    at.and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map_or_else(|| "-".to_string(), |t| t.strftime("%Y-%m-%d %H:%M:%S").to_string())
}

/// The candidates of one node, newest record first.
fn rows(
    node: &str,
    history: &History,
    running: &BTreeSet<String>,
    targets: &BTreeSet<String>,
    present: &[choose::Present],
) -> Vec<Candidate> {
    let node_history = history.node(node);
    let on_node = |image: &str| present.iter().any(|p| p.reference == image);
    let mut out: Vec<Candidate> = node_history
        .newest_first()
        .into_iter()
        .filter(|r| on_node(&r.image) || running.contains(&r.image))
        .map(|r: &ImageRecord| Candidate {
            node: node.to_string(),
            image: r.image.clone(),
            revision: r.revision.clone(),
            version: r.version.clone(),
            at: r.at.clone(),
            by: r.by.clone(),
            outcome: r.outcome.clone(),
            current: running.contains(&r.image),
            rejected: node_history.rejection(&r.image).is_some(),
            rollback_target: targets.contains(&r.image),
        })
        .collect();
    // What runs but was never recorded (deployed before rivetctl kept a history).
    let unrecorded: Vec<&String> = running.iter().filter(|i| !out.iter().any(|c| &c.image == *i)).collect();
    for image in unrecorded {
        let labels = present.iter().find(|p| &p.reference == image);
        out.insert(
            0,
            Candidate {
                node: node.to_string(),
                image: image.clone(),
                revision: labels.and_then(|p| p.revision.clone()),
                version: labels.and_then(|p| p.version.clone()),
                at: None,
                by: None,
                outcome: "not recorded".into(),
                current: true,
                rejected: false,
                rollback_target: false,
            },
        );
    }
    out
}

fn render(candidates: &[Candidate]) -> String {
    let header = format!("{:<10} {:<28} {:<14} {:<10} {}", "NODE", "IMAGE", "REVISION", "VERSION", "WHEN");
    let mut out = format!("{header}\n");
    for c in candidates {
        let mut marks = Vec::new();
        if c.current {
            marks.push("current".to_string());
        }
        if c.rollback_target {
            marks.push("← rollback".to_string());
        }
        if c.rejected {
            marks.push(format!("rejected: {}", c.outcome));
        }
        let revision: String = c.revision.as_deref().unwrap_or("-").chars().take(12).collect();
        out.push_str(
            format!(
                "{:<10} {:<28} {:<14} {:<10} {:<20} {}\n",
                c.node,
                c.image,
                revision,
                c.version.as_deref().unwrap_or("-"),
                when(c.at.as_deref()),
                marks.join(", ")
            )
            .trim_end(),
        );
        out.push('\n');
    }
    out
}

/// Prints the candidates of every node in `names`.
pub async fn run<T: Port>(
    printer: &Printer,
    fleet: &Fleet,
    target: &T,
    names: &[String],
    history: &History,
) -> anyhow::Result<ExitStatus> {
    let repository = &prepare::agent_repository(fleet);
    let mut all = Vec::new();
    for node in names {
        let present = target.stored_images(node, repository).await.map_err(target_error)?;
        let mut running = BTreeSet::new();
        let mut targets = BTreeSet::new();
        for unit in prepare::agent_units(target, fleet, std::slice::from_ref(node)) {
            let Some(current) = target.current(&unit).await.map_err(target_error)? else { continue };
            let id = target.image_facts(node, &current.image).await.and_then(|f| f.id);
            if let Some(chosen) = choose::choose(&history.node(node), &current.image, id.as_deref(), &present, None) {
                targets.insert(chosen.image);
            }
            running.insert(current.image);
        }
        all.extend(rows(node, history, &running, &targets, &present));
    }
    if printer.json() {
        for candidate in &all {
            printer.json_line(candidate)?;
        }
    } else if all.is_empty() {
        printer.data("No recorded images: run `rivetctl infra up` or `rivetctl update` first.\n")?;
    } else {
        printer.data(&render(&all))?;
    }
    Ok(ExitStatus::Success)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::update::history::NodeHistory;

    fn record(image: &str, version: &str, at: &str, outcome: &str) -> ImageRecord {
        ImageRecord {
            image: image.into(),
            revision: Some("47640a6b4cad44eee9fe06cb194536cea9a0e99f-dirty".into()),
            version: Some(version.into()),
            at: Some(at.into()),
            by: Some("update".into()),
            outcome: outcome.into(),
        }
    }

    #[test]
    fn rows_mark_current_rejected_and_the_target_newest_first() {
        let mut node = NodeHistory::default();
        node.made_current(record("agent:aaa", "1.0.0", "2026-12-01T21:00:00Z", "applied and healthy"));
        node.made_current(record("agent:bbb", "2.0.0", "2026-12-01T21:01:00Z", "passed its health gate"));
        node.rejected(record("agent:ccc", "3.0.0", "2026-12-01T21:02:00Z", "a1: health gate expired"));
        node.made_current(record("agent:ddd", "4.0.0", "2026-12-01T21:03:00Z", "passed its health gate"));
        let history = History { version: 2, nodes: std::collections::BTreeMap::from([("n1".to_string(), node)]) };
        let present: Vec<choose::Present> = ["agent:aaa", "agent:bbb", "agent:ccc", "agent:ddd", "agent:other"]
            .iter()
            .map(|r| choose::Present {
                id: r.to_string(),
                reference: r.to_string(),
                revision: None,
                version: None,
                created: 0,
            })
            .collect();
        let running = BTreeSet::from(["agent:ddd".to_string()]);
        let targets = BTreeSet::from(["agent:bbb".to_string()]);
        let text = render(&rows("n1", &history, &running, &targets, &present));
        let expected = "\
NODE       IMAGE                        REVISION       VERSION    WHEN
n1         agent:ddd                    47640a6b4cad   4.0.0      2026-12-01 21:03:00  current
n1         agent:ccc                    47640a6b4cad   3.0.0      2026-12-01 21:02:00  rejected: a1: health gate expired
n1         agent:bbb                    47640a6b4cad   2.0.0      2026-12-01 21:01:00  ← rollback
n1         agent:aaa                    47640a6b4cad   1.0.0      2026-12-01 21:00:00
";
        assert_eq!(text, expected, "\n{text}");
    }
}
