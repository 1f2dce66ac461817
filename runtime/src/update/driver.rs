//! The driver of the rollout state machine over the port: executes its commands through
//! [`Rollouts`] (`Stop` → `stop_old` or `stop_new`, `Start` → `start_new` or
//! `start_previous`, `Probe` → `probe`), feeds the answers back, writes the journal when
//! the machine's durable state changed (`journal::Writer`), sends ticks, settles every unit
//! once the machine finished, and stops on Ctrl-C or when a target stops answering (the
//! rollout is then interrupted, not failed: `update --resume` finishes it).
//!
//! One task does it all: the port's futures are not `Send`, so there is no worker task per
//! instance. Each instance has a queue; at most one of its operations is in flight (so its
//! commands run in the order issued, as the protocol requires), and the operations of
//! different instances run concurrently in one [`FuturesUnordered`]. Probes of one instance
//! are at least `probe_interval` apart. After Ctrl-C or an unreachable target, no new
//! operation starts and those in flight run to their end (each is bounded by its grace
//! period or the adapter's timeouts), so no unit is left cut in the middle of one.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use orchestrator::port::{ErrorKind, Rollouts, StateStore, TargetError, Unit};
use orchestrator::rollout::{Command, Event, InstanceState, ProbeReport, Rollout, Status};

use super::journal::{Journal, Writer};

/// Milliseconds since the Unix epoch: the machine's clock.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// How a drive ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The machine finished with this status (final, paused, or awaiting approval).
    Finished(Status),
    /// Ctrl-C, or a target that stopped answering: resume later.
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

/// Settings of a drive.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Approve the canary batch without stopping.
    pub approve: bool,
    /// How often time advances for the machine.
    pub tick: Duration,
    /// Least time between two probes of one instance (`deployment.update.probe_interval`).
    pub probe_interval: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options { approve: false, tick: Duration::from_millis(500), probe_interval: Duration::from_millis(500) }
    }
}

/// The journal and where it is written.
pub struct Record<'a, 's, S: StateStore> {
    pub journal: &'a mut Journal,
    pub writer: &'a mut Writer<'s, S>,
}

/// What to do, decided when the machine issued the command.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    /// Stop the running (old) instance and keep it for a revert.
    StopOld {
        grace: Duration,
    },
    /// Stop and remove the new instance (it failed, or the rollout is reverting).
    StopNew {
        grace: Duration,
    },
    StartNew,
    /// Put the previous instance back (or start `image` if it is gone).
    StartPrevious {
        image: String,
    },
    Probe,
}

/// How many units settle at once after a rollout (a few API calls each).
const SETTLE_PARALLEL: usize = 8;

type Answer = (usize, Op, Result<Option<ProbeReport>, TargetError>);
type InFlight<'a> = Pin<Box<dyn Future<Output = Answer> + 'a>>;

/// The operations of every instance: queued, and at most one in flight per instance.
struct Lanes<'a, T: Rollouts> {
    target: &'a T,
    units: &'a [Unit<T::Payload>],
    queues: Vec<VecDeque<Op>>,
    busy: Vec<bool>,
    last_probe: Vec<Option<Instant>>,
    probe_interval: Duration,
    in_flight: FuturesUnordered<InFlight<'a>>,
}

impl<'a, T: Rollouts> Lanes<'a, T> {
    fn new(target: &'a T, units: &'a [Unit<T::Payload>], probe_interval: Duration) -> Self {
        Lanes {
            target,
            units,
            queues: vec![VecDeque::new(); units.len()],
            busy: vec![false; units.len()],
            last_probe: vec![None; units.len()],
            probe_interval,
            in_flight: FuturesUnordered::new(),
        }
    }

    /// Queues `op` for `instance`, starting it when nothing of that instance is in flight.
    fn push(&mut self, instance: usize, op: Op) {
        if self.busy[instance] {
            self.queues[instance].push_back(op);
        } else {
            self.start(instance, op);
        }
    }

    /// `instance`'s operation was answered: its next one starts.
    fn answered(&mut self, instance: usize) {
        self.busy[instance] = false;
        if let Some(op) = self.queues[instance].pop_front() {
            self.start(instance, op);
        }
    }

    fn start(&mut self, instance: usize, op: Op) {
        self.busy[instance] = true;
        let (target, unit) = (self.target, &self.units[instance]);
        let not_before = match op {
            Op::Probe => {
                let now = Instant::now();
                let at = self.last_probe[instance].map_or(now, |last| (last + self.probe_interval).max(now));
                self.last_probe[instance] = Some(at);
                Some(at)
            }
            _ => None,
        };
        self.in_flight.push(Box::pin(async move {
            let result = match &op {
                Op::StopOld { grace } => target.stop_old(unit, *grace).await.map(|()| None),
                Op::StopNew { grace } => target.stop_new(unit, *grace).await.map(|()| None),
                Op::StartNew => target.start_new(unit).await.map(|()| None),
                Op::StartPrevious { image } => target.start_previous(unit, image).await.map(|()| None),
                Op::Probe => {
                    if let Some(at) = not_before {
                        tokio::time::sleep_until(at.into()).await;
                    }
                    target.probe(unit).await.map(Some)
                }
            };
            (instance, op, result)
        }));
    }

