//! What environment variables and volumes refer to: keys of ConfigMaps and Secrets read from
//! the API server, and the pod's own fields (`fieldRef`, the downward API).
//!
//! Errors are the messages the real kubelet puts in a `CreateContainerConfigError` (env) or a
//! failed mount (volumes), so a test that forgot a Secret sees which one.

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::Api;
use std::collections::BTreeMap;

/// The keys of a ConfigMap or Secret, values as bytes (Secret `data` is base64 on the wire;
/// k8s-openapi decodes it).
pub(crate) type Keys = BTreeMap<String, Vec<u8>>;

/// Which kind of object holds the keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    ConfigMap,
    Secret,
}

impl Source {
    fn noun(self) -> &'static str {
        match self {
            Source::ConfigMap => "configmap",
            Source::Secret => "secret",
        }
    }
}

/// Reads the keys of `name`; `Ok(None)` when it does not exist.
pub(crate) async fn keys(
    client: &kube::Client,
    namespace: &str,
    source: Source,
    name: &str,
) -> Result<Option<Keys>, String> {
    let failed = |err: kube::Error| format!("reading {} {namespace}/{name}: {err}", source.noun());
    match source {
        Source::ConfigMap => {
            let found = Api::<ConfigMap>::namespaced(client.clone(), namespace).get_opt(name).await.map_err(failed)?;
            Ok(found.map(|map| {
                let mut keys: Keys =
                    map.data.unwrap_or_default().into_iter().map(|(key, value)| (key, value.into_bytes())).collect();
                keys.extend(map.binary_data.unwrap_or_default().into_iter().map(|(key, value)| (key, value.0)));
                keys
            }))
        }
        Source::Secret => {
            let found = Api::<Secret>::namespaced(client.clone(), namespace).get_opt(name).await.map_err(failed)?;
            Ok(found.map(|secret| {
                let mut keys: Keys = secret.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
                // stringData is folded into data by the API server; kept for objects from fakes.
                keys.extend(secret.string_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())));
                keys
            }))
        }
    }
}

/// Reads the keys of `name`, or an error naming it when it is missing and not `optional`
/// (a missing optional object has no keys).
pub(crate) async fn required_keys(
    client: &kube::Client,
    namespace: &str,
    source: Source,
    name: &str,
    optional: bool,
) -> Result<Keys, String> {
    match keys(client, namespace, source, name).await? {
        Some(keys) => Ok(keys),
        None if optional => Ok(Keys::new()),
        None => Err(format!("{} {name:?} not found", source.noun())),
    }
}

/// The value of a downward-API field path of `pod` (`metadata.name`, `status.podIP`,
/// `metadata.labels['app']`, ...). `pod_ip` is the sandbox's IP, which the pod object may not
/// carry yet.
pub(crate) fn field(pod: &Pod, path: &str, pod_ip: &str) -> Result<String, String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let from_map = |map: &Option<BTreeMap<String, String>>, key: &str| map.as_ref().and_then(|m| m.get(key)).cloned();
    let map_key = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix("['"))
            .and_then(|rest| rest.strip_suffix("']"))
            .map(str::to_string)
    };
    let value = match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
        "status.podIP" | "status.podIPs" => Some(pod_ip.to_string()),
        "status.hostIP" | "status.hostIPs" => Some(super::HOST_IP.to_string()),
        "metadata.labels" | "metadata.annotations" => {
            let map = if path == "metadata.labels" { &meta.labels } else { &meta.annotations };
            let lines: Vec<String> =
                map.iter().flatten().map(|(key, value)| format!("{key}={}", serde_json::json!(value))).collect();
            Some(lines.join("\n"))
        }
        _ => {
            if let Some(key) = map_key("metadata.labels") {
                Some(from_map(&meta.labels, &key).unwrap_or_default())
            } else if let Some(key) = map_key("metadata.annotations") {
                Some(from_map(&meta.annotations, &key).unwrap_or_default())
            } else {
                return Err(format!("the test kubelet does not support the field path {path:?}"));
            }
        }
    };
    Ok(value.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_paths() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-0", "namespace": "ns", "uid": "u1", "labels": {"app": "web"}},
            "spec": {"nodeName": "n", "containers": []}
        }))
        .expect("pod");
        let check =
            |path: &str, expect: &str| assert_eq!(field(&pod, path, "172.17.0.9").as_deref(), Ok(expect), "{path}");
        check("metadata.name", "web-0");
        check("metadata.namespace", "ns");
        check("metadata.uid", "u1");
        check("status.podIP", "172.17.0.9");
        check("status.hostIP", "127.0.0.1");
        check("spec.nodeName", "n");
        check("metadata.labels['app']", "web");
        check("metadata.labels['none']", "");
        check("metadata.labels", "app=\"web\"");
        assert!(field(&pod, "spec.bogus", "").is_err());
    }
}
