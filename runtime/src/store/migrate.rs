//! State an earlier rivetctl kept beside the config (`.rivetctl/<deployment>/`: the rollout
//! journal `rollout.json`, the rollback history `images.json`, the lock files in `locks/`)
//! moves to the target on the first run that sees it, under that run's lease: each document
//! is written to the store, unless the store already holds a newer one (then the store's is
//! kept and the local file is set aside as `<file>.superseded`), and the local file goes.
//! Build logs stay local.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use anyhow::Context as _;
use orchestrator::port::{Document, StateStore};
use orchestrator::state::{HISTORY, JOURNAL};

use crate::update::{history, journal};

/// The rollout journal's file in an earlier rivetctl's state directory.
pub fn journal_file(state_dir: &Path) -> std::path::PathBuf {
    state_dir.join("rollout.json")
}

/// The rollback history's file in an earlier rivetctl's state directory.
pub fn history_file(state_dir: &Path) -> std::path::PathBuf {
    state_dir.join("images.json")
}

/// A local file's text, `None` when there is none.
fn read_local(path: &Path) -> anyhow::Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot read {}", path.display()))),
    }
}

/// Writes `body` as document `name` over the generation `documents` holds (or as the first).
async fn write<S: StateStore>(
    store: &S,
    documents: &BTreeMap<String, Document>,
    name: &str,
    body: &str,
) -> anyhow::Result<()> {
    let expected = documents.get(name).map(|d| d.generation);
    store.store(name, expected, body).await.map(|_| ()).map_err(|e| {
        crate::exit::hinted(
            format!("cannot write the {name} document in {}: {e}", store.location()),
            "another rivetctl may be working on this deployment: `rivetctl lock status` names it",
        )
    })
}

/// What a migration did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Migration {
    /// Documents written to the store from local files.
    pub moved: Vec<&'static str>,
    /// Documents where the store's newer one was kept.
    pub kept: Vec<&'static str>,
    /// A stale local lock file was removed.
    pub removed_lock: bool,
}

impl Migration {
    /// The info line to print, when anything was found.
    pub fn message(&self, state_dir: &Path, location: &str) -> Option<String> {
        if self.moved.is_empty() && self.kept.is_empty() && !self.removed_lock {
            return None;
        }
        let mut parts = Vec::new();
        if !self.moved.is_empty() {
            parts.push(format!("moved {} from {} to {location}", self.moved.join(" and "), state_dir.display()));
        }
        if !self.kept.is_empty() {
            parts.push(format!(
                "kept the newer {} already in {location} (the local copy is set aside as .superseded)",
                self.kept.join(" and ")
            ));
        }
        if self.removed_lock {
            parts.push(format!("removed the stale local lock in {}", state_dir.join("locks").display()));
        }
        let mut text = parts.join("; ");
        text[..1].make_ascii_uppercase();
        Some(text + ".")
    }
}

