//! The pod watch: binds every unscheduled pod in scope to this node (the `binding`
//! subresource, as the scheduler does) and hands each pod bound here to its own worker task.
//!
//! `kube::runtime::watcher` re-lists after a cut connection; a pod missing from a re-list was
//! deleted while the watch was down, and its worker is told so.

use super::{Context, worker};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, ResourceExt};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How long workers get to finish their pass when the kubelet shuts down.
const WORKER_GRACE: Duration = Duration::from_secs(5);

struct Workers {
    ctx: Arc<Context>,
    shutdown: watch::Receiver<bool>,
    by_uid: HashMap<String, watch::Sender<Option<Pod>>>,
    tasks: JoinSet<()>,
}

/// Watches pods until `shutdown` turns true, then stops the workers (waiting up to
/// [`WORKER_GRACE`] for them, aborting the rest).
pub(crate) async fn supervise(ctx: Arc<Context>, mut shutdown: watch::Receiver<bool>) {
    let api: Api<Pod> = match &ctx.options.namespace {
        Some(namespace) => Api::namespaced(ctx.client.clone(), namespace),
        None => Api::all(ctx.client.clone()),
    };
    let mut events = watcher::watcher(api.clone(), watcher::Config::default()).default_backoff().boxed();
    let mut workers =
        Workers { ctx: ctx.clone(), shutdown: shutdown.clone(), by_uid: HashMap::new(), tasks: JoinSet::new() };
    let mut relisted: Option<HashSet<String>> = None;
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            _ = shutdown.changed() => break,
            Some(done) = workers.tasks.join_next(), if !workers.tasks.is_empty() => {
                if let Err(err) = done && err.is_panic() {
                    eprintln!("test-kubelet: a pod worker panicked: {err}");
                }
                continue;
            }
        };
        match event {
            None => break,
            Some(Err(err)) => eprintln!("test-kubelet: watching pods: {err}"),
            Some(Ok(Event::Init)) => relisted = Some(HashSet::new()),
            Some(Ok(Event::InitApply(pod))) => {
                if let Some(seen) = &mut relisted {
                    seen.insert(pod.uid().unwrap_or_default());
                }
                handle(&ctx, &api, &mut workers, pod).await;
            }
            Some(Ok(Event::InitDone)) => {
                let seen = relisted.take().unwrap_or_default();
                let gone: Vec<String> = workers.by_uid.keys().filter(|uid| !seen.contains(*uid)).cloned().collect();
                for uid in gone {
                    workers.deleted(&uid);
                }
            }
            Some(Ok(Event::Apply(pod))) => handle(&ctx, &api, &mut workers, pod).await,
            Some(Ok(Event::Delete(pod))) => workers.deleted(&pod.uid().unwrap_or_default()),
        }
    }
    drop(events);
    let mut tasks = std::mem::take(&mut workers.tasks);
    workers.by_uid.clear();
    let drained = tokio::time::timeout(WORKER_GRACE, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tasks.shutdown().await;
    }
}

async fn handle(ctx: &Context, api: &Api<Pod>, workers: &mut Workers, pod: Pod) {
    let node_name = pod.spec.as_ref().and_then(|spec| spec.node_name.clone()).filter(|n| !n.is_empty());
    match node_name {
        None if pod.metadata.deletion_timestamp.is_none() => bind(ctx, api, &pod).await,
        None => {}
        Some(node) if node == ctx.options.node_name => workers.apply(pod),
        Some(_) => {}
    }
}

/// Binds `pod` to this node, as the scheduler would.
async fn bind(ctx: &Context, api: &Api<Pod>, pod: &Pod) {
    let name = pod.name_any();
    let namespace = pod.namespace().unwrap_or_default();
    let binding = json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": { "name": name, "namespace": namespace, "uid": pod.uid() },
        "target": { "apiVersion": "v1", "kind": "Node", "name": ctx.options.node_name },
    });
    let api = Api::<Pod>::namespaced(api.clone().into_client(), &namespace);
    match api.create_subresource::<_, serde_json::Value>("binding", &name, &PostParams::default(), &binding).await {
        Ok(_) => {}
        // Already bound (a repeated event) or gone.
        Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => {}
        Err(err) => eprintln!("test-kubelet: binding pod {namespace}/{name} to {}: {err}", ctx.options.node_name),
    }
}

impl Workers {
    /// Gives the newest version of a pod to its worker, starting one for a new uid.
    fn apply(&mut self, pod: Pod) {
        let uid = pod.uid().unwrap_or_default();
        if let Some(sender) = self.by_uid.get(&uid)
            && !sender.is_closed()
        {
            sender.send_replace(Some(pod));
            return;
        }
        let (sender, receiver) = watch::channel(Some(pod));
        self.tasks.spawn(worker::run(self.ctx.clone(), receiver, self.shutdown.clone()));
        self.by_uid.insert(uid, sender);
    }

    /// Tells the worker of `uid` that its pod is gone.
    fn deleted(&mut self, uid: &str) {
        if let Some(sender) = self.by_uid.remove(uid) {
            sender.send_replace(None);
        }
    }
}
