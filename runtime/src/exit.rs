//! Exit codes and the errors that carry advice.
//!
//! 0 ok; 1 an error (of the user's input or the environment: the message says which and
//! what to do); 2 changes present (`--detailed-exitcode` only); 3 a rollout failed (what was
//! rolled back is printed); 130 stopped by Ctrl-C or SIGTERM (what was done and what was
//! not is printed).

use std::fmt;

/// How a command ended when it did not fail outright.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Success,
    /// `--detailed-exitcode` and the plan is not empty.
    Changes,
    /// A rollout or health gate failed.
    RolloutFailed,
    /// Stopped by Ctrl-C or SIGTERM after the work in flight; what was not done was printed.
    Interrupted,
}

impl ExitStatus {
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Success => 0,
            ExitStatus::Changes => 2,
            ExitStatus::RolloutFailed => 3,
            ExitStatus::Interrupted => crate::interrupt::EXIT_CODE,
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

/// The work stopped at a safe point because of Ctrl-C or SIGTERM; the message says what was
/// and was not done. Exits with [`crate::interrupt::EXIT_CODE`].
#[derive(Debug)]
pub struct Interrupted {
    pub message: String,
}

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Interrupted {}

/// Builds an [`anyhow::Error`] for work stopped by a signal.
pub fn interrupted(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Interrupted { message: message.into() })
}
