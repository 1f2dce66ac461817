//! Continuing a rollout read back from its journal: after Ctrl-C, a crash or a lost
//! connection, the instances that were in flight are reconciled with what actually runs.

use super::{Command, Halt, InstanceSpec, InstanceState, Observed, Rollout, Status};

/// What runs for one instance, as far as the driver could tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// A running container on the new image.
    New,
    /// A running container on the old image.
    Old,
    /// No running container (none at all, or a stopped one).
    Nothing,
    /// Not observed, or running an image that is neither.
    Unknown,
}

fn classify(observed: Option<&Observed>, spec: &InstanceSpec) -> Seen {
    let Some(observed) = observed else { return Seen::Unknown };
    if !observed.running {
        return Seen::Nothing;
    }
    match observed.image.as_deref() {
        Some(image) if image == spec.to_image => Seen::New,
        Some(image) if image == spec.from_image => Seen::Old,
        _ => Seen::Unknown,
    }
}

impl Rollout {
    /// Continues the rollout at `now_ms`, given what the driver found on the targets for
    /// (at least) the instances that were in flight. Assumes no answer to a command issued
    /// before the interruption will arrive.
    ///
    /// Each in-flight instance restarts from what runs:
    ///
    /// | on the way | new image runs     | old image runs         | nothing runs                 | unknown            |
    /// |------------|--------------------|------------------------|------------------------------|--------------------|
    /// | forward    | `Gating`, afresh   | `Pending` (restarted)  | `Starting` (Start new)       | `Draining` (Stop)  |
    /// | back       | `Reverting` (Stop) | `RevertGating`, afresh | `RevertStarting` (Start old) | `Reverting` (Stop) |
    ///
    /// "Back" means reverting, or cancelled while in flight. "Unknown" is an instance missing
    /// from `observed` or running an image that is neither: it is stopped first. Instances
    /// that were not in flight are trusted as journaled. A rollout `Interrupted` or still `Running` (killed)
    /// continues; a `Paused` one continues with the next batch (the failures so far stay
    /// counted; the next one pauses it again); one `AwaitingApproval` asks again; a finished
    /// one only repeats its `Finish`. The progress deadline counts only time spent running,
    /// so the interruption itself does not count against it.
    pub fn resume(&mut self, observed: &[Observed], now_ms: u64) -> Vec<Command> {
        let mut out = Vec::new();
        if self.status.is_final() {
            out.push(Command::Finish { status: self.status });
            return out;
        }
        self.clock_ms = now_ms;
        for index in 0..self.instances.len() {
            self.reconcile(index, observed, &mut out);
        }
        if self.status == Status::AwaitingApproval {
            out.push(Command::AwaitApproval);
            return out;
        }
        if self.status == Status::Paused && self.halt == Some(Halt::Pause) {
            self.halt = None;
        }
        self.status = Status::Running;
        self.advance(&mut out);
        out
    }

    fn reconcile(&mut self, index: usize, observed: &[Observed], out: &mut Vec<Command>) {
        let instance = &mut self.instances[index];
        instance.probe_in_flight = false;
        if !instance.state.is_in_flight() {
            return;
        }
        let seen = classify(observed.iter().rev().find(|o| o.instance == index), &instance.spec);
        let back = instance.revert || instance.state.is_reverting();
        let grace_ms = self.policy.stop_grace_ms;
        let stop = Command::Stop { instance: index, grace_ms };
        let (next, command) = match (back, seen) {
            (false, Seen::New) => (InstanceState::Gating, Command::Probe { instance: index }),
            (false, Seen::Old) => {
                instance.state = InstanceState::Pending;
                return;
            }
            (false, Seen::Nothing) => {
                (InstanceState::Starting, Command::Start { instance: index, image: instance.spec.to_image.clone() })
            }
            (false, Seen::Unknown) => (InstanceState::Draining, stop),
            (true, Seen::New | Seen::Unknown) => (InstanceState::Reverting, stop),
            (true, Seen::Old) => (InstanceState::RevertGating, Command::Probe { instance: index }),
            (true, Seen::Nothing) => (
                InstanceState::RevertStarting,
                Command::Start { instance: index, image: instance.spec.from_image.clone() },
            ),
        };
        instance.state = next;
        instance.gate = crate::gate::Gate::default();
        instance.probe_in_flight = matches!(command, Command::Probe { .. });
        out.push(command);
    }
}
