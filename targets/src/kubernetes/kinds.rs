//! The kinds of object a deployment owns, how the API names them, and the order they are
//! applied in (dependencies first: the datahub is never reachable from the whole cluster,
//! because its NetworkPolicy exists before its pods).

use kube::api::{Api, ApiResource, DynamicObject};
use kube::core::GroupVersionKind;

use super::Cluster;

/// One kind: its group, plural and whether it lives in a namespace. The version is the
/// object's own `apiVersion` (the lowering wrote what the server serves).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    pub kind: &'static str,
    pub group: &'static str,
    /// The version to list with when observing (the PDB's comes from discovery).
    pub version: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
}

/// Every kind the lowering makes, in apply order.
pub const KINDS: &[Kind] = &[
    Kind { kind: "Namespace", group: "", version: "v1", plural: "namespaces", namespaced: false },
    Kind {
        kind: "NetworkPolicy",
        group: "networking.k8s.io",
        version: "v1",
        plural: "networkpolicies",
        namespaced: true,
    },
    Kind { kind: "Secret", group: "", version: "v1", plural: "secrets", namespaced: true },
    Kind { kind: "ConfigMap", group: "", version: "v1", plural: "configmaps", namespaced: true },
    Kind {
        kind: "PersistentVolumeClaim",
        group: "",
        version: "v1",
        plural: "persistentvolumeclaims",
        namespaced: true,
    },
    Kind { kind: "StatefulSet", group: "apps", version: "v1", plural: "statefulsets", namespaced: true },
    Kind { kind: "Service", group: "", version: "v1", plural: "services", namespaced: true },
    Kind { kind: "Job", group: "batch", version: "v1", plural: "jobs", namespaced: true },
    Kind { kind: "Deployment", group: "apps", version: "v1", plural: "deployments", namespaced: true },
    Kind {
        kind: "PodDisruptionBudget",
        group: "policy",
        version: "v1",
        plural: "poddisruptionbudgets",
        namespaced: true,
    },
];

/// The kind named `kind`.
pub fn kind(kind: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.kind == kind)
}

/// Where `kind` comes in the apply order (unknown kinds last).
pub fn order(kind: &str) -> usize {
    KINDS.iter().position(|k| k.kind == kind).unwrap_or(KINDS.len())
}

/// `group/Kind` as KEP-3659 lists it in `contains-group-kinds` (`Deployment.apps`, `Secret`).
pub fn group_kind(kind: &Kind) -> String {
    if kind.group.is_empty() { kind.kind.to_string() } else { format!("{}.{}", kind.kind, kind.group) }
}

/// The API resource of `kind` at `api_version` (`apps/v1`, `v1`).
pub fn resource(kind: &Kind, api_version: &str) -> ApiResource {
    let (group, version) = match api_version.split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", api_version),
    };
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind.kind), kind.plural)
}

/// A dynamic API for `kind` at `api_version`, in `namespace` when the kind is namespaced.
pub fn api(cluster: &Cluster, kind: &Kind, api_version: &str, namespace: &str) -> Api<DynamicObject> {
    let resource = resource(kind, api_version);
    if kind.namespaced {
        Api::namespaced_with(cluster.call(), namespace, &resource)
    } else {
        Api::all_with(cluster.call(), &resource)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_come_before_the_pods_they_guard() {
        assert!(order("NetworkPolicy") < order("StatefulSet"));
        assert!(order("Secret") < order("Deployment"));
        assert!(order("StatefulSet") < order("Job"));
        assert!(order("Job") < order("Deployment"));
        assert_eq!(group_kind(kind("Deployment").unwrap()), "Deployment.apps");
        assert_eq!(group_kind(kind("Secret").unwrap()), "Secret");
        let pdb = resource(kind("PodDisruptionBudget").unwrap(), "policy/v1beta1");
        assert_eq!(
            (pdb.group.as_str(), pdb.version.as_str(), pdb.plural.as_str()),
            ("policy", "v1beta1", "poddisruptionbudgets")
        );
    }
}
