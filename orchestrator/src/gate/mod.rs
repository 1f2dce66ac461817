//! The health gate: the one decision whether a freshly started agent container is good,
//! used by `update` and `rollback` (through the rollout machine, for every instance and
//! every revert) and by `infra up` (for the agent containers it creates or replaces).
//!
//! Given the probe reports of one container over time, the version it must report,
//! `min_healthy_time` and a deadline, a [`Gate`] says pending, passed or failed, and why.
//! It passes once every probe has been good (running, `GET /health/live` 200, `GET /health`
//! `healthy` with the expected version) for `min_healthy_time` without interruption. It
//! fails **at once** on a definite [`Signal`] — the container exited, the engine restarted
//! it (its restart count grew since the gate's first probe), or the engine's own health
//! check reports it unhealthy — and otherwise when the deadline passes first: the deadline
//! is for the silent case (a container that runs but never answers well).
//!
//! Pure and deterministic: time is what the caller says it is; the state is plain data (it
//! is part of the rollout journal).

mod report;
#[cfg(test)]
mod tests;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use report::{EngineHealth, EngineReport, Exit, ProbeReport, Signal};

/// What a gate requires; durations in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// How long probes must stay good without interruption.
    pub min_healthy_time_ms: u64,
    /// How long after its first probe the gate may take to pass.
    pub deadline_ms: u64,
    /// Also wait until the engine's own health check has passed, when the container has
    /// one (`infra up`: what `docker ps` shows is healthy when it returns). The rollout does
    /// not wait for it (its probes check the same endpoint more often); an unhealthy verdict
    /// fails every gate at once either way.
    pub engine_check: bool,
}

/// Where one gate is. `Default` is a gate that has not seen a probe yet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gate {
    /// When the gate began: the time of its first probe (or, in the rollout, of the first
    /// timed event after the container started).
    pub started_at_ms: Option<u64>,
    /// Since when its probes have been good without interruption.
    pub healthy_since_ms: Option<u64>,
    /// What was wrong with the last bad probe.
    pub last_probe_problem: Option<String>,
    /// The engine's restart count at the gate's first probe: restarts after it are a signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarts_at_start: Option<u32>,
}

/// What a gate says after a probe or a tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pending,
    Passed,
    Failed(Failure),
}

/// Why a gate failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// A definite signal, `after_ms` after the gate began.
    Signal { signal: Signal, after_ms: u64 },
    /// The deadline passed without the gate passing; `detail` says how far it got.
    Deadline { deadline_ms: u64, detail: String },
}

impl Failure {
    /// The definite signal, when that is why the gate failed.
    pub fn signal(&self) -> Option<&Signal> {
        match self {
            Failure::Signal { signal, .. } => Some(signal),
            Failure::Deadline { .. } => None,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Signal { signal, after_ms } => {
                write!(f, "health gate failed after {:.1} s: {signal}", *after_ms as f64 / 1000.0)
            }
            Failure::Deadline { deadline_ms, detail } => {
                write!(f, "health gate not passed within {deadline_ms} ms ({detail})")
            }
        }
    }
}

impl Gate {
    /// Starts the gate's clock at `now` unless it runs already; returns when it began.
    pub fn begin(&mut self, now_ms: u64) -> u64 {
        *self.started_at_ms.get_or_insert(now_ms)
    }

    /// Records a probe taken at `now_ms` of a container that must report `version` (when
    /// `Some`). A report past the deadline cannot pass the gate (only [`Gate::check`] fails
    /// it); a definite signal fails it whenever it comes.
    pub fn record(&mut self, now_ms: u64, report: &ProbeReport, version: Option<&str>, rules: Rules) -> Verdict {
        let started = self.begin(now_ms);
        let restarts_at_start = *self.restarts_at_start.get_or_insert(report.engine.restarts);
        if let Some(signal) = report.engine.signal(restarts_at_start) {
            self.healthy_since_ms = None;
            self.last_probe_problem = Some(signal.to_string());
            return Verdict::Failed(Failure::Signal { signal, after_ms: now_ms.saturating_sub(started) });
        }
        if now_ms.saturating_sub(started) > rules.deadline_ms {
            return Verdict::Pending;
        }
        let waiting_for_engine = rules.engine_check && report.engine.health == Some(EngineHealth::Starting);
        let problem = report
            .problem(version)
            .or_else(|| waiting_for_engine.then(|| "the engine's health check has not passed yet".to_string()));
        match problem {
            None => {
                let since = *self.healthy_since_ms.get_or_insert(now_ms);
                if now_ms.saturating_sub(since) >= rules.min_healthy_time_ms {
                    self.last_probe_problem = None;
                    Verdict::Passed
                } else {
                    Verdict::Pending
                }
            }
            Some(problem) => {
                self.healthy_since_ms = None;
                self.last_probe_problem = Some(problem);
                Verdict::Pending
            }
        }
    }

    /// Whether the deadline has passed at `now_ms` (starting the clock if nothing did).
    pub fn check(&mut self, now_ms: u64, rules: Rules) -> Verdict {
        let started = self.begin(now_ms);
        if now_ms.saturating_sub(started) <= rules.deadline_ms {
            return Verdict::Pending;
        }
        let detail = match (&self.last_probe_problem, self.healthy_since_ms) {
            (Some(problem), _) => format!("last probe: {problem}"),
            (None, Some(since)) => format!(
                "healthy for {} ms of the {} ms required",
                now_ms.saturating_sub(since),
                rules.min_healthy_time_ms
            ),
            (None, None) => "no probe answered".to_string(),
        };
        Verdict::Failed(Failure::Deadline { deadline_ms: rules.deadline_ms, detail })
    }
}
