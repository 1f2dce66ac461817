//! The worker of one pod (one task per pod uid): makes its sandbox and volumes, steps its
//! init and main containers, writes `pods/status` when it changed, and finishes the pod when
//! it is deleted.
//!
//! The loop wakes on a new version of the pod, when a probe or back-off is due, and at least
//! once a second to notice exited containers. Errors are logged (`test-kubelet:`) and retried
//! on the next pass; nothing here panics.

use super::lifecycle::{self, PodEnv, Role};
use super::sandbox::{self, Sandbox};
use super::status::{self, Conditions, ContainerRun, RunState, StatusInput};
use super::volumes::{self, PodVolumes};
use super::{Context, LABEL_CONTAINER, LABEL_POD_UID, containers};
use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveVolumeOptionsBuilder};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, ResourceExt};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// The container label value of a pod's sandbox (Kubernetes' name for it).
const SANDBOX: &str = "POD";
/// How often a pod's containers are looked at when nothing else is due.
const POLL: Duration = Duration::from_secs(1);

struct Worker {
    ctx: Arc<Context>,
    pod: Pod,
    uid: String,
    dir: PathBuf,
    sandbox: Option<Sandbox>,
    volumes: Option<PodVolumes>,
    init: Vec<ContainerRun>,
    containers: Vec<ContainerRun>,
    conditions: Conditions,
    start_time: Time,
    /// The last status written, to write only changes.
    written: Option<serde_json::Value>,
    /// The pod reached Succeeded or Failed: nothing more runs.
    terminal: bool,
}

/// Runs the pod `updates` carries until it is deleted (`None`, or deleted by this worker after
/// its `deletionTimestamp`) or the kubelet shuts down.
pub(crate) async fn run(
    ctx: Arc<Context>,
    mut updates: watch::Receiver<Option<Pod>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Some(pod) = updates.borrow_and_update().clone() else { return };
    let mut worker = Worker::new(ctx, pod);
    loop {
        let latest = updates.borrow_and_update().clone();
        let Some(pod) = latest else {
            worker.remove_everything().await;
            return;
        };
        worker.pod = pod;
        let wake = if worker.pod.metadata.deletion_timestamp.is_some() {
            if worker.finish_deletion().await {
                return;
            }
            Instant::now() + POLL
        } else {
            worker.sync().await
        };
        tokio::select! {
            changed = updates.changed() => if changed.is_err() { return },
            _ = shutdown.changed() => return,
            () = tokio::time::sleep_until(wake) => {}
        }
    }
}

impl Worker {
    fn new(ctx: Arc<Context>, pod: Pod) -> Worker {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let backoff = ctx.options.restart_backoff;
        let runs = |list: &[k8s_openapi::api::core::v1::Container]| {
            list.iter().map(|c| ContainerRun::new(&c.name, c.image.as_deref().unwrap_or_default(), backoff)).collect()
        };
        let status = pod.status.clone().unwrap_or_default();
        let mut conditions = Conditions::default();
        for condition in status.conditions.iter().flatten().filter(|c| c.type_ == "PodScheduled") {
            conditions.adopt(condition);
        }
        Worker {
            dir: ctx.state_dir.join("pods").join(&uid),
            init: runs(spec.init_containers.as_deref().unwrap_or_default()),
            containers: runs(&spec.containers),
            terminal: matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")),
            start_time: status.start_time.unwrap_or_else(containers::now),
            sandbox: None,
            volumes: None,
            conditions,
            written: None,
            uid,
            pod,
            ctx,
        }
    }

    fn label(&self) -> String {
        format!("{}/{}", self.pod.namespace().unwrap_or_default(), self.pod.name_any())
    }

    /// One pass over the pod; returns when the next is due.
    async fn sync(&mut self) -> Instant {
        if self.terminal {
            return Instant::now() + POLL * 10;
        }
        if let Err(message) = self.ensure_sandbox_and_volumes().await {
            eprintln!("test-kubelet: pod {}: {message}", self.label());
            for run in self.init.iter_mut().chain(self.containers.iter_mut()).filter(|r| !r.ever_created) {
                run.state = RunState::Waiting { reason: "ContainerCreating".into(), message: Some(message.clone()) };
            }
            self.write_status().await;
            return Instant::now() + POLL * 2;
        }
        let (Some(sandbox), Some(pod_volumes)) = (&self.sandbox, &self.volumes) else {
            return Instant::now() + POLL;
        };
        let sandbox_id = sandbox.id.clone();
        let spec = self.pod.spec.clone().unwrap_or_default();
        {
            let env = PodEnv { ctx: &self.ctx, pod: &self.pod, sandbox, volumes: pod_volumes };
            let init_specs = spec.init_containers.as_deref().unwrap_or_default();
            let mut initialized = true;
            for (run, container) in self.init.iter_mut().zip(init_specs) {
                if !run.finished {
                    lifecycle::step(&env, run, container, Role::Init).await;
                }
                if !(run.finished && matches!(&run.state, RunState::Terminated(t) if t.exit_code == 0)) {
                    initialized = false;
                    break;
                }
            }
            if initialized {
                let steps = self
                    .containers
                    .iter_mut()
                    .zip(&spec.containers)
                    .map(|(run, container)| lifecycle::step(&env, run, container, Role::Main));
                futures_util::future::join_all(steps).await;
            }
        }
        self.write_status().await;
        let phase = status::phase(&self.init, &self.containers);
        if phase == "Succeeded" || phase == "Failed" {
            self.terminal = true;
            // The real kubelet stops the sandbox of a finished pod; its exited containers stay.
            containers::remove(&self.ctx.docker, &sandbox_id).await;
        }
        let due = self.init.iter().chain(&self.containers).filter_map(lifecycle::next_wake).min();
        let poll = Instant::now() + POLL;
        due.map_or(poll, |due| due.min(poll))
    }

