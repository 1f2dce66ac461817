//! The fields a live server knows, from its OpenAPI v2 document (`/openapi/v2`): each
//! definition's properties and what they hold (another definition, a list, a map, a scalar),
//! and which definition is the root of each `group/version/kind`.
//!
//! [`Schema::prune`] takes out of an object every field the server's schema does not declare,
//! so nothing rivetctl applies names a field the server does not know (a v1.20 server's
//! server-side apply refuses the whole object: "field not declared in schema"). The
//! [`super::Profile`] already leaves out the fields whose version is known; this is the check
//! behind it for everything else, and what it takes out is reported, never silently lost.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;

/// What a property holds.
#[derive(Debug, Clone, PartialEq)]
enum Shape {
    /// An object of the named definition.
    Object(String),
    /// A list of elements of this shape.
    List(Box<Shape>),
    /// A map whose values have this shape (labels, resource quantities): any key.
    Map(Box<Shape>),
    /// A scalar or an object the schema leaves open (`RawExtension`, `JSON`).
    Open,
}

/// One definition: its properties, or `None` when it declares none (any content).
#[derive(Debug, Default)]
struct Definition {
    properties: Option<HashMap<String, Shape>>,
}

/// The server's schema, as much of it as pruning needs.
#[derive(Debug, Default)]
pub struct Schema {
    definitions: HashMap<String, Definition>,
    /// `(group, version, kind)` → the root definition of such objects.
    roots: HashMap<(String, String, String), String>,
}

/// A field taken out of an object: `Deployment rivet-opus: spec.template.spec.hostUsers`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Unknown {
    pub kind: String,
    pub name: String,
    /// The field's path in the object (`spec.template.spec.hostUsers`, list elements as `[i]`).
    pub path: String,
}

#[derive(Deserialize)]
struct RawDocument {
    #[serde(default)]
    definitions: HashMap<String, RawDefinition>,
}

#[derive(Deserialize)]
struct RawDefinition {
    properties: Option<HashMap<String, RawProperty>>,
    #[serde(rename = "x-kubernetes-group-version-kind", default)]
    group_version_kind: Vec<RawGroupVersionKind>,
}

#[derive(Deserialize)]
struct RawGroupVersionKind {
    #[serde(default)]
    group: String,
    version: String,
    kind: String,
}

#[derive(Deserialize)]
struct RawProperty {
    #[serde(rename = "$ref")]
    reference: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    items: Option<Box<RawProperty>>,
    #[serde(rename = "additionalProperties")]
    additional: Option<Box<RawAdditional>>,
}

/// `additionalProperties` is a schema or a boolean.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawAdditional {
    Schema(RawProperty),
    Flag(#[allow(dead_code)] bool),
}

impl RawProperty {
    fn shape(&self) -> Shape {
        if let Some(reference) = &self.reference {
            return Shape::Object(reference.trim_start_matches("#/definitions/").to_string());
        }
        match self.kind.as_deref() {
            Some("array") => Shape::List(Box::new(self.items.as_ref().map_or(Shape::Open, |items| items.shape()))),
            Some("object") => match self.additional.as_deref() {
                Some(RawAdditional::Schema(values)) => Shape::Map(Box::new(values.shape())),
                _ => Shape::Open,
            },
            _ => Shape::Open,
        }
    }
}

impl Schema {
    /// Reads an OpenAPI v2 document; `None` when it is not one.
    pub fn parse(openapi: &str) -> Option<Schema> {
        let document: RawDocument = serde_json::from_str(openapi).ok()?;
        let mut schema = Schema::default();
        for (name, raw) in document.definitions {
            for gvk in &raw.group_version_kind {
                schema.roots.insert((gvk.group.clone(), gvk.version.clone(), gvk.kind.clone()), name.clone());
            }
            let properties =
                raw.properties.map(|props| props.into_iter().map(|(field, p)| (field, p.shape())).collect());
            schema.definitions.insert(name, Definition { properties });
        }
        Some(schema)
    }

    /// Whether the definition `definition` declares `field`.
    pub fn declares(&self, definition: &str, field: &str) -> bool {
        self.definitions
            .get(definition)
            .and_then(|d| d.properties.as_ref())
            .is_some_and(|properties| properties.contains_key(field))
    }

