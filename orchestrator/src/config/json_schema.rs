//! JSON Schema (draft 2020-12) of `rivet.config.yaml`, generated from [`super::schema`], for
//! editors (YAML language servers read it through `# yaml-language-server: $schema=...`).

use serde_json::{Map, Value, json};

use super::schema::{DefaultValue, Object, ROOT, Ty, Unknown};

/// `${VAR}` references are accepted where any scalar is.
const REFERENCE: &str = "^.*\\$\\{[A-Za-z_][A-Za-z0-9_]*((:?-)[^}]*)?\\}.*$";

/// The schema document.
pub fn json_schema() -> Value {
    let mut schema = object_schema(&ROOT);
    if let Value::Object(map) = &mut schema {
        map.insert("$schema".into(), json!("https://json-schema.org/draft/2020-12/schema"));
        map.insert("$id".into(), json!("https://rivetctl.dev/schema/rivet.config.json"));
        map.insert("title".into(), json!("rivet.config.yaml"));
        map.insert(
            "description".into(),
            json!("RivetOS configuration as read by rivetctl. Sections other than deployment, agents and mesh belong to the runtime."),
        );
    }
    schema
}

fn with_reference(schema: Value) -> Value {
    json!({ "anyOf": [schema, { "type": "string", "pattern": REFERENCE }] })
}

fn type_schema(ty: &Ty) -> Value {
    match ty {
        Ty::Str => json!({ "type": ["string", "number"] }),
        Ty::Bool => with_reference(json!({ "type": "boolean" })),
        Ty::Int { min, max } => with_reference(json!({ "type": "integer", "minimum": min, "maximum": max })),
        Ty::Number { min, max } => with_reference(json!({ "type": "number", "minimum": min, "maximum": max })),
        Ty::Enum(values) => with_reference(json!({ "enum": values })),
        Ty::Text(rule) => with_reference(json!({ "type": ["string", "number"], "pattern": rule.pattern })),
        Ty::List(item) => json!({ "type": "array", "items": type_schema(item) }),
        Ty::Map(item) => json!({ "type": "object", "additionalProperties": type_schema(item) }),
        Ty::Object(object) => object_schema(object),
        Ty::Any => json!({}),
    }
}

fn object_schema(object: &Object) -> Value {
    let mut properties = Map::new();
    let mut required = Vec::new();
    for field in object.fields {
        let mut schema = type_schema(field.ty);
        if let Value::Object(map) = &mut schema {
            map.insert("description".into(), json!(field.doc));
            if let Some(default) = field.default {
                let value = match default {
                    DefaultValue::Str(s) => json!(s),
                    DefaultValue::Bool(b) => json!(b),
                    DefaultValue::Int(i) => json!(i),
                    DefaultValue::Num(n) => json!(n),
                };
                map.insert("default".into(), value);
            }
        }
        if field.required {
            required.push(field.name);
        }
        properties.insert(field.name.to_string(), schema);
    }
    let mut schema = json!({
        "type": "object",
        "properties": properties,
        "additionalProperties": matches!(object.unknown, Unknown::Keep),
    });
    if !required.is_empty() {
        schema["required"] = json!(required);
    }
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_is_required_and_enumerated() {
        let schema = json_schema();
        let deployment = &schema["properties"]["deployment"];
        assert_eq!(deployment["required"], json!(["target"]));
        assert_eq!(
            deployment["properties"]["target"]["anyOf"][0]["enum"],
            json!(["docker", "proxmox", "kubernetes", "manual"])
        );
        assert_eq!(deployment["properties"]["docker"]["properties"]["postgres_port"]["default"], json!(5432));
        assert_eq!(schema["additionalProperties"], json!(true), "runtime sections are kept");
        assert_eq!(deployment["additionalProperties"], json!(false), "typos are flagged");
    }
}
