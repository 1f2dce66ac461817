//! Waiting for a step's condition by watching (never a polling loop), each wait inside
//! `tokio::time::timeout`: the object and its pods are watched together, and every event
//! re-evaluates the condition. A cut watch connection is resumed by the watcher (it lists
//! again and goes on). The rules are kubectl's (`rollout status`), with the failures that
//! need no deadline:
//! - Deployment: `observedGeneration >= generation`, updated replicas = desired, no old
//!   replicas left, available = updated; failed at once on `ProgressDeadlineExceeded`;
//! - StatefulSet: observed generation current, ready = replicas, `updateRevision ==
//!   currentRevision`;
//! - Job: the `Complete` condition; failed on its `Failed` condition;
//! - for all three, a pod whose container is in CrashLoopBackOff, ImagePullBackOff,
//!   ErrImagePull or a config error fails the wait at once (a Deployment's or StatefulSet's
//!   pod that failed, too), with its last log lines.
//!
//! An agent Deployment (`Wait::Gate`) then passes the health gate through the API server's
//! pod proxy ([`super::units`]).

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, LogParams};
use kube::runtime::{WatchStreamExt, watcher};
use orchestrator::gate::Rules;
use orchestrator::plan::{Step, Wait};
use orchestrator::port::{Readiness, TargetError};
use serde_json::Value;

use super::KubernetesTarget;

/// How many log lines a failure shows.
const LOG_TAIL: i64 = 20;
/// Waiting reasons of a container that will not get better by waiting.
const HOPELESS: &[&str] = &[
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// Where a watched object is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    Done,
    /// Not yet: how far it got.
    Pending(String),
    Failed(String),
}

/// kubectl's rule for a Deployment.
pub fn deployment_progress(deployment: &Deployment) -> Progress {
    let generation = deployment.metadata.generation.unwrap_or(0);
    let Some(status) = &deployment.status else { return Progress::Pending("no status yet".into()) };
    if status.observed_generation.unwrap_or(0) < generation {
        return Progress::Pending("waiting for the controller to see the new spec".into());
    }
    let deadline_exceeded = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded"));
    if deadline_exceeded {
        return Progress::Failed(format!(
            "Deployment {} exceeded its progress deadline",
            deployment.metadata.name.as_deref().unwrap_or("")
        ));
    }
    let desired = deployment.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    let replicas = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if updated < desired {
        return Progress::Pending(format!("{updated} of {desired} replicas updated"));
    }
    if replicas > updated {
        return Progress::Pending(format!("{} old replicas pending termination", replicas - updated));
    }
    if available < updated {
        return Progress::Pending(format!("{available} of {updated} updated replicas available"));
    }
    Progress::Done
}

/// The rule for a StatefulSet (it has no progress deadline and no `availableReplicas` on 1.20).
pub fn statefulset_progress(set: &StatefulSet) -> Progress {
    let generation = set.metadata.generation.unwrap_or(0);
    let Some(status) = &set.status else { return Progress::Pending("no status yet".into()) };
    if status.observed_generation.unwrap_or(0) < generation {
        return Progress::Pending("waiting for the controller to see the new spec".into());
    }
    let desired = set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let ready = status.ready_replicas.unwrap_or(0);
    if ready < desired {
        return Progress::Pending(format!("{ready} of {desired} replicas ready"));
    }
    if status.update_revision.is_some() && status.update_revision != status.current_revision {
        return Progress::Pending(format!(
            "revision {} not yet current (current {})",
            status.update_revision.as_deref().unwrap_or(""),
            status.current_revision.as_deref().unwrap_or("")
        ));
    }
    Progress::Done
}

/// The rule for a Job.
pub fn job_progress(job: &Job) -> Progress {
    let conditions = job.status.as_ref().and_then(|s| s.conditions.as_ref());
    for condition in conditions.into_iter().flatten() {
        if condition.status != "True" {
            continue;
        }
        match condition.type_.as_str() {
            "Complete" => return Progress::Done,
            "Failed" => {
                return Progress::Failed(format!(
                    "Job failed: {}",
                    condition.message.as_deref().or(condition.reason.as_deref()).unwrap_or("no reason given")
                ));
            }
            _ => {}
        }
    }
    let active = job.status.as_ref().and_then(|s| s.active).unwrap_or(0);
    Progress::Pending(format!("{active} pods running"))
}

