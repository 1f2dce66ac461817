//! The rollout journal: what a rollout (`update`, `rollback`, or `infra up` replacing running
//! agents) is doing, kept as the document `journal` in the deployment's state store on the
//! target (`Port::store`), so `update --resume` can finish it after Ctrl-C, `kill -9` or a
//! lost connection — from this working directory or from another runner with the same
//! config.
//!
//! Every write is a compare-and-swap on the generation this run read or wrote last: a run
//! that finds the document changed by someone else stops with "another run changed the
//! rollout journal" instead of overwriting it. All of the journal's store calls are here.
//!
//! When it is written: not after every step of the machine (on the target a write is an
//! API call), but whenever the machine's durable state changed ([`Durable`]: instance
//! states, their failure and revert marks and errors, the status, the batch, the failure
//! count, the halt, the deadline). That is enough for `--resume` and keeps the protocol's
//! rule (`orchestrator::rollout::protocol`: the journal is written before the commands a
//! step returned are executed): every `Stop` and `Start` the machine issues comes with a
//! state change of its instance (`Pending → Draining`, `Draining → Starting`, …), so the
//! journal that records it is written before the command runs. What is not written — a
//! probe's result, a tick, the gate's clock, the move from starting to gating (which issues
//! only a probe) — is what a resume starts afresh anyway: a resumed instance that was
//! starting or gating is observed and, running the new image, gated again from a new gate.
//! So a journal may show an instance `starting` while it is being gated. The one thing a
//! resume after `kill -9` can under-count is the running time since the last state change,
//! which the progress deadline then does not see.

use anyhow::Context as _;
use std::collections::BTreeMap;

use orchestrator::port::{Document, StateError, StateStore};
use orchestrator::rollout::{Halt, InstanceState, Rollout, Status};
use serde::{Deserialize, Serialize};

use crate::exit::hinted;
use crate::session::Held;

/// Version of this document's format.
pub const FILE_VERSION: u32 = 1;

/// The document's name in the state store.
pub const DOCUMENT: &str = "journal";

/// What kind of rollout a journal records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Update,
    Rollback,
    /// `infra up` replacing agents that ran before (`update --resume` resumes it like an
    /// update).
    Up,
}

impl Kind {
    /// The command's name, in messages and in the rollback history's `by`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Update => "update",
            Kind::Rollback => "rollback",
            Kind::Up => "infra up",
        }
    }

    /// Whether the rollout moves agents to the config's desired revision (an update, an
    /// `infra up`), rather than to an image chosen when it started (a rollback).
    pub fn follows_config(self) -> bool {
        matches!(self, Kind::Update | Kind::Up)
    }
}

/// The journal document: who, what, and the state machine's own journal.
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

/// An instance's state as far as a resume needs it: starting and gating are one (a
/// resume gates afresh whatever it finds running), so the move from one to the other
/// (which issues a probe, no `Stop` or `Start`) costs no write.
fn durable_state(state: InstanceState) -> InstanceState {
    match state {
        InstanceState::Gating => InstanceState::Starting,
        InstanceState::RevertGating => InstanceState::RevertStarting,
        other => other,
    }
}

/// The part of a machine's state whose change must be journaled (module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Durable {
    instances: Vec<(InstanceState, bool, bool, Option<String>)>,
    status: Status,
    batch: usize,
    failures: usize,
    halt: Option<Halt>,
    deadline_exceeded: bool,
}

impl Durable {
    pub fn of(machine: &Rollout) -> Durable {
        Durable {
            instances: machine
                .instances()
                .iter()
                .map(|i| (durable_state(i.state), i.failed, i.revert, i.last_error.clone()))
                .collect(),
            status: machine.status(),
            batch: machine.current_batch(),
            failures: machine.failures(),
            halt: machine.halt(),
            deadline_exceeded: machine.deadline_exceeded(),
        }
    }
}