    /// Drops what is queued and lets what is in flight run to its end, ignoring the answers.
    async fn drain(&mut self) {
        self.queues.iter_mut().for_each(VecDeque::clear);
        while self.in_flight.next().await.is_some() {}
    }
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

/// The machine's event for an answer, or the reason the rollout is interrupted.
fn event(instance: usize, op: Op, result: Result<Option<ProbeReport>, TargetError>) -> Result<Event, String> {
    let failed = |err: TargetError| match err.kind {
        ErrorKind::Unreachable | ErrorKind::Interrupted => Err(err.message),
        ErrorKind::Failed => Ok(err.message),
    };
    Ok(match (op, result) {
        (Op::StopOld { .. } | Op::StopNew { .. }, Ok(_)) => Event::Stopped { instance },
        (Op::StopOld { .. } | Op::StopNew { .. }, Err(err)) => Event::StopFailed { instance, reason: failed(err)? },
        (Op::StartNew | Op::StartPrevious { .. }, Ok(_)) => Event::Started { instance },
        (Op::StartNew | Op::StartPrevious { .. }, Err(err)) => Event::StartFailed { instance, reason: failed(err)? },
        (Op::Probe, Ok(report)) => Event::Probed { instance, now_ms: now_ms(), report: report.unwrap_or_default() },
        // A probe that fails on a target that answers is a bad probe, not the end.
        (Op::Probe, Err(err)) => {
            failed(err)?;
            Event::Probed { instance, now_ms: now_ms(), report: ProbeReport::default() }
        }
    })
}

/// Runs the machine from `initial` commands until it finishes or is interrupted. `units`
/// are the machine's instances, index for index.
pub async fn drive<T: Rollouts, S: StateStore>(
    machine: &mut Rollout,
    initial: Vec<Command>,
    target: &T,
    units: &[Unit<T::Payload>],
    record: Record<'_, '_, S>,
    options: Options,
    report: &dyn Fn(&[Change]),
) -> anyhow::Result<Outcome> {
    assert_eq!(units.len(), machine.instances().len(), "one unit per instance of the rollout");
    let Record { journal, writer } = record;
    let mut lanes = Lanes::new(target, units, options.probe_interval);
    let mut states: Vec<InstanceState> = Vec::new();
    writer.persist(journal, machine).await?;
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
        // Dispatch everything the machine asked for (the journal recording it is written).
        while let Some(command) = queue.pop_front() {
            match command {
                Command::Stop { instance, grace_ms } => {
                    let grace = Duration::from_millis(grace_ms);
                    let op = if machine.instances()[instance].state == InstanceState::Draining {
                        Op::StopOld { grace }
                    } else {
                        Op::StopNew { grace }
                    };
                    lanes.push(instance, op);
                }
                Command::Start { instance, image } => {
                    let op = if machine.instances()[instance].state == InstanceState::RevertStarting {
                        Op::StartPrevious { image }
                    } else {
                        Op::StartNew
                    };
                    lanes.push(instance, op);
                }
                Command::Probe { instance } => lanes.push(instance, Op::Probe),
                Command::AwaitApproval if options.approve => {
                    queue.extend(machine.step(Event::Approved));
                    writer.persist(journal, machine).await?;
                    report(&changes(machine, &mut states));
                }
                Command::AwaitApproval => {
                    // The canary batch has settled; nothing is in flight.
                    writer.persist(journal, machine).await?;
                    return Ok(Outcome::Finished(Status::AwaitingApproval));
                }
                Command::Finish { status } => {
                    writer.persist(journal, machine).await?;
                    lanes.drain().await;
                    settle(machine, target, units).await;
                    return Ok(Outcome::Finished(status));
                }
            }
        }
        let commands = tokio::select! {
            _ = &mut interrupt => {
                let _ = machine.step(Event::Abort);
                writer.persist(journal, machine).await?;
                lanes.drain().await;
                return Ok(Outcome::Interrupted("interrupted (Ctrl-C)".into()));
            }
            Some((instance, op, result)) = lanes.in_flight.next(), if !lanes.in_flight.is_empty() => {
                lanes.answered(instance);
                match event(instance, op, result) {
                    Ok(event) => machine.step(event),
                    Err(reason) => {
                        let _ = machine.step(Event::Abort);
                        writer.persist(journal, machine).await?;
                        lanes.drain().await;
                        return Ok(Outcome::Interrupted(reason));
                    }
                }
            }
            _ = ticker.tick() => machine.step(Event::Tick { now_ms: now_ms() }),
        };
        writer.persist(journal, machine).await?;
        report(&changes(machine, &mut states));
        queue.extend(commands);
    }
}

/// After the machine finished: units on the new revision no longer need what the rollout
/// kept for them; the others drop a prepared instance that never started. Best effort: a
/// unit that cannot be settled now is settled by the next rollout's operations.
async fn settle<T: Rollouts>(machine: &Rollout, target: &T, units: &[Unit<T::Payload>]) {
    let settles = machine
        .instances()
        .iter()
        .zip(units)
        .map(|(instance, unit)| target.settle(unit, instance.state == InstanceState::Done));
    futures_util::stream::iter(settles).buffer_unordered(SETTLE_PARALLEL).for_each(|_| async {}).await;
}
