//! The one error type of the port: what went wrong, in the target's words, and whether the
//! target still answers (an unreachable node interrupts a rollout; a failed operation on a
//! node that answers is a failure the rollout handles).

/// How an operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The target answered and refused or failed the operation.
    Failed,
    /// The target (a node, an API server) does not answer: the work is interrupted, not
    /// failed, and can be resumed.
    Unreachable,
    /// Stopped by the operator's request (Ctrl-C, SIGTERM) before the work was done.
    Interrupted,
}

/// An operation of the port that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TargetError {
    pub kind: ErrorKind,
    /// What failed, with the object and node it concerns and the target's own reason.
    pub message: String,
    /// What the user can do about it, when the adapter knows.
    pub hint: Option<String>,
}

impl TargetError {
    /// A failure of an operation on a target that answers.
    pub fn failed(message: impl Into<String>) -> Self {
        TargetError { kind: ErrorKind::Failed, message: message.into(), hint: None }
    }

    /// A target that does not answer.
    pub fn unreachable(message: impl Into<String>) -> Self {
        TargetError { kind: ErrorKind::Unreachable, message: message.into(), hint: None }
    }

    /// Work stopped by the operator's request.
    pub fn interrupted(message: impl Into<String>) -> Self {
        TargetError { kind: ErrorKind::Interrupted, message: message.into(), hint: None }
    }

    /// The same error with a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn is_unreachable(&self) -> bool {
        self.kind == ErrorKind::Unreachable
    }
}
