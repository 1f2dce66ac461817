//! Walks the YAML tree against the schema and collects every problem.
//!
//! The result is a JSON value with every default filled in and every string format
//! normalised, a table of positions by path (for later, cross-field errors), the set of
//! paths whose values are secret, and all diagnostics of the file.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use super::diagnostics::{Diagnostic, Pos, did_you_mean};
use super::interpolate::{InterpolateError, Variables, interpolate};
use super::schema::{DefaultValue, Field, Object, ROOT, RUNTIME_SECTIONS, Ty, Unknown};
use super::yaml::{Yaml, YamlKind, is_null_text, parse_bool, parse_float, parse_int};

/// Where a value was written: its position and how long its text is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loc {
    pub pos: Pos,
    pub len: usize,
}

/// The outcome of checking a document.
#[derive(Debug, Default)]
pub struct Checked {
    /// The normalised document (defaults filled in); meaningful only without errors.
    pub value: Value,
    /// Position of every value by path (`deployment.nodes[0].role`), and of keys by
    /// `path#key`.
    pub locations: BTreeMap<String, Loc>,
    /// Paths whose values came from a sensitive variable.
    pub sensitive: BTreeSet<String>,
    pub diagnostics: Vec<Diagnostic>,
}

/// Checks a parsed document against [`ROOT`].
pub fn check(root: &Yaml, vars: &Variables) -> Checked {
    let mut checker = Checker { vars, out: Checked::default() };
    let value = match &root.kind {
        YamlKind::Map(_) => checker.object(Some(root), &ROOT, "", true),
        _ if root.is_null() => {
            checker.error(
                Some(root),
                "the config is empty: expected an object with a `deployment:` section".to_string(),
                Some("start from examples/quickstart/rivet.config.yaml".to_string()),
            );
            Value::Null
        }
        _ => {
            checker.error(
                Some(root),
                format!("the config must be an object (found {})", root.type_name()),
                Some("the file starts with keys such as `deployment:` and `agents:`".to_string()),
            );
            Value::Null
        }
    };
    checker.out.value = value;
    checker.out
}

struct Checker<'a> {
    vars: &'a Variables,
    out: Checked,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

fn last_segment(path: &str) -> &str {
    path.rsplit('.').next().unwrap_or(path)
}

