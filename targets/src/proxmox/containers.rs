//! A deployment's LXC containers through the API: found by their tags, created (and found
//! again by their tags when the create's answer was lost, never created twice), configured,
//! grown, started, stopped and destroyed, each task awaited.
//!
//! Identity lives in the container's tags, so it survives a reordered node or agent list:
//! `rivetctl` (the marker), `rivet-d-<deployment>`, `rivet-c-<container>` (its role in the
//! deployment: `datahub`, `agents-<node>`) and `rivet-s-<spec hash>`. A vmid, once given, is
//! read back from the container that holds those tags (the lowering keeps it,
//! `orchestrator::lower::proxmox::Cluster`): the node list's order or a new `ctid_start`
//! never moves a container.

use std::collections::BTreeMap;

use super::api::{self, Guest};
use super::client::{ApiError, Client, TaskDone};

/// The marker tag of every container rivetctl made.
pub const MARKER: &str = "rivetctl";

/// A tag as PVE accepts it (`[a-z0-9_][a-z0-9_\-+.]*`): lowercase, other characters `-`.
pub fn tag_safe(text: &str) -> String {
    let mut out: String =
        text.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+' | '.') {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
    if out.starts_with(['-', '+', '.']) || out.is_empty() {
        out.insert(0, '_');
    }
    out
}

/// The deployment's tag.
pub fn deployment_tag(deployment: &str) -> String {
    format!("rivet-d-{}", tag_safe(deployment))
}

/// A container's identity tag (`datahub`, `agents-pve1`).
pub fn container_tag(container: &str) -> String {
    format!("rivet-c-{}", tag_safe(container))
}

/// The spec hash tag.
pub fn spec_tag(hash: &str) -> String {
    format!("rivet-s-{}", tag_safe(hash))
}

/// Every tag of one container, `;`-separated and sorted as PVE keeps them.
pub fn tags(deployment: &str, container: &str, hash: &str) -> String {
    let mut all = [MARKER.to_string(), deployment_tag(deployment), container_tag(container), spec_tag(hash)];
    all.sort();
    all.join(";")
}

/// One container of the deployment, as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Its identity (`datahub`, `agents-pve1`), from its `rivet-c-` tag.
    pub container: String,
    pub vmid: u32,
    pub node: String,
    pub running: bool,
    /// The spec hash of its `rivet-s-` tag.
    pub hash: Option<String>,
}

/// The deployment's containers among `guests` (LXC ones carrying its marker and deployment
/// tags), by identity; a second container claiming the same identity is returned apart.
pub fn owned(guests: &[Guest], deployment: &str) -> (BTreeMap<String, Found>, Vec<Found>) {
    let wanted = deployment_tag(deployment);
    let mut found = BTreeMap::new();
    let mut clashes = Vec::new();
    let mut sorted: Vec<&Guest> = guests.iter().filter(|g| g.kind == "lxc").collect();
    sorted.sort_by_key(|g| g.vmid);
    for guest in sorted {
        let tags = guest.tag_list();
        if !tags.contains(&MARKER) || !tags.contains(&wanted.as_str()) {
            continue;
        }
        let Some(container) = tags.iter().find_map(|t| t.strip_prefix("rivet-c-")) else { continue };
        let entry = Found {
            container: container.to_string(),
            vmid: guest.vmid,
            node: guest.node.clone(),
            running: guest.status.as_deref() == Some("running"),
            hash: tags.iter().find_map(|t| t.strip_prefix("rivet-s-")).map(str::to_string),
        };
        if found.contains_key(container) {
            clashes.push(entry);
        } else {
            found.insert(container.to_string(), entry);
        }
    }
    (found, clashes)
}

/// The deployment's containers as the cluster lists them.
pub async fn find(client: &Client, deployment: &str) -> Result<(BTreeMap<String, Found>, Vec<Guest>), ApiError> {
    let guests: Vec<Guest> = client.call(&api::guests()).await?;
    let (found, _) = owned(&guests, deployment);
    Ok((found, guests))
}

/// The line of a container's description that pins one of its SSH host keys.
pub const HOST_KEY_LINE: &str = "rivetctl-hostkey ";

