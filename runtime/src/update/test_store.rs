//! A state store in memory for the tests of `journal` and `history`: exact compare-and-swap
//! on each document's generation, and a count of the writes (what a journal write costs on
//! a real target is one of them). `orchestrator`'s own in-memory store can stand in for it
//! once it is there; this one only has to keep the same contract.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use orchestrator::port::{Document, StateError, StateStore};

#[derive(Default)]
pub struct TestStore {
    documents: RefCell<BTreeMap<String, Document>>,
    writes: Cell<usize>,
}

impl TestStore {
    /// A store holding `body` as document `name`, at generation 1.
    pub fn with(name: &str, body: &str) -> TestStore {
        let store = TestStore::default();
        store.documents.borrow_mut().insert(name.into(), Document { generation: 1, body: body.into() });
        store
    }

    /// The body of document `name`.
    pub fn body(&self, name: &str) -> Option<String> {
        self.documents.borrow().get(name).map(|d| d.body.clone())
    }

    /// Writes (`store` and `remove` calls that succeeded) so far.
    pub fn writes(&self) -> usize {
        self.writes.get()
    }

    /// Another run writes document `name` (its generation moves on).
    pub fn overwrite(&self, name: &str, body: &str) {
        let mut documents = self.documents.borrow_mut();
        let generation = documents.get(name).map_or(1, |d| d.generation + 1);
        documents.insert(name.into(), Document { generation, body: body.into() });
    }
}

impl StateStore for TestStore {
    fn location(&self) -> String {
        "the test store".into()
    }

    async fn load(&self) -> Result<BTreeMap<String, Document>, StateError> {
        Ok(self.documents.borrow().clone())
    }

    async fn store(&self, name: &str, expected: Option<u64>, body: &str) -> Result<u64, StateError> {
        let mut documents = self.documents.borrow_mut();
        let found = documents.get(name).map(|d| d.generation);
        if found != expected {
            return Err(StateError::Conflict { name: name.into(), expected, found });
        }
        let generation = found.map_or(1, |g| g + 1);
        documents.insert(name.into(), Document { generation, body: body.into() });
        self.writes.set(self.writes.get() + 1);
        Ok(generation)
    }

    async fn remove(&self, name: &str, expected: u64) -> Result<(), StateError> {
        let mut documents = self.documents.borrow_mut();
        let found = documents.get(name).map(|d| d.generation);
        if found != Some(expected) {
            return Err(StateError::Conflict { name: name.into(), expected: Some(expected), found });
        }
        documents.remove(name);
        self.writes.set(self.writes.get() + 1);
        Ok(())
    }

    async fn destroy(&self) -> Result<(), StateError> {
        self.documents.borrow_mut().clear();
        Ok(())
    }
}