/// A pod that will not become ready, and why (`phase_failed`: a failed pod counts too).
pub fn pod_failure(pod: &Pod, phase_failed: bool) -> Option<String> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let name = pod.metadata.name.as_deref().unwrap_or("");
    let status = pod.status.as_ref()?;
    for container in status.container_statuses.iter().flatten() {
        let waiting = container.state.as_ref().and_then(|s| s.waiting.as_ref());
        if let Some(reason) = waiting.and_then(|w| w.reason.as_deref()).filter(|r| HOPELESS.contains(r)) {
            let message = waiting.and_then(|w| w.message.as_deref()).unwrap_or("");
            let exit = container
                .last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .map(|t| format!(", last exit code {}", t.exit_code));
            return Some(format!(
                "pod {name}: container {} is in {reason}{}{}",
                container.name,
                exit.unwrap_or_default(),
                if message.is_empty() { String::new() } else { format!(" ({message})") }
            ));
        }
    }
    (phase_failed && status.phase.as_deref() == Some("Failed")).then(|| {
        format!(
            "pod {name} failed: {}",
            status.message.as_deref().or(status.reason.as_deref()).unwrap_or("its containers exited")
        )
    })
}

/// `matchLabels` of an object's selector as a label selector (`a=b,c=d`).
pub fn selector_of(object: &Value) -> String {
    let labels = object.pointer("/spec/selector/matchLabels").and_then(Value::as_object);
    let mut pairs: Vec<String> =
        labels.into_iter().flatten().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect();
    pairs.sort();
    pairs.join(",")
}

impl KubernetesTarget<'_> {
    /// The last log lines of a pod's first container (of its previous run when it restarted).
    pub(super) async fn pod_logs(&self, pod: &str) -> Vec<String> {
        let pods: Api<Pod> = Api::namespaced(self.cluster.call(), self.namespace());
        let restarted = match pods.get_opt(pod).await {
            Ok(Some(found)) => found.status.and_then(|s| s.container_statuses).is_some_and(|c| {
                c.iter().any(|c| c.restart_count > 0 && c.state.as_ref().is_some_and(|s| s.running.is_none()))
            }),
            _ => false,
        };
        let params = LogParams { tail_lines: Some(LOG_TAIL), previous: restarted, ..LogParams::default() };
        match pods.logs(pod, &params).await {
            Ok(text) => text.lines().map(str::to_string).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Watches `name` (of kind `K`) and the pods `selector` picks until `progress` says it
    /// is done or failed, or a pod fails.
    async fn watch_until<K>(
        &self,
        name: &str,
        selector: &str,
        phase_failed: bool,
        progress: fn(&K) -> Progress,
        last: &std::cell::RefCell<String>,
    ) -> Readiness
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned
            + Send
            + 'static,
        K::DynamicType: Default,
    {
        let objects: Api<K> = Api::namespaced(self.cluster.call(), self.namespace());
        let pods: Api<Pod> = Api::namespaced(self.cluster.call(), self.namespace());
        let by_name = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let mut object_events = watcher(objects, by_name).default_backoff().applied_objects().boxed();
        let mut pod_events =
            watcher(pods, watcher::Config::default().labels(selector)).default_backoff().applied_objects().boxed();
        loop {
            tokio::select! {
                Some(event) = object_events.next() => {
                    let Ok(object) = event else { continue };
                    match progress(&object) {
                        Progress::Done => return Readiness::Ready,
                        Progress::Failed(reason) => return Readiness::Failed { reason, logs: Vec::new() },
                        Progress::Pending(detail) => *last.borrow_mut() = detail,
                    }
                }
                Some(event) = pod_events.next() => {
                    let Ok(pod) = event else { continue };
                    if let Some(reason) = pod_failure(&pod, phase_failed) {
                        let logs = self.pod_logs(pod.metadata.name.as_deref().unwrap_or("")).await;
                        return Readiness::Failed { reason, logs };
                    }
                }
                else => return Readiness::Failed { reason: "the watch ended".into(), logs: Vec::new() },
            }
        }
    }

    /// Passes the health gate of an agent's pod (probes through the pod proxy).
    pub(super) async fn gate(&self, agent: &str, image: &str, deadline: Duration) -> Result<Readiness, TargetError> {
        let version = crate::docker::gate::image_version(self.engine().await?, image).await;
        let rules = Rules {
            min_healthy_time_ms: self.fleet.update.min_healthy_time,
            deadline_ms: u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX),
            engine_check: false,
        };
        let interval = Duration::from_millis(self.fleet.update.probe_interval);
        match crate::gate::hold(version.as_deref(), rules, interval, || self.probe_agent(agent)).await? {
            crate::gate::Held::Passed => Ok(Readiness::Ready),
            crate::gate::Held::Failed { failure, report } => {
                Ok(Readiness::Failed { reason: failure.to_string(), logs: report.logs })
            }
        }
    }
}

