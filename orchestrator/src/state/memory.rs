//! A state store in memory, with exactly the compare-and-swap semantics of the port: the
//! runtime's tests and the in-memory target keep their lock, journal and history in it.
//! Clones share one store, as two runners share one target.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::port::{Document, StateError, StateStore};

/// One document slot: its generation, and its body (`None`: removed, a tombstone that keeps
/// the generation so it never goes backwards).
#[derive(Debug, Clone)]
struct Slot {
    generation: u64,
    body: Option<String>,
}

#[derive(Debug, Default)]
struct Shared {
    slots: Mutex<BTreeMap<String, Slot>>,
    calls: AtomicUsize,
}

/// An in-memory [`StateStore`]; clones are handles to the same documents.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    shared: Arc<Shared>,
}

impl MemoryStore {
    pub fn new() -> Self {
        MemoryStore::default()
    }

    /// Operations made so far through any handle (what a real store would send).
    pub fn calls(&self) -> usize {
        self.shared.calls.load(Ordering::Relaxed)
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Slot>> {
        self.shared.calls.fetch_add(1, Ordering::Relaxed);
        // A test that panicked while holding the lock leaves consistent data behind.
        self.shared.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn live(slot: Option<&Slot>) -> Option<u64> {
    slot.filter(|s| s.body.is_some()).map(|s| s.generation)
}

fn conflict(name: &str, expected: Option<u64>, found: Option<u64>) -> StateError {
    StateError::Conflict { name: name.to_string(), expected, found }
}

impl StateStore for MemoryStore {
    fn location(&self) -> String {
        "the in-memory state store".into()
    }

    async fn load(&self) -> Result<BTreeMap<String, Document>, StateError> {
        Ok(self
            .slots()
            .iter()
            .filter_map(|(name, slot)| {
                let body = slot.body.clone()?;
                Some((name.clone(), Document { generation: slot.generation, body }))
            })
            .collect())
    }

    async fn store(&self, name: &str, expected: Option<u64>, body: &str) -> Result<u64, StateError> {
        let mut slots = self.slots();
        let slot = slots.get(name);
        let found = live(slot);
        if found != expected {
            return Err(conflict(name, expected, found));
        }
        let generation = slot.map_or(1, |s| s.generation + 1);
        slots.insert(name.to_string(), Slot { generation, body: Some(body.to_string()) });
        Ok(generation)
    }

    async fn remove(&self, name: &str, expected: u64) -> Result<(), StateError> {
        let mut slots = self.slots();
        let slot = slots.get(name);
        let found = live(slot);
        if found != Some(expected) {
            return Err(conflict(name, Some(expected), found));
        }
        slots.insert(name.to_string(), Slot { generation: expected + 1, body: None });
        Ok(())
    }

    async fn destroy(&self) -> Result<(), StateError> {
        self.slots().clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use super::*;

    /// Runs a future that never waits (the memory store's never do).
    fn ready<F: Future>(future: F) -> F::Output {
        let mut future = pin!(future);
        match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(value) => value,
            Poll::Pending => panic!("a memory store operation waited"),
        }
    }

    #[test]
    fn the_memory_store_keeps_the_contract() {
        let store = MemoryStore::new();
        ready(crate::state::contract::check(&store, &store.clone()));
    }

    #[test]
    fn calls_are_counted_across_handles() {
        let store = MemoryStore::new();
        let other = store.clone();
        ready(store.store("lock", None, "{}")).unwrap();
        ready(other.load()).unwrap();
        assert_eq!(store.calls(), 2);
    }
}
