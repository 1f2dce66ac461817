//! The testkit's real API server works as the Kubernetes tests rely on: server-side apply is
//! idempotent, the controller manager acts on Deployments, RBAC denies the `limited` user, and
//! dropping the server frees its ports.

use std::{net::TcpListener, time::Duration, time::Instant};

use futures_util::TryStreamExt;
use k8s_openapi::api::{
    apps::v1::{Deployment, ReplicaSet},
    authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec},
    core::v1::{ConfigMap, Pod},
};
use kube::{
    Api,
    api::{ListParams, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use rivet_testkit::apiserver::{ApiServer, ApiServerOptions};
use serde_json::json;

/// How long the controller manager may take to create a Deployment's ReplicaSet.
const CONTROLLER_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn real_apiserver_applies_reconciles_authorizes_and_frees_its_ports() {
    let started = Instant::now();
    let server = ApiServer::start(ApiServerOptions { controller_manager: true });
    eprintln!("ApiServer::start (with the controller manager) took {:.1} s", started.elapsed().as_secs_f64());
    assert!(server.url().starts_with("https://127.0.0.1:"), "url: {}", server.url());
    let client = server.client().await;

    // Server-side apply, then the same apply again: no write the second time.
    let config_maps: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let config_map = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": "rivet-apply" },
        "data": { "greeting": "hello" },
    });
    let apply = PatchParams::apply("rivetctl-test");
    let first = config_maps.patch("rivet-apply", &apply, &Patch::Apply(&config_map)).await.expect("first apply");
    let second = config_maps.patch("rivet-apply", &apply, &Patch::Apply(&config_map)).await.expect("second apply");
    assert!(first.metadata.resource_version.is_some());
    assert_eq!(first.metadata.resource_version, second.metadata.resource_version, "a re-apply wrote");
    let managers: Vec<_> = second.metadata.managed_fields.iter().flatten().filter_map(|f| f.manager.clone()).collect();
    assert_eq!(managers, ["rivetctl-test"]);

    // The controller manager creates the Deployment's ReplicaSet: watched, not polled.
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let deployment: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": "web" },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [{ "name": "web", "image": "rivetos-base:busybox" }] },
            },
        },
    }))
    .expect("a Deployment");
    let replica_sets: Api<ReplicaSet> = Api::default_namespaced(client.clone());
    let events = watcher(replica_sets, watcher::Config::default().labels("app=web")).applied_objects();
    let created = deployments.create(&PostParams::default(), &deployment).await.expect("create the Deployment");
    let uid = created.metadata.uid.expect("a created Deployment has a uid");
    let owned_by_deployment = |replica_set: &ReplicaSet| {
        replica_set
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|owner| owner.kind == "Deployment" && owner.uid == uid)
    };
    let mut events = Box::pin(events.try_filter(|replica_set| std::future::ready(owned_by_deployment(replica_set))));
    let replica_set = tokio::time::timeout(CONTROLLER_TIMEOUT, events.try_next())
        .await
        .unwrap_or_else(|_| panic!("no ReplicaSet for Deployment web within {CONTROLLER_TIMEOUT:?}"))
        .expect("watch ReplicaSets")
        .expect("the watch does not end");
    assert!(replica_set.metadata.name.as_deref().is_some_and(|name| name.starts_with("web-")));

    // RBAC: `limited` may not list pods, and says so when asked.
    let limited = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(server.kubeconfig_for("limited")).expect("read limited's kubeconfig"),
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .expect("limited's kubeconfig"),
    )
    .expect("limited's client");
    let denied = Api::<Pod>::default_namespaced(limited.clone()).list(&ListParams::default()).await;
    match denied {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("limited listed pods: {other:?}"),
    }
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace: Some("default".into()),
                verb: Some("list".into()),
                resource: Some("pods".into()),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    let answer = Api::<SelfSubjectAccessReview>::all(limited)
        .create(&PostParams::default(), &review)
        .await
        .expect("limited may review its own access");
    assert!(!answer.status.expect("a review has a status").allowed, "RBAC allows limited to list pods");

    // Dropping the server stops everything: its ports are free and its directory is gone. The
    // watch is closed first, and the runtime given a turn to send that: on SIGTERM kube-apiserver
    // waits for open requests, and Drop, which blocks this thread, would SIGKILL it after 5 s.
    drop(events);
    drop(client);
    tokio::task::yield_now().await;
    let ports = server.ports();
    let dir = server.dir().to_owned();
    let stopping = Instant::now();
    drop(server);
    eprintln!("dropping the ApiServer took {:.1} s", stopping.elapsed().as_secs_f64());
    for port in ports {
        TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|err| panic!("port {port} still taken: {err}"));
    }
    assert!(!dir.exists(), "{} still exists", dir.display());
}
