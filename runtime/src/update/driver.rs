//! The driver of the rollout state machine: executes its commands (one worker per
//! instance, so one instance's commands run in order and instances run concurrently),
//! feeds the answers back, writes the journal after every step, sends ticks, and stops on
//! Ctrl-C or when a node stops answering (the rollout is then interrupted, not failed:
//! `update --resume` finishes it).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use orchestrator::rollout::{Command, Event, InstanceState, Rollout, Status};
use tokio::sync::mpsc;

use super::journal::{self, Journal};
use super::ops::{self, Op, OpError, Target};
use crate::engines::Link;

/// Milliseconds since the Unix epoch: the machine's clock.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// How a drive ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The machine finished with this status (final, paused, or awaiting approval).
    Finished(Status),
    /// Ctrl-C, or a node that stopped answering: resume later.
    Interrupted(String),
}

/// A change of one instance's state, for progress output.
#[derive(Debug, Clone)]
pub struct Change {
    pub node: String,
    pub agent: String,
    pub state: InstanceState,
    pub detail: Option<String>,
}

/// Settings of a drive. The probe interval and timeout are each target's
/// (`deployment.update.probe_interval`, `probe_timeout`).
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Approve the canary batch without stopping.
    pub approve: bool,
    /// How often time advances for the machine.
    pub tick: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options { approve: false, tick: Duration::from_millis(500) }
    }
}

type Answer = (usize, Op, Result<Option<orchestrator::rollout::ProbeReport>, OpError>);

fn spawn_worker(
    link: Link,
    target: Target,
    instance: usize,
    answers: mpsc::UnboundedSender<Answer>,
) -> mpsc::UnboundedSender<Op> {
    let interval = target.probe_interval;
    let (sender, mut ops_rx) = mpsc::unbounded_channel::<Op>();
    tokio::spawn(async move {
        let mut last_probe: Option<Instant> = None;
        while let Some(op) = ops_rx.recv().await {
            if op == Op::Probe {
                if let Some(at) = last_probe {
                    tokio::time::sleep_until((at + interval).into()).await;
                }
                last_probe = Some(Instant::now());
            }
            let result = ops::run(&link, &target, &op).await;
            if answers.send((instance, op, result)).is_err() {
                break;
            }
        }
    });
    sender
}

/// The journal, with the machine's state recorded, on disk.
fn persist(journal: &mut Journal, path: &Path, machine: &Rollout) -> anyhow::Result<()> {
    journal.record(machine);
    journal::write(path, journal)
}

fn changes(machine: &Rollout, before: &mut Vec<InstanceState>) -> Vec<Change> {
    let mut out = Vec::new();
    for (i, instance) in machine.instances().iter().enumerate() {
        if before.get(i) != Some(&instance.state) {
            out.push(Change {
                node: instance.spec.node.clone(),
                agent: instance.spec.agent.clone(),
                state: instance.state,
                detail: instance.last_error.clone().or_else(|| instance.gate.last_probe_problem.clone()),
            });
        }
    }
    *before = machine.instances().iter().map(|i| i.state).collect();
    out
}

/// Where the work happens: the connected nodes, and each instance's container.
#[derive(Clone, Copy)]
pub struct Work<'a> {
    pub links: &'a BTreeMap<String, Link>,
    pub targets: &'a [Target],
}

/// The journal and where it is written.
pub struct Record<'a> {
    pub journal: &'a mut Journal,
    pub path: &'a Path,
}

