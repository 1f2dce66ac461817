//! The order in which PVE answers a request, and the read-only endpoints: faults of the
//! server, authentication, the schema, the node, config locks; then the handler.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use super::http::{Reply, authenticate};
use super::lxc;
use super::schema::{Refused, Schema};
use super::state::{Ct, Shared, State};
use super::tasks;

pub(crate) async fn respond(
    shared: &Arc<Shared>,
    method: &str,
    path: &str,
    params: &BTreeMap<String, String>,
    authorization: Option<&str>,
) -> Reply {
    {
        let mut state = shared.state();
        if state.faults.server_errors > 0 {
            state.faults.server_errors -= 1;
            return Reply::error(503, "service unavailable");
        }
    }
    if let Err(refused) = authenticate(shared, authorization) {
        return refused;
    }
    let route = match Schema::official().check(method, path, params) {
        Ok(route) => route,
        Err(Refused::NotImplemented(message)) => return Reply::error(501, message),
        Err(Refused::Invalid(errors)) => return Reply::Invalid(errors),
    };
    let node = route.path_params.get("node").cloned().unwrap_or_default();
    if route.path_params.contains_key("node") && !shared.nodes.contains(&node) {
        return Reply::error(500, format!("no such cluster node '{node}'"));
    }
    // Validated as an integer of 100..=999999999 by the schema.
    let vmid: Option<u32> = route.path_params.get("vmid").or(params.get("vmid")).and_then(|v| v.parse().ok());
    if method != "GET"
        && let Some(vmid) = vmid
    {
        let mut state = shared.state();
        if state.faults.lock_timeouts > 0 {
            state.faults.lock_timeouts -= 1;
            return Reply::error(500, format!("can't lock file '/run/lock/lxc/pve-config-{vmid}.conf' - got timeout"));
        }
    }
    let vmid = vmid.unwrap_or(0);
    match (method, route.template.as_str()) {
        ("GET", "/version") => Reply::Data(json!({"version": "8.2.4", "release": "8.2", "repoid": "faa83925c9641325"})),
        ("GET", "/nodes") => Reply::Data(nodes(shared)),
        ("GET", "/cluster/nextid") => next_id(&shared.state(), params),
        ("GET", "/cluster/resources") => Reply::Data(resources(shared, params.get("type").map(String::as_str))),
        ("POST", "/nodes/{node}/lxc") => lxc::create(shared, &node, params).await,
        ("GET", "/nodes/{node}/lxc/{vmid}/config") => lxc::get_config(shared, &node, vmid, params),
        ("PUT", "/nodes/{node}/lxc/{vmid}/config") => lxc::put_config(shared, &node, vmid, params),
        ("PUT", "/nodes/{node}/lxc/{vmid}/resize") => lxc::resize(shared, &node, vmid, params),
        ("GET", "/nodes/{node}/lxc/{vmid}/status/current") => status_current(&shared.state(), &node, vmid),
        ("POST", "/nodes/{node}/lxc/{vmid}/status/start") => lxc::lifecycle(shared, &node, vmid, "vzstart", params),
        ("POST", "/nodes/{node}/lxc/{vmid}/status/shutdown") => {
            lxc::lifecycle(shared, &node, vmid, "vzshutdown", params)
        }
        ("POST", "/nodes/{node}/lxc/{vmid}/status/stop") => lxc::lifecycle(shared, &node, vmid, "vzstop", params),
        ("DELETE", "/nodes/{node}/lxc/{vmid}") => lxc::lifecycle(shared, &node, vmid, "vzdestroy", params),
        ("GET", "/nodes/{node}/tasks/{upid}/status") => {
            tasks::status(&shared.state(), &node, &route.path_params["upid"])
        }
        ("GET", "/nodes/{node}/tasks/{upid}/log") => {
            tasks::log(&shared.state(), &node, &route.path_params["upid"], params)
        }
        // In the schema subset but not served: a gap of the fake, not of the client.
        _ => Reply::error(501, format!("Method '{method} {path}' not implemented (by the fake)")),
    }
}

