//! How the machine reacts to events: instance transitions, the health gate, failures and the
//! failure action, the progress deadline, and batch progression.

use super::{Command, Event, Halt, InstanceState, ProbeReport, Rollout, Status};
use crate::config::model::FailureAction;
use crate::gate::{Gate, Verdict};

impl Rollout {
    /// Starts the rollout (the first batch) at `now_ms`. Calling it again changes nothing.
    pub fn start(&mut self, now_ms: u64) -> Vec<Command> {
        let mut out = Vec::new();
        if self.status == Status::Running {
            self.clock_ms = self.clock_ms.max(now_ms);
            self.advance(&mut out);
        }
        out
    }

    /// Feeds one event to the machine and returns what to do next. Events that do not fit
    /// (unknown instance, wrong state, duplicates, answers after an `Abort`) change nothing
    /// but the clock.
    pub fn step(&mut self, event: Event) -> Vec<Command> {
        let mut out = Vec::new();
        match event {
            Event::Abort => self.abort(&mut out),
            Event::Approved => {
                if self.status == Status::AwaitingApproval {
                    self.status = Status::Running;
                    self.approved = true;
                }
            }
            event if self.status != Status::Running => {
                if let Some(now) = event.now_ms() {
                    self.clock_ms = self.clock_ms.max(now);
                }
            }
            Event::Tick { now_ms } => self.pass_time(now_ms, None, &mut out),
            Event::Probed { instance, now_ms, report } => self.pass_time(now_ms, Some((instance, report)), &mut out),
            Event::Stopped { instance } => self.on_stopped(instance, &mut out),
            Event::StopFailed { instance, reason } => self.on_stop_failed(instance, reason, &mut out),
            Event::Started { instance } => self.on_started(instance, &mut out),
            Event::StartFailed { instance, reason } => self.on_start_failed(instance, reason, &mut out),
        }
        self.advance(&mut out);
        out
    }

    fn abort(&mut self, out: &mut Vec<Command>) {
        match self.status {
            Status::Running => self.finish(Status::Interrupted, out),
            // Nothing is in flight; a resumed rollout asks for approval again.
            Status::AwaitingApproval => out.push(Command::Finish { status: Status::AwaitingApproval }),
            _ => {}
        }
    }

    /// A timed event: count running time, check the progress deadline, record the probe (if
    /// any), then check every gate's deadline and probe gates that have no probe in flight.
    fn pass_time(&mut self, now: u64, probe: Option<(usize, ProbeReport)>, out: &mut Vec<Command>) {
        if now > self.clock_ms {
            self.running_ms += now - self.clock_ms;
            self.clock_ms = now;
        }
        if !self.deadline_exceeded && self.running_ms > self.policy.progress_deadline_ms {
            self.exceed_progress_deadline(out);
        }
        if let Some((instance, report)) = probe {
            self.record_probe(instance, now, &report, out);
        }
        for index in 0..self.instances.len() {
            self.check_gate(index, now, out);
        }
    }

    /// Feeds a probe answer to the instance's gate: passing moves it on, a definite signal
    /// fails it at once (forward: revert; reverting: `RevertFailed`).
    fn record_probe(&mut self, index: usize, now: u64, report: &ProbeReport, out: &mut Vec<Command>) {
        let rules = self.policy.gate_rules();
        let Some(instance) = self.instances.get_mut(index) else { return };
        let gating = matches!(instance.state, InstanceState::Gating | InstanceState::RevertGating);
        if !gating || !instance.probe_in_flight {
            return;
        }
        instance.probe_in_flight = false;
        let version = instance.expected_version().map(str::to_string);
        match instance.gate.record(now, report, version.as_deref(), rules) {
            Verdict::Pending => {}
            Verdict::Passed => {
                let next = match instance.state {
                    InstanceState::Gating => InstanceState::Done,
                    _ => InstanceState::RolledBack,
                };
                self.set_state(index, next);
            }
            Verdict::Failed(failure) => {
                if !report.logs.is_empty() {
                    instance.logs = report.logs.clone();
                }
                self.gate_failed(index, failure.to_string(), out);
            }
        }
    }

    /// Fails a gate past its deadline; otherwise makes sure a probe is in flight.
    fn check_gate(&mut self, index: usize, now: u64, out: &mut Vec<Command>) {
        let rules = self.policy.gate_rules();
        let instance = &mut self.instances[index];
        if !matches!(instance.state, InstanceState::Gating | InstanceState::RevertGating) {
            return;
        }
        match instance.gate.check(now, rules) {
            Verdict::Failed(failure) => self.gate_failed(index, failure.to_string(), out),
            _ => {
                if !instance.probe_in_flight {
                    instance.probe_in_flight = true;
                    out.push(Command::Probe { instance: index });
                }
            }
        }
    }

