//! Recording what a rollout finished on, in the rollback history. Every path that ends a
//! drive (a plain `update`, `update --resume`, `rollback`) records from the machine's final
//! instance states, so "the previous revision" is never computed from a stale record:
//! `Done` → the new image became current on the node; failed, reverted, or left untouched
//! by a rollout that was rolled back → the new image is rejected there. Pruning old images
//! follows a successful update.

use std::collections::BTreeMap;

use orchestrator::port::{Artifacts, Port};
use orchestrator::rollout::{Instance, InstanceState, Rollout, Status};

use super::history::{self, ImageRecord};
use super::journal::{Journal, Kind};
use super::kept;
use crate::printer::Printer;

/// What one image became on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeOutcome {
    pub node: String,
    pub image: String,
    /// The version the rollout expected (the image's label is preferred when recording).
    pub version: Option<String>,
    /// An instance passed its gate on the image: it is current.
    pub current: bool,
    /// Why the image was rejected on the node, if it was.
    pub rejected: Option<String>,
}

fn rejection(status: Status, instances: &[&Instance]) -> Option<String> {
    if let Some(failed) = instances.iter().find(|i| i.failed || i.state == InstanceState::RevertFailed) {
        let why = failed.last_error.as_deref().unwrap_or("failed its health gate");
        return Some(format!("{}: {why}", failed.spec.agent));
    }
    if instances.iter().any(|i| i.state == InstanceState::RolledBack) {
        return Some("rolled back by its rollout after another agent failed".into());
    }
    let untouched = instances.iter().any(|i| i.state == InstanceState::Pending);
    match status {
        Status::RolledBack if untouched => Some("its rollout was rolled back before it reached this node".into()),
        Status::Failed if untouched => Some("its rollout failed before it reached this node".into()),
        _ => None,
    }
}

/// Per node and new image, what the machine's instances finished on. Instances that keep
/// their image (only their config changed) say nothing about it and are left out.
pub fn outcomes(machine: &Rollout) -> Vec<NodeOutcome> {
    let mut groups: BTreeMap<(String, String), Vec<&Instance>> = BTreeMap::new();
    for instance in machine.instances().iter().filter(|i| i.spec.from_image != i.spec.to_image) {
        groups.entry((instance.spec.node.clone(), instance.spec.to_image.clone())).or_default().push(instance);
    }
    groups
        .into_iter()
        .map(|((node, image), instances)| NodeOutcome {
            version: instances[0].spec.to_version.clone(),
            current: instances.iter().any(|i| i.state == InstanceState::Done),
            rejected: rejection(machine.status(), &instances),
            node,
            image,
        })
        .filter(|o| o.current || o.rejected.is_some())
        .collect()
}

/// The revision and version labels of an image on a node.
pub async fn labels<T: Artifacts>(target: &T, node: &str, image: &str) -> (Option<String>, Option<String>) {
    match target.image_facts(node, image).await {
        Some(facts) => (facts.revision, facts.version),
        None => (None, None),
    }
}

/// Records what `machine` finished on (`by`: the command; `revision`: the source revision
/// of the new images when it is known, as for an update).
pub async fn rollout<T: Port>(target: &T, machine: &Rollout, by: &str, revision: Option<&str>) -> anyhow::Result<()> {
    let mut records = Vec::new();
    for outcome in outcomes(machine) {
        let (label, version) = labels(target, &outcome.node, &outcome.image).await;
        // The rollout's own revision, else the image's label (`unknown` is the example
        // Dockerfile's default, not a revision); else what an earlier record of the image knew.
        let revision = revision.map(str::to_string).or(label.filter(|l| l != "unknown"));
        let version = version.or_else(|| outcome.version.clone());
        let make = |what: &str| ImageRecord::now(&outcome.image, revision.clone(), version.clone(), by, what);
        records.push((
            outcome.node.clone(),
            outcome.current.then(|| make("passed its health gate")),
            outcome.rejected.as_deref().map(make),
        ));
    }
    if records.is_empty() {
        return Ok(());
    }
    history::update(target.store(), |history| {
        for (node, current, rejected) in records {
            let node = history.node_mut(&node);
            if let Some(record) = current {
                node.made_current(record);
            }
            if let Some(record) = rejected {
                node.rejected(record);
            }
        }
    })
    .await
}

/// After a drive ended (finished, paused, awaiting approval or interrupted): records what
/// its instances finished on, and after a successful update removes the images beyond the
/// newest `keep_images`. Problems are printed; the rollout's own result stands.
pub async fn finished<T: Port>(
    printer: &Printer,
    target: &T,
    machine: &Rollout,
    journal: &Journal,
    keep_images: Option<usize>,
) {
    // An update's (or an `infra up`'s) images are of the revision it resolved; a
    // rollback's, of whatever built them.
    let known = journal.kind.follows_config().then_some(journal.revision.as_str());
    if let Err(err) = rollout(target, machine, journal.kind.as_str(), known).await {
        printer.error(&format!("the rollout's result could not be recorded for `rollback`: {err:#}"));
        printer.hint("`rollback` may not know what ran before: `rivetctl rollback --to REV` names a revision");
        return;
    }
    let Some(keep) = keep_images.filter(|_| journal.kind == Kind::Update && machine.status() == Status::Succeeded)
    else {
        return;
    };
    // The previous revisions' images stay for rollbacks: the newest `keep_images`.
    for node in &journal.nodes {
        match kept::prune(target.store(), target, node, keep).await {
            Ok(removed) if !removed.is_empty() => {
                printer.info(&format!("node {node}: removed old images {}", removed.join(", ")))
            }
            Ok(_) => {}
            Err(err) => printer.info(&format!("node {node}: could not prune old images: {err:#}")),
        }
    }
}

/// Records `image` (of source `revision`) as current on `nodes` after `infra up` applied
/// it and it is healthy.
pub async fn up<T: Port>(target: &T, nodes: &[&str], image: &str, revision: &str) -> anyhow::Result<()> {
    let mut records = Vec::new();
    for node in nodes {
        let version = labels(target, node, image).await.1;
        let record = ImageRecord::now(image, Some(revision.to_string()), version, "infra up", "applied and healthy");
        records.push((node.to_string(), record));
    }
    history::update(target.store(), |history| {
        for (node, record) in records {
            let node = history.node_mut(&node);
            // A repeated `infra up` of the running image keeps its place and first record.
            let running = node.deployed.last().is_some_and(|r| r.image == record.image);
            if !running || node.rejection(&record.image).is_some() {
                node.made_current(record);
            }
        }
    })
    .await
}

#[cfg(test)]
#[path = "record_tests.rs"]
mod tests;