/// A journal read from the store, with the generation a write must compare against.
#[derive(Debug, Clone)]
pub struct Stored {
    pub journal: Journal,
    pub generation: u64,
}

fn conflict(location: &str) -> anyhow::Error {
    hinted(
        format!("another run changed the rollout journal ({location}) while this one used it"),
        "`rivetctl lock status` names who holds the deployment; let that run finish, then `rivetctl update --resume`",
    )
}

fn store_error(location: &str, err: StateError) -> anyhow::Error {
    match err {
        StateError::Conflict { .. } => conflict(location),
        StateError::Target(err) => {
            let message = format!("the rollout journal ({location}) cannot be reached: {}", err.message);
            match err.hint {
                Some(hint) => hinted(message, hint),
                None => anyhow::anyhow!(message),
            }
        }
    }
}

/// Parses the document's body.
pub fn parse(location: &str, body: &str) -> anyhow::Result<Journal> {
    let journal: Journal = serde_json::from_str(body)
        .with_context(|| format!("the rollout journal ({location}) is not a rollout journal"))?;
    anyhow::ensure!(
        journal.version == FILE_VERSION,
        "the rollout journal ({location}) has format version {}, expected {FILE_VERSION}",
        journal.version
    );
    Ok(journal)
}

/// Reads the journal, if there is one.
pub async fn read<S: StateStore>(store: &S) -> anyhow::Result<Option<Stored>> {
    let location = store.location();
    let documents = store.load().await.map_err(|e| store_error(&location, e))?;
    from_documents(&documents, &location)
}

/// The journal among documents already loaded (the lock's acquiring load), if there is one.
pub fn from_documents(documents: &BTreeMap<String, Document>, location: &str) -> anyhow::Result<Option<Stored>> {
    let Some(document) = documents.get(DOCUMENT) else { return Ok(None) };
    Ok(Some(Stored { journal: parse(location, &document.body)?, generation: document.generation }))
}

/// Removes the journal read at `generation` (`update --abandon`).
pub async fn remove<S: StateStore>(store: &S, generation: u64) -> anyhow::Result<()> {
    store.remove(DOCUMENT, generation).await.map_err(|e| store_error(&store.location(), e))
}

/// Writes one rollout's journal: each write compares against the generation of the
/// previous one (or of the journal found when the rollout started), and only a change of
/// the machine's [`Durable`] state is written.
pub struct Writer<'s, S: StateStore> {
    store: &'s S,
    generation: Option<u64>,
    written: Option<Durable>,
    /// The deployment's lock, renewed after each write (the rollout's progress).
    held: Option<&'s Held<'s, S>>,
}

impl<'s, S: StateStore> Writer<'s, S> {
    /// A writer over `store`, where the journal is now at `generation` (`None`: there is none),
    /// renewing no lock (tests).
    #[cfg(test)]
    pub fn new(store: &'s S, generation: Option<u64>) -> Self {
        Writer { store, generation, written: None, held: None }
    }

    /// A writer that renews the deployment's lock after each write: a run that lost it stops
    /// there, before the next step.
    pub fn renewing(held: &'s Held<'s, S>, generation: Option<u64>) -> Self {
        Writer { store: held.store(), generation, written: None, held: Some(held) }
    }

    /// Records `machine` in `journal` and writes it, if its durable state changed since the
    /// last write (always on the first).
    pub async fn persist(&mut self, journal: &mut Journal, machine: &Rollout) -> anyhow::Result<()> {
        let durable = Durable::of(machine);
        if self.written.as_ref() == Some(&durable) {
            return Ok(());
        }
        journal.record(machine);
        let body = serde_json::to_string_pretty(journal).expect("the journal serialises");
        let generation = self
            .store
            .store(DOCUMENT, self.generation, &body)
            .await
            .map_err(|e| store_error(&self.store.location(), e))?;
        self.generation = Some(generation);
        self.written = Some(durable);
        if let Some(held) = self.held {
            held.renew().await?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "journal_tests.rs"]
mod tests;