impl Checker<'_> {
    fn error(&mut self, at: Option<&Yaml>, message: String, hint: Option<String>) {
        let mut diag = Diagnostic::error(message, at.map(|n| n.pos));
        if let Some(node) = at {
            diag = diag.with_len(node.len);
        }
        if let Some(hint) = hint {
            diag = diag.with_hint(hint);
        }
        self.out.diagnostics.push(diag);
    }

    fn warning(&mut self, at: &Yaml, message: String, hint: Option<String>) {
        let mut diag = Diagnostic::warning(message, Some(at.pos)).with_len(at.len);
        if let Some(hint) = hint {
            diag = diag.with_hint(hint);
        }
        self.out.diagnostics.push(diag);
    }

    fn object(&mut self, node: Option<&Yaml>, object: &Object, path: &str, present: bool) -> Value {
        let entries: &[(Yaml, Yaml)] = match node.map(|n| &n.kind) {
            Some(YamlKind::Map(entries)) => entries,
            _ => &[],
        };
        let mut out = Map::new();
        for field in object.fields {
            let child = join(path, field.name);
            let found = entries.iter().find(|(k, _)| k.as_scalar() == Some(field.name));
            match found {
                Some((key, value)) if !value.is_null() => {
                    self.out.locations.insert(format!("{child}#key"), Loc { pos: key.pos, len: key.len });
                    let checked = self.value(value, field.ty, &child, Some(field));
                    out.insert(field.name.to_string(), checked);
                }
                _ => {
                    if field.required && present {
                        let message = field
                            .missing
                            .map(str::to_string)
                            .unwrap_or_else(|| format!("Missing required field \"{child}\""));
                        let hint = match field.ty {
                            Ty::Enum(values) => Some(format!("add `{}: {}`", field.name, values[0])),
                            _ => Some(format!("add `{}:` here", field.name)),
                        };
                        self.error(node, message, hint);
                    }
                    if let Some(default) = self.default_of(field, &child) {
                        out.insert(field.name.to_string(), default);
                    }
                }
            }
        }
        for (key, value) in entries {
            let Some(name) = key.as_scalar() else {
                self.error(Some(key), format!("keys of \"{path}\" must be strings"), None);
                continue;
            };
            if object.fields.iter().any(|f| f.name == name) {
                continue;
            }
            match object.unknown {
                Unknown::Warn(template) => {
                    let message = template.replace("{key}", name).replace("{path}", path);
                    let hint = did_you_mean(name, object.fields.iter().map(|f| f.name))
                        .map(|m| format!("did you mean \"{m}\"?"))
                        .or_else(|| {
                            Some(format!(
                                "known keys: {}",
                                object.fields.iter().map(|f| f.name).collect::<Vec<_>>().join(", ")
                            ))
                        });
                    self.warning(key, message, hint);
                }
                Unknown::Keep => {
                    if path.is_empty()
                        && !RUNTIME_SECTIONS.contains(&name)
                        && let Some(m) = did_you_mean(name, object.fields.iter().map(|f| f.name))
                    {
                        self.warning(
                            key,
                            format!("Unknown top-level section \"{name}\" (kept for the runtime)"),
                            Some(format!("did you mean \"{m}\"?")),
                        );
                    }
                    out.insert(name.to_string(), raw_value(value));
                }
            }
        }
        Value::Object(out)
    }

    fn default_of(&mut self, field: &Field, path: &str) -> Option<Value> {
        if let Some(default) = field.default {
            let raw = match default {
                DefaultValue::Str(s) => json!(s),
                DefaultValue::Bool(b) => json!(b),
                DefaultValue::Int(i) => json!(i),
                DefaultValue::Num(n) => json!(n),
            };
            // Defaults pass through the same normalisation as written values.
            return Some(match (field.ty, &raw) {
                (Ty::Text(rule), Value::String(s)) => (rule.check)(s).unwrap_or(raw),
                _ => raw,
            });
        }
        match field.ty {
            Ty::Object(object) => Some(self.object(None, object, path, false)),
            Ty::List(_) => Some(json!([])),
            Ty::Map(_) => Some(json!({})),
            _ => None,
        }
    }

    fn value(&mut self, node: &Yaml, ty: &Ty, path: &str, field: Option<&Field>) -> Value {
        self.out.locations.insert(path.to_string(), Loc { pos: node.pos, len: node.len });
        match ty {
            Ty::Any => raw_value(node),
            Ty::Object(object) => match &node.kind {
                YamlKind::Map(_) => self.object(Some(node), object, path, true),
                _ => {
                    let message = format!("\"{path}\" must be an object (found {})", node.type_name());
                    self.error(Some(node), message, Some("write `key: value` pairs indented below it".into()));
                    Value::Null
                }
            },
            Ty::List(item) => match &node.kind {
                YamlKind::Seq(items) => Value::Array(
                    items
                        .iter()
                        .enumerate()
                        .map(|(i, child)| self.value(child, item, &format!("{path}[{i}]"), None))
                        .collect(),
                ),
                _ => {
                    self.error(
                        Some(node),
                        format!("\"{path}\" must be a list (found {})", node.type_name()),
                        Some("write one `- item` per line".into()),
                    );
                    Value::Null
                }
            },
            Ty::Map(item) => match &node.kind {
                YamlKind::Map(entries) => {
                    let mut out = Map::new();
                    for (key, value) in entries {
                        let Some(name) = key.as_scalar() else {
                            self.error(Some(key), format!("keys of \"{path}\" must be strings"), None);
                            continue;
                        };
                        let child = join(path, name);
                        self.out.locations.insert(format!("{child}#key"), Loc { pos: key.pos, len: key.len });
                        let checked = if value.is_null() && matches!(item, Ty::Object(_)) {
                            let Ty::Object(object) = item else { unreachable!() };
                            self.object(None, object, &child, false)
                        } else {
                            self.value(value, item, &child, None)
                        };
                        out.insert(name.to_string(), checked);
                    }
                    Value::Object(out)
                }
                _ => {
                    self.error(
                        Some(node),
                        format!("\"{path}\" must be an object (found {})", node.type_name()),
                        Some("write `name: value` pairs indented below it".into()),
                    );
                    Value::Null
                }
            },
            scalar => self.scalar(node, scalar, path, field),
        }
    }

    fn scalar(&mut self, node: &Yaml, ty: &Ty, path: &str, field: Option<&Field>) -> Value {
        let YamlKind::Scalar { text, plain } = &node.kind else {
            let expected = describe(ty);
            self.invalid(node, path, field, &format!("must be {expected} (found {})", node.type_name()));
            return Value::Null;
        };
        let (text, plain) = match interpolate(text, self.vars) {
            Ok(done) => {
                if done.sensitive {
                    self.out.sensitive.insert(path.to_string());
                }
                // A value produced by interpolation is typed from its text, like a plain scalar.
                let from_variable = done.text != *text;
                (done.text, *plain || from_variable)
            }
            Err(errors) => {
                for err in errors {
                    let (message, hint) = match err {
                        InterpolateError::Missing { name } => (
                            format!("environment variable \"{name}\" is not set (used in \"{path}\")"),
                            format!(
                                "set {name} in the environment or in the .env beside the config, or give a default: ${{{name}:-value}}"
                            ),
                        ),
                        InterpolateError::Syntax { message } => {
                            (message, "write `${NAME}`, `${NAME:-default}`, or `$$` for a literal `$`".to_string())
                        }
                    };
                    self.error(Some(node), message, Some(hint));
                }
                return Value::Null;
            }
        };
        let key = last_segment(path);
        match ty {
            Ty::Str => {
                if plain && parse_bool(&text).is_some() {
                    self.invalid(node, path, field, "must be a string (found a boolean)");
                    return Value::Null;
                }
                json!(text)
            }
            Ty::Bool => match parse_bool(&text).filter(|_| plain) {
                Some(b) => json!(b),
                None => {
                    let hint = if !plain && parse_bool(&text).is_some() {
                        "remove the quotes".to_string()
                    } else {
                        "write true or false, without quotes".to_string()
                    };
                    self.invalid_with(node, field, format!("\"{key}\" must be a boolean"), Some(hint));
                    Value::Null
                }
            },
            Ty::Int { min, max } => match parse_int(&text).filter(|_| plain) {
                Some(n) if n >= *min && n <= *max => json!(n),
                _ => {
                    let found = if is_null_text(&text) { "nothing".to_string() } else { format!("{text:?}") };
                    self.invalid_with(
                        node,
                        field,
                        format!("\"{key}\" must be a number between {min} and {max} (found {found})"),
                        Some(format!("write a whole number from {min} to {max}, without quotes")),
                    );
                    Value::Null
                }
            },
            Ty::Number { min, max } => match parse_float(&text).filter(|_| plain) {
                Some(n) if n >= *min && n <= *max => json!(n),
                _ => {
                    self.invalid_with(
                        node,
                        field,
                        format!("\"{key}\" must be a number between {min} and {max} (found {text:?})"),
                        Some(format!("write a number from {min} to {max}, without quotes")),
                    );
                    Value::Null
                }
            },
            Ty::Enum(values) => {
                if values.contains(&text.as_str()) {
                    json!(text)
                } else {
                    let hint = did_you_mean(&text, values.iter().copied())
                        .map(|m| format!("did you mean \"{m}\"?"))
                        .unwrap_or_else(|| format!("use one of: {}", values.join(", ")));
                    let message = match field.and_then(|f| f.invalid) {
                        Some(template) => template.replace("{value}", &text),
                        None => format!("\"{key}\" must be one of: {} (found {text:?})", values.join(", ")),
                    };
                    self.error(Some(node), message, Some(hint));
                    Value::Null
                }
            }
            Ty::Text(rule) => match (rule.check)(&text) {
                Some(value) => value,
                None => {
                    let message = match field.and_then(|f| f.invalid) {
                        Some(template) => template.replace("{value}", &text),
                        None => format!("\"{key}\" must be {} (found {text:?})", rule.expected),
                    };
                    let hint = field.and_then(|f| f.hint).map(str::to_string).unwrap_or_else(|| rule.hint.to_string());
                    self.error(Some(node), message, Some(hint));
                    Value::Null
                }
            },
            Ty::Any | Ty::List(_) | Ty::Map(_) | Ty::Object(_) => {
                unreachable!("handled by value()")
            }
        }
    }

    fn invalid(&mut self, node: &Yaml, path: &str, field: Option<&Field>, what: &str) {
        let message = format!("\"{}\" {what}", last_segment(path));
        self.invalid_with(node, field, message, Some("see `rivetctl config schema` for every field's type".into()));
    }

    fn invalid_with(&mut self, node: &Yaml, field: Option<&Field>, generic: String, hint: Option<String>) {
        let text = node.as_scalar().unwrap_or_default();
        let message = field.and_then(|f| f.invalid).map(|m| m.replace("{value}", text)).unwrap_or(generic);
        let hint = field.and_then(|f| f.hint).map(str::to_string).or(hint);
        self.error(Some(node), message, hint);
    }
}