/// Moves the local state of `state_dir` into `store`; `documents` (the lease's load) is
/// updated with what was written. Fails, changing nothing, while an earlier rivetctl still
/// holds the local lock.
pub async fn migrate<S: StateStore>(
    store: &S,
    documents: &mut BTreeMap<String, Document>,
    state_dir: &Path,
    deployment: &str,
) -> anyhow::Result<Migration> {
    let mut migration = Migration::default();
    let lock_file = state_dir.join("locks").join(format!("{deployment}.lock"));
    if lock_file.exists() {
        ensure_unlocked(&lock_file)?;
        fs::remove_file(&lock_file).with_context(|| format!("cannot remove {}", lock_file.display()))?;
        let _ = fs::remove_dir(state_dir.join("locks")); // only when empty
        migration.removed_lock = true;
    }
    let location = store.location();

    let path = journal_file(state_dir);
    if let Some(text) = read_local(&path)? {
        let local = journal::parse(&path.display().to_string(), &text)?;
        let stored = match documents.get(JOURNAL) {
            Some(document) => Some(journal::parse(&format!("the journal document in {location}"), &document.body)?),
            None => None,
        };
        let newer = stored.is_some_and(|s| timestamp(&s.started) >= timestamp(&local.started));
        if newer {
            set_aside(&path)?;
            migration.kept.push("rollout journal");
        } else {
            let body = serde_json::to_string_pretty(&local).expect("the journal serialises");
            write(store, documents, JOURNAL, &body).await?;
            fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
            migration.moved.push("rollout journal");
        }
    }

    let path = history_file(state_dir);
    if let Some(text) = read_local(&path)? {
        let local = history::parse(&path.display().to_string(), &text)?;
        let stored = match documents.get(HISTORY) {
            Some(document) => Some(history::parse(&format!("the history document in {location}"), &document.body)?),
            None => None,
        };
        let newer = stored.is_some_and(|stored| newest(&stored) >= newest(&local));
        if newer {
            set_aside(&path)?;
            migration.kept.push("rollback history");
        } else {
            write(store, documents, HISTORY, &history::render(&local)).await?;
            fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
            migration.moved.push("rollback history");
        }
    }

    if !migration.moved.is_empty() {
        // The written generations, for the documents the caller reads next.
        let loaded = store.load().await.with_context(|| format!("cannot read the state in {location}"))?;
        for name in [JOURNAL, HISTORY] {
            match loaded.get(name) {
                Some(document) => documents.insert(name.to_string(), document.clone()),
                None => documents.remove(name),
            };
        }
    }
    Ok(migration)
}

/// Fails while a process holds the local lock file (an earlier rivetctl still running).
fn ensure_unlocked(path: &Path) -> anyhow::Result<()> {
    let file = fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {
            let _ = file.unlock();
            Ok(())
        }
        Err(fs::TryLockError::WouldBlock) => Err(crate::exit::hinted(
            format!("an earlier rivetctl still holds the local lock {}", path.display()),
            "let it finish (`rivetctl lock status` of that version names it), then run this one again",
        )),
        Err(fs::TryLockError::Error(err)) => {
            Err(anyhow::Error::new(err).context(format!("cannot check the lock {}", path.display())))
        }
    }
}

fn set_aside(path: &Path) -> anyhow::Result<()> {
    let mut aside = path.as_os_str().to_owned();
    aside.push(".superseded");
    fs::rename(path, &aside).with_context(|| format!("cannot move {} aside", path.display()))
}

fn timestamp(text: &str) -> Option<jiff::Timestamp> {
    text.parse().ok()
}

/// When a history was last written to: its newest record.
fn newest(history: &history::History) -> Option<jiff::Timestamp> {
    history
        .nodes
        .values()
        .flat_map(|n| n.deployed.iter().chain(&n.rejected))
        .filter_map(|r| r.at.as_deref().and_then(timestamp))
        .max()
}

#[cfg(test)]
mod tests {
    use orchestrator::state::MemoryStore;

    use super::*;
    use crate::update::history::{History, ImageRecord};
    use crate::update::journal::{Journal, Kind};

    fn journal_started(started: &str, revision: &str) -> Journal {
        let mut journal =
            Journal::new(Kind::Update, "demo", revision.into(), vec!["n1".into()], Vec::new(), Vec::new());
        journal.started = started.into();
        journal
    }

    fn write_journal(dir: &Path, journal: &Journal) -> std::io::Result<()> {
        fs::write(journal_file(dir), serde_json::to_string_pretty(journal).unwrap())
    }

    fn write_history(dir: &Path, history: &History) -> std::io::Result<()> {
        fs::write(history_file(dir), history::render(history))
    }

    fn stored_journal(documents: &BTreeMap<String, Document>) -> Journal {
        journal::parse("test", &documents[JOURNAL].body).unwrap()
    }

    fn stored_history(documents: &BTreeMap<String, Document>) -> History {
        history::parse("test", &documents[HISTORY].body).unwrap()
    }