    /// The root definition of objects of `apiVersion` and `kind`.
    fn root_of(&self, api_version: &str, kind: &str) -> Option<&str> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        self.roots.get(&(group.to_string(), version.to_string(), kind.to_string())).map(String::as_str)
    }

    /// Takes every field the schema does not declare out of `object` and returns them. An
    /// object whose kind the schema has no definition for is left alone (the served API
    /// versions decide about those).
    pub fn prune(&self, object: &mut Value) -> Vec<Unknown> {
        let kind = object["kind"].as_str().unwrap_or_default().to_string();
        let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
        let api_version = object["apiVersion"].as_str().unwrap_or_default().to_string();
        let Some(root) = self.root_of(&api_version, &kind) else { return Vec::new() };
        let mut paths = Vec::new();
        self.prune_object(object, root, "", &mut paths);
        paths.into_iter().map(|path| Unknown { kind: kind.clone(), name: name.clone(), path }).collect()
    }

    fn prune_object(&self, value: &mut Value, definition: &str, path: &str, out: &mut Vec<String>) {
        let Some(map) = value.as_object_mut() else { return };
        let Some(properties) = self.definitions.get(definition).and_then(|d| d.properties.as_ref()) else { return };
        let unknown: Vec<String> = map.keys().filter(|key| !properties.contains_key(*key)).cloned().collect();
        for key in unknown {
            map.remove(&key);
            out.push(join(path, &key));
        }
        for (key, child) in map.iter_mut() {
            if let Some(shape) = properties.get(key) {
                self.prune_shape(child, shape, &join(path, key), out);
            }
        }
    }

    fn prune_shape(&self, value: &mut Value, shape: &Shape, path: &str, out: &mut Vec<String>) {
        match shape {
            Shape::Object(definition) => self.prune_object(value, definition, path, out),
            Shape::List(element) => {
                if let Some(items) = value.as_array_mut() {
                    for (i, item) in items.iter_mut().enumerate() {
                        self.prune_shape(item, element, &format!("{path}[{i}]"), out);
                    }
                }
            }
            Shape::Map(values) => {
                if let Some(map) = value.as_object_mut() {
                    for (key, item) in map.iter_mut() {
                        self.prune_shape(item, values, &join(path, key), out);
                    }
                }
            }
            Shape::Open => {}
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

/// One line per distinct kind and path: `StatefulSet spec.x (1 object)`, list indexes folded
/// (`containers[0]` and `containers[1]` are one field).
pub fn summarize(unknown: &[Unknown]) -> Vec<String> {
    let mut counts: std::collections::BTreeMap<(String, String), std::collections::BTreeSet<&str>> =
        std::collections::BTreeMap::new();
    for field in unknown {
        let folded = fold_indexes(&field.path);
        counts.entry((field.kind.clone(), folded)).or_default().insert(&field.name);
    }
    counts
        .into_iter()
        .map(|((kind, path), names)| {
            let n = names.len();
            format!("{kind} {path} ({n} object{})", if n == 1 { "" } else { "s" })
        })
        .collect()
}

/// `a[3].b` → `a[].b`.
fn fold_indexes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push('[');
            }
            ']' => {
                in_index = false;
                out.push(']');
            }
            _ if in_index => {}
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Schema {
        let doc = json!({"definitions": {
            "apps.v1.Deployment": {
                "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                    "metadata": {"$ref": "#/definitions/meta.ObjectMeta"},
                    "spec": {"$ref": "#/definitions/apps.v1.DeploymentSpec"}},
                "x-kubernetes-group-version-kind": [{"group": "apps", "version": "v1", "kind": "Deployment"}]
            },
            "meta.ObjectMeta": {"properties": {"name": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}}}},
            "apps.v1.DeploymentSpec": {"properties": {"replicas": {"type": "integer"},
                "containers": {"type": "array", "items": {"$ref": "#/definitions/core.v1.Container"}},
                "limits": {"type": "object", "additionalProperties": {"$ref": "#/definitions/Quantity"}},
                "raw": {"$ref": "#/definitions/RawExtension"}}},
            "core.v1.Container": {"properties": {"name": {"type": "string"}, "image": {"type": "string"}}},
            "Quantity": {"type": "string"},
            "RawExtension": {"type": "object"}
        }});
        Schema::parse(&doc.to_string()).expect("an OpenAPI document")
    }

    #[test]
    fn fields_the_schema_does_not_declare_are_taken_out_and_named() {
        let mut object = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "a", "labels": {"any-key": "kept"}, "newMeta": 1},
            "spec": {"replicas": 1, "hostUsers": false,
                "containers": [{"name": "c", "image": "i"}, {"name": "d", "image": "j", "resizePolicy": []}],
                "limits": {"cpu": "1"}, "raw": {"anything": {"goes": true}}}});
        let unknown = schema().prune(&mut object);
        let paths: Vec<&str> = unknown.iter().map(|u| u.path.as_str()).collect();
        assert_eq!(paths, ["metadata.newMeta", "spec.hostUsers", "spec.containers[1].resizePolicy"]);
        assert!(unknown.iter().all(|u| u.kind == "Deployment" && u.name == "a"));
        assert_eq!(
            object,
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "a", "labels": {"any-key": "kept"}},
                "spec": {"replicas": 1, "containers": [{"name": "c", "image": "i"}, {"name": "d", "image": "j"}],
                    "limits": {"cpu": "1"}, "raw": {"anything": {"goes": true}}}})
        );
    }

    #[test]
    fn unknown_kinds_are_left_alone_and_declarations_answer() {
        let schema = schema();
        let mut object = json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "spec": {"x": 1}});
        assert!(schema.prune(&mut object).is_empty());
        assert_eq!(object["spec"]["x"], 1);
        assert!(schema.declares("apps.v1.DeploymentSpec", "replicas"));
        assert!(!schema.declares("apps.v1.DeploymentSpec", "hostUsers"));
        assert!(Schema::parse("not json").is_none());
    }

    #[test]
    fn the_summary_folds_objects_and_list_indexes() {
        let unknown =
            |name: &str, path: &str| Unknown { kind: "Deployment".into(), name: name.into(), path: path.into() };
        let lines = summarize(&[
            unknown("a", "spec.containers[0].x"),
            unknown("a", "spec.containers[1].x"),
            unknown("b", "spec.containers[0].x"),
            unknown("b", "spec.y"),
        ]);
        assert_eq!(lines, ["Deployment spec.containers[].x (2 objects)", "Deployment spec.y (1 object)"]);
    }
}
