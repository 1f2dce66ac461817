//! PVE's asynchronous tasks ("workers"): a UPID at once, then a task that runs for the
//! configured time, writes a log and ends with an exit status, polled through
//! `/nodes/{node}/tasks/{upid}/status` and `/log`. The effects (a container unlocked, started,
//! stopped, gone) become visible when the task stops, as a client polling PVE sees them.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::formats::parse_size;
use super::http::Reply;
use super::state::{Faults, Shared, State, Task, unix_now};

/// What a task does.
pub(crate) enum Work {
    Create {
        ostemplate: String,
        hostname: String,
        start: bool,
    },
    Start,
    Stop,
    /// `force`: a running container is stopped first.
    Destroy {
        force: bool,
    },
    Resize {
        disk: String,
        size: String,
    },
}

/// Registers the task and starts it; the UPID is what the API answers.
pub(crate) fn spawn(shared: &Arc<Shared>, node: &str, kind: &str, vmid: u32, work: Work) -> String {
    let (upid, fail, warn) = {
        let mut state = shared.state();
        state.tasks_started += 1;
        let pid = 0x0000_A000 + state.tasks_started * 0x17;
        let pstart = 0x0012_C000 + state.tasks_started * 0x101;
        let starttime = unix_now();
        let user = shared.token_id.clone();
        let upid = format!("UPID:{node}:{pid:08X}:{pstart:08X}:{starttime:08X}:{kind}:{vmid}:{user}:");
        state.tasks.push(Task {
            upid: upid.clone(),
            node: node.to_string(),
            kind: kind.to_string(),
            id: vmid.to_string(),
            user,
            pid,
            pstart,
            starttime,
            log: Vec::new(),
            exitstatus: None,
        });
        let fail = Faults::take(&mut state.faults.fail, kind);
        let warn = Faults::take(&mut state.faults.warn, kind);
        (upid, fail, warn)
    };
    let (task_shared, task_upid) = (Arc::clone(shared), upid.clone());
    shared.spawn(async move {
        let deadline = Instant::now() + task_shared.task_duration;
        let outcome = run(&task_shared, &task_upid, vmid, work, deadline, fail).await;
        finish(&task_shared, &task_upid, outcome.map(|()| warn));
    });
    upid
}

