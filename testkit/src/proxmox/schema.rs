//! Every request checked against the official PVE API schema, the way PVE's own
//! `PVE::JSONSchema::validate` checks it (pve-common), so that a client which passes here sends
//! nothing real PVE 8 would refuse with "Parameter verification failed.".
//!
//! The schema is the repository's subset of the official one
//! (`targets/tests/data/pve-api-schema.subset.json`, whole method entries). Values arrive as
//! text (query string or form body), as they do at PVE's API server; the order of the checks
//! and the messages are those of `check_prop`: type, format, pattern, maxLength, minLength,
//! maximum, minimum, enum.
//!
//! Booleans are `0` or `1` only. That is exactly PVE at the top level (`check_type` has the
//! `true|yes|on` alternative commented out); inside property strings PVE would also take
//! `on|yes|true|off|no|false` (`parse_boolean`) and then re-print them as `1`/`0`, which the
//! fake does not do (it stores what it is given), so it refuses them there too: stricter than
//! PVE, never looser.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use anyhow::{Context, bail};
use regex::Regex;
use serde_json::{Map, Value};

use super::formats;

const OFFICIAL: &str = include_str!("../../../targets/tests/data/pve-api-schema.subset.json");

/// The indexed names (`net[n]` → `net0`…) and how many PVE registers of each
/// (pve-container's `$MAX_LXC_NETWORKS`, `$MAX_MOUNT_POINTS`, `$MAX_UNUSED_DISKS`,
/// `$MAX_DEVICES`); the schema's descriptions do not say, so others get 0..=255.
const INDEXED_LIMITS: &[(&str, u32)] = &[("net", 32), ("mp", 256), ("unused", 256), ("dev", 256)];

/// The API schema: its paths, and every pattern in it compiled once.
pub struct Schema {
    endpoints: Vec<Endpoint>,
    patterns: HashMap<String, Regex>,
}

struct Endpoint {
    template: String,
    segments: Vec<String>,
    methods: Map<String, Value>,
}

/// Which path of the schema a request matched, and the values of its `{placeholders}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// As in the schema: `/nodes/{node}/lxc/{vmid}/config`.
    pub template: String,
    pub path_params: BTreeMap<String, String>,
}

/// Why a request was refused before any handler saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// No such path, or not with this method: HTTP 501 with this message
    /// ("Method 'GET /x' not implemented").
    NotImplemented(String),
    /// Parameter → PVE's message: HTTP 400 "Parameter verification failed.".
    Invalid(BTreeMap<String, String>),
}

