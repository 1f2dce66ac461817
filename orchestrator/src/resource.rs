//! Managed objects as the planner sees them: a kind, a name, flat fields, and what to apply.
//!
//! Every target lowers its desired state into [`Resource`]s. Their fields are flat
//! `path → text` pairs (`env.LOG_LEVEL`, `spec.replicas`), which makes per-field diffs,
//! spec hashes and the record stored on the object itself (a label or annotation) the same
//! thing for every target. Secret values never enter fields: they appear as a keyed digest,
//! so a changed secret is a change, and nothing printable reveals it.
//!
//! Names and texts are shared strings (`Arc<str>`): a thousand agents carry the same field
//! names and mostly the same values, and hold them once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::Value;

use crate::digest::{canonical_digest, sha256_hex};

/// One field's value as text, or the digest of a secret.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FieldValue {
    /// The text; for a sensitive field, `sensitive:<digest>`.
    pub text: Arc<str>,
    pub sensitive: bool,
}

impl FieldValue {
    pub fn plain(text: impl Into<Arc<str>>) -> Self {
        FieldValue { text: text.into(), sensitive: false }
    }

    /// A secret: stored as a digest keyed by the deployment and the field, so equal secrets
    /// in two deployments do not give equal digests.
    pub fn secret(deployment: &str, field: &str, value: &str) -> Self {
        let digest = sha256_hex(format!("rivetctl-secret-v1\0{deployment}\0{field}\0{value}").as_bytes());
        FieldValue { text: format!("sensitive:{}", &digest[..32]).into(), sensitive: true }
    }

    /// A secret digested with a key only the deployment's readers of Secrets hold
    /// (HMAC-SHA256; Kubernetes keeps the key in a Secret): whoever may read the objects but
    /// not the key cannot test guesses of the value against the digest.
    pub fn keyed_secret(key: &[u8], field: &str, value: &str) -> Self {
        use hmac::{Mac, SimpleHmac};
        let mut mac = SimpleHmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
        mac.update(format!("rivetctl-secret-v2\0{field}\0{value}").as_bytes());
        let digest = hex::encode(mac.finalize().into_bytes());
        FieldValue { text: format!("sensitive:{}", &digest[..32]).into(), sensitive: true }
    }

    /// How the value may be printed.
    pub fn display(&self) -> String {
        if self.sensitive { "(sensitive)".to_string() } else { format!("{:?}", self.text) }
    }
}

/// A flat field map (field names shared between objects, see the module doc).
pub type Fields = BTreeMap<Arc<str>, FieldValue>;

/// The state an object should be in, besides its spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunState {
    /// A long-running service: up (and healthy, when it has a health check).
    Running,
    /// A one-shot job: has run to completion with exit code 0.
    Completed,
}

/// The state an object was observed in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ObservedState {
    /// Present; the target has no run state for it (networks, volumes, manifests).
    Present,
    Running,
    /// Stopped; `Some(code)` when it exited with that code.
    Stopped(Option<i64>),
    /// Created but never started, or paused, or restarting.
    Other(String),
}

impl ObservedState {
    /// Whether this satisfies the desired run state.
    pub fn satisfies(&self, desired: Option<RunState>) -> bool {
        match desired {
            None => true,
            Some(RunState::Running) => matches!(self, ObservedState::Running),
            Some(RunState::Completed) => matches!(self, ObservedState::Stopped(Some(0)) | ObservedState::Running),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            ObservedState::Present => "present".into(),
            ObservedState::Running => "running".into(),
            ObservedState::Stopped(Some(code)) => format!("exited ({code})"),
            ObservedState::Stopped(None) => "stopped".into(),
            ObservedState::Other(what) => what.clone(),
        }
    }
}

/// The address of an object: which node (engine, cluster, Proxmox node), what kind, which
/// name. Two objects with the same key are the same object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceKey {
    pub node: String,
    pub kind: String,
    pub name: String,
}

impl std::fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind, self.name)
    }
}

/// What part of the fleet an object belongs to (for ordering and grouping).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Component {
    /// Networks, namespaces, policies: created first, removed last.
    Foundation,
    /// Volumes and claims: data.
    Storage,
    Datahub,
    Migrate,
    /// A machine that runs agents (a Proxmox VE container hosting a node's agents): after
    /// the datahub, removed with the agents. Not an agent itself, so never rolled out.
    Host,
    /// The datahub's database as a service inside its host (Proxmox VE: PostgreSQL in the
    /// datahub's container): after the host, removed before it. Its data is the host's.
    Database,
    /// One agent, by id.
    Agent(String),
}

/// A desired object.
#[derive(Debug, Clone)]
pub struct Resource<P> {
    pub key: ResourceKey,
    pub component: Component,
    /// Holds data that replacing it would lose.
    pub stateful: bool,
    pub fields: Fields,
    /// Fields whose change forces a replacement (destroy, then create).
    pub replace_on: BTreeSet<String>,
    pub run_state: Option<RunState>,
    /// How long stopping it waits between SIGTERM and SIGKILL, when the object runs and
    /// says (a container's stop grace); the plan copies it into its steps so that no target
    /// chooses one.
    pub stop_grace_ms: Option<u64>,
    /// What the target applies (typed, complete; may hold secrets: never printed).
    pub payload: P,
}

impl<P> Resource<P> {
    /// The hash recorded on the object: the digest of its fields.
    pub fn spec_hash(&self) -> String {
        spec_hash(&self.fields)
    }

