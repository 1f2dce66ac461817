//! The kubelet's Node: registered Ready with the capacity of a small machine, without the
//! `node.kubernetes.io/not-ready` taint the v1.20 API server's admission puts on every new
//! Node (nothing else removes it here: the node-lifecycle controller does not run).
//!
//! A Node of the same name left by an earlier kubelet is taken over. There is no heartbeat
//! (no controller would read it); [`keep_ready`] re-asserts Ready if anything changes it.

use super::HOST_IP;
use super::containers::now;
use anyhow::Context as _;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use std::time::Duration;

/// The taint the API server adds to new Nodes.
const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";

/// The Node's status: Ready, no pressure, cpu 2 / memory 24Gi / pods 110.
fn status(name: &str) -> serde_json::Value {
    let time = serde_json::to_value(now()).unwrap_or_default();
    let condition = |type_: &str, status: &str, reason: &str, message: &str| {
        json!({
            "type": type_, "status": status, "reason": reason, "message": message,
            "lastHeartbeatTime": time, "lastTransitionTime": time,
        })
    };
    let resources = json!({ "cpu": "2", "memory": "24Gi", "pods": "110", "ephemeral-storage": "100Gi" });
    json!({
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            condition("Ready", "True", "KubeletReady", "kubelet is posting ready status (rivetctl test kubelet)"),
        ],
        "capacity": resources,
        "allocatable": resources,
        "addresses": [
            { "type": "InternalIP", "address": HOST_IP },
            { "type": "Hostname", "address": name },
        ],
        "daemonEndpoints": { "kubeletEndpoint": { "Port": 10250 } },
        "nodeInfo": {
            "kubeletVersion": "v1.20.2",
            "kubeProxyVersion": "v1.20.2",
            "containerRuntimeVersion": "docker://20.10",
            "operatingSystem": "linux",
            "architecture": "amd64",
            "osImage": "rivetctl test kubelet",
            "kernelVersion": "",
            "machineID": "",
            "systemUUID": "",
            "bootID": "",
        },
    })
}

/// Creates (or takes over) the Node `name`, makes it Ready and removes the not-ready taint.
pub(crate) async fn register(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let status = status(name);
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "beta.kubernetes.io/os": "linux",
                "beta.kubernetes.io/arch": "amd64",
                "io.rivetctl/test-kubelet": "true",
            },
        },
        "spec": {},
        "status": status,
    }))
    .context("building the Node object")?;
    match api.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(response)) if response.code == 409 => {}
        Err(err) => return Err(err).with_context(|| format!("registering Node {name}")),
    }
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(json!({ "status": status })))
        .await
        .with_context(|| format!("writing the status of Node {name}"))?;
    remove_not_ready_taint(&api, name).await
}

async fn remove_not_ready_taint(api: &Api<Node>, name: &str) -> anyhow::Result<()> {
    let node = api.get(name).await.with_context(|| format!("reading Node {name}"))?;
    let taints = node.spec.and_then(|spec| spec.taints).unwrap_or_default();
    if !taints.iter().any(|taint| taint.key == NOT_READY_TAINT) {
        return Ok(());
    }
    let kept: Vec<_> = taints.into_iter().filter(|taint| taint.key != NOT_READY_TAINT).collect();
    let patch =
        json!({ "metadata": { "resourceVersion": node.metadata.resource_version }, "spec": { "taints": kept } });
    api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .with_context(|| format!("removing the {NOT_READY_TAINT} taint from Node {name}"))?;
    Ok(())
}

/// Every 20 s, puts Ready back if something changed it (logs failures; never returns).
pub(crate) async fn keep_ready(client: kube::Client, name: String) {
    let api: Api<Node> = Api::all(client.clone());
    loop {
        tokio::time::sleep(Duration::from_secs(20)).await;
        let ready = match api.get_opt(&name).await {
            Ok(Some(node)) => node
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True"),
            Ok(None) => false,
            Err(err) => {
                eprintln!("test-kubelet: reading Node {name}: {err}");
                continue;
            }
        };
        if !ready && let Err(err) = register(&client, &name).await {
            eprintln!("test-kubelet: re-registering Node {name}: {err:#}");
        }
    }
}
