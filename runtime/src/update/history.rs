//! The rollback history (the document `history` in the deployment's state store on the
//! target, `Port::store`): per node, the images this deployment ran in the order they
//! became current, and the images that were rejected there (failed a health gate, or were
//! rolled back by their rollout). `rollback` reads it to find "the previous revision";
//! pruning reads it so that only this deployment's images are ever removed from a shared
//! engine.
//!
//! Every write is a compare-and-swap on the generation read (another run's change is an
//! error, never overwritten), and it is read strictly: a document that cannot be parsed is
//! an error naming it, never an empty history. Documents of the first format (a bare list
//! of images per node, as `images.json` had) are read and rewritten in this one. All of the
//! history's store calls are here.

use std::collections::BTreeMap;

use orchestrator::port::{Document, StateError, StateStore};
use serde::{Deserialize, Serialize};

use crate::exit::hinted;

/// The document's name in the state store.
pub const DOCUMENT: &str = "history";

/// Version of this document's format. Version 1 had no version field: `{"node": ["image", …]}`.
pub const FILE_VERSION: u32 = 2;

/// One image on one node, and what happened to it there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// `repository:tag`, as containers refer to it.
    pub image: String,
    /// The image's `org.opencontainers.image.revision` label.
    pub revision: Option<String>,
    /// The image's `org.opencontainers.image.version` label.
    pub version: Option<String>,
    /// When it was recorded (RFC 3339); `None` for records migrated from the first format.
    pub at: Option<String>,
    /// The command that recorded it: `infra up`, `update`, `rollback`.
    pub by: Option<String>,
    /// What happened: `passed its health gate`, or why it was rejected.
    pub outcome: String,
}

impl ImageRecord {
    /// A record made now.
    pub fn now(image: &str, revision: Option<String>, version: Option<String>, by: &str, outcome: &str) -> Self {
        ImageRecord {
            image: image.to_string(),
            revision,
            version,
            at: Some(jiff::Timestamp::now().to_string()),
            by: Some(by.to_string()),
            outcome: outcome.to_string(),
        }
    }
}

/// What one node ran.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeHistory {
    /// Images in the order they became current: each at most once, the newest last.
    pub deployed: Vec<ImageRecord>,
    /// Images rejected on this node and not healthy there since: each at most once, the
    /// newest last. `rollback` never picks one unless it is named with `--to`.
    pub rejected: Vec<ImageRecord>,
}

impl NodeHistory {
    /// `record.image` became current (it passed its gate, or `infra up` applied it): it
    /// moves to the end of `deployed`, and a rejection of it no longer counts.
    pub fn made_current(&mut self, record: ImageRecord) {
        let record = self.completed(record);
        self.deployed.retain(|r| r.image != record.image);
        self.rejected.retain(|r| r.image != record.image);
        self.deployed.push(record);
    }

    /// `record.image` was rejected on this node (`record.outcome` says why).
    pub fn rejected(&mut self, record: ImageRecord) {
        let record = self.completed(record);
        self.rejected.retain(|r| r.image != record.image);
        self.rejected.push(record);
    }

    /// `record` with the revision and version an earlier record of its image knew, where
    /// it has none (a rollback knows the image, not the source revision that built it).
    fn completed(&self, mut record: ImageRecord) -> ImageRecord {
        let earlier = self.deployed.iter().chain(&self.rejected).filter(|r| r.image == record.image);
        for r in earlier {
            record.revision = record.revision.or_else(|| r.revision.clone());
            record.version = record.version.or_else(|| r.version.clone());
        }
        record
    }

    /// The rejection of `image`, if it was rejected.
    pub fn rejection(&self, image: &str) -> Option<&ImageRecord> {
        self.rejected.iter().find(|r| r.image == image)
    }

    /// Drops every record of `image` (its image was removed from the node).
    pub fn forget(&mut self, image: &str) {
        self.deployed.retain(|r| r.image != image);
        self.rejected.retain(|r| r.image != image);
    }

    /// Every recorded image, newest record first, once each (a rejection after the image
    /// was current counts as its latest record).
    pub fn newest_first(&self) -> Vec<&ImageRecord> {
        let mut all: Vec<(usize, &ImageRecord)> = Vec::new();
        for (position, record) in self.deployed.iter().enumerate() {
            all.push((position, record));
        }
        let offset = self.deployed.len();
        for (position, record) in self.rejected.iter().enumerate() {
            all.retain(|(_, r)| r.image != record.image);
            all.push((offset + position, record));
        }
        // Within each list the order is the record order; across them, the time.
        all.sort_by(|(pa, a), (pb, b)| b.at.cmp(&a.at).then(pb.cmp(pa)));
        all.into_iter().map(|(_, r)| r).collect()
    }
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub version: u32,
    pub nodes: BTreeMap<String, NodeHistory>,
}

