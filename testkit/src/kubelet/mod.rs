//! A test kubelet, in the manner of kwok but real: it registers a Ready Node with an API
//! server that has no scheduler and no kubelet, binds every unscheduled pod to it, and runs
//! the pods as containers on the local Docker Engine, so that Deployments become available,
//! Jobs complete, probes and the API server's pod proxy reach real processes.
//!
//! Code map:
//! - `node`: the Node object (Ready, capacity, the not-ready taint removed).
//! - `pods`: the pod watch, binding, one `worker` task per pod uid.
//! - `worker`: sandbox + volumes + containers of one pod, its status, its deletion.
//! - `lifecycle`: one container's attempts, restarts with back-off, probe verdicts.
//! - `containers`, `images`, `env`, `volumes`, `refs`, `quantity`: the Docker
//!   side of a container spec. `sandbox`: the per-pod network owner. `probes`, `status`.
//!
//! Invariants: every Docker object it makes carries the labels `io.rivetctl.testkubelet=<node>`
//! and `io.rivetctl.testkubelet.instance=<id>`; [`Kubelet::shutdown`] and `Drop` remove
//! exactly the objects of their instance (so parallel tests each with their own kubelet do not
//! touch each other's containers), and [`Kubelet::start`] removes leftovers of kubelets whose
//! process is gone. The Node object is left in place (pods stay bound to it).
//!
//! Simplified on purpose: no Service networking or cluster DNS, no lifecycle hooks, no
//! ephemeral containers, no readiness gates, no `activeDeadlineSeconds`, no ConfigMap/Secret
//! volume refresh after the pod started, HTTPS probes unsupported. Unsupported volume types
//! keep the pod in `ContainerCreating` with a message.

mod containers;
mod env;
mod images;
mod lifecycle;
mod node;
mod pods;
mod probes;
mod quantity;
mod refs;
mod sandbox;
mod services;
mod status;
mod volumes;
mod worker;

use anyhow::Context as _;
use bollard::Docker;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The node's address, and every pod's `hostIP`.
pub(crate) const HOST_IP: &str = "127.0.0.1";
/// The cap of every back-off (crash loops, image pulls).
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Value: the node name.
pub(crate) const LABEL_NODE: &str = "io.rivetctl.testkubelet";
/// Value: the id of one [`Kubelet`] instance.
pub(crate) const LABEL_INSTANCE: &str = "io.rivetctl.testkubelet.instance";
/// Value: the process id of the test that made the object (for the sweep of leftovers).
pub(crate) const LABEL_PID: &str = "io.rivetctl.testkubelet.pid";
/// Value: the uid of the pod a container or emptyDir volume belongs to.
pub(crate) const LABEL_POD_UID: &str = "io.rivetctl.testkubelet.pod-uid";
/// Value: the name of the pod's container a Docker container runs (`POD`: the sandbox).
pub(crate) const LABEL_CONTAINER: &str = "io.rivetctl.testkubelet.container";

/// How a [`Kubelet`] runs.
#[derive(Debug, Clone)]
pub struct KubeletOptions {
    /// The Node it registers and binds pods to.
    pub node_name: String,
    /// Only pods of this namespace (`None`: all namespaces).
    pub namespace: Option<String>,
    /// The Docker network of the pod sandboxes. Its container IPs must be routable from this
    /// host, so that the API server's pod proxy and the probes reach them (`bridge` is).
    pub docker_network: String,
    /// The first `CrashLoopBackOff` / `ImagePullBackOff` delay; it doubles up to 10 s.
    pub restart_backoff: Duration,
}

impl Default for KubeletOptions {
    fn default() -> Self {
        KubeletOptions {
            node_name: "rivet-test-node".into(),
            namespace: None,
            docker_network: "bridge".into(),
            restart_backoff: Duration::from_secs(1),
        }
    }
}

/// What every task of one kubelet shares.
pub(crate) struct Context {
    pub client: kube::Client,
    pub docker: Docker,
    pub options: KubeletOptions,
    /// This instance's id (the value of [`LABEL_INSTANCE`]).
    pub instance: String,
    /// The kubelet's own files (ConfigMap/Secret volumes), removed when it stops.
    pub state_dir: PathBuf,
}

impl Context {
    /// The labels of every Docker object this instance makes.
    pub fn labels(&self) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_NODE.to_string(), self.options.node_name.clone()),
            (LABEL_INSTANCE.to_string(), self.instance.clone()),
            (LABEL_PID.to_string(), std::process::id().to_string()),
        ])
    }
}

/// A running test kubelet. Stop it with [`Kubelet::shutdown`]; dropping it also removes its
/// containers and volumes (synchronously, with the `docker` CLI).
pub struct Kubelet {
    instance: String,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    state_dir: Option<tempfile::TempDir>,
    docker: Docker,
    /// Set when [`Kubelet::shutdown`] has removed everything (`Drop` then has nothing to do).
    cleaned: bool,
}

impl Kubelet {
    /// Connects to the local Docker Engine, removes leftovers of dead test processes,
    /// registers the Node (Ready) and starts watching pods.
    pub async fn start(client: kube::Client, options: KubeletOptions) -> anyhow::Result<Kubelet> {
        let docker = Docker::connect_with_local_defaults().context("connecting to the local Docker Engine")?;
        docker.ping().await.context("the local Docker Engine does not answer (the test kubelet runs pods on it)")?;
        sweep_dead_processes(&docker).await;
        sandbox::ensure_pause_image(&docker).await?;
        let state_dir = tempfile::Builder::new()
            .prefix("rivet-test-kubelet-")
            .tempdir()
            .context("creating the test kubelet's state directory")?;
        let instance = instance_id();
        node::register(&client, &options.node_name).await?;
        let ctx = Arc::new(Context {
            client: client.clone(),
            docker: docker.clone(),
            options: options.clone(),
            instance: instance.clone(),
            state_dir: state_dir.path().to_path_buf(),
        });
        let (shutdown, shutdown_receiver) = watch::channel(false);
        let tasks = vec![
            tokio::spawn(pods::supervise(ctx, shutdown_receiver)),
            tokio::spawn(node::keep_ready(client, options.node_name.clone())),
        ];
        Ok(Kubelet { instance, shutdown, tasks, state_dir: Some(state_dir), docker, cleaned: false })
    }

