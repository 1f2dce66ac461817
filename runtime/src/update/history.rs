//! The rollback history (`images.json` in the deployment's state directory): per node, the
//! images this deployment ran in the order they became current, and the images that were
//! rejected there (failed a health gate, or were rolled back by their rollout). `rollback`
//! reads it to find "the previous revision"; pruning reads it so that only this
//! deployment's images are ever removed from a shared engine.
//!
//! The file is written atomically (temporary file, fsync, rename) and read strictly: a file
//! that cannot be read or parsed is an error naming it, never an empty history. Files of
//! the first format (a bare list of images per node) are read and rewritten in this one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::exit::hinted;

/// Version of this file's format. Version 1 had no version field: `{"node": ["image", …]}`.
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

/// Where a deployment's history lives.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("images.json")
}

/// Where a history was read from, for its errors: the place, and how to set it aside.
pub struct Origin<'a> {
    /// `/x/.rivetctl/demo/images.json`, or the state store's document.
    pub location: &'a str,
    /// What the hint tells to do: `move it aside (`mv … ….broken`)`.
    pub set_aside: &'a str,
}

fn unreadable(origin: &Origin, why: impl std::fmt::Display) -> anyhow::Error {
    hinted(
        format!("the rollback history {} is unreadable: {why}", origin.location),
        format!(
            "{}: `rollback` then picks the newest older image on each node, and the next rollout starts a new history",
            origin.set_aside
        ),
    )
}

/// Parses the file's text (either format).
pub fn parse(path: &Path, text: &str) -> anyhow::Result<History> {
    let location = path.display().to_string();
    let set_aside = format!("move it aside (`mv {location} {location}.broken`)");
    parse_from(&Origin { location: &location, set_aside: &set_aside }, text)
}

/// Parses a history's text (either format), read from `origin`.
pub fn parse_from(origin: &Origin, text: &str) -> anyhow::Result<History> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| unreadable(origin, e))?;
    let Some(version) = value.get("version") else {
        // The first format: node → images, oldest first, no outcomes.
        let old: BTreeMap<String, Vec<String>> = serde_json::from_value(value)
            .map_err(|e| unreadable(origin, format!("not a history of either format: {e}")))?;
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
            format!("the rollback history {} has format version {version}, expected {FILE_VERSION}", origin.location),
            format!("it was written by another version of rivetctl: use that one, or {}", origin.set_aside),
        ));
    }
    serde_json::from_value(value).map_err(|e| unreadable(origin, e))
}

/// Reads the history: empty when there is no file, an error when it cannot be read.
pub fn read(state_dir: &Path) -> anyhow::Result<History> {
    let path = path(state_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => parse(&path, &text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok(History { version: FILE_VERSION, ..History::default() })
        }
        Err(e) => {
            let location = path.display().to_string();
            let set_aside = format!("move it aside (`mv {location} {location}.broken`)");
            Err(unreadable(&Origin { location: &location, set_aside: &set_aside }, e))
        }
    }
}

/// Writes the history atomically.
pub fn write(state_dir: &Path, history: &History) -> anyhow::Result<()> {
    let history = History { version: FILE_VERSION, nodes: history.nodes.clone() };
    let text = serde_json::to_string_pretty(&history).expect("the history serialises");
    crate::state::write_atomic(&path(state_dir), text.as_bytes())
}

/// Reads, changes and writes the history.
pub fn update(state_dir: &Path, change: impl FnOnce(&mut History)) -> anyhow::Result<()> {
    let mut history = read(state_dir)?;
    change(&mut history);
    write(state_dir, &history)
}

#[cfg(test)]
#[path = "history_tests.rs"]
mod tests;
