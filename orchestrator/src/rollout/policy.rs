//! The rollout policy: `deployment.update` resolved against the number of agents, and how
//! the units are cut into batches. Batches are counted in agents: a unit weighs as many
//! agents as it serves (see [`InstanceSpec::weight`](super::InstanceSpec::weight)).

use serde::{Deserialize, Serialize};

use crate::config::model::{FailureAction, UpdateSettings};
use crate::gate::Rules;

/// How a rollout proceeds; durations in milliseconds. Part of the journal, so a resumed
/// rollout keeps the policy it started with even if the config changed in between.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// Agents in flight at once (at least 1): the availability bound. A unit serving more
    /// agents than this goes alone, so the bound is then that unit's weight.
    pub max_parallel: usize,
    /// Agents in the first batch; 0 means no canary batch. Never more than `max_parallel`.
    /// The canary batch is the first units whose agents fit in it, and always at least the
    /// first unit.
    pub canary: usize,
    /// After the canary batch, wait for [`Event::Approved`](super::Event::Approved) (unless
    /// the canary batch is the only one).
    pub approve: bool,
    /// How long probes must stay good without interruption for an instance to pass its gate.
    pub min_healthy_time_ms: u64,
    /// How long an instance may take, from its start, to pass its gate.
    pub healthy_deadline_ms: u64,
    /// How long the rollout may be running in total (time spent awaiting approval, paused or
    /// interrupted does not count).
    pub progress_deadline_ms: u64,
    /// Time between SIGTERM and SIGKILL when stopping an agent.
    pub stop_grace_ms: u64,
    /// What happens once the failure ratio is exceeded.
    #[serde(with = "FailureActionDef")]
    pub failure_action: FailureAction,
    /// Fraction of instances that may fail before `failure_action` applies (failures ÷
    /// instances must be greater than this to trigger it).
    pub max_failure_ratio: f64,
}

/// The journal spelling of [`FailureAction`] (the config type only deserializes).
#[derive(Serialize, Deserialize)]
#[serde(remote = "FailureAction", rename_all = "lowercase")]
enum FailureActionDef {
    Rollback,
    Pause,
    Continue,
}

impl Policy {
    /// Resolves the configured policy for a rollout of `total_agents` agents.
    ///
    /// `max_parallel` is a count (`"2"`) or a percentage of the agents (`"25%"`, rounded up);
    /// either way at least 1. The config checker has already validated the text; anything it
    /// would have rejected resolves to 1, the most cautious value. `canary` is capped at
    /// `max_parallel`.
    pub fn from_settings(settings: &UpdateSettings, total_agents: usize) -> Policy {
        let max_parallel = resolve_max_parallel(&settings.max_parallel, total_agents);
        Policy {
            max_parallel,
            canary: (settings.canary as usize).min(max_parallel),
            approve: settings.approve,
            min_healthy_time_ms: settings.min_healthy_time,
            healthy_deadline_ms: settings.healthy_deadline,
            progress_deadline_ms: settings.progress_deadline,
            stop_grace_ms: settings.stop_grace_period,
            failure_action: settings.failure_action,
            max_failure_ratio: settings.max_failure_ratio,
        }
    }

    /// The health gate every instance (and every revert) must pass.
    pub fn gate_rules(&self) -> Rules {
        Rules {
            min_healthy_time_ms: self.min_healthy_time_ms,
            deadline_ms: self.healthy_deadline_ms,
            engine_check: false,
        }
    }

    /// The batches for `total` one-agent instances: the canary batch first (if any), then
    /// batches of `max_parallel`, in instance order. Every instance is in exactly one batch.
    /// The same as [`Policy::batches_of`] with every weight 1.
    pub fn batches(&self, total: usize) -> Vec<Vec<usize>> {
        self.batches_of(&vec![1; total])
    }

    /// The batches for units of the given weights (agents per unit), in unit order: the
    /// canary batch first (if any: the first units whose weights sum to at most `canary`,
    /// at least one unit), then consecutive units packed while their weights sum to at most
    /// `max_parallel`. A unit heavier than `max_parallel` is a batch of its own. Every unit
    /// is in exactly one batch.
    pub fn batches_of(&self, weights: &[usize]) -> Vec<Vec<usize>> {
        let size = self.max_parallel.max(1);
        let canary = self.canary.min(size);
        let mut batches: Vec<Vec<usize>> = Vec::new();
        let mut next = 0;
        if canary > 0 && !weights.is_empty() {
            let mut batch = vec![0];
            let mut agents = weights[0].max(1);
            next = 1;
            while next < weights.len() && agents + weights[next].max(1) <= canary {
                agents += weights[next].max(1);
                batch.push(next);
                next += 1;
            }
            batches.push(batch);
        }
        let mut batch: Vec<usize> = Vec::new();
        let mut agents = 0;
        for (index, weight) in weights.iter().enumerate().skip(next) {
            let weight = (*weight).max(1);
            if !batch.is_empty() && agents + weight > size {
                batches.push(std::mem::take(&mut batch));
                agents = 0;
            }
            batch.push(index);
            agents += weight;
        }
        if !batch.is_empty() {
            batches.push(batch);
        }
        batches
    }
}

