//! The rollout journal and the rollback history as documents of the state store, read with
//! their existing parsers (version checks included) and written with a compare-and-swap on
//! the generation they were read at: a conflict means another run wrote them, and is an
//! error, never an overwrite.
//!
//! Read them from the documents the lease's acquiring load returned
//! ([`super::lease::Lease::documents`]): no second load.

use std::collections::BTreeMap;

use orchestrator::port::{Document, StateError, StateStore};
use orchestrator::state::{HISTORY, JOURNAL};

use crate::exit::hinted;
use crate::update::history::{self, History};
use crate::update::journal::{self, Journal};

/// Where a document is, for messages: `the journal document in <location>`.
fn place(name: &str, location: &str) -> String {
    format!("the {name} document in {location}")
}

fn write_error(name: &str, what: &str, location: &str, err: StateError) -> anyhow::Error {
    match err {
        StateError::Conflict { .. } => hinted(
            format!("{} was changed by another run while this one held it ({err})", place(name, location)),
            format!(
                "another rivetctl is working on this deployment: `rivetctl lock status` names it; this run stopped before changing {what} further"
            ),
        ),
        other => anyhow::Error::new(other).context(format!("cannot write {}", place(name, location))),
    }
}

/// The rollout journal as stored, and the generation its next write replaces.
#[derive(Debug, Clone)]
pub struct JournalDocument {
    journal: Option<Journal>,
    generation: Option<u64>,
    location: String,
}

impl JournalDocument {
    /// Reads the journal from loaded documents (none: no rollout is under way).
    pub fn read(documents: &BTreeMap<String, Document>, location: &str) -> anyhow::Result<JournalDocument> {
        let (journal, generation) = match documents.get(JOURNAL) {
            None => (None, None),
            Some(document) => {
                (Some(journal::parse(&place(JOURNAL, location), &document.body)?), Some(document.generation))
            }
        };
        Ok(JournalDocument { journal, generation, location: location.to_string() })
    }

    /// The journal, if a rollout is recorded.
    pub fn journal(&self) -> Option<&Journal> {
        self.journal.as_ref()
    }

    /// Writes `journal` over the one read (or as the first).
    pub async fn write<S: StateStore>(&mut self, store: &S, journal: &Journal) -> anyhow::Result<()> {
        let body = serde_json::to_string(journal).expect("the journal serialises");
        let generation = store
            .store(JOURNAL, self.generation, &body)
            .await
            .map_err(|e| write_error(JOURNAL, "the rollout", &self.location, e))?;
        self.generation = Some(generation);
        self.journal = Some(journal.clone());
        Ok(())
    }

    /// Removes the journal: the rollout is over.
    pub async fn remove<S: StateStore>(&mut self, store: &S) -> anyhow::Result<()> {
        let Some(generation) = self.generation else { return Ok(()) };
        store.remove(JOURNAL, generation).await.map_err(|e| write_error(JOURNAL, "the rollout", &self.location, e))?;
        self.generation = None;
        self.journal = None;
        Ok(())
    }
}

/// The rollback history as stored (empty when there is none), and the generation its next
/// write replaces.
#[derive(Debug, Clone)]
pub struct HistoryDocument {
    history: History,
    generation: Option<u64>,
    location: String,
}

impl HistoryDocument {
    /// Reads the history from loaded documents.
    pub fn read(documents: &BTreeMap<String, Document>, location: &str) -> anyhow::Result<HistoryDocument> {
        let (history, generation) = match documents.get(HISTORY) {
            None => (History { version: history::FILE_VERSION, ..History::default() }, None),
            Some(document) => {
                // Reads "the rollback history in <location> is unreadable".
                let where_ = format!("in {location}");
                let set_aside = format!("remove the {HISTORY} document from {location}");
                let origin = history::Origin { location: &where_, set_aside: &set_aside };
                (history::parse_from(&origin, &document.body)?, Some(document.generation))
            }
        };
        Ok(HistoryDocument { history, generation, location: location.to_string() })
    }

    pub fn history(&self) -> &History {
        &self.history
    }