    /// Whether a changed field forces a replacement (exact name, or below it: `r.x`, `r[0]`).
    pub fn forces_replacement(&self, field: &str) -> bool {
        self.replace_on.iter().any(|r| is_under(field, r))
    }
}

/// Whether `field` is `root` or below it (`root.x`, `root[0]`).
pub fn is_under(field: &str, root: &str) -> bool {
    field.strip_prefix(root).is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
}

impl ObservedResource {
    /// Whether the target refuses to change `field` in place ([`ObservedResource::immutable`]).
    pub fn refuses_change(&self, field: &str) -> bool {
        self.immutable.iter().any(|root| is_under(field, root))
    }
}

/// The digest of a field map, as recorded on objects.
pub fn spec_hash(fields: &Fields) -> String {
    let value: serde_json::Map<String, Value> =
        fields.iter().map(|(k, v)| (k.to_string(), Value::String(v.text.to_string()))).collect();
    canonical_digest(&Value::Object(value))[..32].to_string()
}

/// The record stored on an object so that the next run can diff against it: fields as a
/// JSON object of strings (secrets as digests only).
pub fn encode_record(fields: &Fields) -> String {
    let sensitive: Vec<&str> = fields.iter().filter(|(_, v)| v.sensitive).map(|(k, _)| &**k).collect();
    let values: serde_json::Map<String, Value> =
        fields.iter().map(|(k, v)| (k.to_string(), Value::String(v.text.to_string()))).collect();
    serde_json::json!({ "v": 1, "fields": values, "sensitive": sensitive }).to_string()
}

/// Reads a record written by [`encode_record`]; `None` when it is missing or unreadable.
pub fn decode_record(text: &str) -> Option<Fields> {
    let value: Value = serde_json::from_str(text).ok()?;
    let sensitive: BTreeSet<&str> = value.get("sensitive")?.as_array()?.iter().filter_map(Value::as_str).collect();
    let fields = value.get("fields")?.as_object()?;
    Some(
        fields
            .iter()
            .filter_map(|(k, v)| {
                Some((
                    k.as_str().into(),
                    FieldValue { text: v.as_str()?.into(), sensitive: sensitive.contains(k.as_str()) },
                ))
            })
            .collect(),
    )
}

/// An object found on the target that this deployment owns.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedResource {
    pub key: ResourceKey,
    pub component: Component,
    /// The fields recorded when it was applied; `None` when the record is missing.
    pub fields: Option<Fields>,
    /// The recorded spec hash.
    pub spec_hash: Option<String>,
    pub state: ObservedState,
    /// The target's id for it (container id, uid, vmid).
    pub id: String,
    /// Holds data.
    pub stateful: bool,
    /// Fields the target said cannot change in place (a Kubernetes server's "field is
    /// immutable" on a dry run): a change under one of them forces a replacement, as a
    /// desired resource's `replace_on` does.
    pub immutable: Vec<String>,
}

/// Flattens JSON into `a.b[0].c → text` fields (Kubernetes objects, LXC parameters); a
/// field `secret` says is one becomes [`FieldValue::secret`] keyed by `deployment`.
pub fn flatten_json(value: &Value, prefix: &str, out: &mut Fields, secret: &dyn Fn(&str) -> bool, deployment: &str) {
    let digest = |field: &str, text: &str| FieldValue::secret(deployment, field, text);
    flatten_json_with(value, prefix, out, secret, &digest);
}

/// [`flatten_json`] with the digest of secret fields made by `digest(field, value)`.
pub fn flatten_json_with(
    value: &Value,
    prefix: &str,
    out: &mut Fields,
    secret: &dyn Fn(&str) -> bool,
    digest: &dyn Fn(&str, &str) -> FieldValue,
) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                flatten_json_with(child, &path, out, secret, digest);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                flatten_json_with(child, &format!("{prefix}[{i}]"), out, secret, digest);
            }
        }
        Value::String(text) => {
            let field = if secret(prefix) { digest(prefix, text) } else { FieldValue::plain(text.as_str()) };
            out.insert(prefix.into(), field);
        }
        Value::Null => {}
        other => {
            out.insert(prefix.into(), FieldValue::plain(other.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let mut fields = Fields::new();
        fields.insert("image".into(), FieldValue::plain("a:1"));
        fields.insert("env.PASSWORD".into(), FieldValue::secret("d", "env.PASSWORD", "hunter2"));
        let decoded = decode_record(&encode_record(&fields)).unwrap();
        assert_eq!(decoded, fields);
        assert!(!encode_record(&fields).contains("hunter2"));
    }

    #[test]
    fn secrets_are_keyed_by_deployment() {
        let a = FieldValue::secret("one", "env.X", "s");
        let b = FieldValue::secret("two", "env.X", "s");
        assert_ne!(a, b);
        assert_eq!(a.display(), "(sensitive)");
    }

    #[test]
    fn keyed_secrets_depend_on_the_key() {
        let a = FieldValue::keyed_secret(b"key one", "data.X", "s");
        assert_eq!(a, FieldValue::keyed_secret(b"key one", "data.X", "s"));
        assert_ne!(a, FieldValue::keyed_secret(b"key two", "data.X", "s"));
        assert_ne!(a, FieldValue::keyed_secret(b"key one", "data.X", "t"));
        assert!(a.sensitive && a.text.starts_with("sensitive:"));
    }
}