/// `"2"` → 2, `"25%"` of 10 → 3; at least 1.
fn resolve_max_parallel(text: &str, total_agents: usize) -> usize {
    let text = text.trim();
    let resolved = match text.strip_suffix('%') {
        Some(percent) => percent.trim().parse::<usize>().map(|p| (total_agents * p.min(100)).div_ceil(100)).ok(),
        None => text.parse::<usize>().ok(),
    };
    resolved.unwrap_or(1).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max_parallel: &str, canary: u32) -> UpdateSettings {
        UpdateSettings {
            max_parallel: max_parallel.to_string(),
            canary,
            approve: false,
            min_healthy_time: 10_000,
            healthy_deadline: 300_000,
            progress_deadline: 1_800_000,
            stop_grace_period: 30_000,
            probe_interval: 50,
            probe_timeout: 2_000,
            failure_action: FailureAction::Rollback,
            max_failure_ratio: 0.0,
            keep_images: 3,
        }
    }

    #[test]
    fn max_parallel_resolves_counts_and_percentages() {
        let check = |text: &str, total: usize, expect: usize| {
            assert_eq!(Policy::from_settings(&settings(text, 0), total).max_parallel, expect, "{text} of {total}");
        };
        check("2", 6, 2);
        check("50%", 6, 3);
        check("25%", 10, 3);
        check("25%", 1, 1);
        check("1%", 0, 1);
        check("100%", 7, 7);
        check("0", 5, 1);
        check("many", 5, 1);
    }

    #[test]
    fn canary_is_capped_at_max_parallel() {
        assert_eq!(Policy::from_settings(&settings("2", 5), 10).canary, 2);
        assert_eq!(Policy::from_settings(&settings("3", 1), 10).canary, 1);
        assert_eq!(Policy::from_settings(&settings("3", 0), 10).canary, 0);
    }

    #[test]
    fn batches_put_the_canary_first() {
        let policy =
            |max_parallel, canary| Policy { max_parallel, canary, ..Policy::from_settings(&settings("1", 0), 0) };
        assert_eq!(policy(2, 1).batches(6), vec![vec![0], vec![1, 2], vec![3, 4], vec![5]]);
        assert_eq!(policy(2, 0).batches(5), vec![vec![0, 1], vec![2, 3], vec![4]]);
        assert_eq!(policy(3, 3).batches(2), vec![vec![0, 1]]);
        assert_eq!(policy(1, 1).batches(0), Vec::<Vec<usize>>::new());
    }

    #[test]
    fn batches_count_agents_not_units() {
        let policy =
            |max_parallel, canary| Policy { max_parallel, canary, ..Policy::from_settings(&settings("1", 0), 0) };
        let check = |policy: Policy, weights: &[usize], expect: Vec<Vec<usize>>| {
            assert_eq!(policy.batches_of(weights), expect, "{weights:?} with {policy:?}");
        };
        // Weights 1 give the one-agent batches.
        check(policy(2, 1), &[1; 6], policy(2, 1).batches(6));
        // Units of 2 and 3 agents with max_parallel 4: the canary is the first unit even
        // when it serves more agents than the canary count.
        check(policy(4, 1), &[2, 2, 3, 1, 1, 4], vec![vec![0], vec![1], vec![2, 3], vec![4], vec![5]]);
        check(policy(4, 0), &[2, 2, 3, 1, 1, 4], vec![vec![0, 1], vec![2, 3], vec![4], vec![5]]);
        // A canary of 3 agents takes units while they fit.
        check(policy(4, 3), &[1, 2, 1, 1], vec![vec![0, 1], vec![2, 3]]);
        // A unit heavier than max_parallel goes alone.
        check(policy(2, 0), &[1, 5, 1, 1], vec![vec![0], vec![1], vec![2, 3]]);
        check(policy(2, 2), &[5, 1], vec![vec![0], vec![1]]);
        // A weight of 0 (no agents listed) counts as one.
        check(policy(2, 0), &[0, 0, 0], vec![vec![0, 1], vec![2]]);
        check(policy(3, 1), &[], Vec::new());
    }
}