impl Schema {
    /// The repository's subset of the official schema, parsed once.
    pub fn official() -> &'static Schema {
        static SCHEMA: OnceLock<Schema> = OnceLock::new();
        SCHEMA.get_or_init(|| Schema::from_json(OFFICIAL).expect("the embedded PVE API schema subset is valid"))
    }

    /// A schema in the subset's layout: `{"paths": {"/x/{y}": {"GET": {...}}}}`.
    pub fn from_json(text: &str) -> anyhow::Result<Schema> {
        let doc: Value = serde_json::from_str(text).context("the schema is not JSON")?;
        let paths = doc["paths"].as_object().context("the schema has no \"paths\" object")?;
        let mut endpoints = Vec::new();
        let mut patterns = HashMap::new();
        for (template, methods) in paths {
            let methods = methods.as_object().with_context(|| format!("{template}: not an object"))?.clone();
            collect_patterns(&Value::Object(methods.clone()), &mut patterns)?;
            let segments = template.split('/').filter(|s| !s.is_empty()).map(str::to_string).collect();
            endpoints.push(Endpoint { template: template.clone(), segments, methods });
        }
        Ok(Schema { endpoints, patterns })
    }

    /// The method entry (`description`, `parameters`, `returns`, …) of a schema path.
    pub fn entry(&self, method: &str, template: &str) -> Option<&Value> {
        self.endpoints.iter().find(|e| e.template == template)?.methods.get(method)
    }

    /// The declared type (`integer`, `string`, …) of `key` in what `method template` returns,
    /// with `net0` found as `net[n]`.
    pub fn returned_type(&self, method: &str, template: &str, key: &str) -> Option<&str> {
        let properties = self.entry(method, template)?["returns"]["properties"].as_object()?;
        spec_for(properties, key)?["type"].as_str()
    }

    /// The route of `method path` (`path` without `/api2/json`, already percent-decoded).
    pub fn route(&self, method: &str, path: &str) -> Result<Route, Refused> {
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let not_implemented = || Refused::NotImplemented(format!("Method '{method} {path}' not implemented"));
        let mut best: Option<(&Endpoint, usize)> = None;
        for endpoint in &self.endpoints {
            if endpoint.segments.len() != parts.len() {
                continue;
            }
            let mut literal = 0;
            let fits = endpoint.segments.iter().zip(&parts).all(|(segment, part)| {
                if segment.starts_with('{') {
                    true
                } else {
                    literal += 1;
                    segment == part
                }
            });
            // The most literal template wins, as in PVE's router (fixed names before `{id}`).
            if fits && best.is_none_or(|(_, n)| literal > n) {
                best = Some((endpoint, literal));
            }
        }
        let (endpoint, _) = best.ok_or_else(not_implemented)?;
        if !endpoint.methods.contains_key(method) {
            return Err(not_implemented());
        }
        let path_params = endpoint
            .segments
            .iter()
            .zip(&parts)
            .filter_map(|(segment, part)| {
                let name = segment.strip_prefix('{')?.strip_suffix('}')?;
                Some((name.to_string(), part.to_string()))
            })
            .collect();
        Ok(Route { template: endpoint.template.clone(), path_params })
    }

    /// Routes the request and checks its parameters, path parameters included, against the
    /// method's `parameters` schema.
    pub fn check(&self, method: &str, path: &str, params: &BTreeMap<String, String>) -> Result<Route, Refused> {
        let route = self.route(method, path)?;
        let entry = self.entry(method, &route.template).expect("routed to an existing entry");
        let mut all = params.clone();
        // Path parameters are parameters like any other (PVE merges them in the same way).
        all.extend(route.path_params.clone());
        let errors = self.check_object(&entry["parameters"], &all);
        if errors.is_empty() { Ok(route) } else { Err(Refused::Invalid(errors)) }
    }

    /// PVE's `check_object` at the top level: every declared property, then every given one.
    fn check_object(&self, parameters: &Value, given: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let empty = Map::new();
        let properties = parameters["properties"].as_object().unwrap_or(&empty);
        let closed =
            parameters["additionalProperties"].as_u64() == Some(0) || parameters["additionalProperties"] == false;
        let mut errors = BTreeMap::new();
        for (name, spec) in properties {
            if !name.ends_with("[n]") && !given.contains_key(name) && !is_true(&spec["optional"]) {
                errors.insert(name.clone(), "property is missing and it is not optional".to_string());
            }
        }
        for (name, value) in given {
            let Some(spec) = spec_for(properties, name) else {
                if closed {
                    errors.insert(name.clone(), UNKNOWN.to_string());
                }
                continue;
            };
            if let Some(requires) = spec["requires"].as_str()
                && !given.contains_key(requires)
            {
                errors.insert(requires.to_string(), format!("missing property required by '{name}'"));
            }
            if let Err(message) = self.check_value(name, spec, value) {
                errors.insert(name.clone(), message);
            }
        }
        errors
    }

    /// PVE's `check_prop` for one text value (`path` names it in nested messages).
    fn check_value(&self, path: &str, spec: &Value, value: &str) -> Result<(), String> {
        match spec["type"].as_str() {
            None | Some("string") | Some("any") => {}
            Some("boolean") if matches!(value, "0" | "1") => {}
            Some("integer") if is_integer(value) => {}
            Some("number") if is_number(value) => {}
            Some(ty @ ("boolean" | "integer" | "number")) => {
                return Err(format!("type check ('{ty}') failed - got '{value}'"));
            }
            Some("null") => return Err("type check ('null') failed - value is not null".into()),
            Some(ty) => return Err(format!("type check ('{ty}') failed")),
        }
        match &spec["format"] {
            Value::Null => {}
            Value::String(format) if format == "regex" => {}
            Value::String(format) => formats::check(format, value).map_err(|e| format!("invalid format - {e}"))?,
            Value::Object(members) => {
                self.check_property_string(path, members, value).map_err(|e| format!("invalid format - {e}"))?
            }
            other => return Err(format!("invalid format - unexpected format value {other}\n")),
        }
        if let Some(perl) = spec["pattern"].as_str()
            && !self.patterns[perl].is_match(value)
        {
            return Err("value does not match the regex pattern".into());
        }
        let length = value.chars().count() as u64;
        if let Some(max) = spec["maxLength"].as_u64()
            && length > max
        {
            return Err(format!("value may only be {max} characters long"));
        }
        if let Some(min) = spec["minLength"].as_u64()
            && length < min
        {
            return Err(format!("value must be at least {min} characters long"));
        }
        if is_number(value) {
            let n: f64 = value.parse().unwrap_or(f64::NAN);
            if let Some(max) = bound(&spec["maximum"])
                && n > max.0
            {
                return Err(format!("value must have a maximum value of {}", max.1));
            }
            if let Some(min) = bound(&spec["minimum"])
                && n < min.0
            {
                return Err(format!("value must have a minimum value of {}", min.1));
            }
        }
        if let Some(values) = spec["enum"].as_array()
            && !values.iter().any(|v| {
                v.as_str() == Some(value) || (v.is_number() && *v == value.parse::<Value>().unwrap_or(Value::Null))
            })
        {
            let list: Vec<String> =
                values.iter().map(|v| v.as_str().map_or_else(|| v.to_string(), String::from)).collect();
            return Err(format!("value '{value}' does not have a value in the enumeration '{}'", list.join(", ")));
        }
        Ok(())
    }

    /// PVE's `parse_property_string`: `key=value,...`, a bare value for the `default_key`
    /// member, aliases remapped; then `check_object` on the members, with PVE's "format error"
    /// message listing `<path>.<member>: <message>` lines.
    fn check_property_string(&self, path: &str, members: &Map<String, Value>, text: &str) -> Result<(), String> {
        let default_key = members.iter().find(|(_, m)| is_true(&m["default_key"])).map(|(k, _)| k.as_str());
        let mut given: BTreeMap<String, String> = BTreeMap::new();
        let mut errors: BTreeMap<String, String> = BTreeMap::new();
        for part in text.split(',') {
            if part.trim().is_empty() {
                continue;
            }
            let (key, value) = match part.split_once('=') {
                Some((key, value)) if !key.is_empty() && !value.is_empty() => (key, value),
                Some(_) => return Err("missing key in comma-separated list property\n".into()),
                None => {
                    let key = default_key
                        .ok_or("value without key, but schema does not define a default key\n".to_string())?;
                    (key, part)
                }
            };
            if given.contains_key(key) {
                return Err(format!("duplicate key in comma-separated list property: {key}\n"));
            }
            let Some(member) = members.get(key) else {
                return Err(format!("invalid key in comma-separated list property: {key}\n"));
            };
            let key = match member["alias"].as_str() {
                Some(target) if given.contains_key(target) => {
                    return Err(format!("key '{target}' is already defined (via alias)\n"));
                }
                Some(target) => target,
                None => key,
            };
            given.insert(key.to_string(), value.to_string());
        }
        for (key, member) in members {
            let at = format!("{path}.{key}");
            if !member["alias"].is_null() {
                continue;
            }
            match given.get(key) {
                None if !is_true(&member["optional"]) => {
                    errors.insert(at, "property is missing and it is not optional".into());
                }
                None => {}
                Some(value) => {
                    if let Err(message) = self.check_value(&at, member, value) {
                        errors.insert(at, message);
                    }
                }
            }
        }
        if errors.is_empty() {
            return Ok(());
        }
        let mut message = String::from("format error\n");
        for (at, error) in errors {
            message.push_str(&format!("{at}: {}\n", error.trim_end_matches('\n')));
        }
        Err(message)
    }
}

