//! The rollout journal: what an update is doing, written atomically (temporary file, fsync,
//! rename) after every step of the state machine, so `update --resume` can finish after
//! Ctrl-C, kill -9 or a lost connection.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use orchestrator::rollout::Rollout;
use serde::{Deserialize, Serialize};

/// Version of this file's format.
pub const FILE_VERSION: u32 = 1;

/// What kind of rollout a journal records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Update,
    Rollback,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Update => "update",
            Kind::Rollback => "rollback",
        }
    }
}

/// The journal file: who, what, and the state machine's own journal.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Journal {
    pub version: u32,
    pub kind: Kind,
    pub deployment: String,
    pub started: String,
    /// The revision rolled out (a commit, or `content:<hash>`, or the image for a rollback).
    pub revision: String,
    /// Nodes in the rollout, in order.
    pub nodes: Vec<String>,
    /// Nodes left out, with the reason.
    pub skipped: Vec<(String, String)>,
    /// Per node, the revision its agents ran before.
    pub previous: Vec<(String, String)>,
    /// The state machine ([`Rollout::to_journal`]).
    pub rollout: serde_json::Value,
}

impl Journal {
    /// A journal for a rollout starting now (the machine's state is recorded by the driver).
    pub fn new(
        kind: Kind,
        deployment: &str,
        revision: String,
        nodes: Vec<String>,
        skipped: Vec<(String, String)>,
        previous: Vec<(String, String)>,
    ) -> Journal {
        Journal {
            version: FILE_VERSION,
            kind,
            deployment: deployment.to_string(),
            started: jiff::Timestamp::now().to_string(),
            revision,
            nodes,
            skipped,
            previous,
            rollout: serde_json::Value::Null,
        }
    }

    /// The state machine, read back.
    pub fn machine(&self) -> anyhow::Result<Rollout> {
        Rollout::from_journal(&self.rollout.to_string())
            .map_err(|err| anyhow::anyhow!("the rollout journal is unreadable: {err}"))
    }

    /// Stores the machine's current state.
    pub fn record(&mut self, machine: &Rollout) {
        self.rollout = serde_json::from_str(&machine.to_journal()).expect("the machine's journal is JSON");
    }
}

/// Where a deployment's journal lives.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("rollout.json")
}

/// Reads the journal, if there is one.
pub fn read(path: &Path) -> anyhow::Result<Option<Journal>> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot read {}", path.display()))),
    };
    parse(&path.display().to_string(), &text).map(Some)
}

/// Parses a journal's text; errors name `location` (a file, or the state store's document).
pub fn parse(location: &str, text: &str) -> anyhow::Result<Journal> {
    let journal: Journal =
        serde_json::from_str(text).with_context(|| format!("{location} is not a rollout journal"))?;
    anyhow::ensure!(
        journal.version == FILE_VERSION,
        "{location} has format version {}, expected {FILE_VERSION}",
        journal.version
    );
    Ok(journal)
}

/// Writes the journal atomically: a reader (or a crash) sees the old or the new one.
pub fn write(path: &Path, journal: &Journal) -> anyhow::Result<()> {
    crate::state::write_atomic(path, serde_json::to_string_pretty(journal).expect("journal serialises").as_bytes())
}