    /// Writes `history` over the one read (or as the first).
    pub async fn write<S: StateStore>(&mut self, store: &S, history: &History) -> anyhow::Result<()> {
        let history = History { version: history::FILE_VERSION, nodes: history.nodes.clone() };
        let body = serde_json::to_string(&history).expect("the history serialises");
        let generation = store
            .store(HISTORY, self.generation, &body)
            .await
            .map_err(|e| write_error(HISTORY, "the history", &self.location, e))?;
        self.generation = Some(generation);
        self.history = history;
        Ok(())
    }

    /// Changes the history and writes it.
    pub async fn update<S: StateStore>(&mut self, store: &S, change: impl FnOnce(&mut History)) -> anyhow::Result<()> {
        let mut history = self.history.clone();
        change(&mut history);
        self.write(store, &history).await
    }
}

#[cfg(test)]
mod tests {
    use orchestrator::state::MemoryStore;

    use super::*;
    use crate::update::history::ImageRecord;
    use crate::update::journal::Kind;

    fn journal(revision: &str) -> Journal {
        Journal::new(Kind::Update, "demo", revision.into(), vec!["n1".into()], Vec::new(), Vec::new())
    }

    async fn loaded(store: &MemoryStore) -> BTreeMap<String, Document> {
        store.load().await.unwrap()
    }

    #[tokio::test]
    async fn the_journal_round_trips_and_a_write_of_another_run_is_a_conflict() {
        let store = MemoryStore::new();
        let location = store.location();
        let mut mine = JournalDocument::read(&loaded(&store).await, &location).unwrap();
        assert!(mine.journal().is_none());
        mine.write(&store, &journal("r1")).await.unwrap();
        mine.write(&store, &journal("r2")).await.unwrap();
        let read = JournalDocument::read(&loaded(&store).await, &location).unwrap();
        assert_eq!(read.journal().map(|j| j.revision.as_str()), Some("r2"));

        // Another run (it took the lock over) writes the journal: this one's next write fails.
        let mut theirs = read.clone();
        theirs.write(&store, &journal("r3")).await.unwrap();
        let err = mine.write(&store, &journal("r2 again")).await.expect_err("a conflict");
        assert!(
            err.to_string().starts_with("the journal document in the in-memory state store was changed by another run"),
            "{err}"
        );
        assert_eq!(JournalDocument::read(&loaded(&store).await, &location).unwrap().journal().unwrap().revision, "r3");
        theirs.remove(&store).await.unwrap();
        assert!(JournalDocument::read(&loaded(&store).await, &location).unwrap().journal().is_none());
    }

    #[tokio::test]
    async fn unreadable_documents_name_where_they_are() {
        let store = MemoryStore::new();
        store.store(JOURNAL, None, "{\"version\": 9}").await.unwrap();
        store.store(HISTORY, None, "{\"version\": 9, \"nodes\": {}}").await.unwrap();
        let documents = loaded(&store).await;
        let err = JournalDocument::read(&documents, "volumes rivetctl-state-demo-* on node hub").unwrap_err();
        assert_eq!(
            err.to_string(),
            "the journal document in volumes rivetctl-state-demo-* on node hub is not a rollout journal"
        );
        let err = HistoryDocument::read(&documents, "volumes rivetctl-state-demo-* on node hub").unwrap_err();
        let hinted = err.downcast_ref::<crate::exit::Hinted>().expect("a hint");
        assert_eq!(
            hinted.message,
            "the rollback history in volumes rivetctl-state-demo-* on node hub has format version 9, expected 2"
        );
        assert!(hinted.hint.contains("remove the history document from volumes rivetctl-state-demo-* on node hub"));
    }

    #[tokio::test]
    async fn the_history_is_updated_in_place_and_read_back() {
        let store = MemoryStore::new();
        let location = store.location();
        let mut document = HistoryDocument::read(&loaded(&store).await, &location).unwrap();
        assert!(document.history().nodes.is_empty());
        let record = ImageRecord::now("agent:abc", Some("r1".into()), None, "update", "passed its health gate");
        document.update(&store, |h| h.node_mut("n1").made_current(record.clone())).await.unwrap();
        let read = HistoryDocument::read(&loaded(&store).await, &location).unwrap();
        assert_eq!(read.history().node("n1").deployed, vec![record]);
        assert_eq!(read.history(), document.history());
    }
}