/// The SHA-256 fingerprints of the SSH host keys a create task generated, from its log, as
/// PVE prints them: `Creating SSH host key 'ssh_host_ed25519_key' - this may take some time
/// ...` then `done: SHA256:<base64> root@<hostname>`. They were read over the pinned API, so
/// they are what SSH to the container trusts (never a key seen first on connecting).
pub fn host_keys_in(log: &[String]) -> Vec<String> {
    log.iter()
        .filter_map(|line| line.strip_prefix("done: "))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter(|fingerprint| fingerprint.starts_with("SHA256:") && fingerprint.len() > 7)
        .map(str::to_string)
        .collect()
}

/// The host key fingerprints a container's description pins.
pub fn pinned_host_keys(description: &str) -> Vec<String> {
    description.lines().filter_map(|l| l.strip_prefix(HOST_KEY_LINE)).map(|f| f.trim().to_string()).collect()
}

/// Adds the `fingerprints` to the container's description (a digest-guarded config PUT).
pub async fn pin_host_keys(client: &Client, node: &str, vmid: u32, fingerprints: &[String]) -> Result<(), ApiError> {
    let config = config(client, node, vmid).await?;
    let mut description = config.get("description").cloned().unwrap_or_default();
    for fingerprint in fingerprints {
        if !description.ends_with('\n') && !description.is_empty() {
            description.push('\n');
        }
        description.push_str(&format!("{HOST_KEY_LINE}{fingerprint}\n"));
    }
    let set = BTreeMap::from([("description".to_string(), description)]);
    let _: serde_json::Value =
        client.call(&api::set_config(node, vmid, &set, &[], config.get("digest").map(String::as_str))).await?;
    Ok(())
}

/// How a create ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// The create task ran to its end; the host key fingerprints its log printed.
    Done { task: TaskDone, host_keys: Vec<String> },
    /// The create's answer was lost (or it kept failing transiently), but the container is
    /// there, found by its tags: it is not created a second time.
    FoundAgain { vmid: u32 },
}

/// Creates a container on `node` with `params` (which carry its `tags`), waiting for the
/// task. When the request got no answer or kept failing transiently, the cluster is asked
/// for a container with the same tags before the error is returned: a create that did
/// happen is found, not made twice.
pub async fn create(
    client: &Client,
    deployment: &str,
    container: &str,
    node: &str,
    params: &BTreeMap<String, String>,
) -> Result<Created, ApiError> {
    let what = format!("creating container {container} on {node}");
    match client.run_task(&api::create(node, params), &what).await {
        Ok(task) => {
            let log = client.task_log(node, &task.upid, 1000).await?;
            Ok(Created::Done { host_keys: host_keys_in(&log), task })
        }
        Err(err @ (ApiError::NoAnswer { .. } | ApiError::GaveUp { .. })) => {
            let (found, _) = find(client, deployment).await?;
            match found.get(&tag_safe(container)) {
                Some(found) => {
                    wait_unlocked(client, &found.node, found.vmid).await?;
                    Ok(Created::FoundAgain { vmid: found.vmid })
                }
                None => Err(err),
            }
        }
        Err(err) => Err(err),
    }
}

/// Waits until the container has no `lock` (a create in flight holds `lock: create`), as
/// long as a task may run.
async fn wait_unlocked(client: &Client, node: &str, vmid: u32) -> Result<(), ApiError> {
    let started = std::time::Instant::now();
    loop {
        let status: api::CurrentStatus = client.call(&api::status(node, vmid)).await?;
        if status.lock.is_none() {
            return Ok(());
        }
        if started.elapsed() > client.deadlines().task {
            return Err(ApiError::TaskTimeout {
                what: format!("container {vmid} on {node} still locked ({})", status.lock.unwrap_or_default()),
                upid: String::new(),
                waited: started.elapsed(),
            });
        }
        tokio::time::sleep(client.deadlines().pause).await;
    }
}

/// The container's config, values as text, with its `digest`.
pub async fn config(client: &Client, node: &str, vmid: u32) -> Result<BTreeMap<String, String>, ApiError> {
    Ok(api::config_text(&client.call_value(&api::config(node, vmid)).await?))
}

/// Starts the container unless it runs.
pub async fn ensure_running(client: &Client, node: &str, vmid: u32, name: &str) -> Result<bool, ApiError> {
    let status: api::CurrentStatus = client.call(&api::status(node, vmid)).await?;
    if status.status == "running" {
        return Ok(false);
    }
    client.run_task(&api::start(node, vmid), &format!("starting {name}")).await?;
    Ok(true)
}