    /// A gate failed: on the new image the instance fails (and reverts), on the old one
    /// the revert failed.
    fn gate_failed(&mut self, index: usize, error: String, out: &mut Vec<Command>) {
        if self.instances[index].state == InstanceState::Gating {
            self.fail(index, error, out);
        } else {
            self.revert_failed(index, error);
        }
    }

    fn on_stopped(&mut self, index: usize, out: &mut Vec<Command>) {
        let Some(instance) = self.instances.get(index) else { return };
        let image = match (instance.state, instance.revert) {
            (InstanceState::Draining, false) => instance.spec.to_image.clone(),
            (InstanceState::Draining, true) | (InstanceState::Reverting, _) => instance.spec.from_image.clone(),
            _ => return,
        };
        let next = if instance.state == InstanceState::Draining && !instance.revert {
            InstanceState::Starting
        } else {
            InstanceState::RevertStarting
        };
        self.set_state(index, next);
        out.push(Command::Start { instance: index, image });
    }

    fn on_stop_failed(&mut self, index: usize, reason: String, out: &mut Vec<Command>) {
        let Some(instance) = self.instances.get_mut(index) else { return };
        match (instance.state, instance.revert) {
            (InstanceState::Draining, false) => {
                self.fail(index, format!("stopping the old container failed: {reason}"), out)
            }
            (InstanceState::Draining, true) => {
                instance.record_error(format!("stopping the old container failed: {reason}"));
                self.begin_revert(index, out);
            }
            (InstanceState::Reverting, _) => {
                self.revert_failed(index, format!("stopping the container failed: {reason}"))
            }
            _ => {}
        }
    }

    fn on_started(&mut self, index: usize, out: &mut Vec<Command>) {
        let Some(instance) = self.instances.get(index) else { return };
        match (instance.state, instance.revert) {
            (InstanceState::Starting, true) => self.begin_revert(index, out),
            (InstanceState::Starting, false) => self.begin_gate(index, InstanceState::Gating, out),
            (InstanceState::RevertStarting, _) => self.begin_gate(index, InstanceState::RevertGating, out),
            _ => {}
        }
    }

    fn on_start_failed(&mut self, index: usize, reason: String, out: &mut Vec<Command>) {
        let Some(instance) = self.instances.get_mut(index) else { return };
        match (instance.state, instance.revert) {
            (InstanceState::Starting, false) => {
                self.fail(index, format!("starting the new image failed: {reason}"), out)
            }
            (InstanceState::Starting, true) => {
                instance.record_error(format!("starting the new image failed: {reason}"));
                self.begin_revert(index, out);
            }
            (InstanceState::RevertStarting, _) => {
                self.revert_failed(index, format!("starting the old image failed: {reason}"))
            }
            _ => {}
        }
    }

    /// Enters a gate (`Gating` or `RevertGating`) and sends its first probe. The gate's clock
    /// starts at the next timed event.
    pub(super) fn begin_gate(&mut self, index: usize, gate: InstanceState, out: &mut Vec<Command>) {
        self.set_state(index, gate);
        let instance = &mut self.instances[index];
        instance.gate = Gate::default();
        instance.probe_in_flight = true;
        out.push(Command::Probe { instance: index });
    }

    /// The instance failed on the new image: count it, revert it, apply the failure action.
    fn fail(&mut self, index: usize, error: String, out: &mut Vec<Command>) {
        let instance = &mut self.instances[index];
        instance.record_error(error);
        instance.revert = true;
        if !instance.failed {
            instance.failed = true;
            self.failures += 1;
        }
        self.begin_revert(index, out);
        self.apply_failure_action(out);
    }

    /// Stops the instance's current container on the way back to its old image. The answer
    /// to a probe still in flight comes before the Stop's (answers for one instance come in
    /// order), while the instance is not gating, and is ignored.
    pub(super) fn begin_revert(&mut self, index: usize, out: &mut Vec<Command>) {
        self.set_state(index, InstanceState::Reverting);
        self.instances[index].probe_in_flight = false;
        out.push(Command::Stop { instance: index, grace_ms: self.policy.stop_grace_ms });
    }

    fn revert_failed(&mut self, index: usize, error: String) {
        self.set_state(index, InstanceState::RevertFailed);
        self.instances[index].probe_in_flight = false;
        self.instances[index].record_error(format!("rollback failed: {error}"));
    }

