//! Unit tests of the rollout machine.
