//! The test kubelet against a real kube-apiserver + kube-controller-manager v1.20: workloads
//! the controllers create become real containers on the local Docker Engine, and their status
//! is what the controllers (and rivetctl) wait on.
//!
//! Every test has its own ApiServer and namespace; the Kubelet and the ApiServer clean up in
//! `Drop` on every path, and the happy path also calls `Kubelet::shutdown`. Waits are watches
//! (`await_condition`) bounded by a timeout whose error shows the namespace's pods.
//! Needs the local image `rivetos-base:busybox` (examples/base-image/build.sh).

use bollard::Docker;
use bollard::query_parameters::ListContainersOptionsBuilder;
use futures_util::TryStreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod, Secret, ServiceAccount};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::wait::{Condition, await_condition, conditions};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use rivet_testkit::apiserver::{ApiServer, ApiServerOptions};
use rivet_testkit::kubelet::{Kubelet, KubeletOptions};
use rivet_testkit::registry::{Registry, RegistryOptions};
use serde::de::DeserializeOwned;
use serde_json::json;
use std::collections::HashMap;
use std::fmt::Debug;
use std::time::Duration;

const IMAGE: &str = "rivetos-base:busybox";
/// Generous: two cores, shared with other builds.
const WAIT: Duration = Duration::from_secs(120);

/// One test's API server, client, namespace and kubelet.
struct Cluster {
    client: Client,
    namespace: String,
    kubelet: Option<Kubelet>,
    // Dropped last: the kubelet's Drop still reaches Docker, not the server.
    _server: ApiServer,
}

impl Cluster {
    async fn start(namespace: &str) -> Cluster {
        let image = Docker::connect_with_local_defaults().expect("docker").inspect_image(IMAGE).await;
        assert!(image.is_ok(), "the local image {IMAGE} is missing: run examples/base-image/build.sh");
        let server = ApiServer::start(ApiServerOptions { controller_manager: true });
        let client = server.client().await;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let object: Namespace = from_json(json!({ "metadata": { "name": namespace } }));
        namespaces.create(&PostParams::default(), &object).await.expect("create the namespace");
        // The ServiceAccount admission of v1.20 rejects pods until the default account has its
        // token secret.
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
        let has_token =
            |sa: Option<&ServiceAccount>| sa.is_some_and(|sa| sa.secrets.as_ref().is_some_and(|s| !s.is_empty()));
        wait(&client, namespace, "the default ServiceAccount's token", await_condition(accounts, "default", has_token))
            .await;
        let options = KubeletOptions {
            namespace: Some(namespace.to_string()),
            restart_backoff: Duration::from_secs(1),
            ..KubeletOptions::default()
        };
        let kubelet = Kubelet::start(client.clone(), options).await.expect("start the test kubelet");
        Cluster { client, namespace: namespace.to_string(), kubelet: Some(kubelet), _server: server }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    async fn create<K>(&self, object: serde_json::Value) -> K
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + serde::Serialize
            + Debug,
    {
        let object: K = from_json(object);
        self.api::<K>().create(&PostParams::default(), &object).await.expect("create the workload")
    }

    /// Waits until `name` meets `condition`; on timeout, fails showing the pods.
    async fn until<K>(&self, what: &str, name: &str, condition: impl Condition<K>) -> K
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + Debug
            + Send
            + 'static,
    {
        let found = wait(&self.client, &self.namespace, what, await_condition(self.api::<K>(), name, condition)).await;
        found.unwrap_or_else(|| panic!("{what}: {name} was deleted"))
    }

    /// The first pod labelled `app=<app>` that meets `condition`.
    async fn pod_until(&self, what: &str, app: &str, condition: impl Fn(Option<&Pod>) -> bool) -> Pod {
        let config = watcher::Config::default().labels(&format!("app={app}"));
        let pods = watcher::watcher(self.api::<Pod>(), config).applied_objects();
        let mut first = std::pin::pin!(pods.try_filter(|pod| std::future::ready(condition(Some(pod)))));
        let first = first.try_next();
        let found = wait(&self.client, &self.namespace, what, first).await;
        found.unwrap_or_else(|| panic!("{what}: the pod watch ended"))
    }

    /// The one pod with label `app=<app>`.
    async fn pod_of(&self, app: &str) -> Pod {
        let pods =
            self.api::<Pod>().list(&ListParams::default().labels(&format!("app={app}"))).await.expect("list pods");
        let live: Vec<Pod> = pods.items.into_iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
        assert_eq!(live.len(), 1, "pods of app={app}: {live:#?}");
        live.into_iter().next().expect("one pod")
    }

    /// GET through the API server's pod proxy.
    async fn proxy_get(&self, pod: &str, port: u16, path: &str) -> String {
        let url = format!("/api/v1/namespaces/{}/pods/{pod}:{port}/proxy/{path}", self.namespace);
        let request = http::Request::get(url.as_str()).body(Vec::new()).expect("request");
        self.client.request_text(request).await.unwrap_or_else(|err| panic!("GET {url}: {err}"))
    }

    async fn shutdown(mut self) {
        if let Some(kubelet) = self.kubelet.take() {
            kubelet.shutdown().await;
        }
    }
}

fn from_json<T: DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("a valid object")
}