/// Runs the machine from `initial` commands until it finishes or is interrupted.
pub async fn drive(
    machine: &mut Rollout,
    initial: Vec<Command>,
    work: Work<'_>,
    record: Record<'_>,
    options: Options,
    report: &(dyn Fn(&[Change]) + Sync),
) -> anyhow::Result<Outcome> {
    let Work { links, targets } = work;
    let Record { journal, path: journal_path } = record;
    let (answers_tx, mut answers) = mpsc::unbounded_channel::<Answer>();
    let mut workers: HashMap<usize, mpsc::UnboundedSender<Op>> = HashMap::new();
    for (i, target) in targets.iter().enumerate() {
        let link = links.get(&target.node).expect("a link for every node of the rollout").clone();
        workers.insert(i, spawn_worker(link, target.clone(), i, answers_tx.clone()));
    }
    let mut states: Vec<InstanceState> = Vec::new();
    persist(journal, journal_path, machine)?;
    report(&changes(machine, &mut states));
    let mut queue: VecDeque<Command> = initial.into();
    let mut ticker = tokio::time::interval(options.tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Ctrl-C or SIGTERM (crate::interrupt): stop with the journal written.
    let _graceful = crate::interrupt::graceful();
    let stop = crate::interrupt::token();
    let interrupt = stop.cancelled();
    tokio::pin!(interrupt);
    loop {
        // Dispatch everything the machine asked for.
        while let Some(command) = queue.pop_front() {
            match command {
                Command::Stop { instance, grace_ms } => {
                    let op = if machine.instances()[instance].state == InstanceState::Draining {
                        Op::StopOld { grace_ms }
                    } else {
                        Op::StopNew { grace_ms }
                    };
                    let _ = workers[&instance].send(op);
                }
                Command::Start { instance, image } => {
                    let op = if machine.instances()[instance].state == InstanceState::RevertStarting {
                        Op::StartPrevious { image }
                    } else {
                        Op::StartNew
                    };
                    let _ = workers[&instance].send(op);
                }
                Command::Probe { instance } => {
                    let _ = workers[&instance].send(Op::Probe);
                }
                Command::AwaitApproval if options.approve => {
                    queue.extend(machine.step(Event::Approved));
                    persist(journal, journal_path, machine)?;
                    report(&changes(machine, &mut states));
                }
                Command::AwaitApproval => {
                    // The canary batch has settled; nothing is in flight.
                    persist(journal, journal_path, machine)?;
                    return Ok(Outcome::Finished(Status::AwaitingApproval));
                }
                Command::Finish { status } => {
                    persist(journal, journal_path, machine)?;
                    cleanup(machine, links, targets).await;
                    return Ok(Outcome::Finished(status));
                }
            }
        }
        let commands = tokio::select! {
            _ = &mut interrupt => {
                let commands = machine.step(Event::Abort);
                persist(journal, journal_path, machine)?;
                drop(commands);
                return Ok(Outcome::Interrupted("interrupted (Ctrl-C)".into()));
            }
            Some((instance, op, result)) = answers.recv() => {
                let event = match (op, result) {
                    (_, Err(OpError::Unreachable(reason))) => {
                        let _ = machine.step(Event::Abort);
                        persist(journal, journal_path, machine)?;
                        return Ok(Outcome::Interrupted(reason));
                    }
                    (Op::StopOld { .. } | Op::StopNew { .. }, Ok(_)) => Event::Stopped { instance },
                    (Op::StopOld { .. } | Op::StopNew { .. }, Err(OpError::Failed(reason))) => Event::StopFailed { instance, reason },
                    (Op::StartNew | Op::StartPrevious { .. }, Ok(_)) => Event::Started { instance },
                    (Op::StartNew | Op::StartPrevious { .. }, Err(OpError::Failed(reason))) => Event::StartFailed { instance, reason },
                    (Op::Probe, Ok(report)) => Event::Probed { instance, now_ms: now_ms(), report: report.unwrap_or_default() },
                    (Op::Probe, Err(OpError::Failed(_))) => Event::Probed { instance, now_ms: now_ms(), report: Default::default() },
                };
                machine.step(event)
            }
            _ = ticker.tick() => machine.step(Event::Tick { now_ms: now_ms() }),
        };
        persist(journal, journal_path, machine)?;
        report(&changes(machine, &mut states));
        queue.extend(commands);
    }
}

/// After the machine finished: instances on the new revision no longer need their
/// previous container.
async fn cleanup(machine: &Rollout, links: &BTreeMap<String, Link>, targets: &[Target]) {
    for (i, instance) in machine.instances().iter().enumerate() {
        let Some(link) = links.get(&targets[i].node) else { continue };
        let _ = ops::forget_next(link, &targets[i]).await;
        if instance.state == InstanceState::Done {
            let _ = ops::forget_previous(link, &targets[i]).await;
        }
    }
}
