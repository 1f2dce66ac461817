//! What one probe of an agent container found: its health endpoints, what the engine says
//! about the container, and the definite failure signals that follow from it.

use std::fmt;

/// The result of one health probe of an agent container.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProbeReport {
    /// The container (or process) is running.
    pub running: bool,
    /// `GET /health/live` answered 200.
    pub live: bool,
    /// `status` of `GET /health`: `"healthy"`, `"degraded"` or `"unhealthy"`; `None` when the
    /// endpoint did not answer or had no status.
    pub status: Option<String>,
    /// `version` of `GET /health`, if reported.
    pub version: Option<String>,
    /// What the engine says about the container.
    pub engine: EngineReport,
    /// The container's last log lines, read when the engine reports something wrong (an
    /// exit, a restart, an unhealthy check); empty otherwise.
    pub logs: Vec<String>,
}

/// The engine's view of a container, as its API reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EngineReport {
    /// How many times the engine restarted the container (Docker's `RestartCount`). Only an
    /// increase during a gate means anything: a container put back on revert keeps its count.
    pub restarts: u32,
    /// The process ended and the engine is about to start it again (its restart policy).
    pub restarting: bool,
    /// How the process ended, when it is not running because it exited or died.
    pub exit: Option<Exit>,
    /// The engine's own health check (`deployment.health`, Docker's HEALTHCHECK), when the
    /// container has one.
    pub health: Option<EngineHealth>,
}

/// How a container's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub code: i64,
    /// The kernel killed it for exceeding its memory limit.
    pub oom_killed: bool,
}

/// The state of the engine's own health check of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineHealth {
    /// No verdict yet (within its start period, or before its first check).
    Starting,
    Healthy,
    /// Failed `retries` times in a row; `output` is what the last check printed.
    Unhealthy {
        output: String,
    },
}

/// A definite sign that a container will not pass its gate: no need to wait for the
/// deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// The process ended and nothing will start it again.
    Exited { code: i64, oom_killed: bool },
    /// The process ended and the engine restarted it (or is about to): `restarts` counts the
    /// restarts since the gate began; `last_exit` is the exit code, when the engine still shows it.
    Restarting { restarts: u32, last_exit: Option<i64> },
    /// The engine's own health check reports the container unhealthy.
    EngineUnhealthy { output: String },
}

impl Signal {
    /// A short name for output and tests: `exited`, `restarting` or `unhealthy`.
    pub fn name(&self) -> &'static str {
        match self {
            Signal::Exited { .. } => "exited",
            Signal::Restarting { .. } => "restarting",
            Signal::EngineUnhealthy { .. } => "unhealthy",
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Signal::Exited { code, oom_killed } => {
                write!(f, "the container exited with code {code}")?;
                if *oom_killed {
                    write!(f, " (killed: out of memory)")?;
                }
                Ok(())
            }
            Signal::Restarting { restarts, last_exit } => {
                write!(f, "the container exited")?;
                if let Some(code) = last_exit {
                    write!(f, " with code {code}")?;
                }
                match restarts {
                    0 => write!(f, " and the engine is restarting it"),
                    1 => write!(f, " and the engine restarted it (1 restart since the gate began)"),
                    n => write!(f, " and the engine restarted it ({n} restarts since the gate began)"),
                }
            }
            Signal::EngineUnhealthy { output } => {
                write!(f, "the engine's health check reports the container unhealthy")?;
                let output = one_line(output);
                if !output.is_empty() {
                    write!(f, " (last check: {output})")?;
                }
                Ok(())
            }
        }
    }
}

/// A check's output on one line, at most 200 characters.
fn one_line(text: &str) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match joined.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &joined[..cut]),
        None => joined,
    }
}

impl EngineReport {
    /// The definite failure this report shows, given the restart count when the gate began.
    pub fn signal(&self, restarts_at_start: u32) -> Option<Signal> {
        if self.restarting || self.restarts > restarts_at_start {
            return Some(Signal::Restarting {
                restarts: self.restarts.saturating_sub(restarts_at_start),
                last_exit: self.exit.map(|e| e.code),
            });
        }
        if let Some(exit) = self.exit {
            return Some(Signal::Exited { code: exit.code, oom_killed: exit.oom_killed });
        }
        match &self.health {
            Some(EngineHealth::Unhealthy { output }) => Some(Signal::EngineUnhealthy { output: output.clone() }),
            _ => None,
        }
    }
}

impl ProbeReport {
    /// A report that passes any gate expecting `version` (or none).
    pub fn healthy(version: Option<&str>) -> ProbeReport {
        ProbeReport {
            running: true,
            live: true,
            status: Some("healthy".to_string()),
            version: version.map(str::to_string),
            engine: EngineReport::default(),
            logs: Vec::new(),
        }
    }

    /// Why this report does not pass a gate that expects `version` (when `Some`); `None` when
    /// it passes. Definite signals are [`EngineReport::signal`]'s business, not this.
    pub fn problem(&self, version: Option<&str>) -> Option<String> {
        if !self.running {
            return Some("not running".to_string());
        }
        if !self.live {
            return Some("GET /health/live did not answer 200".to_string());
        }
        match self.status.as_deref() {
            Some("healthy") => {}
            Some(other) => return Some(format!("GET /health reports \"{other}\"")),
            None => return Some("GET /health reports no status".to_string()),
        }
        match (version, self.version.as_deref()) {
            (Some(expected), Some(found)) if expected != found => {
                Some(format!("GET /health reports version \"{found}\", expected \"{expected}\""))
            }
            (Some(expected), None) => Some(format!("GET /health reports no version, expected \"{expected}\"")),
            _ => None,
        }
    }
}
