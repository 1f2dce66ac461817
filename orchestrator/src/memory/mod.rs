//! The in-memory target: a fake that behaves, for the domain's and the runtime's tests.
//!
//! - [`apply`] applies a whole plan to a list of observed objects exactly as a real target
//!   records it (the planner's property tests and the golden tests use it).
//! - [`MemoryTarget`] implements the whole target port ([`crate::port::Port`]: observing
//!   and applying, the rollout operations, images, and a [`crate::state::MemoryStore`]) on
//!   that same record, plus each agent unit's instances, so
//!   the runtime's command-level tests run against it as they run against Docker. A test
//!   can break an image, set the version an image reports, make a node unreachable, read
//!   the event log, and check the availability figures: the most agents down at once and
//!   whether two instances of one agent ever ran at once.
//!
//! Pure like the rest of the orchestrator: no I/O, no runtime; its futures are ready when
//! first polled.

mod apply;
mod artifacts;
mod rollouts;
mod state;
mod target;
#[cfg(test)]
mod tests;

pub use apply::apply;
pub use artifacts::KeptImage;
pub use state::{Entry, Op};
pub use target::{InstanceView, MemoryTarget, UnitView};
