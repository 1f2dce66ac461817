//! The requests rivetctl makes of the Proxmox VE API, typed: one constructor per endpoint
//! used, with the parameter names of the official schema (`targets/tests/data/
//! pve-api-schema.subset.json` is the extract the tests check them against), and the parts
//! of the answers that are read. A [`Request`] is also what `infra preview --output json`
//! lists (`{"method", "path", "params"}`, secrets redacted), so what is shown is what is sent.
//!
//! Why not the `proxmox-api` crate: its types are generated for every endpoint of every
//! release, so a request is a deeply nested builder over an associated client trait, and
//! its bundled HTTP client accepts any certificate. The dozen endpoints used here are short
//! to write down, their parameters stay plain `name=value` pairs (as the API takes them:
//! form-encoded), and the one HTTP client is ours ([`super::client`]), with the TLS trust
//! of [`super::tls`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The HTTP method of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        }
    }

    /// Whether the request changes something (every method but GET).
    pub fn writes(self) -> bool {
        self != Method::Get
    }
}

/// Parameters never shown: the container's root password (rivetctl sets none, so it can
/// only come from a future field) and anything that names a secret.
const SENSITIVE: &[&str] = &["password"];

/// One API request: method, path under `/api2/json`, parameters as the API reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    pub path: String,
    pub params: BTreeMap<String, String>,
}

impl Request {
    fn new(method: Method, path: String) -> Request {
        Request { method, path, params: BTreeMap::new() }
    }

    fn param(mut self, name: &str, value: impl ToString) -> Request {
        self.params.insert(name.to_string(), value.to_string());
        self
    }

    /// `{"method", "path", "params"}` with sensitive parameters as `(sensitive)`.
    pub fn redacted(&self) -> serde_json::Value {
        let params: serde_json::Map<String, serde_json::Value> = self
            .params
            .iter()
            .map(|(name, value)| {
                let shown = if SENSITIVE.contains(&name.as_str()) { "(sensitive)" } else { value.as_str() };
                (name.clone(), serde_json::Value::String(shown.to_string()))
            })
            .collect();
        serde_json::json!({"method": self.method, "path": self.path, "params": params})
    }

    /// `GET /cluster/resources`, for messages.
    pub fn describe(&self) -> String {
        format!("{} {}", self.method.as_str(), self.path)
    }
}

/// `GET /version`.
pub fn version() -> Request {
    Request::new(Method::Get, "/version".into())
}

/// `GET /nodes`.
pub fn nodes() -> Request {
    Request::new(Method::Get, "/nodes".into())
}

/// `GET /cluster/nextid`: the lowest free vmid (`from`: that one, if it is free).
pub fn next_id(from: Option<u32>) -> Request {
    let request = Request::new(Method::Get, "/cluster/nextid".into());
    match from {
        Some(vmid) => request.param("vmid", vmid),
        None => request,
    }
}

/// `GET /cluster/resources?type=vm`: every guest of the cluster, LXC and QEMU.
pub fn guests() -> Request {
    Request::new(Method::Get, "/cluster/resources".into()).param("type", "vm")
}

/// `POST /nodes/{node}/lxc`: creates a container (a task). `params` as rendered.
pub fn create(node: &str, params: &BTreeMap<String, String>) -> Request {
    let mut request = Request::new(Method::Post, format!("/nodes/{node}/lxc"));
    request.params = params.clone();
    request
}

/// `GET /nodes/{node}/lxc/{vmid}/config`.
pub fn config(node: &str, vmid: u32) -> Request {
    Request::new(Method::Get, format!("/nodes/{node}/lxc/{vmid}/config"))
}

/// `PUT /nodes/{node}/lxc/{vmid}/config`: sets `set`, deletes `delete`, only if the config's
/// digest is still `digest` (so a concurrent edit is not overwritten). Synchronous.
pub fn set_config(
    node: &str,
    vmid: u32,
    set: &BTreeMap<String, String>,
    delete: &[String],
    digest: Option<&str>,
) -> Request {
    let mut request = Request::new(Method::Put, format!("/nodes/{node}/lxc/{vmid}/config"));
    request.params = set.clone();
    if !delete.is_empty() {
        request = request.param("delete", delete.join(","));
    }
    match digest {
        Some(digest) => request.param("digest", digest),
        None => request,
    }
}

/// `PUT /nodes/{node}/lxc/{vmid}/resize`: grows `disk` to `gib` GiB (a task).
pub fn resize(node: &str, vmid: u32, disk: &str, gib: u32) -> Request {
    Request::new(Method::Put, format!("/nodes/{node}/lxc/{vmid}/resize"))
        .param("disk", disk)
        .param("size", format!("{gib}G"))
}

/// `GET /nodes/{node}/lxc/{vmid}/status/current`.
pub fn status(node: &str, vmid: u32) -> Request {
    Request::new(Method::Get, format!("/nodes/{node}/lxc/{vmid}/status/current"))
}

/// `POST /nodes/{node}/lxc/{vmid}/status/start` (a task).
pub fn start(node: &str, vmid: u32) -> Request {
    Request::new(Method::Post, format!("/nodes/{node}/lxc/{vmid}/status/start"))
}

/// `POST /nodes/{node}/lxc/{vmid}/status/shutdown`: a clean shutdown within `timeout_s`,
/// then a hard stop (`forceStop`), as a task.
pub fn shutdown(node: &str, vmid: u32, timeout_s: u32) -> Request {
    Request::new(Method::Post, format!("/nodes/{node}/lxc/{vmid}/status/shutdown"))
        .param("timeout", timeout_s)
        .param("forceStop", 1)
}

