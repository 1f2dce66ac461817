//! `update` on Kubernetes through the controller manager and the test kubelet: four agents,
//! `max_parallel: 1` with a one-agent canary. A watch on the namespace's pods (in the test,
//! through kube-rs, not rivetctl) records every pod change while `update` runs; the test
//! checks what it saw: never more than one agent without a ready pod, never two pods of one
//! agent at once (`strategy: Recreate`), the canary replaced first. A revision whose agents
//! crash-loop then fails fast, exits 3, and the canary's Deployment is back on exactly its
//! previous template; the other agents were never touched.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};
use support::kube::KubeFleet;
use support::mesh;

const AGENTS: &[&str] = &["a1", "a2", "a3", "a4"];
const UP: &[&str] = &["infra", "up", "--yes", "--no-push"];

/// One pod as the watch last saw it.
#[derive(Debug, Clone)]
struct Seen {
    agent: String,
    ready: bool,
}

/// What the watch saw: after each event, the pods present (by uid).
#[derive(Default)]
struct Timeline {
    pods: BTreeMap<String, Seen>,
    /// `(elapsed, agents without a ready pod, agents with two pods, uids per agent)` after each event.
    states: Vec<(Duration, Vec<String>, Vec<String>)>,
    /// The order in which agents first got a pod they did not have at the start.
    replaced: Vec<String>,
    initial: BTreeSet<String>,
}

impl Timeline {
    fn record(&mut self, at: Duration) {
        let mut down = Vec::new();
        let mut doubled = Vec::new();
        for id in AGENTS {
            let pods: Vec<&Seen> = self.pods.values().filter(|p| p.agent == *id).collect();
            if !pods.iter().any(|p| p.ready) {
                down.push(id.to_string());
            }
            if pods.len() > 1 {
                doubled.push(id.to_string());
            }
        }
        self.states.push((at, down, doubled));
    }
}

fn agent_of(pod: &Pod) -> Option<String> {
    pod.metadata.labels.as_ref()?.get("rivetctl.io/agent").cloned()
}

