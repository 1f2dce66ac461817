//! A simulated target and driver for the rollout machine, steered by a script of choices,
//! that checks the machine's invariants after every step (see `rollout_properties.rs`).

use std::collections::VecDeque;

use orchestrator::config::model::FailureAction;
use orchestrator::gate::{EngineHealth, EngineReport, Exit};
use orchestrator::rollout::{
    Command, Event, Halt, InstanceSpec, InstanceState, Observed, Policy, ProbeReport, Rollout, Status,
};

pub const OLD: &str = "agent:v1";
pub const NEW: &str = "agent:v2";
/// No run may take more events than this.
pub const MAX_EVENTS: usize = 5_000;

/// The test's own statement of the transitions the machine may make while running.
fn legal(from: InstanceState, to: InstanceState) -> bool {
    use InstanceState::*;
    from == to
        || matches!(
            (from, to),
            (Pending, Draining)
                | (Draining, Starting | Reverting | RevertStarting)
                | (Starting, Gating | Reverting)
                | (Gating, Done | Reverting)
                | (Done, Reverting)
                | (Reverting, RevertStarting | RevertFailed)
                | (RevertStarting, RevertGating | RevertFailed)
                | (RevertGating, RolledBack | RevertFailed)
        )
}

/// What `resume` may do to an instance that was in flight: restart it on the path it was on.
fn legal_on_resume(from: InstanceState, to: InstanceState, back: bool) -> bool {
    use InstanceState::*;
    if !from.is_in_flight() {
        return legal(from, to);
    }
    if back {
        matches!(to, Reverting | RevertStarting | RevertGating)
    } else {
        matches!(to, Pending | Draining | Starting | Gating)
    }
}

/// One agent container on the simulated target.
#[derive(Debug, Clone, PartialEq)]
pub struct Container {
    pub image: String,
    pub running: bool,
    /// Whether the last probe answered for this container passed its version's gate.
    pub last_probe_good: bool,
    /// Since when every probe of this container passed.
    good_since: Option<u64>,
    /// When it was started.
    started_at: u64,
    /// What the engine says about it (restarts, an exit, its own health check).
    engine: EngineReport,
}

impl Container {
    fn new(image: String, running: bool, now: u64) -> Container {
        Container {
            image,
            running,
            last_probe_good: false,
            good_since: None,
            started_at: now,
            engine: EngineReport::default(),
        }
    }
}

/// The target, the driver's queues and the script.
pub struct Sim {
    pub rollout: Rollout,
    now: u64,
    /// Per instance, the commands not yet executed, in order.
    pub queues: Vec<VecDeque<Command>>,
    control: Option<Command>,
    pub containers: Vec<Container>,
    script: Vec<u8>,
    position: usize,
    pub events: usize,
    pub interruptions: usize,
    /// Gates failed at once on a definite signal.
    pub signal_failures: usize,
    /// Failures when the rollout was last resumed from a pause.
    failures_at_resume: usize,
    /// The operator approved the canary.
    approved: bool,
    /// The most agents in flight at once (as the machine counts them).
    pub max_agents_down: usize,
    /// The most units in flight at once.
    pub max_units_down: usize,
}

impl Sim {
    /// A target where every instance runs its old image, and the rollout of `specs`.
    pub fn new(specs: Vec<InstanceSpec>, policy: Policy, script: Vec<u8>) -> Sim {
        let total = specs.len();
        let containers = specs
            .iter()
            .map(|s| Container { last_probe_good: true, ..Container::new(s.from_image.clone(), true, 0) })
            .collect();
        Sim {
            rollout: Rollout::new(specs, policy, 0),
            now: 0,
            queues: vec![VecDeque::new(); total],
            control: None,
            containers,
            script,
            position: 0,
            events: 0,
            interruptions: 0,
            signal_failures: 0,
            failures_at_resume: 0,
            approved: false,
            max_agents_down: 0,
            max_units_down: 0,
        }
    }

    /// The next choice among `n`; 0, the benign one, once the script is used up.
    fn choose(&mut self, n: u8) -> u8 {
        let choice = self.script.get(self.position).map_or(0, |byte| byte % n);
        self.position += 1;
        choice
    }

    pub fn states(&self) -> Vec<InstanceState> {
        self.rollout.instances().iter().map(|i| i.state).collect()
    }

    /// The test's own reading of the failure action: the halt it calls for now.
    fn expected_halt(&self) -> Option<Halt> {
        let policy = self.rollout.policy();
        let total = self.rollout.instances().len();
        let failures = self.rollout.failures();
        let exceeded = total > 0 && failures as f64 / total as f64 > policy.max_failure_ratio;
        match policy.failure_action {
            FailureAction::Continue => None,
            FailureAction::Rollback => exceeded.then_some(Halt::Rollback),
            FailureAction::Pause => (exceeded && failures > self.failures_at_resume).then_some(Halt::Pause),
        }
    }

