//! The deployment's own state on its target, above the [`StateStore`](crate::port::StateStore)
//! port: the lock record and the decision whether a run may take it ([`lock`]), an
//! in-memory store with the exact compare-and-swap semantics every store must have
//! ([`memory`]), and those semantics written once as a test every store runs
//! (`contract`).
//!
//! Documents and their names: [`lock::DOCUMENT`] (the lock record), [`JOURNAL`] (the
//! rollout journal) and [`HISTORY`] (the revision history). Each document carries its own
//! format version; a reader meeting a version it does not know fails, and never writes over
//! it.

pub mod lock;
pub mod memory;

#[doc(hidden)]
pub mod contract;

pub use lock::{Decision, LockRecord, TakeOver};
pub use memory::MemoryStore;

/// The rollout journal's document name.
pub const JOURNAL: &str = "journal";
/// The revision history's document name.
pub const HISTORY: &str = "history";