    /// Stops watching, lets the pod workers finish their pass, then removes every container,
    /// volume and file this kubelet made (persistent-volume-claim volumes included).
    pub async fn shutdown(mut self) {
        self.shutdown.send_replace(true);
        if let Some(supervisor) = self.tasks.first_mut() {
            let _ = supervisor.await;
        }
        for task in &self.tasks {
            task.abort();
        }
        remove_labelled(&self.docker, &format!("{LABEL_INSTANCE}={}", self.instance)).await;
        if let Some(dir) = self.state_dir.take()
            && let Err(err) = dir.close()
        {
            eprintln!("test-kubelet: removing its state directory: {err}");
        }
        // Only now: a shutdown cancelled half-way still leaves the sweep to Drop.
        self.cleaned = true;
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
        for task in &self.tasks {
            task.abort();
        }
        if !self.cleaned {
            remove_labelled_sync(&format!("{LABEL_INSTANCE}={}", self.instance));
        }
    }
}

/// An id unique among the kubelets of this machine: process id, time, counter.
fn instance_id() -> String {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("{:x}{:x}{count}", std::process::id(), nanos & 0xfffff)
}

/// Removes the containers, then the volumes, that carry `label` (`key=value`).
async fn remove_labelled(docker: &Docker, label: &str) {
    use bollard::query_parameters::{
        ListContainersOptionsBuilder, ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder,
        RemoveVolumeOptionsBuilder,
    };
    let filters = HashMap::from([("label".to_string(), vec![label.to_string()])]);
    let listed =
        docker.list_containers(Some(ListContainersOptionsBuilder::default().all(true).filters(&filters).build()));
    match listed.await {
        Ok(list) => {
            for id in list.into_iter().filter_map(|c| c.id) {
                let options = RemoveContainerOptionsBuilder::default().force(true).v(true).build();
                if let Err(err) = docker.remove_container(&id, Some(options)).await {
                    eprintln!("test-kubelet: removing Docker container {id}: {err}");
                }
            }
        }
        Err(err) => eprintln!("test-kubelet: listing Docker containers labelled {label}: {err}"),
    }
    match docker.list_volumes(Some(ListVolumesOptionsBuilder::default().filters(&filters).build())).await {
        Ok(list) => {
            for volume in list.volumes.unwrap_or_default() {
                let options = RemoveVolumeOptionsBuilder::default().force(true).build();
                if let Err(err) = docker.remove_volume(&volume.name, Some(options)).await {
                    eprintln!("test-kubelet: removing Docker volume {}: {err}", volume.name);
                }
            }
        }
        Err(err) => eprintln!("test-kubelet: listing Docker volumes labelled {label}: {err}"),
    }
}

/// [`remove_labelled`] without a runtime, for `Drop`: the `docker` CLI.
fn remove_labelled_sync(label: &str) {
    let run = |args: &[&str]| -> Vec<String> {
        match std::process::Command::new("docker").args(args).output() {
            Ok(out) if out.status.success() => {
                String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_string).collect()
            }
            Ok(out) => {
                eprintln!("test-kubelet: docker {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
                Vec::new()
            }
            Err(err) => {
                eprintln!("test-kubelet: running docker {}: {err}", args.join(" "));
                Vec::new()
            }
        }
    };
    let filter = format!("label={label}");
    let containers = run(&["ps", "-aq", "--filter", &filter]);
    if !containers.is_empty() {
        let mut args = vec!["rm", "-f", "-v"];
        args.extend(containers.iter().map(String::as_str));
        run(&args);
    }
    let volumes = run(&["volume", "ls", "-q", "--filter", &filter]);
    if !volumes.is_empty() {
        let mut args = vec!["volume", "rm", "-f"];
        args.extend(volumes.iter().map(String::as_str));
        run(&args);
    }
}

/// Removes the objects of test kubelets whose process no longer runs (a test killed before
/// its `Drop`).
async fn sweep_dead_processes(docker: &Docker) {
    use bollard::query_parameters::{ListContainersOptionsBuilder, ListVolumesOptionsBuilder};
    let filters = HashMap::from([("label".to_string(), vec![LABEL_PID.to_string()])]);
    let mut pids: Vec<String> = Vec::new();
    if let Ok(list) =
        docker.list_containers(Some(ListContainersOptionsBuilder::default().all(true).filters(&filters).build())).await
    {
        pids.extend(list.into_iter().filter_map(|c| c.labels.and_then(|l| l.get(LABEL_PID).cloned())));
    }
    if let Ok(list) = docker.list_volumes(Some(ListVolumesOptionsBuilder::default().filters(&filters).build())).await {
        pids.extend(list.volumes.unwrap_or_default().into_iter().filter_map(|v| v.labels.get(LABEL_PID).cloned()));
    }
    pids.sort();
    pids.dedup();
    for pid in pids {
        let alive = pid.parse::<u32>().is_ok_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            eprintln!("test-kubelet: removing the Docker objects of a test kubelet of the dead process {pid}");
            remove_labelled(docker, &format!("{LABEL_PID}={pid}")).await;
        }
    }
}