    async fn ensure_sandbox_and_volumes(&mut self) -> Result<(), String> {
        if self.sandbox.is_none() {
            sandbox::ensure_pause_image(&self.ctx.docker).await.map_err(|err| format!("{err:#}"))?;
            let uid = volumes::short(&self.uid);
            let name = format!("rtk-{}-{}-{uid}", self.pod.namespace().unwrap_or_default(), self.pod.name_any());
            let spec = self.pod.spec.as_ref();
            let hostname = spec.and_then(|s| s.hostname.clone()).unwrap_or_else(|| self.pod.name_any());
            let labels = containers::pod_labels(&self.ctx, &self.pod, SANDBOX);
            containers::remove(&self.ctx.docker, &name).await;
            let namespace = self.pod.namespace().unwrap_or_default();
            let hosts = super::services::hosts(&self.ctx.client, &namespace).await;
            let network = &self.ctx.options.docker_network;
            let started = sandbox::start(&self.ctx.docker, &name, &hostname, network, labels, hosts)
                .await
                .map_err(|err| format!("{err:#}"))?;
            self.sandbox = Some(started);
        }
        if self.volumes.is_none() {
            let ip = self.sandbox.as_ref().map(|s| s.ip.clone()).unwrap_or_default();
            self.volumes = Some(volumes::prepare(&self.ctx, &self.pod, &self.dir, &ip).await?);
        }
        Ok(())
    }

    async fn write_status(&mut self) {
        let input = StatusInput {
            init: &self.init,
            containers: &self.containers,
            pod_ip: self.sandbox.as_ref().map(|s| s.ip.as_str()),
            start_time: &self.start_time,
        };
        let status = status::pod_status(&input, &mut self.conditions);
        let Ok(value) = serde_json::to_value(&status) else { return };
        if self.written.as_ref() == Some(&value) {
            return;
        }
        // The uid acts as a precondition: never the status of a same-named successor.
        let patch = serde_json::json!({ "metadata": { "uid": self.uid }, "status": value });
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.pod.namespace().unwrap_or_default());
        match api.patch_status(&self.pod.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => self.written = Some(value),
            // Gone, or replaced by a pod of the same name (v1.20 answers a uid mismatch with
            // 422 "metadata.uid: ... field is immutable").
            Err(kube::Error::Api(status))
                if status.code == 404 || (status.code == 422 && status.message.contains("metadata.uid")) => {}
            Err(err) => eprintln!("test-kubelet: pod {}: writing its status: {err}", self.label()),
        }
    }

    /// Stops the containers with SIGTERM and the deletion's grace period, removes what the
    /// pod had, then deletes the pod for good. `false` when the final delete must be retried.
    async fn finish_deletion(&mut self) -> bool {
        let grace = self.pod.metadata.deletion_grace_period_seconds.unwrap_or(30);
        // The sandbox ignores SIGTERM: it is removed afterwards, not stopped.
        let ids: Vec<String> =
            self.docker_containers().await.into_iter().filter(|(_, c)| c != SANDBOX).map(|(id, _)| id).collect();
        let docker = &self.ctx.docker;
        futures_util::future::join_all(ids.iter().map(|id| containers::stop(docker, id, grace))).await;
        self.remove_everything().await;
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.pod.namespace().unwrap_or_default());
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions { uid: Some(self.uid.clone()), resource_version: None }),
            ..Default::default()
        };
        match api.delete(&self.pod.name_any(), &params).await {
            Ok(_) => true,
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => true,
            Err(err) => {
                eprintln!("test-kubelet: pod {}: deleting it after its containers stopped: {err}", self.label());
                false
            }
        }
    }

    /// The Docker containers (sandbox included) labelled with this pod's uid, with the name of
    /// the container each runs ([`SANDBOX`] for the sandbox).
    async fn docker_containers(&self) -> Vec<(String, String)> {
        let filters = HashMap::from([("label".to_string(), vec![format!("{LABEL_POD_UID}={}", self.uid)])]);
        let options = ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
        match self.ctx.docker.list_containers(Some(options)).await {
            Ok(list) => list
                .into_iter()
                .filter_map(|c| {
                    let container = c.labels.and_then(|mut l| l.remove(LABEL_CONTAINER)).unwrap_or_default();
                    c.id.map(|id| (id, container))
                })
                .collect(),
            Err(err) => {
                eprintln!("test-kubelet: pod {}: listing its Docker containers: {err}", self.label());
                Vec::new()
            }
        }
    }

    /// Removes the pod's containers, its emptyDir volumes and its files (PVC volumes stay).
    async fn remove_everything(&mut self) {
        let ids = self.docker_containers().await;
        let docker = &self.ctx.docker;
        futures_util::future::join_all(ids.iter().map(|(id, _)| containers::remove(docker, id))).await;
        self.volumes = None;
        let label = format!("{LABEL_POD_UID}={}", self.uid);
        match volumes::labelled_volumes(&self.ctx, &label).await {
            Ok(names) => {
                for name in names {
                    let options = RemoveVolumeOptionsBuilder::default().force(true).build();
                    if let Err(err) = docker.remove_volume(&name, Some(options)).await {
                        eprintln!("test-kubelet: pod {}: removing Docker volume {name}: {err}", self.label());
                    }
                }
            }
            Err(err) => eprintln!("test-kubelet: pod {}: listing its Docker volumes: {err}", self.label()),
        }
        if self.dir.exists()
            && let Err(err) = std::fs::remove_dir_all(&self.dir)
        {
            eprintln!("test-kubelet: pod {}: removing {}: {err}", self.label(), self.dir.display());
        }
        self.sandbox = None;
    }
}
