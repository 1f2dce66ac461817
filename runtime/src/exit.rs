//! Exit codes and the errors that carry advice.
//!
//! 0 ok; 1 an error (of the user's input or the environment: the message says which and
//! what to do); 2 changes present (`--detailed-exitcode` only); 3 a rollout failed (what was
//! rolled back is printed).

use std::fmt;

/// How a command ended when it did not fail outright.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Success,
    /// `--detailed-exitcode` and the plan is not empty.
    Changes,
    /// A rollout or health gate failed.
    RolloutFailed,
}

impl ExitStatus {
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Success => 0,
            ExitStatus::Changes => 2,
            ExitStatus::RolloutFailed => 3,
        }
    }
}

/// An error with a concrete next step for the user.
#[derive(Debug)]
pub struct Hinted {
    pub message: String,
    pub hint: String,
}

impl fmt::Display for Hinted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Hinted {}

/// Builds an [`anyhow::Error`] with a hint.
pub fn hinted(message: impl Into<String>, hint: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Hinted { message: message.into(), hint: hint.into() })
}

/// The error was already printed in full (config diagnostics); exit 1 quietly.
#[derive(Debug)]
pub struct Reported;

impl fmt::Display for Reported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("errors were reported")
    }
}

impl std::error::Error for Reported {}