    fn apply_failure_action(&mut self, out: &mut Vec<Command>) {
        let total = self.instances.len();
        if self.halt.is_some() || total == 0 || self.failures as f64 / total as f64 <= self.policy.max_failure_ratio {
            return;
        }
        match self.policy.failure_action {
            FailureAction::Continue => {}
            FailureAction::Pause => self.halt = Some(Halt::Pause),
            FailureAction::Rollback => {
                self.halt = Some(Halt::Rollback);
                let reason = format!("rolled back: {} of {total} instances failed", self.failures);
                for index in 0..total {
                    self.cancel(index, &reason, out);
                }
            }
        }
    }

    fn exceed_progress_deadline(&mut self, out: &mut Vec<Command>) {
        self.deadline_exceeded = true;
        let reason = format!("progress deadline of {} ms exceeded", self.policy.progress_deadline_ms);
        for index in 0..self.instances.len() {
            if matches!(
                self.instances[index].state,
                InstanceState::Draining | InstanceState::Starting | InstanceState::Gating
            ) {
                self.cancel(index, &reason, out);
            }
        }
    }

    /// Marks an instance on the forward path (or done) to end on its old image. A gating
    /// one is stopped now; one with a Stop or Start in flight waits for the answer; a done
    /// one waits for a free slot (see `advance`).
    fn cancel(&mut self, index: usize, reason: &str, out: &mut Vec<Command>) {
        let instance = &mut self.instances[index];
        let cancellable = matches!(
            instance.state,
            InstanceState::Draining | InstanceState::Starting | InstanceState::Gating | InstanceState::Done
        );
        if !cancellable || instance.revert {
            return;
        }
        instance.revert = true;
        instance.record_error(reason.to_string());
        if instance.state == InstanceState::Gating {
            self.begin_revert(index, out);
        }
    }

    /// Issues the work the state allows: reverts of done instances during a rollback, the
    /// instances of the current batch, the next batch once it settled, approval, the end.
    pub(super) fn advance(&mut self, out: &mut Vec<Command>) {
        if self.status != Status::Running {
            return;
        }
        for index in (0..self.instances.len()).rev() {
            let instance = &self.instances[index];
            if instance.state == InstanceState::Done && instance.revert {
                if !self.has_room_for(index) {
                    break;
                }
                self.begin_revert(index, out);
            }
        }
        if self.halt.is_none() && !self.deadline_exceeded {
            while let Some(batch) = self.batches.get(self.current_batch).cloned() {
                for &index in &batch {
                    if self.instances[index].state == InstanceState::Pending && self.has_room_for(index) {
                        self.set_state(index, InstanceState::Draining);
                        out.push(Command::Stop { instance: index, grace_ms: self.policy.stop_grace_ms });
                    }
                }
                if !batch.iter().all(|&i| self.instances[i].state.is_settled()) {
                    return;
                }
                let canary = self.current_batch == 0 && self.policy.canary > 0 && self.batches.len() > 1;
                if canary && self.policy.approve && !self.approved {
                    self.status = Status::AwaitingApproval;
                    out.push(Command::AwaitApproval);
                    return;
                }
                self.current_batch += 1;
            }
        }
        let busy =
            self.instances.iter().any(|i| i.state.is_in_flight() || (i.state == InstanceState::Done && i.revert));
        if busy {
            return;
        }
        let pending = self.instances.iter().any(|i| i.state == InstanceState::Pending);
        let any = |state: InstanceState| self.instances.iter().any(|i| i.state == state);
        let status = if self.halt == Some(Halt::Pause) && !self.deadline_exceeded && pending {
            Status::Paused
        } else if self.deadline_exceeded || any(InstanceState::RevertFailed) {
            Status::Failed
        } else if self.instances.iter().all(|i| i.state == InstanceState::Done) {
            Status::Succeeded
        } else if any(InstanceState::RolledBack) {
            Status::RolledBack
        } else {
            Status::Failed
        };
        self.finish(status, out);
    }

    fn finish(&mut self, status: Status, out: &mut Vec<Command>) {
        self.status = status;
        out.push(Command::Finish { status });
    }

    /// Moves an instance along a transition the machine allows.
    fn set_state(&mut self, index: usize, next: InstanceState) {
        let instance = &mut self.instances[index];
        debug_assert!(instance.state.can_become(next), "{:?} -> {next:?}", instance.state);
        instance.state = next;
    }
}