    /// Feeds an event (or a resume) and checks the invariants on the result.
    fn apply(&mut self, input: Input) {
        self.events += 1;
        assert!(self.events <= MAX_EVENTS, "no end after {MAX_EVENTS} events");
        let before = self.states();
        let back: Vec<bool> = self.rollout.instances().iter().map(|i| i.revert || i.state.is_reverting()).collect();
        let stopped = self.expected_halt().is_some() || self.rollout.deadline_exceeded();
        let paused = self.rollout.status() == Status::Paused;
        let (commands, resumed) = match input {
            Input::Event(event) => (self.rollout.step(event), false),
            Input::Resume(observed) => (self.rollout.resume(&observed, self.now), true),
        };
        if resumed && paused {
            self.failures_at_resume = self.rollout.failures();
        }
        let failed = self.rollout.instances().iter().filter(|i| i.failed).count();
        assert_eq!(self.rollout.failures(), failed);
        assert_eq!(self.rollout.halt(), self.expected_halt(), "the failure action after {failed} failures");
        let min_healthy = self.rollout.policy().min_healthy_time_ms;
        let deadline = self.rollout.policy().healthy_deadline_ms;
        for (index, (from, to)) in before.iter().zip(self.states()).enumerate() {
            let ok = if resumed { legal_on_resume(*from, to, back[index]) } else { legal(*from, to) };
            assert!(ok, "instance {index}: {from:?} -> {to:?} (resume: {resumed})");
            let started = *from == InstanceState::Pending && to == InstanceState::Draining;
            if started {
                assert!(!stopped || (resumed && paused), "instance {index} started after the rollout stopped");
                self.check_may_start(index);
            }
            let forward = matches!(to, InstanceState::Starting | InstanceState::Gating | InstanceState::Done);
            if *from != to && forward {
                assert!(!self.rollout.instances()[index].revert, "cancelled instance {index} went on to {to:?}");
            }
            if *from != to && matches!(to, InstanceState::Done | InstanceState::RolledBack) {
                let container = &self.containers[index];
                let good_since = container.good_since;
                assert!(
                    good_since.is_some_and(|since| self.now - since >= min_healthy),
                    "instance {index} passed its gate without {min_healthy} ms of good probes ({good_since:?} at {})",
                    self.now
                );
                let gate = self.rollout.instances()[index].gate.started_at_ms;
                assert!(
                    gate.is_some_and(|gate| gate >= container.started_at && self.now - gate <= deadline),
                    "instance {index} passed a gate started at {gate:?} at {} (container started at {})",
                    self.now,
                    container.started_at
                );
            }
        }
        self.check_availability();
        for command in commands {
            self.accept(command);
        }
        self.check_at_rest();
    }

    /// At most `max_parallel` agents in flight, or a single unit (one heavier than
    /// `max_parallel` goes alone): as the machine counts them, as the test counts the
    /// in-flight states' agents, and as the target shows them (agents whose container is
    /// down, except the ones whose revert failed, which stay down for a person).
    fn check_availability(&mut self) {
        let max_parallel = self.rollout.policy().max_parallel;
        let instances = self.rollout.instances();
        let in_flight: Vec<usize> = (0..instances.len()).filter(|&i| instances[i].state.is_in_flight()).collect();
        let agents: usize = in_flight.iter().map(|&i| instances[i].spec.weight()).sum();
        assert_eq!(self.rollout.in_flight(), agents, "the machine's count of agents in flight");
        assert_eq!(self.rollout.units_in_flight(), in_flight.len());
        assert!(
            agents <= max_parallel || in_flight.len() == 1,
            "{agents} agents in flight in {} units > max_parallel {max_parallel}",
            in_flight.len()
        );
        assert!(agents <= self.rollout.availability_bound());
        let down: Vec<usize> = (0..instances.len())
            .filter(|&i| !self.containers[i].running && instances[i].state != InstanceState::RevertFailed)
            .collect();
        let agents_down: usize = down.iter().map(|&i| instances[i].spec.weight()).sum();
        assert!(
            agents_down <= max_parallel || down.len() == 1,
            "{agents_down} agents down on the target in {} units > max_parallel {max_parallel}",
            down.len()
        );
        assert!(down.iter().all(|i| in_flight.contains(i)), "a unit is down that the machine does not count: {down:?}");
        self.max_agents_down = self.max_agents_down.max(agents);
        self.max_units_down = self.max_units_down.max(in_flight.len());
    }

