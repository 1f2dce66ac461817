//! A stand-in for cluster DNS and kube-proxy: when a pod's sandbox starts, every Service of
//! its namespace with a selector is written into the sandbox's `/etc/hosts` (the pod's
//! containers share it), as `<service>`, `<service>.<namespace>`, `<service>.<namespace>.svc`
//! and `<service>.<namespace>.svc.cluster.local`, pointing at the IP of a ready pod the
//! selector picks (a headless Service's answer; a ClusterIP one would need kube-proxy).
//! Services whose pods are not ready yet are left out; the pods that need them (a migrate
//! Job started after its datahub is ready) find them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, ListParams};

/// Whether a pod is ready (its `Ready` condition).
fn ready(pod: &Pod) -> bool {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions.is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// `name:ip` entries for the Services of `namespace` (Docker's `ExtraHosts`).
pub(crate) async fn hosts(client: &kube::Client, namespace: &str) -> Vec<String> {
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let Ok(services) = services.list(&ListParams::default()).await else { return Vec::new() };
    let mut out = Vec::new();
    for service in services.items {
        let Some(name) = service.metadata.name.clone() else { continue };
        let selector: BTreeMap<String, String> = service.spec.and_then(|s| s.selector).unwrap_or_default();
        if selector.is_empty() {
            continue;
        }
        let labels: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let Ok(found) = pods.list(&ListParams::default().labels(&labels.join(","))).await else { continue };
        let ip = found
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && ready(p))
            .find_map(|p| p.status.as_ref().and_then(|s| s.pod_ip.clone()));
        let Some(ip) = ip else { continue };
        for host in [
            name.clone(),
            format!("{name}.{namespace}"),
            format!("{name}.{namespace}.svc"),
            format!("{name}.{namespace}.svc.cluster.local"),
        ] {
            out.push(format!("{host}:{ip}"));
        }
    }
    out
}