async fn run(
    shared: &Arc<Shared>,
    upid: &str,
    vmid: u32,
    work: Work,
    deadline: Instant,
    fail: Option<String>,
) -> Result<(), String> {
    let log = |line: String| append(shared, upid, line);
    if let Work::Create { ostemplate, hostname, .. } = &work {
        log(format!("extracting archive '{ostemplate}'"));
        log("Total bytes read: 524113920 (500MiB, 166MiB/s)".into());
        log("Detected container architecture: amd64".into());
        let dir = shared.state().containers.get(&vmid).map(|ct| ct.keys.path().to_path_buf());
        if fail.is_none()
            && let Some(dir) = dir
        {
            for kind in ["ed25519", "rsa"] {
                log(format!("Creating SSH host key 'ssh_host_{kind}_key' - this may take some time ..."));
                match host_key(&dir, kind, hostname).await {
                    Ok(fingerprint) => log(format!("done: {fingerprint} root@{hostname}")),
                    Err(err) => fail_create(shared, vmid, format!("{err:#}"))?,
                }
            }
        }
    }
    tokio::time::sleep_until(deadline).await;
    if let Some(message) = fail {
        if matches!(work, Work::Create { .. }) {
            fail_create(shared, vmid, message.clone())?;
        }
        return Err(message);
    }
    let runtime = shared.runtime.clone();
    match work {
        Work::Create { start, .. } => {
            let snapshot = {
                let mut state = shared.state();
                let ct = state.containers.get_mut(&vmid).ok_or(format!("CT {vmid} vanished"))?;
                ct.config.remove("lock");
                ct.snapshot()
            };
            if start {
                if let Some(runtime) = runtime {
                    runtime.start(&snapshot).await.map_err(|e| format!("{e:#}"))?;
                }
                set_running(shared, vmid, true);
            }
        }
        Work::Start => {
            let snapshot = with_ct(shared, vmid, |ct| {
                if ct.running { Err(format!("CT {vmid} already running")) } else { Ok(ct.snapshot()) }
            })?;
            if let Some(runtime) = runtime {
                runtime.start(&snapshot).await.map_err(|e| format!("{e:#}"))?;
            }
            set_running(shared, vmid, true);
        }
        Work::Stop => {
            with_ct(shared, vmid, |ct| if ct.running { Ok(()) } else { Err(format!("CT {vmid} not running")) })?;
            if let Some(runtime) = runtime {
                runtime.stop(vmid).await.map_err(|e| format!("{e:#}"))?;
            }
            set_running(shared, vmid, false);
        }
        Work::Destroy { force } => {
            let running = with_ct(shared, vmid, |ct| {
                if ct.running && !force {
                    Err(format!("CT {vmid} is running - destroy failed"))
                } else {
                    Ok(ct.running)
                }
            })?;
            if let Some(runtime) = runtime {
                if running {
                    runtime.stop(vmid).await.map_err(|e| format!("{e:#}"))?;
                }
                runtime.destroy(vmid).await.map_err(|e| format!("{e:#}"))?;
            }
            let volume = shared.state().containers.remove(&vmid).and_then(|ct| ct.config.get("rootfs").cloned());
            if let Some(volume) = volume.as_deref().and_then(|v| v.split(',').next()) {
                log(format!("  Logical volume \"{}\" successfully removed.", volume.rsplit(':').next().unwrap_or("")));
            }
        }
        Work::Resize { disk, size } => {
            let line = with_ct(shared, vmid, |ct| {
                let current = ct.disk_bytes(&disk).ok_or(format!("unable to parse size of '{disk}'"))?;
                let (grow, amount) = match size.strip_prefix('+') {
                    Some(amount) => (true, amount),
                    None => (false, size.as_str()),
                };
                let amount = parse_size(amount).ok_or("invalid size string")?;
                let new = if grow { current + amount } else { amount };
                if new < current {
                    return Err("unable to shrink disk size".into());
                }
                if new == current {
                    return Err("disk is already at specified size".into());
                }
                let value = ct.config[&disk].clone();
                let members: Vec<String> = value
                    .split(',')
                    .filter(|m| !m.starts_with("size="))
                    .map(str::to_string)
                    .chain([format!("size={}", format_size(new))])
                    .collect();
                ct.config.insert(disk.clone(), members.join(","));
                Ok(format!("  Size of logical volume changed from {} to {}.", format_size(current), format_size(new)))
            })?;
            log(line);
        }
    }
    Ok(())
}

/// A failed create leaves nothing behind: PVE removes the config it had written (the lock).
fn fail_create(shared: &Shared, vmid: u32, message: String) -> Result<(), String> {
    shared.state().containers.remove(&vmid);
    Err(message)
}

fn with_ct<T>(
    shared: &Shared,
    vmid: u32,
    f: impl FnOnce(&mut super::state::Ct) -> Result<T, String>,
) -> Result<T, String> {
    let mut state = shared.state();
    let ct = state.containers.get_mut(&vmid).ok_or(format!("CT {vmid} does not exist"))?;
    f(ct)
}

fn set_running(shared: &Shared, vmid: u32, running: bool) {
    if let Some(ct) = shared.state().containers.get_mut(&vmid) {
        ct.set_running(running);
    }
}

fn append(shared: &Shared, upid: &str, line: String) {
    if let Some(task) = shared.state().tasks.iter_mut().find(|t| t.upid == upid) {
        task.log.push(line);
    }
}