/// Waits for a step's object, within `deadline`.
pub async fn wait_step(
    target: &KubernetesTarget<'_>,
    step: &Step<Value>,
    deadline: Duration,
) -> Result<Readiness, TargetError> {
    let Some(resource) = &step.desired else { return Ok(Readiness::Ready) };
    if step.wait == Wait::Nothing {
        return Ok(Readiness::Ready);
    }
    let name = resource.key.name.as_str();
    let selector = selector_of(&resource.payload);
    let started = Instant::now();
    let last = std::cell::RefCell::new("no status seen".to_string());
    let watched = async {
        match resource.key.kind.as_str() {
            "Deployment" => target.watch_until::<Deployment>(name, &selector, true, deployment_progress, &last).await,
            "StatefulSet" => {
                target.watch_until::<StatefulSet>(name, &selector, true, statefulset_progress, &last).await
            }
            "Job" => target.watch_until::<Job>(name, &selector, false, job_progress, &last).await,
            _ => Readiness::Ready,
        }
    };
    let readiness = match tokio::time::timeout(deadline, watched).await {
        Ok(readiness) => readiness,
        Err(_) => {
            return Ok(Readiness::Failed {
                reason: format!("{} not ready within {} s ({})", resource.key, deadline.as_secs(), last.borrow()),
                logs: Vec::new(),
            });
        }
    };
    if readiness != Readiness::Ready || step.wait != Wait::Gate {
        return Ok(readiness);
    }
    let orchestrator::resource::Component::Agent(agent) = &resource.component else { return Ok(readiness) };
    let image =
        resource.payload.pointer("/spec/template/spec/containers/0/image").and_then(Value::as_str).unwrap_or("");
    target.gate(agent, image, deadline.saturating_sub(started.elapsed())).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(value: Value) -> Deployment {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_deployment_is_done_only_when_the_controller_saw_the_new_spec() {
        let stale =
            deployment(json!({"metadata": {"generation": 3}, "spec": {"replicas": 1, "selector": {}, "template": {}},
            "status": {"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1}}));
        assert!(matches!(deployment_progress(&stale), Progress::Pending(_)));
        let done =
            deployment(json!({"metadata": {"generation": 3}, "spec": {"replicas": 1, "selector": {}, "template": {}},
            "status": {"observedGeneration": 3, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1}}));
        assert_eq!(deployment_progress(&done), Progress::Done);
        let old_left =
            deployment(json!({"metadata": {"generation": 3}, "spec": {"replicas": 1, "selector": {}, "template": {}},
            "status": {"observedGeneration": 3, "replicas": 2, "updatedReplicas": 1, "availableReplicas": 1}}));
        assert!(matches!(deployment_progress(&old_left), Progress::Pending(p) if p.contains("old replicas")));
        let stuck = deployment(
            json!({"metadata": {"generation": 3}, "spec": {"replicas": 1, "selector": {}, "template": {}},
            "status": {"observedGeneration": 3, "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]}}),
        );
        assert!(matches!(deployment_progress(&stuck), Progress::Failed(_)));
    }

    #[test]
    fn a_statefulset_waits_for_its_revision() {
        let set: StatefulSet = serde_json::from_value(json!({"metadata": {"generation": 2},
            "spec": {"replicas": 1, "selector": {}, "serviceName": "s", "template": {}},
            "status": {"observedGeneration": 2, "replicas": 1, "readyReplicas": 1, "currentRevision": "a", "updateRevision": "b"}})).unwrap();
        assert!(matches!(statefulset_progress(&set), Progress::Pending(p) if p.contains("revision b")));
    }

    #[test]
    fn crash_loops_fail_at_once() {
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "agent-1"}, "status": {"phase": "Running",
            "containerStatuses": [{"name": "agent", "image": "i", "imageID": "", "ready": false, "restartCount": 2,
              "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}},
              "lastState": {"terminated": {"exitCode": 1}}}]}}))
        .unwrap();
        let failure = pod_failure(&pod, true).unwrap();
        assert_eq!(failure, "pod agent-1: container agent is in CrashLoopBackOff, last exit code 1 (back-off 10s)");
        assert_eq!(selector_of(&json!({"spec": {"selector": {"matchLabels": {"b": "2", "a": "1"}}}})), "a=1,b=2");
    }
}