fn ready(pod: &Pod) -> bool {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions.is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Watches the namespace's agent pods into a timeline until the returned flag is set.
fn watch_pods(k: &KubeFleet) -> (Arc<Mutex<Timeline>>, tokio::task::JoinHandle<()>) {
    let timeline = Arc::new(Mutex::new(Timeline::default()));
    let (namespace, shared) = (k.namespace.clone(), timeline.clone());
    let client = k.block_on(k.server.client());
    let pods: kube::Api<Pod> = kube::Api::namespaced(client, &namespace);
    let started = Instant::now();
    let handle = k.spawn(async move {
        let mut initial_done = false;
        let mut events = watcher::watcher(pods, watcher::Config::default().labels("rivetctl.io/agent")).boxed();
        while let Some(event) = events.next().await {
            let Ok(event) = event else { continue };
            let mut timeline = shared.lock().unwrap();
            match event {
                Event::Apply(pod) | Event::InitApply(pod) => {
                    let (Some(uid), Some(agent)) = (pod.metadata.uid.clone(), agent_of(&pod)) else { continue };
                    if initial_done && !timeline.initial.contains(&uid) && !timeline.replaced.contains(&agent) {
                        timeline.replaced.push(agent.clone());
                    }
                    if !initial_done {
                        timeline.initial.insert(uid.clone());
                    }
                    timeline.pods.insert(uid, Seen { agent, ready: ready(&pod) });
                }
                Event::Delete(pod) => {
                    timeline.pods.remove(&pod.metadata.uid.unwrap_or_default());
                }
                Event::InitDone => initial_done = true,
                Event::Init => {}
            }
            if initial_done {
                timeline.record(started.elapsed());
            }
        }
    });
    (timeline, handle)
}

fn fleet(test: &str) -> KubeFleet {
    let k = KubeFleet::new(test, AGENTS);
    k.fleet.edit(|text| {
        text.replace("    max_parallel: 1\n", "    max_parallel: 1\n    canary: 1\n    healthy_deadline: 60s\n")
    });
    k
}

/// Makes the agent's entrypoint exit at once (a broken source revision).
fn break_entrypoint(k: &KubeFleet) {
    let path = k.fleet.dir.path().join("containers/agent/bin/rivetos");
    let text = std::fs::read_to_string(&path).unwrap();
    let broken =
        text.replacen("run_agent() {\n", "run_agent() {\n    die \"broken on purpose by kubernetes_rollout\"\n", 1);
    assert_ne!(text, broken);
    std::fs::write(&path, broken).unwrap();
}

#[test]
fn update_replaces_one_agent_at_a_time_canary_first_and_rolls_back_a_crash_loop() {
    let k = fleet("k8sroll");
    k.expect(UP, 0);

    mesh::bump(&k.fleet, "2.0.0");
    let (timeline, watch) = watch_pods(&k);
    let output = k.expect(&["update", "--no-push"], 0);
    watch.abort();
    let seen = timeline.lock().unwrap();
    assert!(seen.states.len() > 8, "the watch saw only {} states", seen.states.len());
    let worst = seen.states.iter().max_by_key(|(_, down, _)| down.len()).unwrap();
    assert!(worst.1.len() <= 1, "{:?} down at once at {:?} with max_parallel 1", worst.1, worst.0);
    let doubled: Vec<_> = seen.states.iter().filter(|(_, _, two)| !two.is_empty()).collect();
    assert!(doubled.is_empty(), "two pods of one agent at once: {doubled:?}");
    assert_eq!(
        seen.replaced,
        AGENTS,
        "replaced in order, canary (a1) first:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    drop(seen);
    for id in AGENTS {
        let version = k.kubectl(&[
            "get",
            "deployment",
            &k.agent(id),
            "-n",
            &k.namespace,
            "-o",
            "jsonpath={.metadata.annotations.rivetctl\\.io/revision}",
        ]);
        assert!(!version.is_empty(), "{id} has a revision");
    }

    // A revision whose agents crash-loop: the canary fails fast, is rolled back, exit 3.
    let before: BTreeMap<String, serde_json::Value> = AGENTS
        .iter()
        .map(|id| (id.to_string(), k.get("deployment", &k.agent(id))["spec"]["template"].clone()))
        .collect();
    let uids_before = k.names("pods");
    break_entrypoint(&k);
    mesh::bump(&k.fleet, "3.0.0");
    let started = Instant::now();
    let output = k.command(&["update", "--no-push"]).output().unwrap();
    assert_eq!(output.status.code(), Some(3), "{}", support::describe(&output));
    assert!(started.elapsed() < Duration::from_secs(60), "the crash loop failed fast ({:?})", started.elapsed());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("a1"), "{stderr}");
    for id in AGENTS {
        let after = k.get("deployment", &k.agent(id));
        assert_eq!(after["spec"]["template"], before[*id], "{id}'s Deployment is on its previous template");
        assert_eq!(after["spec"]["replicas"], 1);
    }
    // The agents other than the canary kept their pods.
    let uids_after = k.names("pods");
    let kept = uids_before.iter().filter(|p| uids_after.contains(p)).count();
    assert!(kept >= AGENTS.len() - 1, "pods before {uids_before:?}, after {uids_after:?}");
}

/// A datahub update whose pod crash-loops: the StatefulSet is put back on its previous spec
/// and the pod stuck on the broken revision is deleted (a StatefulSet does not heal by
/// itself), so the datahub is ready again on its old revision, its claim untouched; exit 3.
#[test]
fn a_broken_datahub_update_is_rolled_back_and_its_stuck_pod_replaced() {
    let k = KubeFleet::new("k8shub", &["a1"]);
    k.expect(UP, 0);
    let hub = format!("{}-datahub", k.fleet.name);
    let before = k.get("statefulset", &hub);
    let claims_before = k.kubectl(&["get", "pvc", "-n", &k.namespace, "-o", "jsonpath={.items[*].metadata.uid}"]);
    let revision = before["status"]["currentRevision"].as_str().unwrap().to_string();

    // A datahub source revision that exits at once.
    let path = k.fleet.dir.path().join("containers/datahub/bin/docker-entrypoint.sh");
    let text = std::fs::read_to_string(&path).unwrap();
    let broken =
        text.replacen("#!/bin/sh\n", "#!/bin/sh\necho 'broken on purpose by kubernetes_rollout' >&2; exit 1\n", 1);
    std::fs::write(&path, broken).unwrap();
    let output = k.command(UP).output().unwrap();
    assert_eq!(output.status.code(), Some(3), "{}", support::describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("rolled back") && stderr.contains("stuck on the broken revision"), "{stderr}");

    // Back on the previous template and revision, ready, with the same claim.
    let after = k.get("statefulset", &hub);
    assert_eq!(after["spec"]["template"], before["spec"]["template"]);
    assert_eq!(after["status"]["currentRevision"], revision.as_str(), "{after:#}");
    assert_eq!(after["status"]["updateRevision"], revision.as_str(), "{after:#}");
    assert_eq!(after["status"]["readyReplicas"], 1, "{after:#}");
    let pod = k.get("pod", &format!("{hub}-0"));
    assert_eq!(pod["metadata"]["labels"]["controller-revision-hash"], revision.as_str());
    let claims_after = k.kubectl(&["get", "pvc", "-n", &k.namespace, "-o", "jsonpath={.items[*].metadata.uid}"]);
    assert_eq!(claims_after, claims_before);
    // The broken revision is still what the config asks for: preview shows it again.
    k.expect(&["infra", "preview", "--detailed-exitcode"], 2);
}
