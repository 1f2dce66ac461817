//! Unit tests of the rollout machine, driven through `World`: a small in-memory target that
//! executes commands one at a time, in order, and answers them.

mod failures;
mod flows;
mod resume;
mod signals;
mod units;

use std::collections::VecDeque;

use super::{Command, Event, InstanceSpec, InstanceState, Policy, ProbeReport, Rollout, Status};
use crate::config::model::FailureAction;
use crate::gate::EngineReport;

pub(super) const OLD: &str = "registry/agent:v1";
pub(super) const NEW: &str = "registry/agent:v2";
/// Time each probe takes in `World`.
pub(super) const PROBE_MS: u64 = 5_000;

/// `nodes` × `agents` instances, ordered by node then agent, all on `OLD` moving to `NEW`.
pub(super) fn specs(nodes: usize, agents: usize) -> Vec<InstanceSpec> {
    let mut specs = Vec::new();
    for node in 0..nodes {
        for agent in 0..agents {
            specs.push(InstanceSpec {
                node: format!("node{node}"),
                agent: format!("agent{agent}"),
                agents: Vec::new(),
                from_image: OLD.to_string(),
                to_image: NEW.to_string(),
                from_version: Some("v1".to_string()),
                to_version: Some("v2".to_string()),
            });
        }
    }
    specs
}

/// Units on one node serving `weights[i]` agents each, all on `OLD` moving to `NEW`.
pub(super) fn units(weights: &[usize]) -> Vec<InstanceSpec> {
    weights
        .iter()
        .enumerate()
        .map(|(unit, &weight)| InstanceSpec {
            node: "node0".to_string(),
            agent: format!("unit{unit}"),
            agents: (0..weight).map(|agent| format!("unit{unit}-agent{agent}")).collect(),
            ..specs(1, 1).remove(0)
        })
        .collect()
}

/// A policy with no canary: gates need 10 s of good probes within 60 s; an hour in total.
pub(super) fn policy(max_parallel: usize) -> Policy {
    Policy {
        max_parallel,
        canary: 0,
        approve: false,
        min_healthy_time_ms: 10_000,
        healthy_deadline_ms: 60_000,
        progress_deadline_ms: 3_600_000,
        stop_grace_ms: 30_000,
        failure_action: FailureAction::Rollback,
        max_failure_ratio: 0.0,
    }
}

fn version_of(image: &str) -> Option<String> {
    image.rsplit(':').next().map(str::to_string)
}

/// An in-memory target plus a driver.
pub(super) struct World {
    pub rollout: Rollout,
    pub now: u64,
    pub queue: VecDeque<Command>,
    /// Per instance: the image of its container and whether it runs.
    pub containers: Vec<(String, bool)>,
    /// `(instance, image)` pairs whose probes report `unhealthy`.
    pub unhealthy: Vec<(usize, String)>,
    /// `(instance, image)` pairs whose probes show this engine report (a definite signal),
    /// with a log line.
    pub signals: Vec<(usize, String, EngineReport)>,
    /// `(instance, image)` pairs whose start fails.
    pub fail_start: Vec<(usize, String)>,
    /// Instances whose stop fails.
    pub fail_stop: Vec<usize>,
    pub finished: Option<Status>,
    pub awaiting_approval: bool,
    pub max_in_flight: usize,
    /// Every command the machine issued, in order.
    pub log: Vec<Command>,
}

impl World {
    pub fn new(specs: Vec<InstanceSpec>, policy: Policy) -> World {
        let containers = specs.iter().map(|s| (s.from_image.clone(), true)).collect();
        World {
            rollout: Rollout::new(specs, policy, 0),
            now: 0,
            queue: VecDeque::new(),
            containers,
            unhealthy: Vec::new(),
            signals: Vec::new(),
            fail_start: Vec::new(),
            fail_stop: Vec::new(),
            finished: None,
            awaiting_approval: false,
            max_in_flight: 0,
            log: Vec::new(),
        }
    }

    pub fn start(&mut self) -> &mut World {
        let commands = self.rollout.start(self.now);
        self.push(commands);
        self
    }

    pub fn step(&mut self, event: Event) -> Vec<Command> {
        let commands = self.rollout.step(event);
        self.push(commands.clone());
        commands
    }

    fn push(&mut self, commands: Vec<Command>) {
        self.max_in_flight = self.max_in_flight.max(self.rollout.in_flight());
        // Agents in flight: within max_parallel, or one unit that alone serves more.
        assert!(self.rollout.in_flight() <= self.rollout.policy().max_parallel || self.rollout.units_in_flight() == 1);
        self.log.extend(commands.iter().cloned());
        self.queue.extend(commands);
    }

    /// Executes commands until the machine finishes or asks for approval.
    pub fn run(&mut self) -> Status {
        self.awaiting_approval = false;
        for _ in 0..100_000 {
            if let Some(status) = self.step_one() {
                return status;
            }
        }
        panic!("the machine did not finish within 100000 commands");
    }

    /// Executes the next command; returns the status if it was `Finish` or `AwaitApproval`.
    pub fn step_one(&mut self) -> Option<Status> {
        let Some(command) = self.queue.pop_front() else {
            panic!("the machine stalled in {:?}: {:#?}", self.rollout.status(), self.rollout.instances());
        };
        let event = match command {
            Command::Finish { status } => {
                self.finished = Some(status);
                return Some(status);
            }
            Command::AwaitApproval => {
                self.awaiting_approval = true;
                return Some(self.rollout.status());
            }
            Command::Stop { instance, .. } => {
                if self.fail_stop.contains(&instance) {
                    Event::StopFailed { instance, reason: "timed out".to_string() }
                } else {
                    self.containers[instance].1 = false;
                    Event::Stopped { instance }
                }
            }
            Command::Start { instance, image } => {
                assert!(!self.containers[instance].1, "Start of {instance} while its container runs");
                let fails = self.fail_start.contains(&(instance, image.clone()));
                self.containers[instance] = (image, !fails);
                if fails {
                    Event::StartFailed { instance, reason: "exited 1".to_string() }
                } else {
                    Event::Started { instance }
                }
            }
            Command::Probe { instance } => {
                self.now += PROBE_MS;
                let (image, running) = self.containers[instance].clone();
                let mut report = ProbeReport::healthy(version_of(&image).as_deref());
                report.running = running;
                if self.unhealthy.contains(&(instance, image.clone())) {
                    report.status = Some("unhealthy".to_string());
                }
                if let Some((_, _, engine)) = self.signals.iter().find(|(i, m, _)| *i == instance && *m == image) {
                    report.engine = engine.clone();
                    report.logs = vec![format!("{image}: boom")];
                }
                Event::Probed { instance, now_ms: self.now, report }
            }
        };
        self.step(event);
        None
    }

    pub fn states(&self) -> Vec<InstanceState> {
        self.rollout.instances().iter().map(|i| i.state).collect()
    }

    /// Every instance's container runs the image its state says.
    pub fn assert_target_agrees(&self) {
        for (index, instance) in self.rollout.instances().iter().enumerate() {
            let expected = match instance.state {
                InstanceState::Done => &instance.spec.to_image,
                InstanceState::Pending | InstanceState::RolledBack => &instance.spec.from_image,
                _ => continue,
            };
            assert_eq!(self.containers[index], (expected.clone(), true), "instance {index} ({:?})", instance.state);
        }
    }
}
