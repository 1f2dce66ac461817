//! The rendered manifests as the planner's resources: one per object (and one per claim the
//! datahub's StatefulSet makes), with their component, flattened fields, the fields that
//! force a replacement, and, against a live server, nothing its schema does not declare.

use std::collections::BTreeSet;

use orchestrator::fleet::Fleet;
use orchestrator::resource::{Component, FieldValue, Fields, Resource, ResourceKey, RunState, flatten_json_with};
use serde_json::{Value, json};

use super::{CLUSTER, Options, Unknown, artifacts_with, parse_documents, settings_of};
use crate::render::RenderError;

fn text<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

/// Marks the payload of a claim the StatefulSet controller makes from a claim template:
/// nothing applies it, and it has no fields of its own.
pub const MADE_BY_STATEFULSET: &str = "rivetctl.io/made-by-statefulset";

/// The claims a StatefulSet's controller makes for its one replica (`<template>-<set>-0`):
/// desired objects with no fields, so the plan knows them (kept data, not leftovers) and
/// `destroy --volumes` removes them.
fn claims_of(set: &Value, set_name: &str, namespace: &str) -> Vec<Resource<Value>> {
    let templates = set.pointer("/spec/volumeClaimTemplates").and_then(Value::as_array);
    templates
        .into_iter()
        .flatten()
        .filter_map(|template| template.pointer("/metadata/name").and_then(Value::as_str))
        .map(|claim| Resource {
            key: ResourceKey {
                node: namespace.to_string(),
                kind: "PersistentVolumeClaim".into(),
                name: format!("{claim}-{set_name}-0"),
            },
            component: Component::Storage,
            stateful: true,
            fields: Fields::new(),
            replace_on: BTreeSet::new(),
            run_state: None,
            stop_grace_ms: None,
            payload: json!({ MADE_BY_STATEFULSET: set_name }),
        })
        .collect()
}

/// What part of the fleet an object of `kind` is (`agent`: its `rivetctl.io/agent` label, or
/// empty), whether it holds data, and its desired run state.
pub fn classify(kind: &str, agent: &str) -> (Component, bool, Option<RunState>) {
    match kind {
        "PersistentVolumeClaim" => (Component::Storage, true, None),
        "StatefulSet" => (Component::Datahub, false, Some(RunState::Running)),
        "Job" => (Component::Migrate, false, Some(RunState::Completed)),
        "Deployment" => (Component::Agent(agent.to_string()), false, Some(RunState::Running)),
        "Service" | "PodDisruptionBudget" if !agent.is_empty() => (Component::Agent(agent.to_string()), false, None),
        "Service" => (Component::Datahub, false, None),
        // Deleting a namespace deletes every claim in it: it is kept like data.
        "Namespace" => (Component::Foundation, true, None),
        _ => (Component::Foundation, false, None),
    }
}

/// `replace_on` entries for these roots: each root and, where it is a list, each element
/// (`spec.accessModes[0]`): [`Resource::forces_replacement`] matches `root.` prefixes only.
fn replace_paths(roots: &[&str], fields: &Fields) -> BTreeSet<String> {
    let mut paths: BTreeSet<String> = roots.iter().map(|r| r.to_string()).collect();
    for field in fields.keys() {
        for root in roots {
            let element = field.strip_prefix(root).and_then(|rest| rest.strip_prefix('['));
            if let Some(end) = element.and_then(|rest| rest.find(']').map(|end| &rest[..end])) {
                paths.insert(format!("{root}[{end}]"));
            }
        }
    }
    paths
}

/// One resource per rendered object, in file order (manifests, then the Secret), for the
/// declared version.
pub fn resources(fleet: &Fleet) -> Result<Vec<Resource<Value>>, RenderError> {
    let Some(k8s) = settings_of(fleet) else {
        return Ok(Vec::new());
    };
    resources_with(fleet, &Options::offline(k8s))
}

/// [`resources`] for the server `options` describe, secret digests keyed as they say.
pub fn resources_with(fleet: &Fleet, options: &Options) -> Result<Vec<Resource<Value>>, RenderError> {
    resources_checked(fleet, options).map(|(resources, _)| resources)
}

/// [`resources_with`], and the fields taken out because the server's schema does not
/// declare them (none offline).
pub fn resources_checked(
    fleet: &Fleet,
    options: &Options,
) -> Result<(Vec<Resource<Value>>, Vec<Unknown>), RenderError> {
    let mut unknown = Vec::new();
    let Some(namespace) = settings_of(fleet).map(|k8s| &k8s.namespace) else {
        return Ok((Vec::new(), unknown));
    };
    let digest = |field: &str, text: &str| match &options.digest_key {
        Some(key) => FieldValue::keyed_secret(key, field, text),
        None => FieldValue::secret(&fleet.name, field, text),
    };
    let mut out = Vec::new();
    for artifact in artifacts_with(fleet, options)? {
        for mut object in parse_documents(&artifact.contents)? {
            if let Some(map) = object.as_object_mut() {
                map.remove("status");
            }
            if let Some(schema) = &options.schema {
                unknown.extend(schema.prune(&mut object));
            }
            let kind = text(&object, "/kind").to_string();
            let name = text(&object, "/metadata/name").to_string();
            let agent = text(&object, "/metadata/labels/rivetctl.io~1agent").to_string();
            let (component, stateful, run_state) = classify(&kind, &agent);
            let replace_on: &[&str] = match kind.as_str() {
                "StatefulSet" => &[
                    "spec.selector",
                    "spec.serviceName",
                    "spec.volumeClaimTemplates",
                    "metadata.annotations.rivetctl.io/postgres-version",
                ],
                "Deployment" => &["spec.selector"],
                "Job" => &["spec"],
                "PersistentVolumeClaim" => &["spec.storageClassName", "spec.accessModes"],
                "Service" => &["spec.clusterIP"],
                _ => &[],
            };
            let is_secret = kind == "Secret";
            let mut fields = Fields::new();
            let secret = |path: &str| is_secret && (path.starts_with("stringData.") || path.starts_with("data."));
            flatten_json_with(&object, "", &mut fields, &secret, &digest);
            // The workload's image under the name every target records it by (the rollout
            // reads `image`; `Rollouts::with_image` sets both).
            if let Some(image) = object.pointer("/spec/template/spec/containers/0/image").and_then(Value::as_str) {
                fields.insert("image".into(), FieldValue::plain(image));
            }
            let replace_on = replace_paths(replace_on, &fields);
            let node = if kind == "Namespace" { CLUSTER } else { namespace.as_str() };
            if kind == "StatefulSet" {
                out.extend(claims_of(&object, &name, namespace));
            }
            out.push(Resource {
                key: ResourceKey { node: node.to_string(), kind, name },
                component,
                stateful,
                fields,
                replace_on,
                run_state,
                stop_grace_ms: None,
                payload: object,
            });
        }
    }
    Ok((out, unknown))
}