/// What a type expects, for messages.
fn describe(ty: &Ty) -> String {
    match ty {
        Ty::Str => "a string".into(),
        Ty::Bool => "a boolean".into(),
        Ty::Int { min, max } => format!("a number between {min} and {max}"),
        Ty::Number { min, max } => format!("a number between {min} and {max}"),
        Ty::Enum(values) => format!("one of: {}", values.join(", ")),
        Ty::Text(rule) => rule.expected.into(),
        Ty::List(_) => "a list".into(),
        Ty::Map(_) | Ty::Object(_) => "an object".into(),
        Ty::Any => "anything".into(),
    }
}

/// A YAML node as JSON by the core schema, without checks or interpolation (sections that
/// belong to the runtime).
pub fn raw_value(node: &Yaml) -> Value {
    match &node.kind {
        YamlKind::Scalar { text, plain: false } => json!(text),
        YamlKind::Scalar { text, plain: true } => {
            if is_null_text(text) {
                Value::Null
            } else if let Some(b) = parse_bool(text) {
                json!(b)
            } else if let Some(i) = parse_int(text) {
                json!(i)
            } else if let Some(f) = parse_float(text) {
                json!(f)
            } else {
                json!(text)
            }
        }
        YamlKind::Seq(items) => Value::Array(items.iter().map(raw_value).collect()),
        YamlKind::Map(entries) => Value::Object(
            entries
                .iter()
                .map(|(k, v)| {
                    (k.as_scalar().map(str::to_string).unwrap_or_else(|| format!("{:?}", raw_value(k))), raw_value(v))
                })
                .collect(),
        ),
    }
}
