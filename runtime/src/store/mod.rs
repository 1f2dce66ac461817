//! The deployment's state on its target, through the [`StateStore`] port: the lock as a
//! lease renewed by the work's own progress ([`lease`]), the rollout journal and the
//! rollback history as compare-and-swap documents (`update::journal`, `update::history`), and the move of what an
//! earlier rivetctl kept in `.rivetctl/<deployment>/` to the target ([`migrate`]).
//!
//! Nothing here names a target: the runtime gets a store from the target factory, or the
//! in-memory one in tests.
//!
//! [`StateStore`]: orchestrator::port::StateStore

pub mod lease;
pub mod migrate;

#[cfg(test)]
mod lease_tests;
#[cfg(test)]
pub(crate) mod tests_support;