    fn accept(&mut self, command: Command) {
        let instance = match &command {
            Command::Stop { instance, .. } | Command::Start { instance, .. } => {
                let queue = &self.queues[*instance];
                let busy = queue.iter().any(|c| matches!(c, Command::Stop { .. } | Command::Start { .. }));
                assert!(!busy, "second stop/start for {instance} while one is outstanding: {queue:?}");
                *instance
            }
            Command::Probe { instance } => {
                let queue = &self.queues[*instance];
                assert!(!queue.iter().any(|c| matches!(c, Command::Probe { .. })), "second probe for {instance}");
                *instance
            }
            Command::AwaitApproval | Command::Finish { .. } => {
                assert!(self.control.is_none(), "two control commands: {:?} and {command:?}", self.control);
                self.control = Some(command);
                return;
            }
        };
        self.queues[instance].push_back(command);
    }

    /// A batch starts once every earlier batch settled, and after the canary batch only
    /// with the operator's approval (when the policy asks for it).
    fn check_may_start(&self, index: usize) {
        let batches = self.rollout.batches();
        let batch = batches.iter().position(|b| b.contains(&index)).expect("every instance is in a batch");
        let states = self.states();
        for earlier in batches[..batch].iter().flatten() {
            assert!(states[*earlier].is_settled(), "instance {index} started before instance {earlier} settled");
        }
        let policy = self.rollout.policy();
        if batch > 0 && policy.canary > 0 && policy.approve {
            assert!(self.approved, "instance {index} started without approval after the canary");
        }
    }

    /// Instances at rest run what their state says.
    fn check_at_rest(&self) {
        for (index, instance) in self.rollout.instances().iter().enumerate() {
            let image = match instance.state {
                InstanceState::Done => &instance.spec.to_image,
                InstanceState::Pending | InstanceState::RolledBack => &instance.spec.from_image,
                _ => continue,
            };
            let container = &self.containers[index];
            assert!(
                container.running && &container.image == image,
                "instance {index} is {:?} but the target has {container:?}",
                instance.state
            );
        }
    }

    /// Executes the next command of `instance` and answers it.
    fn execute(&mut self, instance: usize) {
        let command = self.queues[instance].pop_front().expect("a queued command");
        let event = match command {
            Command::Stop { .. } => {
                if self.choose(8) == 7 {
                    Event::StopFailed { instance, reason: "timed out".to_string() }
                } else {
                    self.containers[instance].running = false;
                    Event::Stopped { instance }
                }
            }
            Command::Start { image, .. } => {
                assert!(!self.containers[instance].running, "Start of {instance} while its container runs");
                let ok = self.choose(8) != 7;
                self.containers[instance] = Container::new(image, ok, self.now);
                if ok {
                    Event::Started { instance }
                } else {
                    Event::StartFailed { instance, reason: "exited 1".to_string() }
                }
            }
            Command::Probe { .. } => {
                let report = self.probe(instance);
                let gate = self.rollout.instances()[instance].state;
                let signalled = report.engine != EngineReport::default();
                self.apply(Input::Event(Event::Probed { instance, now_ms: self.now, report }));
                if signalled && matches!(gate, InstanceState::Gating | InstanceState::RevertGating) {
                    // A definite signal fails the gate at once, whatever the deadline.
                    let now = self.rollout.instances()[instance].state;
                    let expected = if gate == InstanceState::Gating {
                        InstanceState::Reverting
                    } else {
                        InstanceState::RevertFailed
                    };
                    assert_eq!(now, expected, "instance {instance}: a signal in {gate:?} must fail the gate at once");
                    self.signal_failures += 1;
                }
                return;
            }
            other => unreachable!("{other:?} is not queued per instance"),
        };
        self.apply(Input::Event(event));
    }

