//! What the kubelet knows about a pod's containers, and the pod status built from it: phase,
//! conditions with stable `lastTransitionTime`s, container statuses.
//!
//! Building the status is a pure function of that state, so the worker can compare it with the
//! last one it wrote and patch `pods/status` only when something changed.

use super::HOST_IP;
use super::containers::now;
use super::probes::ProbeState;
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
    PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

/// How a container ended.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Terminated {
    pub exit_code: i32,
    pub reason: String,
    pub message: Option<String>,
    pub started_at: Option<Time>,
    pub finished_at: Option<Time>,
    pub container_id: Option<String>,
}

/// The state of a container as the status reports it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RunState {
    Waiting { reason: String, message: Option<String> },
    Running { started_at: Time },
    Terminated(Terminated),
}

/// The kubelet's record of one container of a pod.
#[derive(Debug)]
pub(crate) struct ContainerRun {
    pub name: String,
    /// The image as the spec writes it.
    pub image: String,
    pub image_id: String,
    /// The Docker container of the current attempt.
    pub docker_id: Option<String>,
    pub state: RunState,
    pub last_state: Option<Terminated>,
    pub restart_count: i32,
    /// An attempt was created at least once.
    pub ever_created: bool,
    /// Exited and will not be restarted.
    pub finished: bool,
    pub ready: bool,
    pub started: bool,
    pub probes: Vec<ProbeState>,
    /// No new attempt before this (crash or image pull back-off).
    pub retry_at: Option<Instant>,
    pub crash_backoff: Duration,
    pub pull_backoff: Duration,
    /// When the current attempt started.
    pub running_since: Option<Instant>,
}

impl ContainerRun {
    pub fn new(name: &str, image: &str, first_backoff: Duration) -> ContainerRun {
        ContainerRun {
            name: name.to_string(),
            image: image.to_string(),
            image_id: String::new(),
            docker_id: None,
            state: RunState::Waiting { reason: "ContainerCreating".into(), message: None },
            last_state: None,
            restart_count: 0,
            ever_created: false,
            finished: false,
            ready: false,
            started: false,
            probes: Vec::new(),
            retry_at: None,
            crash_backoff: first_backoff,
            pull_backoff: first_backoff,
            running_since: None,
        }
    }

    fn exit_code(&self) -> Option<i32> {
        match &self.state {
            RunState::Terminated(t) => Some(t.exit_code),
            _ => None,
        }
    }

    fn status(&self) -> ContainerStatus {
        let container_id = self.docker_id.as_ref().map(|id| format!("docker://{id}"));
        ContainerStatus {
            name: self.name.clone(),
            image: self.image.clone(),
            image_id: self.image_id.clone(),
            container_id: container_id.clone(),
            ready: self.ready,
            started: Some(self.started),
            restart_count: self.restart_count,
            state: Some(container_state(&self.state)),
            last_state: Some(
                self.last_state.clone().map(|t| container_state(&RunState::Terminated(t))).unwrap_or_default(),
            ),
            ..Default::default()
        }
    }
}

fn container_state(state: &RunState) -> ContainerState {
    match state {
        RunState::Waiting { reason, message } => ContainerState {
            waiting: Some(ContainerStateWaiting { reason: Some(reason.clone()), message: message.clone() }),
            ..Default::default()
        },
        RunState::Running { started_at } => ContainerState {
            running: Some(ContainerStateRunning { started_at: Some(started_at.clone()) }),
            ..Default::default()
        },
        RunState::Terminated(t) => ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: t.exit_code,
                reason: Some(t.reason.clone()),
                message: t.message.clone(),
                started_at: t.started_at.clone(),
                finished_at: t.finished_at.clone(),
                container_id: t.container_id.as_ref().map(|id| format!("docker://{id}")),
                ..Default::default()
            }),
            ..Default::default()
        },
    }
}

/// Whether a main container that exited with `exit_code` is started again.
pub(crate) fn restarts(restart_policy: &str, exit_code: i32) -> bool {
    match restart_policy {
        "Never" => false,
        "OnFailure" => exit_code != 0,
        _ => true,
    }
}

/// The pod phase (`Pending`, `Running`, `Succeeded`, `Failed`) of a pod's containers.
/// `finished` already says whether the restart policy restarts a container.
pub(crate) fn phase(init: &[ContainerRun], containers: &[ContainerRun]) -> &'static str {
    if init.iter().any(|c| c.finished && c.exit_code() != Some(0)) {
        return "Failed";
    }
    if !init.iter().all(|c| c.finished) || !containers.iter().all(|c| c.ever_created) {
        return "Pending";
    }
    if containers.iter().all(|c| c.finished) {
        return if containers.iter().all(|c| c.exit_code() == Some(0)) { "Succeeded" } else { "Failed" };
    }
    "Running"
}

/// `lastTransitionTime` of each condition, kept while its status stays the same.
#[derive(Debug, Default)]
pub(crate) struct Conditions {
    seen: HashMap<String, (String, Time)>,
}

impl Conditions {
    /// Remembers a transition time the server already has (PodScheduled, set by the binding).
    pub fn adopt(&mut self, condition: &PodCondition) {
        if let Some(time) = &condition.last_transition_time {
            self.seen.entry(condition.type_.clone()).or_insert((condition.status.clone(), time.clone()));
        }
    }