/// Shuts the container down (cleanly within `timeout_s`, then hard) unless it is stopped.
pub async fn ensure_stopped(
    client: &Client,
    node: &str,
    vmid: u32,
    name: &str,
    timeout_s: u32,
) -> Result<bool, ApiError> {
    let status: api::CurrentStatus = client.call(&api::status(node, vmid)).await?;
    if status.status == "stopped" {
        return Ok(false);
    }
    client.run_task(&api::shutdown(node, vmid, timeout_s), &format!("shutting {name} down")).await?;
    Ok(true)
}

/// Stops and destroys the container, disks included.
pub async fn destroy(client: &Client, node: &str, vmid: u32, name: &str, timeout_s: u32) -> Result<(), ApiError> {
    ensure_stopped(client, node, vmid, name, timeout_s).await?;
    client.run_task(&api::destroy(node, vmid), &format!("destroying {name}")).await?;
    Ok(())
}

/// The root disk's size in GiB from a `rootfs` value (`local-lvm:vm-310-disk-0,size=8G`).
pub fn rootfs_gib(rootfs: &str) -> Option<u32> {
    let size = rootfs.split(',').find_map(|part| part.strip_prefix("size="))?;
    let (number, unit) = size.split_at(size.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(size.len()));
    let number: f64 = number.parse().ok()?;
    let gib = match unit {
        "T" => number * 1024.0,
        "G" | "" => number,
        "M" => number / 1024.0,
        "K" => number / 1024.0 / 1024.0,
        _ => return None,
    };
    Some(gib.ceil() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest(vmid: u32, node: &str, tags: &str) -> Guest {
        serde_json::from_value(serde_json::json!({
            "vmid": vmid, "node": node, "type": "lxc", "status": "running", "tags": tags
        }))
        .unwrap()
    }

    #[test]
    fn tags_are_what_pve_accepts() {
        assert_eq!(
            tags("Home Lab", "agents-pve1", "1a2b"),
            "rivet-c-agents-pve1;rivet-d-home-lab;rivet-s-1a2b;rivetctl"
        );
        assert_eq!(tag_safe("-x"), "_-x");
    }

    #[test]
    fn containers_are_found_by_their_tags() {
        let guests = vec![
            guest(310, "pve1", &tags("home", "datahub", "aa")),
            guest(320, "pve2", &tags("home", "agents-pve2", "bb")),
            guest(330, "pve2", &tags("other", "agents-pve2", "cc")),
            guest(340, "pve1", "rivet-c-agents-pve1;rivet-d-home"),
        ];
        let (found, clashes) = owned(&guests, "home");
        assert_eq!(found.keys().collect::<Vec<_>>(), ["agents-pve2", "datahub"]);
        assert!(clashes.is_empty());
        assert_eq!(found["datahub"].hash.as_deref(), Some("aa"));
    }

    #[test]
    fn host_keys_come_from_the_create_task_s_log() {
        let log: Vec<String> = [
            "extracting archive '/var/lib/vz/template/cache/debian-12-standard_12.7-1_amd64.tar.zst'",
            "Creating SSH host key 'ssh_host_ed25519_key' - this may take some time ...",
            "done: SHA256:3q2+7wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA root@rivetos-datahub",
            "Creating SSH host key 'ssh_host_rsa_key' - this may take some time ...",
            "done: SHA256:q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80 root@rivetos-datahub",
            "done: nothing",
            "TASK OK",
        ]
        .map(String::from)
        .to_vec();
        let keys = host_keys_in(&log);
        assert_eq!(keys.len(), 2);
        assert!(keys[0].starts_with("SHA256:3q2+") && keys[1].starts_with("SHA256:q83v"));
        let description = format!("Managed by rivetctl\n{HOST_KEY_LINE}{}\n{HOST_KEY_LINE}{}\n", keys[0], keys[1]);
        assert_eq!(pinned_host_keys(&description), keys);
    }

    #[test]
    fn root_disk_sizes_read_in_gib() {
        assert_eq!(rootfs_gib("local-lvm:vm-310-disk-0,size=8G"), Some(8));
        assert_eq!(rootfs_gib("local:310/vm-310-disk-0.raw,size=512M"), Some(1));
        assert_eq!(rootfs_gib("local-lvm:vm-310-disk-0"), None);
    }
}