/// `POST /nodes/{node}/lxc/{vmid}/status/stop` (a task).
pub fn stop(node: &str, vmid: u32) -> Request {
    Request::new(Method::Post, format!("/nodes/{node}/lxc/{vmid}/status/stop"))
}

/// `DELETE /nodes/{node}/lxc/{vmid}`: destroys a stopped container and its disks (a task),
/// and removes it from backup jobs and HA (`purge`).
pub fn destroy(node: &str, vmid: u32) -> Request {
    Request::new(Method::Delete, format!("/nodes/{node}/lxc/{vmid}"))
        .param("purge", 1)
        .param("destroy-unreferenced-disks", 1)
}

/// `GET /nodes/{node}/tasks/{upid}/status`.
pub fn task_status(node: &str, upid: &str) -> Request {
    Request::new(Method::Get, format!("/nodes/{node}/tasks/{}/status", encode_segment(upid)))
}

/// `GET /nodes/{node}/tasks/{upid}/log`: lines `start..start+limit`.
pub fn task_log(node: &str, upid: &str, start: u32, limit: u32) -> Request {
    Request::new(Method::Get, format!("/nodes/{node}/tasks/{}/log", encode_segment(upid)))
        .param("start", start)
        .param("limit", limit)
}

/// A path segment percent-encoded (a UPID holds `:` and `!`, and `@`).
fn encode_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `GET /version`'s answer.
#[derive(Debug, Clone, Deserialize)]
pub struct VersionInfo {
    pub version: String,
    #[serde(default)]
    pub release: String,
}

/// One entry of `GET /nodes`.
#[derive(Debug, Clone, Deserialize)]
pub struct NodeInfo {
    pub node: String,
    #[serde(default)]
    pub status: Option<String>,
}

/// One guest of `GET /cluster/resources?type=vm`.
#[derive(Debug, Clone, Deserialize)]
pub struct Guest {
    pub vmid: u32,
    pub node: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub tags: Option<String>,
}

impl Guest {
    /// Its tags, split as PVE stores them (`;`, also `,` and spaces).
    pub fn tag_list(&self) -> Vec<&str> {
        split_tags(self.tags.as_deref().unwrap_or_default())
    }
}

/// Tags as PVE separates them.
pub fn split_tags(tags: &str) -> Vec<&str> {
    tags.split([';', ',', ' ']).filter(|t| !t.is_empty()).collect()
}

/// `GET …/status/current`'s answer.
#[derive(Debug, Clone, Deserialize)]
pub struct CurrentStatus {
    pub status: String,
    #[serde(default)]
    pub lock: Option<String>,
}

/// `GET …/tasks/{upid}/status`'s answer.
#[derive(Debug, Clone, Deserialize)]
pub struct TaskStatus {
    pub status: String,
    #[serde(default)]
    pub exitstatus: Option<String>,
}

/// One line of `GET …/tasks/{upid}/log`.
#[derive(Debug, Clone, Deserialize)]
pub struct LogLine {
    pub n: u64,
    pub t: String,
}

/// A container's config as the API returns it, every value as text (numbers as written).
pub fn config_text(answer: &serde_json::Value) -> BTreeMap<String, String> {
    let Some(object) = answer.as_object() else { return BTreeMap::new() };
    object
        .iter()
        .map(|(key, value)| {
            let text = match value {
                serde_json::Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            (key.clone(), text)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_name_the_schema_s_paths_and_parameters() {
        assert_eq!(guests().describe(), "GET /cluster/resources");
        assert_eq!(guests().params["type"], "vm");
        let down = shutdown("pve1", 310, 30);
        assert_eq!(down.path, "/nodes/pve1/lxc/310/status/shutdown");
        assert_eq!(down.params["forceStop"], "1");
        let grow = resize("pve1", 310, "rootfs", 12);
        assert_eq!((grow.method, grow.params["size"].as_str()), (Method::Put, "12G"));
        let set =
            set_config("pve2", 320, &BTreeMap::from([("memory".into(), "2048".into())]), &["mp0".into()], Some("ab"));
        assert_eq!(set.params.keys().collect::<Vec<_>>(), ["delete", "digest", "memory"]);
        let upid = "UPID:pve1:0000A1B2:0012C3D4:6754F0A1:vzcreate:310:rivetctl@pve!deploy:";
        assert_eq!(
            task_status("pve1", upid).path,
            "/nodes/pve1/tasks/UPID%3Apve1%3A0000A1B2%3A0012C3D4%3A6754F0A1%3Avzcreate%3A310%3Arivetctl%40pve%21deploy%3A/status"
        );
    }

    #[test]
    fn a_redacted_request_hides_secrets_and_keeps_the_rest() {
        let params = BTreeMap::from([("password".to_string(), "hunter2".to_string()), ("vmid".into(), "310".into())]);
        let shown = create("pve1", &params).redacted();
        assert_eq!(shown["method"], "POST");
        assert_eq!(shown["params"]["password"], "(sensitive)");
        assert_eq!(shown["params"]["vmid"], "310");
        assert!(!shown.to_string().contains("hunter2"));
    }

    #[test]
    fn configs_and_tags_read_as_the_api_writes_them() {
        let config = config_text(&serde_json::json!({"memory": 2048, "hostname": "rivet-pve1", "unprivileged": 1}));
        assert_eq!(config["memory"], "2048");
        assert_eq!(config["hostname"], "rivet-pve1");
        assert_eq!(split_tags("rivetctl;rivet-d-abc, spec-1 "), ["rivetctl", "rivet-d-abc", "spec-1"]);
    }
}