    fn history_at(at: &str, image: &str) -> History {
        let mut history = History { version: history::FILE_VERSION, ..History::default() };
        let mut record = ImageRecord::now(image, None, None, "update", "passed its health gate");
        record.at = Some(at.into());
        history.node_mut("n1").made_current(record);
        history
    }

    #[tokio::test]
    async fn local_state_is_moved_once_and_the_local_files_removed() {
        let dir = tempfile::tempdir().unwrap();
        write_journal(dir.path(), &journal_started("2026-01-01T00:00:00Z", "r1")).unwrap();
        write_history(dir.path(), &history_at("2026-01-01T00:00:00Z", "agent:one")).unwrap();
        fs::create_dir_all(dir.path().join("locks")).unwrap();
        fs::write(dir.path().join("locks/demo.lock"), "{}").unwrap();
        fs::create_dir_all(dir.path().join("logs")).unwrap();

        let store = MemoryStore::new();
        let mut documents = store.load().await.unwrap();
        let migration = migrate(&store, &mut documents, dir.path(), "demo").await.unwrap();
        assert_eq!(migration.moved, vec!["rollout journal", "rollback history"]);
        assert!(migration.kept.is_empty() && migration.removed_lock);
        let message = migration.message(Path::new(".rivetctl/demo"), "the store").unwrap();
        assert_eq!(
            message,
            "Moved rollout journal and rollback history from .rivetctl/demo to the store; removed the stale local lock in .rivetctl/demo/locks."
        );
        assert!(!journal_file(dir.path()).exists() && !history_file(dir.path()).exists());
        assert!(!dir.path().join("locks").exists());
        assert!(dir.path().join("logs").exists(), "build logs stay local");

        assert_eq!(stored_journal(&documents).revision, "r1");
        assert_eq!(stored_history(&documents).node("n1").deployed[0].image, "agent:one");
        assert_eq!(documents, store.load().await.unwrap(), "the caller's documents are the stored ones");

        // The next run finds nothing to move.
        let again = migrate(&store, &mut documents, dir.path(), "demo").await.unwrap();
        assert_eq!(again, Migration::default());
        assert_eq!(again.message(dir.path(), "the store"), None);
    }

    #[tokio::test]
    async fn a_newer_document_on_the_store_is_kept_an_older_one_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let store = MemoryStore::new();
        let on_target =
            serde_json::to_string_pretty(&journal_started("2026-06-01T00:00:00Z", "on the target")).unwrap();
        store.store(JOURNAL, None, &on_target).await.unwrap();
        let old = history::render(&history_at("2026-01-01T00:00:00Z", "agent:old"));
        store.store(HISTORY, None, &old).await.unwrap();
        let mut documents = store.load().await.unwrap();
        write_journal(dir.path(), &journal_started("2026-02-01T00:00:00Z", "local")).unwrap();
        write_history(dir.path(), &history_at("2026-03-01T00:00:00Z", "agent:new")).unwrap();

        let migration = migrate(&store, &mut documents, dir.path(), "demo").await.unwrap();
        assert_eq!((migration.moved, migration.kept), (vec!["rollback history"], vec!["rollout journal"]));
        assert_eq!(stored_journal(&documents).revision, "on the target");
        assert!(dir.path().join("rollout.json.superseded").exists() && !journal_file(dir.path()).exists());
        let history = stored_history(&store.load().await.unwrap());
        assert_eq!(history.node("n1").deployed.last().unwrap().image, "agent:new");
    }

    #[tokio::test]
    async fn a_local_lock_still_held_stops_the_migration() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("locks")).unwrap();
        let path = dir.path().join("locks/demo.lock");
        fs::write(&path, "{}").unwrap();
        let held = fs::File::open(&path).unwrap();
        held.lock().unwrap();
        let store = MemoryStore::new();
        let mut documents = BTreeMap::new();
        let err = migrate(&store, &mut documents, dir.path(), "demo").await.unwrap_err();
        assert!(err.to_string().starts_with("an earlier rivetctl still holds the local lock"), "{err}");
        assert!(path.exists() && store.load().await.unwrap().is_empty());
    }
}