/// The last log line and the exit status, as PVE's worker writes them.
fn finish(shared: &Shared, upid: &str, outcome: Result<Option<String>, String>) {
    let mut state = shared.state();
    let Some(task) = state.tasks.iter_mut().find(|t| t.upid == upid) else { return };
    let status = match outcome {
        Ok(None) => {
            task.log.push("TASK OK".into());
            "OK".to_string()
        }
        Ok(Some(warning)) => {
            task.log.push(format!("WARN: {warning}"));
            task.log.push("TASK WARNINGS: 1".into());
            "WARNINGS: 1".to_string()
        }
        Err(message) => {
            let message = message.trim_end().to_string();
            task.log.push(format!("TASK ERROR: {message}"));
            message
        }
    };
    task.exitstatus = Some(status);
}

/// `ssh-keygen` as PVE's container setup runs it, and the fingerprint `ssh-keygen -lf` prints
/// (what the container's sshd will present).
async fn host_key(dir: &Path, kind: &str, hostname: &str) -> anyhow::Result<String> {
    let key = dir.join(format!("ssh_host_{kind}_key"));
    let comment = format!("root@{hostname}");
    let status = tokio::process::Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", "", "-C", &comment, "-f"])
        .arg(&key)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        // Dropping the server aborts the task; the child must not outlive it.
        .kill_on_drop(true)
        .output()
        .await
        .context("running ssh-keygen")?;
    if !status.status.success() {
        bail!("ssh-keygen -t {kind} failed: {}", String::from_utf8_lossy(&status.stderr).trim());
    }
    let output = tokio::process::Command::new("ssh-keygen")
        .arg("-lf")
        .arg(key.with_extension("pub"))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .context("running ssh-keygen -lf")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let fingerprint = text.split_whitespace().nth(1).context("ssh-keygen -lf printed no fingerprint")?;
    Ok(fingerprint.to_string())
}

/// PVE::JSONSchema::format_size: the largest unit that divides the size.
pub(crate) fn format_size(bytes: u64) -> String {
    for (unit, shift) in [("T", 40), ("G", 30), ("M", 20), ("K", 10)] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

fn parse_upid(upid: &str) -> bool {
    let fields: Vec<&str> = upid.split(':').collect();
    fields.len() == 9 && fields[0] == "UPID" && fields[8].is_empty()
}

fn task<'a>(state: &'a State, node: &str, upid: &str) -> Result<&'a Task, Reply> {
    if !parse_upid(upid) {
        return Err(Reply::invalid("upid", format!("unable to parse worker upid '{upid}'")));
    }
    state.tasks.iter().find(|t| t.upid == upid && t.node == node).ok_or_else(|| Reply::error(500, "no such task"))
}

pub(crate) fn status(state: &State, node: &str, upid: &str) -> Reply {
    let task = match task(state, node, upid) {
        Ok(task) => task,
        Err(reply) => return reply,
    };
    let mut status = json!({
        "status": if task.exitstatus.is_some() { "stopped" } else { "running" },
        "upid": task.upid, "node": task.node, "type": task.kind, "id": task.id, "user": task.user,
        "starttime": task.starttime, "pid": task.pid, "pstart": task.pstart,
    });
    if let Some(exitstatus) = &task.exitstatus {
        status["exitstatus"] = json!(exitstatus);
    }
    Reply::Data(status)
}

/// Lines `start+1 ..= start+limit` (limit 0 means PVE's default, 50).
pub(crate) fn log(state: &State, node: &str, upid: &str, params: &BTreeMap<String, String>) -> Reply {
    let task = match task(state, node, upid) {
        Ok(task) => task,
        Err(reply) => return reply,
    };
    let start: usize = params.get("start").and_then(|s| s.parse().ok()).unwrap_or(0);
    let limit: usize = params.get("limit").and_then(|s| s.parse().ok()).filter(|&l| l > 0).unwrap_or(50);
    let lines: Vec<Value> =
        task.log.iter().enumerate().skip(start).take(limit).map(|(i, t)| json!({"n": i + 1, "t": t})).collect();
    Reply::Data(Value::Array(lines))
}
