//! What `rivetctl doctor` checks of a Kubernetes fleet: that the API server answers (and
//! its version), that the namespace is there, and every RBAC permission rivetctl needs in
//! it, asked of the server itself (SelfSubjectAccessReview), so what is missing is listed
//! by name, with the Role of docs/kubernetes.md as the fix.

use k8s_openapi::api::authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec};
use kube::api::{Api, PostParams};
use orchestrator::fleet::Fleet;

use super::{Cluster, ConnectOptions, connect, discovery, error_chain, settings_of};
use crate::factory::Check;

/// One permission: API group, resource (with subresource), verbs.
pub struct Permission {
    pub group: &'static str,
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
}

const MANAGE: &[&str] = &["get", "list", "watch", "create", "update", "patch", "delete"];

/// Every permission rivetctl uses in the deployment's namespace (docs/kubernetes.md's Role).
pub const PERMISSIONS: &[Permission] = &[
    Permission { group: "", resource: "configmaps", verbs: MANAGE },
    Permission { group: "", resource: "secrets", verbs: MANAGE },
    Permission { group: "", resource: "services", verbs: MANAGE },
    Permission { group: "", resource: "persistentvolumeclaims", verbs: MANAGE },
    Permission { group: "", resource: "pods", verbs: &["get", "list", "watch", "delete"] },
    Permission { group: "", resource: "pods/log", verbs: &["get"] },
    // The health gate reaches agents through the API server: the sensitive one.
    Permission { group: "", resource: "pods/proxy", verbs: &["get"] },
    Permission { group: "apps", resource: "deployments", verbs: MANAGE },
    Permission { group: "apps", resource: "statefulsets", verbs: MANAGE },
    Permission { group: "batch", resource: "jobs", verbs: MANAGE },
    Permission { group: "networking.k8s.io", resource: "networkpolicies", verbs: MANAGE },
    Permission { group: "policy", resource: "poddisruptionbudgets", verbs: MANAGE },
    Permission { group: "coordination.k8s.io", resource: "leases", verbs: MANAGE },
];

/// Whether the current user may `verb` `resource` in `namespace`.
async fn allowed(
    cluster: &Cluster,
    namespace: &str,
    group: &str,
    resource: &str,
    verb: &str,
) -> Result<bool, kube::Error> {
    let (resource, subresource) = match resource.split_once('/') {
        Some((resource, sub)) => (resource, Some(sub.to_string())),
        None => (resource, None),
    };
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(namespace.to_string()),
                group: Some(group.to_string()),
                resource: Some(resource.to_string()),
                subresource,
                verb: Some(verb.to_string()),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    let api: Api<SelfSubjectAccessReview> = Api::all(cluster.call());
    let answer = api.create(&PostParams::default(), &review).await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

/// The doctor's checks of the fleet's cluster.
pub async fn checks(fleet: &Fleet, options: &ConnectOptions) -> Vec<Check> {
    let settings = match settings_of(fleet) {
        Ok(settings) => settings,
        Err(err) => return vec![Check::failed("kubernetes", err.message, None)],
    };
    let cluster = match connect::connect(settings, options).await {
        Ok(cluster) => cluster,
        Err(err) => return vec![Check::failed("kubernetes API", err.message, err.hint)],
    };
    let name = format!("kubernetes API {}", cluster.url);
    let served = match discovery::discover(&cluster).await {
        Ok(served) => served,
        Err(err) => return vec![Check::failed(name, err.message, err.hint)],
    };
    let mut checks = vec![Check::ok(
        name,
        format!("{} (offline rendering targets {}.{})", served.git_version, settings.version.0, settings.version.1),
    )];
    let namespace = &settings.namespace;
    let mut missing = Vec::new();
    for permission in PERMISSIONS {
        for verb in permission.verbs {
            match allowed(&cluster, namespace, permission.group, permission.resource, verb).await {
                Ok(true) => {}
                Ok(false) => {
                    let group =
                        if permission.group.is_empty() { String::new() } else { format!("{}/", permission.group) };
                    missing.push(format!("{verb} {group}{}", permission.resource));
                }
                Err(err) => {
                    checks.push(Check::failed("RBAC", format!("cannot ask the server: {}", error_chain(&err)), None));
                    return checks;
                }
            }
        }
    }
    checks.push(if missing.is_empty() {
        Check::ok(format!("RBAC in namespace {namespace}"), "every permission rivetctl needs")
    } else {
        Check::failed(
            format!("RBAC in namespace {namespace}"),
            format!("missing: {}", missing.join(", ")),
            Some("bind the Role of docs/kubernetes.md (\"RBAC\") to this user in the namespace".into()),
        )
    });
    let core: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(cluster.call(), namespace);
    checks.push(match core.list(&kube::api::ListParams::default().limit(1)).await {
        Ok(_) => Check::ok(format!("namespace {namespace}"), "readable"),
        Err(err) => {
            let error = super::classify(&format!("cannot list ConfigMaps in namespace {namespace}"), &err);
            Check::failed(format!("namespace {namespace}"), error.message, error.hint)
        }
    });
    checks
}