    /// Probes a container: passes, fails, omits the version, answers late, or (while it
    /// gates) shows a definite signal: it exited, restarts, or the engine's check fails.
    fn probe(&mut self, instance: usize) -> ProbeReport {
        self.now += 1_000;
        let gating =
            matches!(self.rollout.instances()[instance].state, InstanceState::Gating | InstanceState::RevertGating);
        let spec = self.rollout.instances()[instance].spec.clone();
        let container = &self.containers[instance];
        let (version, expected) = if container.image == spec.to_image {
            (Some("v2"), spec.to_version.clone())
        } else {
            (Some("v1"), spec.from_version.clone())
        };
        let mut report = ProbeReport::healthy(version);
        match self.choose(12) {
            0..=7 => {}
            8 if gating && self.containers[instance].running && self.choose(2) == 1 => {
                let engine = &mut self.containers[instance].engine;
                match self.script.get(self.position).map_or(0, |b| b % 3) {
                    0 => {
                        engine.exit = Some(Exit { code: 1, oom_killed: false });
                        self.containers[instance].running = false;
                    }
                    1 => {
                        engine.restarts += 1;
                        engine.restarting = true;
                    }
                    _ => engine.health = Some(EngineHealth::Unhealthy { output: "503".to_string() }),
                }
                self.position += 1;
                report.status = Some("unhealthy".to_string());
            }
            8 => report.status = Some("unhealthy".to_string()),
            9 => report.live = false,
            10 => report.version = None,
            _ => self.now += self.rollout.policy().healthy_deadline_ms / 2,
        }
        let container = &mut self.containers[instance];
        report.engine = container.engine.clone();
        if !container.running {
            report = ProbeReport { running: false, engine: container.engine.clone(), ..ProbeReport::default() };
        }
        container.last_probe_good = report.problem(expected.as_deref()).is_none();
        container.good_since = if container.last_probe_good { container.good_since.or(Some(self.now)) } else { None };
        report
    }

    /// Ctrl-C (an `Abort` first) or kill -9: some work in flight happened on the target,
    /// the journal is read back, and the rollout resumes from what the driver observes.
    fn interrupt(&mut self, ctrl_c: bool) {
        self.interruptions += 1;
        if ctrl_c {
            self.apply(Input::Event(Event::Abort));
            let finished = self.control.take();
            assert!(matches!(finished, Some(Command::Finish { .. })), "Abort answered {finished:?}");
        }
        for instance in 0..self.queues.len() {
            while let Some(command) = self.queues[instance].pop_front() {
                let container = &mut self.containers[instance];
                match (self.script.get(self.position).map_or(1, |b| b % 3), command) {
                    (0, Command::Stop { .. }) => container.running = false,
                    (0, Command::Start { image, .. }) => *container = Container::new(image, true, self.now),
                    (2, Command::Start { image, .. }) => *container = Container::new(image, false, self.now),
                    (0 | 2, Command::Probe { .. }) => {}
                    _ => {
                        self.queues[instance].clear();
                    }
                }
                self.position += 1;
            }
        }
        let journal = self.rollout.to_journal();
        self.rollout = Rollout::from_journal(&journal).expect("the journal reads back");
        let mut observed = Vec::new();
        for (instance, container) in self.containers.clone().into_iter().enumerate() {
            if self.choose(4) != 3 {
                observed.push(Observed { instance, image: Some(container.image), running: container.running });
            }
        }
        self.now += 1_000;
        self.apply(Input::Resume(observed));
    }

    /// Runs until the machine finishes; returns the status it finished with.
    pub fn run(&mut self) -> Status {
        let commands = self.rollout.start(self.now);
        commands.into_iter().for_each(|c| self.accept(c));
        loop {
            match self.control.take() {
                Some(Command::Finish { status }) if status.is_final() => return status,
                Some(Command::Finish { status: Status::Paused }) => {
                    if self.choose(3) == 2 {
                        return Status::Paused;
                    }
                    self.interrupt(false);
                    continue;
                }
                Some(Command::AwaitApproval) => {
                    match self.choose(3) {
                        0 => {
                            self.approved = true;
                            self.apply(Input::Event(Event::Approved));
                        }
                        1 => {
                            self.now += 60_000;
                            self.apply(Input::Event(Event::Tick { now_ms: self.now }));
                            self.control = Some(Command::AwaitApproval);
                        }
                        _ => {
                            self.interrupt(true);
                            if self.control.is_none() {
                                self.control = Some(Command::AwaitApproval);
                            }
                        }
                    }
                    continue;
                }
                Some(other) => panic!("unexpected control command {other:?}"),
                None => {}
            }
            let busy: Vec<usize> = (0..self.queues.len()).filter(|&i| !self.queues[i].is_empty()).collect();
            assert!(
                !busy.is_empty() || self.rollout.status() != Status::Running,
                "stalled: running with nothing outstanding: {:#?}",
                self.rollout.instances()
            );
            match self.choose(20) {
                choice @ 0..=15 if !busy.is_empty() => self.execute(busy[choice as usize % busy.len()]),
                16 | 17 => {
                    self.now += 1_000 * u64::from(self.choose(5));
                    self.apply(Input::Event(Event::Tick { now_ms: self.now }));
                }
                18 if self.interruptions < 3 => {
                    let ctrl_c = self.choose(2) == 0;
                    self.interrupt(ctrl_c);
                }
                _ => {
                    self.now += self.rollout.policy().healthy_deadline_ms;
                    self.apply(Input::Event(Event::Tick { now_ms: self.now }));
                }
            }
        }
    }
}

enum Input {
    Event(Event),
    Resume(Vec<Observed>),
}
