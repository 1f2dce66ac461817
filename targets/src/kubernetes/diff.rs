//! The live diff, as Timoni and Flux compute it: what a server-side dry-run apply of the
//! desired object returns, compared with the live object, both without the fields the
//! server sets (`status`, `managedFields`, `resourceVersion`, `generation`, `uid`,
//! timestamps). What differs is what applying would change; a field someone changed by
//! hand shows there. Secret data is compared as keyed digests, never as values.

use orchestrator::resource::{FieldValue, Fields, flatten_json_with};
use serde_json::Value;

/// The fields a 422 from a dry run says cannot change in place: its causes whose message
/// calls the field immutable (`spec.template: Invalid value: …: field is immutable`, a
/// ConfigMap's `data: Forbidden: field is immutable when `immutable` is set`) or forbids the
/// update (`spec: Forbidden: updates to statefulset spec for fields other than … are
/// forbidden`). Empty when the refusal is of another kind (an invalid value).
pub fn immutable(status: &kube::core::Status) -> Vec<String> {
    let causes = status.details.as_ref().map(|d| d.causes.as_slice()).unwrap_or_default();
    let mut fields: Vec<String> = causes
        .iter()
        .filter(|cause| cause.message.contains("immutable") || cause.message.contains("are forbidden"))
        .map(|cause| cause.field.trim_start_matches('.').to_string())
        .filter(|field| !field.is_empty())
        .collect();
    fields.sort();
    fields.dedup();
    fields
}

/// Metadata fields the server sets.
const SERVER_METADATA: &[&str] = &[
    "managedFields",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "uid",
    "selfLink",
    "deletionGracePeriodSeconds",
];

/// Removes what the server sets from an object (and from the claim templates of a
/// StatefulSet, which the server stores with a status of their own).
pub fn strip(object: &mut Value) {
    let Some(map) = object.as_object_mut() else { return };
    map.remove("status");
    if let Some(metadata) = map.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in SERVER_METADATA {
            metadata.remove(*field);
        }
    }
    if let Some(templates) = object.pointer_mut("/spec/volumeClaimTemplates").and_then(Value::as_array_mut) {
        for template in templates {
            if let Some(template) = template.as_object_mut() {
                template.remove("status");
                if let Some(metadata) = template.get_mut("metadata").and_then(Value::as_object_mut) {
                    metadata.remove("creationTimestamp");
                }
            }
        }
    }
}

/// Flattens an object as the lowering flattens desired ones: `data.*` of a Secret through
/// `digest`.
pub fn flatten(object: &Value, digest: &dyn Fn(&str, &str) -> FieldValue) -> Fields {
    let is_secret = object["kind"] == "Secret";
    let secret = |path: &str| is_secret && (path.starts_with("data.") || path.starts_with("stringData."));
    let mut fields = Fields::new();
    flatten_json_with(object, "", &mut fields, &secret, digest);
    fields
}