/// Awaits `future` for at most [`WAIT`]; on timeout, panics with `what` and the pods of `namespace`.
async fn wait<T, E: Debug>(
    client: &Client,
    namespace: &str,
    what: &str,
    future: impl Future<Output = Result<T, E>>,
) -> T {
    match tokio::time::timeout(WAIT, future).await {
        Ok(result) => result.unwrap_or_else(|err| panic!("waiting for {what}: {err:?}")),
        Err(_) => {
            let pods = Api::<Pod>::namespaced(client.clone(), namespace).list(&ListParams::default()).await;
            let statuses: Vec<_> =
                pods.map(|l| l.items).unwrap_or_default().into_iter().map(|p| (p.name_any(), p.status)).collect();
            panic!("timed out after {WAIT:?} waiting for {what}; pods of {namespace}: {statuses:#?}")
        }
    }
}

/// The Docker containers made for pod `uid`.
async fn docker_containers_of(uid: &str) -> Vec<String> {
    let docker = Docker::connect_with_local_defaults().expect("docker");
    let filters = HashMap::from([("label".to_string(), vec![format!("io.rivetctl.testkubelet.pod-uid={uid}")])]);
    let options = ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
    let list = docker.list_containers(Some(options)).await.expect("list containers");
    list.into_iter().filter_map(|c| c.names.and_then(|n| n.into_iter().next())).collect()
}