    fn condition(&mut self, type_: &str, value: bool, reason: Option<&str>, message: Option<String>) -> PodCondition {
        let status = if value { "True" } else { "False" }.to_string();
        let entry = self.seen.entry(type_.to_string()).or_insert_with(|| (status.clone(), now()));
        if entry.0 != status {
            *entry = (status.clone(), now());
        }
        PodCondition {
            type_: type_.to_string(),
            status,
            last_transition_time: Some(entry.1.clone()),
            reason: if value { None } else { reason.map(str::to_string) },
            message: if value { None } else { message },
            ..Default::default()
        }
    }
}

/// Everything the status is made from.
pub(crate) struct StatusInput<'a> {
    pub init: &'a [ContainerRun],
    pub containers: &'a [ContainerRun],
    pub pod_ip: Option<&'a str>,
    pub start_time: &'a Time,
}

/// The pod status of `input`.
pub(crate) fn pod_status(input: &StatusInput<'_>, conditions: &mut Conditions) -> PodStatus {
    let phase = phase(input.init, input.containers);
    let initialized = input.init.iter().all(|c| c.finished && c.exit_code() == Some(0));
    let unready: Vec<&str> = input.containers.iter().filter(|c| !c.ready).map(|c| c.name.as_str()).collect();
    let uninitialized: Vec<&str> = input.init.iter().filter(|c| !c.finished).map(|c| c.name.as_str()).collect();
    let completed = phase == "Succeeded" || phase == "Failed";
    let (ready_reason, ready_message) = if completed {
        ("PodCompleted", None)
    } else {
        ("ContainersNotReady", Some(format!("containers with unready status: [{}]", unready.join(" "))))
    };
    let init_message = Some(format!("containers with incomplete status: [{}]", uninitialized.join(" ")));
    let list = vec![
        conditions.condition("Initialized", initialized || completed, Some("ContainersNotInitialized"), init_message),
        conditions.condition("Ready", unready.is_empty(), Some(ready_reason), ready_message.clone()),
        conditions.condition("ContainersReady", unready.is_empty(), Some(ready_reason), ready_message),
        conditions.condition("PodScheduled", true, None, None),
    ];
    PodStatus {
        phase: Some(phase.to_string()),
        conditions: Some(list),
        host_ip: Some(HOST_IP.to_string()),
        pod_ip: input.pod_ip.map(str::to_string),
        pod_ips: input.pod_ip.map(|ip| vec![PodIP { ip: ip.to_string() }]),
        start_time: Some(input.start_time.clone()),
        container_statuses: Some(input.containers.iter().map(ContainerRun::status).collect()),
        init_container_statuses: (!input.init.is_empty())
            .then(|| input.init.iter().map(ContainerRun::status).collect()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(name: &str, created: bool, finished_with: Option<i32>) -> ContainerRun {
        let mut run = ContainerRun::new(name, "img", Duration::from_secs(1));
        run.ever_created = created;
        if let Some(code) = finished_with {
            run.finished = true;
            run.state = RunState::Terminated(Terminated {
                exit_code: code,
                reason: if code == 0 { "Completed" } else { "Error" }.into(),
                message: None,
                started_at: None,
                finished_at: None,
                container_id: None,
            });
        }
        run
    }

    #[test]
    fn phases() {
        let check = |init: &[ContainerRun], main: &[ContainerRun], expect: &str| {
            assert_eq!(phase(init, main), expect);
        };
        check(&[], &[run("a", false, None)], "Pending");
        check(&[], &[run("a", true, None), run("b", false, None)], "Pending");
        check(&[], &[run("a", true, None)], "Running");
        check(&[], &[run("a", true, Some(0)), run("b", true, None)], "Running");
        check(&[], &[run("a", true, Some(0)), run("b", true, Some(0))], "Succeeded");
        check(&[], &[run("a", true, Some(0)), run("b", true, Some(2))], "Failed");
        check(&[run("i", true, None)], &[run("a", false, None)], "Pending");
        check(&[run("i", true, Some(1))], &[run("a", false, None)], "Failed");
        check(&[run("i", true, Some(0))], &[run("a", true, None)], "Running");
    }

    #[test]
    fn restart_policies() {
        assert!(restarts("Always", 0));
        assert!(restarts("Always", 1));
        assert!(restarts("OnFailure", 1));
        assert!(!restarts("OnFailure", 0));
        assert!(!restarts("Never", 1));
    }

    #[test]
    fn transition_times_stay_while_the_status_stays() {
        let start = now();
        let mut containers = vec![run("a", true, None)];
        let mut conditions = Conditions::default();
        let mut status = |containers: &[ContainerRun]| {
            let input = StatusInput { init: &[], containers, pod_ip: Some("172.17.0.2"), start_time: &start };
            pod_status(&input, &mut conditions)
        };
        let first = status(&containers);
        let again = status(&containers);
        assert_eq!(first, again, "an unchanged pod has an unchanged status");
        let ready =
            |s: &PodStatus| s.conditions.as_ref().expect("conditions").iter().find(|c| c.type_ == "Ready").cloned();
        assert_eq!(ready(&first).expect("Ready").status, "False");
        assert_eq!(first.phase.as_deref(), Some("Running"));
        containers[0].ready = true;
        let now_ready = status(&containers);
        assert_eq!(ready(&now_ready).expect("Ready").status, "True");
        assert_eq!(now_ready.pod_ips, Some(vec![PodIP { ip: "172.17.0.2".into() }]));
    }
}