/// The fields among `watched` whose live value differs from what the dry-run apply
/// returned: `(field, live value)`, `None` when the live object lacks it.
pub fn drifted(
    watched: &Fields,
    dry_run: &Value,
    live: &Value,
    digest: &dyn Fn(&str, &str) -> FieldValue,
) -> Vec<(String, Option<FieldValue>)> {
    let (mut dry_run, mut live) = (dry_run.clone(), live.clone());
    strip(&mut dry_run);
    strip(&mut live);
    if dry_run == live {
        return Vec::new();
    }
    let (after, before) = (flatten(&dry_run, digest), flatten(&live, digest));
    watched
        .keys()
        .filter(|field| after.get(*field) != before.get(*field))
        .map(|field| (field.to_string(), before.get(field).cloned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn digest(field: &str, value: &str) -> FieldValue {
        FieldValue::keyed_secret(b"k", field, value)
    }

    #[test]
    fn immutable_fields_come_from_the_causes_of_a_422() {
        let status: kube::core::Status = serde_json::from_value(json!({
            "status": "Failure", "code": 422, "reason": "Invalid",
            "message": "Job.batch \"m\" is invalid: spec.template: Invalid value: …: field is immutable",
            "details": {"name": "m", "kind": "Job", "causes": [
                {"reason": "FieldValueInvalid", "message": "Invalid value: core.PodTemplateSpec{}: field is immutable", "field": "spec.template"},
                {"reason": "FieldValueForbidden", "message": "Forbidden: field is immutable when `immutable` is set", "field": "data"},
                {"reason": "FieldValueForbidden", "message": "Forbidden: updates to statefulset spec for fields other than 'replicas' are forbidden", "field": "spec"},
                {"reason": "FieldValueInvalid", "message": "Invalid value: \"-1\": must be greater than or equal to 0", "field": "spec.replicas"}
            ]}
        }))
        .expect("a Status");
        assert_eq!(immutable(&status), ["data", "spec", "spec.template"]);
        let invalid: kube::core::Status = serde_json::from_value(json!({"status": "Failure", "code": 422, "reason": "Invalid",
            "details": {"causes": [{"reason": "FieldValueInvalid", "message": "must be greater than or equal to 0", "field": "spec.replicas"}]}}))
        .expect("a Status");
        assert!(immutable(&invalid).is_empty());
    }

    #[test]
    fn server_fields_do_not_count() {
        let live = json!({"kind": "ConfigMap", "metadata": {"name": "a", "resourceVersion": "7", "uid": "u",
            "managedFields": [{"manager": "rivetctl"}]}, "data": {"x": "1"}, "status": {}});
        let dry_run =
            json!({"kind": "ConfigMap", "metadata": {"name": "a", "resourceVersion": "8"}, "data": {"x": "1"}});
        let watched = flatten(&json!({"data": {"x": "1"}}), &digest);
        assert!(drifted(&watched, &dry_run, &live, &digest).is_empty());
    }

    #[test]
    fn a_field_changed_by_hand_is_named_with_its_live_value() {
        let live = json!({"kind": "Deployment", "spec": {"replicas": 0, "paused": true}});
        let dry_run = json!({"kind": "Deployment", "spec": {"replicas": 1, "paused": false}});
        let watched = flatten(&json!({"spec": {"replicas": 1}}), &digest);
        let found = drifted(&watched, &dry_run, &live, &digest);
        assert_eq!(found, vec![("spec.replicas".to_string(), Some(FieldValue::plain("0")))]);
    }

    #[test]
    fn secret_data_is_compared_as_digests() {
        let live = json!({"kind": "Secret", "data": {"TOKEN": "b2xk"}});
        let dry_run = json!({"kind": "Secret", "data": {"TOKEN": "bmV3"}});
        let watched = flatten(&dry_run, &digest);
        let found = drifted(&watched, &dry_run, &live, &digest);
        assert_eq!(found.len(), 1);
        let value = found[0].1.as_ref().unwrap();
        assert!(value.sensitive && !value.text.contains("b2xk"), "{value:?}");
    }
}

/// The part of a live object that `manager` applied: its `managedFields` entry (operation
/// `Apply`) selects the fields, as client-go's `Extract…` functions do. What a manager
/// applied is what it re-applies to put a previous revision back exactly, without taking
/// over the fields controllers and other managers set.
pub fn extract_applied(live: &Value, manager: &str) -> Option<Value> {
    let entries = live["metadata"]["managedFields"].as_array()?;
    let entry = entries.iter().find(|e| e["manager"] == manager && e["operation"] == "Apply")?;
    let mut extracted = extract(live, &entry["fieldsV1"])?;
    for field in ["apiVersion", "kind"] {
        extracted[field] = live[field].clone();
    }
    for field in ["name", "namespace"] {
        if let Some(value) = live["metadata"].get(field) {
            extracted["metadata"][field] = value.clone();
        }
    }
    Some(extracted)
}

/// The fields of `value` that the fieldsV1 set `fields` names (`f:name` map keys,
/// `k:{…}` list items by their keys, `v:…` set items, `i:N` positions, `.` the item itself).
fn extract(value: &Value, fields: &Value) -> Option<Value> {
    let set = fields.as_object()?;
    let members: Vec<(&String, &Value)> = set.iter().filter(|(k, _)| k.as_str() != ".").collect();
    if members.is_empty() {
        return Some(value.clone());
    }
    match value {
        Value::Object(map) => {
            let mut out = serde_json::Map::new();
            for (key, sub) in members {
                let Some(name) = key.strip_prefix("f:") else { continue };
                if let Some(child) = map.get(name).and_then(|child| extract(child, sub)) {
                    out.insert(name.to_string(), child);
                }
            }
            Some(Value::Object(out))
        }
        Value::Array(items) => {
            let mut out = Vec::new();
            for item in items {
                let matched = members.iter().find(|(key, _)| item_matches(item, key));
                if let Some((_, sub)) = matched
                    && let Some(child) = extract(item, sub)
                {
                    out.push(child);
                }
            }
            Some(Value::Array(out))
        }
        other => Some(other.clone()),
    }
}

/// Whether a list item is the one a fieldsV1 key names.
fn item_matches(item: &Value, key: &str) -> bool {
    if let Some(keys) = key.strip_prefix("k:") {
        let Ok(Value::Object(keys)) = serde_json::from_str::<Value>(keys) else { return false };
        return keys.iter().all(|(k, v)| item.get(k) == Some(v));
    }
    if let Some(set_value) = key.strip_prefix("v:") {
        return serde_json::from_str::<Value>(set_value).is_ok_and(|v| &v == item);
    }
    false
}

#[cfg(test)]
mod extract_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_what_the_manager_applied_is_extracted() {
        let live = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "a", "namespace": "n", "annotations": {"deployment.kubernetes.io/revision": "2", "mine": "x"},
                "managedFields": [
                    {"manager": "rivetctl", "operation": "Apply", "fieldsV1": {"f:metadata": {"f:annotations": {"f:mine": {}}},
                        "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"agent\"}": {".": {}, "f:image": {}, "f:name": {}}}}}}}},
                    {"manager": "kubectl-patch", "operation": "Update", "fieldsV1": {"f:spec": {"f:revisionHistoryLimit": {}}}}
                ]},
            "spec": {"replicas": 1, "revisionHistoryLimit": 9, "progressDeadlineSeconds": 600,
                "template": {"spec": {"containers": [{"name": "agent", "image": "a:1", "imagePullPolicy": "IfNotPresent"}, {"name": "side", "image": "s"}]}}},
            "status": {"replicas": 1}
        });
        let extracted = extract_applied(&live, "rivetctl").unwrap();
        assert_eq!(
            extracted,
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "a", "namespace": "n", "annotations": {"mine": "x"}},
                "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "agent", "image": "a:1"}]}}}
            })
        );
        assert!(extract_applied(&live, "nobody").is_none());
    }
}