/// A one-replica Deployment of `app` running `script` in the busybox image.
fn deployment(
    app: &str,
    script: &str,
    extra_container: serde_json::Value,
    extra_pod: serde_json::Value,
) -> serde_json::Value {
    let mut container = json!({
        "name": "main",
        "image": IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", script],
        "env": [{ "name": "POD_NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } }],
    });
    merge(&mut container, extra_container);
    let mut pod = json!({ "containers": [container] });
    merge(&mut pod, extra_pod);
    json!({
        "metadata": { "name": app },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": app } },
            "template": { "metadata": { "labels": { "app": app } }, "spec": pod },
        },
    })
}

fn merge(into: &mut serde_json::Value, extra: serde_json::Value) {
    if let (Some(into), serde_json::Value::Object(extra)) = (into.as_object_mut(), extra) {
        into.extend(extra);
    }
}

/// The `index.html` the httpd serves: the pod's name.
const HTTPD: &str = "mkdir -p /tmp/www && echo \"hello from $POD_NAME\" > /tmp/www/index.html \
                     && exec busybox httpd -f -p 8080 -h /tmp/www";

fn deployment_available(deployment: Option<&Deployment>) -> bool {
    let Some(deployment) = deployment else { return false };
    let Some(status) = &deployment.status else { return false };
    status.observed_generation == deployment.metadata.generation
        && status.ready_replicas == Some(1)
        && status.available_replicas == Some(1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_becomes_available_and_its_pod_answers_through_the_proxy() {
    let cluster = Cluster::start("kubelet-web").await;
    let node = Api::<Node>::all(cluster.client.clone()).get("rivet-test-node").await.expect("the Node");
    let ready = node.status.and_then(|s| s.conditions).unwrap_or_default().into_iter().find(|c| c.type_ == "Ready");
    assert_eq!(ready.map(|c| c.status).as_deref(), Some("True"));
    let taints = node.spec.and_then(|s| s.taints).unwrap_or_default();
    assert!(taints.iter().all(|t| t.key != "node.kubernetes.io/not-ready"), "{taints:?}");

    let readiness = json!({
        "ports": [{ "name": "http", "containerPort": 8080, "protocol": "TCP" }],
        "readinessProbe": { "httpGet": { "path": "/index.html", "port": "http" }, "periodSeconds": 1 },
        "securityContext": { "allowPrivilegeEscalation": false, "capabilities": { "drop": ["ALL"] } },
        "resources": { "limits": { "cpu": "500m", "memory": "64Mi" } },
    });
    let pod_security = json!({ "securityContext": { "runAsUser": 10001, "runAsGroup": 10001, "runAsNonRoot": true } });
    cluster.create::<Deployment>(deployment("web", HTTPD, readiness, pod_security)).await;
    cluster.until("Deployment web to be available", "web", deployment_available).await;

    let pod = cluster.pod_of("web").await;
    let status = pod.status.clone().expect("status");
    let ip = status.pod_ip.clone().expect("a pod IP");
    assert!(ip.starts_with("172."), "pod IP {ip}");
    assert_eq!(status.pod_ips.expect("podIPs")[0].ip, ip);
    assert_eq!(status.host_ip.as_deref(), Some("127.0.0.1"));
    let container = &status.container_statuses.expect("container statuses")[0];
    assert!(container.ready && container.started == Some(true), "{container:?}");
    assert!(container.container_id.as_deref().is_some_and(|id| id.starts_with("docker://")), "{container:?}");
    assert!(container.image_id.starts_with("docker://sha256:"), "{container:?}");
    let body = cluster.proxy_get(&pod.name_any(), 8080, "index.html").await;
    assert_eq!(body.trim(), format!("hello from {}", pod.name_any()));

    // No write storms: while its readiness probe passes every second, the pod is not written.
    let config = watcher::Config::default().fields(&format!("metadata.name={}", pod.name_any()));
    let changes = watcher::watcher(cluster.api::<Pod>(), config).applied_objects();
    let version = pod.resource_version();
    let mut changes = std::pin::pin!(changes.try_filter(|p| std::future::ready(p.resource_version() != version)));
    let quiet = tokio::time::timeout(Duration::from_secs(5), changes.try_next()).await;
    assert!(quiet.is_err(), "the steady pod was written: {quiet:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_container_backs_off_and_the_deployment_is_not_available() {
    let cluster = Cluster::start("kubelet-crash").await;
    cluster.create::<Deployment>(deployment("crash", "echo boom; exit 1", json!({}), json!({}))).await;
    let crash_looping = |pod: Option<&Pod>| {
        let statuses = pod.and_then(|p| p.status.as_ref()).and_then(|s| s.container_statuses.as_ref());
        statuses.and_then(|s| s.first()).is_some_and(|c| {
            let waiting = c.state.as_ref().and_then(|s| s.waiting.as_ref()).and_then(|w| w.reason.as_deref());
            let last_exit = c.last_state.as_ref().and_then(|s| s.terminated.as_ref()).map(|t| t.exit_code);
            waiting == Some("CrashLoopBackOff") && c.restart_count >= 1 && last_exit == Some(1)
        })
    };
    let pod = cluster.pod_until("a pod of crash in CrashLoopBackOff after a restart", "crash", crash_looping).await;
    assert_eq!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Running"));
    // The container may count as available for the moment it ran (no readiness probe): the
    // controller takes the crash loop into account once the pod's status says so.
    let unavailable = |deployment: Option<&Deployment>| {
        let status = deployment.and_then(|d| d.status.as_ref());
        status.is_some_and(|s| s.available_replicas.unwrap_or(0) == 0)
    };
    let deployment = cluster.until("Deployment crash to be unavailable", "crash", unavailable).await;
    let status = deployment.status.expect("status");
    assert_eq!(status.available_replicas.unwrap_or(0), 0, "{status:?}");
    let available = status.conditions.unwrap_or_default().into_iter().find(|c| c.type_ == "Available");
    assert_eq!(available.map(|c| c.status).as_deref(), Some("False"));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_deployment_stops_its_pod_with_sigterm_and_removes_its_containers() {
    let cluster = Cluster::start("kubelet-delete").await;
    let marks = tempfile::tempdir().expect("temp dir");
    let script = "trap 'echo TERM > /marks/$POD_NAME; exit 0' TERM; while true; do sleep 1 & wait $!; done";
    let mount = json!({ "volumeMounts": [{ "name": "marks", "mountPath": "/marks" }] });
    let pod_extra = json!({
        "terminationGracePeriodSeconds": 60,
        "volumes": [{ "name": "marks", "hostPath": { "path": marks.path().display().to_string() } }],
    });
    cluster.create::<Deployment>(deployment("stop", script, mount, pod_extra)).await;
    cluster.until("Deployment stop to be available", "stop", deployment_available).await;
    let pod = cluster.pod_of("stop").await;
    let uid = pod.uid().expect("uid");
    assert_eq!(docker_containers_of(&uid).await.len(), 2, "the sandbox and the container");

    let started = std::time::Instant::now();
    cluster.api::<Deployment>().delete("stop", &DeleteParams::background()).await.expect("delete the Deployment");
    let pods: Api<Pod> = cluster.api();
    wait(
        &cluster.client,
        &cluster.namespace,
        "the pod to be gone",
        await_condition(pods, &pod.name_any(), conditions::is_deleted(&uid)),
    )
    .await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(50), "the pod took {took:?}: SIGKILL after the 60 s grace, not SIGTERM?");
    let mark = std::fs::read_to_string(marks.path().join(pod.name_any())).expect("the TERM trap wrote its mark");
    assert_eq!(mark.trim(), "TERM");
    assert_eq!(docker_containers_of(&uid).await, Vec::<String>::new());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_with_an_init_container_and_restart_policy_never_completes() {
    let cluster = Cluster::start("kubelet-job").await;
    cluster
        .create::<Job>(json!({
            "metadata": { "name": "once" },
            "spec": {
                "backoffLimit": 0,
                "template": { "metadata": { "labels": { "app": "once" } }, "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": false,
                    "initContainers": [{
                        "name": "prepare", "image": IMAGE, "command": ["sh", "-c", "echo prepared > /work/msg"],
                        "volumeMounts": [{ "name": "work", "mountPath": "/work" }],
                    }],
                    "containers": [{
                        "name": "main", "image": IMAGE, "command": ["sh", "-c", "grep -q prepared /work/msg"],
                        "volumeMounts": [{ "name": "work", "mountPath": "/work" }],
                    }],
                    "volumes": [{ "name": "work", "emptyDir": {} }],
                } },
            },
        }))
        .await;
    cluster.until("Job once to complete", "once", conditions::is_job_completed()).await;
    let pod = cluster.pod_of("once").await;
    let status = pod.status.expect("status");
    assert_eq!(status.phase.as_deref(), Some("Succeeded"));
    let container = &status.container_statuses.expect("statuses")[0];
    let terminated = container.state.as_ref().and_then(|s| s.terminated.clone()).expect("terminated");
    assert_eq!((terminated.exit_code, terminated.reason.as_deref()), (0, Some("Completed")));
    assert_eq!(container.restart_count, 0);
    let init = &status.init_container_statuses.expect("init statuses")[0];
    let init_exit = init.state.as_ref().and_then(|s| s.terminated.as_ref()).map(|t| t.exit_code);
    assert_eq!(init_exit, Some(0), "{init:?}");
    let initialized = status.conditions.unwrap_or_default().into_iter().find(|c| c.type_ == "Initialized");
    assert_eq!(initialized.map(|c| c.status).as_deref(), Some("True"));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statefulset_pod_finds_its_claims_data_after_being_recreated() {
    let cluster = Cluster::start("kubelet-sts").await;
    // Serves the uid of the pod that ran before it on this claim, then records its own.
    let script = "mkdir -p /tmp/www && cp /data/uid /tmp/www/previous 2>/dev/null; echo $POD_UID > /data/uid; \
                  echo ok > /tmp/www/ready; exec busybox httpd -f -p 8080 -h /tmp/www";
    cluster
        .create::<StatefulSet>(json!({
            "metadata": { "name": "db" },
            "spec": {
                "serviceName": "db",
                "replicas": 1,
                "selector": { "matchLabels": { "app": "db" } },
                "template": { "metadata": { "labels": { "app": "db" } }, "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "securityContext": { "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001 },
                    "containers": [{
                        "name": "main", "image": IMAGE, "command": ["sh", "-c", script],
                        "env": [{ "name": "POD_UID", "valueFrom": { "fieldRef": { "fieldPath": "metadata.uid" } } }],
                        "volumeMounts": [{ "name": "data", "mountPath": "/data" }],
                        "readinessProbe": { "httpGet": { "path": "/ready", "port": 8080 }, "periodSeconds": 1 },
                    }],
                } },
                "volumeClaimTemplates": [{
                    "metadata": { "name": "data" },
                    "spec": { "accessModes": ["ReadWriteOnce"], "resources": { "requests": { "storage": "1Gi" } } },
                }],
            },
        }))
        .await;
    let ready = |sts: Option<&StatefulSet>| {
        sts.and_then(|s| s.status.as_ref())
            .is_some_and(|s| s.ready_replicas == Some(1) && s.current_revision == s.update_revision)
    };
    cluster.until("StatefulSet db to be ready", "db", ready).await;
    let first = cluster.api::<Pod>().get("db-0").await.expect("db-0");
    let first_uid = first.uid().expect("uid");

    cluster.api::<Pod>().delete("db-0", &DeleteParams::default()).await.expect("delete db-0");
    let is_successor = |pod: Option<&Pod>| {
        pod.is_some_and(|p| p.uid().as_deref() != Some(first_uid.as_str()))
            && pod
                .and_then(|p| p.status.as_ref())
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    let second = cluster.until("a new db-0 to be ready", "db-0", is_successor).await;
    let previous = cluster.proxy_get("db-0", 8080, "previous").await;
    assert_eq!(
        previous.trim(),
        first_uid,
        "the new pod {} read the old pod's uid from the claim",
        second.uid().unwrap_or_default()
    );

    // The claim's volume outlives pods, not the kubelet.
    let docker = Docker::connect_with_local_defaults().expect("docker");
    let filters = HashMap::from([("name".to_string(), vec!["rtk-pvc-kubelet-sts-data-db-0".to_string()])]);
    let options = bollard::query_parameters::ListVolumesOptionsBuilder::default().filters(&filters).build();
    let before = docker.list_volumes(Some(options.clone())).await.expect("volumes").volumes.unwrap_or_default();
    assert_eq!(before.len(), 1, "{before:?}");
    cluster.shutdown().await;
    let after = docker.list_volumes(Some(options)).await.expect("volumes").volumes.unwrap_or_default();
    assert!(after.is_empty(), "the kubelet's shutdown leaves {after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_gets_its_env_volumes_user_and_read_only_root() {
    let cluster = Cluster::start("kubelet-spec").await;
    cluster.create::<Secret>(json!({ "metadata": { "name": "creds" }, "data": { "password": "czNjcmV0" } })).await;
    cluster
        .create::<ConfigMap>(
            json!({ "metadata": { "name": "conf" }, "data": { "app.yaml": "level: debug\n", "host": "db" } }),
        )
        .await;
    let script = "env > /www/env; cat /config/conf/app.yaml > /www/config; cat /secret/password > /www/secret; \
                  id > /www/id; (touch /probe 2>/dev/null && echo writable || echo read-only) > /www/rootfs; \
                  exec busybox httpd -f -p 8080 -h /www";
    let env = json!([
        { "name": "PASSWORD", "valueFrom": { "secretKeyRef": { "name": "creds", "key": "password" } } },
        { "name": "HOST", "valueFrom": { "configMapKeyRef": { "name": "conf", "key": "host" } } },
        { "name": "ABSENT", "valueFrom": { "secretKeyRef": { "name": "nope", "key": "x", "optional": true } } },
        { "name": "URL", "value": "postgres://$(HOST):5432" },
        { "name": "POD_IP", "valueFrom": { "fieldRef": { "fieldPath": "status.podIP" } } },
        { "name": "POD_NAMESPACE", "valueFrom": { "fieldRef": { "fieldPath": "metadata.namespace" } } },
    ]);
    cluster
        .create::<Pod>(json!({
            "metadata": { "name": "spec", "labels": { "app": "spec" } },
            "spec": {
                "automountServiceAccountToken": false,
                "securityContext": { "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 2000 },
                "containers": [{
                    "name": "main", "image": IMAGE, "command": ["sh", "-c", script], "env": env,
                    "securityContext": { "readOnlyRootFilesystem": true, "runAsGroup": 10002 },
                    "volumeMounts": [
                        { "name": "www", "mountPath": "/www" },
                        { "name": "conf", "mountPath": "/config" },
                        { "name": "creds", "mountPath": "/secret" },
                    ],
                    "readinessProbe": { "exec": { "command": ["cat", "/www/rootfs"] }, "periodSeconds": 1 },
                    "livenessProbe": { "tcpSocket": { "port": 8080 }, "periodSeconds": 1, "initialDelaySeconds": 1 },
                }],
                "volumes": [
                    { "name": "www", "emptyDir": {} },
                    { "name": "conf", "configMap": { "name": "conf", "items": [{ "key": "app.yaml", "path": "conf/app.yaml" }] } },
                    { "name": "creds", "secret": { "secretName": "creds", "defaultMode": 256 } },
                ],
            },
        }))
        .await;
    let pod = cluster
        .pod_until("pod spec to be ready", "spec", |pod| {
            pod.and_then(|p| p.status.as_ref()).and_then(|s| s.container_statuses.as_ref()).is_some_and(|c| c[0].ready)
        })
        .await;
    let ip = pod.status.and_then(|s| s.pod_ip).expect("pod IP");
    let env = cluster.proxy_get("spec", 8080, "env").await;
    for line in
        ["PASSWORD=s3cret", "HOST=db", "URL=postgres://db:5432", &format!("POD_IP={ip}"), "POD_NAMESPACE=kubelet-spec"]
    {
        assert!(env.lines().any(|l| l == line), "{line} missing from the environment:\n{env}");
    }
    assert!(!env.contains("ABSENT="), "{env}");
    assert_eq!(cluster.proxy_get("spec", 8080, "config").await, "level: debug\n");
    assert_eq!(cluster.proxy_get("spec", 8080, "secret").await, "s3cret", "mode 0400 secret readable through fsGroup");
    let id = cluster.proxy_get("spec", 8080, "id").await;
    assert!(id.starts_with("uid=10001") && id.contains(" gid=10002 ") && id.contains("groups=2000"), "{id}");
    assert_eq!(cluster.proxy_get("spec", 8080, "rootfs").await.trim(), "read-only");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_liveness_restarts_and_missing_images_back_off() {
    let cluster = Cluster::start("kubelet-faults").await;
    let liveness = json!({
        "livenessProbe": { "httpGet": { "path": "/missing", "port": 8080 }, "periodSeconds": 1, "failureThreshold": 2 },
    });
    cluster
        .create::<Deployment>(deployment("sick", HTTPD, liveness, json!({ "terminationGracePeriodSeconds": 1 })))
        .await;
    cluster
        .create::<Deployment>(deployment("absent", "true", json!({ "image": "rivet-testkubelet-absent:1" }), json!({})))
        .await;
    let restarted = cluster.pod_until("a liveness restart of sick", "sick", |pod| {
        let statuses = pod.and_then(|p| p.status.as_ref()).and_then(|s| s.container_statuses.as_ref());
        statuses.is_some_and(|s| {
            s[0].restart_count >= 1 && s[0].last_state.as_ref().is_some_and(|l| l.terminated.is_some())
        })
    });
    let waiting = |reason: &'static str| {
        move |pod: Option<&Pod>| {
            let statuses = pod.and_then(|p| p.status.as_ref()).and_then(|s| s.container_statuses.as_ref());
            statuses
                .and_then(|s| s[0].state.as_ref())
                .and_then(|s| s.waiting.as_ref())
                .is_some_and(|w| w.reason.as_deref() == Some(reason))
        }
    };
    let pulled = cluster.pod_until("ErrImagePull of absent", "absent", waiting("ErrImagePull")).await;
    let message = pulled
        .status
        .and_then(|s| s.container_statuses)
        .and_then(|s| s[0].state.clone())
        .and_then(|s| s.waiting)
        .and_then(|w| w.message);
    assert!(message.as_deref().is_some_and(|m| m.contains("rivet-testkubelet-absent:1")), "{message:?}");
    cluster.pod_until("ImagePullBackOff of absent", "absent", waiting("ImagePullBackOff")).await;
    let pod = restarted.await;
    assert_eq!(pod.status.and_then(|s| s.phase).as_deref(), Some("Running"));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_of_a_loopback_registry_is_pulled_with_the_pull_secret() {
    let registry =
        Registry::start(RegistryOptions { user: Some(("rivet".into(), "s3cret".into())) }).expect("registry");
    let cluster = Cluster::start("kubelet-pull").await;
    let docker = Docker::connect_with_local_defaults().expect("docker");
    let repository = format!("{}/kubelet/busybox", registry.address());
    let tag = format!("t{}", std::process::id());
    let options = bollard::query_parameters::TagImageOptionsBuilder::default().repo(&repository).tag(&tag).build();
    docker.tag_image(IMAGE, Some(options)).await.expect("tag");
    let credentials = bollard::auth::DockerCredentials {
        username: Some("rivet".into()),
        password: Some("s3cret".into()),
        serveraddress: Some(registry.address()),
        ..Default::default()
    };
    let push = bollard::query_parameters::PushImageOptionsBuilder::default().tag(&tag).build();
    docker.push_image(&repository, Some(push), Some(credentials)).try_collect::<Vec<_>>().await.expect("push");
    let reference = format!("{repository}:{tag}");
    docker.remove_image(&reference, None::<bollard::query_parameters::RemoveImageOptions>, None).await.expect("untag");
    let auth =
        format!("{{\"auths\":{{\"{}\":{{\"username\":\"rivet\",\"password\":\"s3cret\"}}}}}}", registry.address());
    let config = json!({ ".dockerconfigjson": k8s_openapi::ByteString(auth.into_bytes()) });
    cluster
        .create::<Secret>(
            json!({ "metadata": { "name": "pull" }, "type": "kubernetes.io/dockerconfigjson", "data": config }),
        )
        .await;
    let pod_extra = json!({ "imagePullSecrets": [{ "name": "pull" }] });
    cluster.create::<Deployment>(deployment("pulled", HTTPD, json!({ "image": reference }), pod_extra)).await;
    cluster.until("Deployment pulled to be available", "pulled", deployment_available).await;
    let pod = cluster.pod_of("pulled").await;
    let image_id = pod.status.and_then(|s| s.container_statuses).map(|s| s[0].image_id.clone()).unwrap_or_default();
    let digest = registry.manifest_digest("kubelet/busybox", &tag).expect("manifest").expect("pushed");
    assert_eq!(image_id, format!("docker-pullable://{repository}@{digest}"));
    cluster.shutdown().await;
    let _ = docker.remove_image(&reference, None::<bollard::query_parameters::RemoveImageOptions>, None).await;
}