impl History {
    /// A node's history (empty when nothing was recorded).
    pub fn node(&self, node: &str) -> NodeHistory {
        self.nodes.get(node).cloned().unwrap_or_default()
    }

    /// A node's history, to change.
    pub fn node_mut(&mut self, node: &str) -> &mut NodeHistory {
        self.nodes.entry(node.to_string()).or_default()
    }
}

fn unreadable(location: &str, why: impl std::fmt::Display) -> anyhow::Error {
    hinted(
        format!("the rollback history ({location}) is unreadable: {why}"),
        format!(
            "it is the document \"{DOCUMENT}\" there: remove it (`rollback` then picks the newest older image on each node, and the next rollout starts a new history)"
        ),
    )
}

/// Parses the document's body (either format).
pub fn parse(location: &str, text: &str) -> anyhow::Result<History> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| unreadable(location, e))?;
    let Some(version) = value.get("version") else {
        // The first format: node → images, oldest first, no outcomes.
        let old: BTreeMap<String, Vec<String>> = serde_json::from_value(value)
            .map_err(|e| unreadable(location, format!("not a history of either format: {e}")))?;
        let nodes = old
            .into_iter()
            .map(|(node, images)| {
                let deployed = images
                    .into_iter()
                    .map(|image| ImageRecord {
                        image,
                        revision: None,
                        version: None,
                        at: None,
                        by: None,
                        outcome: "recorded by an earlier rivetctl".into(),
                    })
                    .collect();
                (node, NodeHistory { deployed, rejected: Vec::new() })
            })
            .collect();
        return Ok(History { version: FILE_VERSION, nodes });
    };
    if version.as_u64() != Some(u64::from(FILE_VERSION)) {
        return Err(hinted(
            format!("the rollback history ({location}) has format version {version}, expected {FILE_VERSION}"),
            "it was written by another version of rivetctl: use that one, or remove the document",
        ));
    }
    serde_json::from_value(value).map_err(|e| unreadable(location, e))
}

/// The document's body: always the current format.
pub fn render(history: &History) -> String {
    let history = History { version: FILE_VERSION, nodes: history.nodes.clone() };
    serde_json::to_string_pretty(&history).expect("the history serialises")
}

fn store_error(location: &str, err: StateError) -> anyhow::Error {
    match err {
        StateError::Conflict { .. } => hinted(
            format!("another run changed the rollback history ({location}) while this one updated it"),
            "`rivetctl lock status` names who holds the deployment; run the command again when it is done",
        ),
        StateError::Target(err) => {
            let message = format!("the rollback history ({location}) cannot be reached: {}", err.message);
            match err.hint {
                Some(hint) => hinted(message, hint),
                None => anyhow::anyhow!(message),
            }
        }
    }
}

/// Reads the history and its generation: empty (generation `None`) when there is none, an
/// error when it cannot be read.
pub async fn read_stored<S: StateStore>(store: &S) -> anyhow::Result<(History, Option<u64>)> {
    let location = store.location();
    let documents = store.load().await.map_err(|e| store_error(&location, e))?;
    from_documents(&documents, &location)
}

/// The history among documents already loaded (the lock's acquiring load), and its
/// generation.
pub fn from_documents(
    documents: &BTreeMap<String, Document>,
    location: &str,
) -> anyhow::Result<(History, Option<u64>)> {
    match documents.get(DOCUMENT) {
        Some(document) => Ok((parse(location, &document.body)?, Some(document.generation))),
        None => Ok((History { version: FILE_VERSION, ..History::default() }, None)),
    }
}

/// Reads the history: empty when there is none, an error when it cannot be read.
pub async fn read<S: StateStore>(store: &S) -> anyhow::Result<History> {
    Ok(read_stored(store).await?.0)
}

/// Reads, changes and writes the history, comparing against the generation it read.
pub async fn update<S: StateStore>(store: &S, change: impl FnOnce(&mut History)) -> anyhow::Result<()> {
    let (mut history, generation) = read_stored(store).await?;
    change(&mut history);
    store.store(DOCUMENT, generation, &render(&history)).await.map_err(|e| store_error(&store.location(), e))?;
    Ok(())
}

#[cfg(test)]
#[path = "history_tests.rs"]
mod tests;