/// A container of this node, or PVE's answer for a config file that is not there (also when
/// the container lives on another node: each node has its own directory in /etc/pve).
pub(crate) fn find<'a>(state: &'a mut State, node: &str, vmid: u32) -> Result<&'a mut Ct, Reply> {
    match state.containers.get_mut(&vmid) {
        Some(ct) if ct.node == node => Ok(ct),
        _ => Err(Reply::error(500, format!("Configuration file 'nodes/{node}/lxc/{vmid}.conf' does not exist"))),
    }
}

fn nodes(shared: &Shared) -> Value {
    let nodes: Vec<Value> = shared
        .nodes
        .iter()
        .map(|node| {
            json!({
                "node": node, "status": "online", "type": "node", "id": format!("node/{node}"),
                "maxcpu": 4, "maxmem": 8u64 << 30, "mem": 1u64 << 30, "cpu": 0.01,
                "maxdisk": 100u64 << 30, "disk": 10u64 << 30, "uptime": 86400, "level": "",
                "ssl_fingerprint": shared.fingerprint,
            })
        })
        .collect();
    Value::Array(nodes)
}

/// The lowest free vmid from 100, as a string (PVE answers `"data": "100"`); with `vmid`,
/// that one if it is free.
fn next_id(state: &State, params: &BTreeMap<String, String>) -> Reply {
    if let Some(vmid) = params.get("vmid") {
        return match vmid.parse::<u32>() {
            Ok(n) if state.containers.contains_key(&n) => Reply::invalid("vmid", format!("VM {n} already exists")),
            _ => Reply::Data(json!(vmid)),
        };
    }
    let free = (100u32..).find(|n| !state.containers.contains_key(n)).unwrap_or(100);
    Reply::Data(json!(free.to_string()))
}

fn resources(shared: &Shared, kind: Option<&str>) -> Value {
    let mut list = Vec::new();
    if kind.is_none_or(|k| k == "vm") {
        for ct in shared.state().containers.values() {
            let mut entry = json!({
                "id": format!("lxc/{}", ct.vmid), "type": "lxc", "vmid": ct.vmid, "node": ct.node,
                "status": if ct.running { "running" } else { "stopped" }, "template": 0,
                "maxdisk": ct.disk_bytes("rootfs").unwrap_or(0), "maxmem": ct.memory_bytes(),
                "maxcpu": ct.config.get("cores").and_then(|c| c.parse::<u64>().ok()).unwrap_or(1),
                "uptime": ct.uptime(), "cpu": 0, "mem": 0, "disk": 0,
            });
            if let Some(name) = ct.config.get("hostname") {
                entry["name"] = json!(name);
            }
            if let Some(tags) = ct.config.get("tags") {
                entry["tags"] = json!(tags);
            }
            if let Some(lock) = ct.config.get("lock") {
                entry["lock"] = json!(lock);
            }
            list.push(entry);
        }
    }
    if kind.is_none_or(|k| k == "node") {
        for node in nodes(shared).as_array().into_iter().flatten() {
            list.push(node.clone());
        }
    }
    Value::Array(list)
}

fn status_current(state: &State, node: &str, vmid: u32) -> Reply {
    let Some(ct) = state.containers.get(&vmid).filter(|ct| ct.node == node) else {
        return Reply::error(500, format!("Configuration file 'nodes/{node}/lxc/{vmid}.conf' does not exist"));
    };
    let swap = ct.config.get("swap").and_then(|s| s.parse::<u64>().ok()).unwrap_or(512) << 20;
    let mut status = json!({
        "status": if ct.running { "running" } else { "stopped" }, "vmid": ct.vmid, "type": "lxc",
        "name": ct.config.get("hostname").cloned().unwrap_or_else(|| format!("CT{vmid}")),
        "uptime": ct.uptime(), "maxmem": ct.memory_bytes(), "maxswap": swap,
        "maxdisk": ct.disk_bytes("rootfs").unwrap_or(0),
        "cpus": ct.config.get("cores").and_then(|c| c.parse::<u64>().ok()).unwrap_or(1),
        "cpu": 0, "mem": 0, "swap": 0, "disk": 0, "netin": 0, "netout": 0, "diskread": 0, "diskwrite": 0,
        "ha": {"managed": 0},
    });
    if let Some(lock) = ct.config.get("lock") {
        status["lock"] = json!(lock);
    }
    if let Some(tags) = ct.config.get("tags") {
        status["tags"] = json!(tags);
    }
    Reply::Data(status)
}