const UNKNOWN: &str = "property is not defined in schema and the schema does not allow additional properties";

/// `net0` → the schema's `net[n]`, within the number of interfaces PVE registers.
pub(crate) fn spec_for<'a>(properties: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(spec) = properties.get(name) {
        return Some(spec);
    }
    let base = name.trim_end_matches(|c: char| c.is_ascii_digit());
    let digits = &name[base.len()..];
    if digits.is_empty() || (digits.len() > 1 && digits.starts_with('0')) {
        return None;
    }
    let limit = INDEXED_LIMITS.iter().find(|(b, _)| *b == base).map_or(256, |(_, n)| *n);
    let index: u32 = digits.parse().ok()?;
    (index < limit).then(|| properties.get(&format!("{base}[n]"))).flatten()
}

fn is_true(value: &Value) -> bool {
    value.as_u64() == Some(1) || value == &Value::Bool(true)
}

/// PVE's `is_integer`.
fn is_integer(text: &str) -> bool {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// PVE's `is_number`: `[+-]?(\d+\.\d+|\d+\.|\.\d+|\d+)([eE][+-]?\d+)?`.
fn is_number(text: &str) -> bool {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"^[+-]?(\d+\.\d+|\d+\.|\.\d+|\d+)([eE][+-]?\d+)?$").expect("compiles")).is_match(text)
}

/// A `minimum`/`maximum`, which the schema sometimes writes as a string (`"minimum": "0"`):
/// the number and its text for the message.
fn bound(value: &Value) -> Option<(f64, String)> {
    match value {
        Value::Number(n) => Some((n.as_f64()?, n.to_string())),
        Value::String(s) => Some((s.parse().ok()?, s.clone())),
        _ => None,
    }
}

/// A Perl pattern of the schema as an anchored Rust regex: `(?^i:…)` → `(?i:…)`, `\0` → NUL.
fn perl_pattern(perl: &str) -> anyhow::Result<Regex> {
    let mut out = String::with_capacity(perl.len() + 8);
    let mut chars = perl.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('0') => out.push_str("\\x00"),
                Some(next) => {
                    out.push('\\');
                    out.push(next);
                }
                None => bail!("pattern {perl:?} ends in a backslash"),
            },
            // `(?^` resets the flags in Perl; a Rust group starts with none set anyway.
            '(' if chars.peek() == Some(&'?') => {
                out.push_str("(?");
                chars.next();
                if chars.peek() == Some(&'^') {
                    chars.next();
                }
            }
            c => out.push(c),
        }
    }
    Regex::new(&format!("^(?:{out})$")).with_context(|| format!("pattern {perl:?} does not compile"))
}

fn collect_patterns(value: &Value, into: &mut HashMap<String, Regex>) -> anyhow::Result<()> {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner) {
                    ("pattern", Value::String(perl)) if !into.contains_key(perl) => {
                        into.insert(perl.clone(), perl_pattern(perl)?);
                    }
                    _ => collect_patterns(inner, into)?,
                }
            }
        }
        Value::Array(items) => items.iter().try_for_each(|item| collect_patterns(item, into))?,
        _ => {}
    }
    Ok(())
}
