//! Server-side apply conflicts: fields rivetctl applies that another field manager owns.
//! They are never forced by default: the error is a table of field → manager, from the
//! 409's causes (`reason: FieldManagerConflict`, `field: .spec.replicas`, `message:
//! conflict with "kubectl-edit" using apps/v1`), completed from the live object's
//! `managedFields` (the cause list can be incomplete, kubernetes#119141).
//! `--force-conflicts` takes the fields over.

use kube::core::Status;
use serde_json::Value;

use super::FIELD_MANAGER;

/// One field another manager owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// `.spec.replicas`, or empty when only the manager is known.
    pub field: String,
    pub manager: String,
}

impl Conflict {
    /// The managers of `conflicts`, `, `-joined and sorted.
    pub fn managers(conflicts: &[Conflict]) -> String {
        let mut managers: Vec<&str> = conflicts.iter().map(|c| c.manager.as_str()).collect();
        managers.sort();
        managers.dedup();
        managers.join(", ")
    }
}

/// The manager a cause's message names: `conflict with "kubectl-edit" using apps/v1`.
fn manager_of(message: &str) -> Option<String> {
    let start = message.find("conflict with \"")? + "conflict with \"".len();
    let end = message[start..].find('"')? + start;
    Some(message[start..end].to_string())
}

/// The conflicts of a 409 from server-side apply, with the other managers of the live
/// object (`live`) that the causes did not name.
pub fn from_status(status: &Status, live: &Value) -> Vec<Conflict> {
    let mut conflicts: Vec<Conflict> = status
        .details
        .as_ref()
        .map(|d| d.causes.as_slice())
        .unwrap_or_default()
        .iter()
        .filter(|cause| cause.reason == "FieldManagerConflict" || cause.message.contains("conflict with"))
        .map(|cause| Conflict {
            field: cause.field.clone(),
            manager: manager_of(&cause.message).unwrap_or_else(|| "(unknown)".to_string()),
        })
        .collect();
    for manager in other_managers(live) {
        if !conflicts.iter().any(|c| c.manager == manager) {
            conflicts.push(Conflict { field: String::new(), manager });
        }
    }
    conflicts
}

/// Managers other than rivetctl that hold fields of `live` through an update (not an apply
/// of their own set, which does not conflict with ours unless the causes say so).
fn other_managers(live: &Value) -> Vec<String> {
    let mut managers: Vec<String> = live["metadata"]["managedFields"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|entry| entry["operation"] == "Update" && entry["subresource"].as_str().is_none_or(str::is_empty))
        .filter_map(|entry| entry["manager"].as_str())
        .filter(|manager| *manager != FIELD_MANAGER && !manager.starts_with("kube-controller-manager"))
        .map(str::to_string)
        .collect();
    managers.sort();
    managers.dedup();
    managers
}

/// The table shown when an apply is refused.
pub fn table(conflicts: &[Conflict]) -> String {
    let rows: Vec<(String, &str)> = conflicts
        .iter()
        .map(|c| (if c.field.is_empty() { "(other fields)".to_string() } else { c.field.clone() }, c.manager.as_str()))
        .collect();
    let width = rows.iter().map(|(field, _)| field.len()).max().unwrap_or(0).max("FIELD".len());
    let mut out = format!("  {:width$}  MANAGER\n", "FIELD");
    for (field, manager) in rows {
        out.push_str(&format!("  {field:width$}  {manager}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::response::{StatusCause, StatusDetails};
    use serde_json::json;

    fn status(causes: &[(&str, &str)]) -> Status {
        let causes = causes
            .iter()
            .map(|(field, manager)| StatusCause {
                reason: "FieldManagerConflict".into(),
                message: format!("conflict with \"{manager}\" using apps/v1"),
                field: field.to_string(),
            })
            .collect();
        let details: StatusDetails = serde_json::from_value(json!({})).expect("empty details");
        Status { code: 409, details: Some(StatusDetails { causes, ..details }), ..Status::default() }
    }

    #[test]
    fn causes_and_managed_fields_make_the_table() {
        let live = json!({"metadata": {"managedFields": [
            {"manager": "rivetctl", "operation": "Apply"},
            {"manager": "kubectl-edit", "operation": "Update"},
            {"manager": "helm", "operation": "Update"},
            {"manager": "kube-controller-manager", "operation": "Update"},
        ]}});
        let found = from_status(&status(&[(".spec.replicas", "kubectl-edit")]), &live);
        assert_eq!(
            found,
            vec![
                Conflict { field: ".spec.replicas".into(), manager: "kubectl-edit".into() },
                Conflict { field: String::new(), manager: "helm".into() },
            ]
        );
        assert_eq!(Conflict::managers(&found), "helm, kubectl-edit");
        let shown = table(&found);
        assert_eq!(shown, "  FIELD           MANAGER\n  .spec.replicas  kubectl-edit\n  (other fields)  helm\n");
    }
}
