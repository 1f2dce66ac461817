//! The container endpoints that change something, with the checks PVE makes after the schema
//! (pve-container's `PVE/API2/LXC.pm`, `PVE/API2/LXC/Config.pm`, `PVE/LXC/Config.pm`), in
//! PVE's order and with its messages, and the config stored the way PVE writes it.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use regex::Regex;
use serde_json::{Map, Value, json};

use super::api::find;
use super::formats::{is_volume_id, split_list};
use super::http::Reply;
use super::schema::{Schema, spec_for};
use super::state::{Ct, Shared};
use super::tasks::{self, Work, format_size};

/// Parameters of the create call that PVE takes out before it writes the config.
const NOT_STORED: &[&str] = &[
    "node",
    "vmid",
    "ostemplate",
    "password",
    "ssh-public-keys",
    "storage",
    "start",
    "pool",
    "restore",
    "force",
    "unique",
    "ignore-unpack-errors",
    "bwlimit",
    "ha-managed",
];

const CONFIG: &str = "/nodes/{node}/lxc/{vmid}/config";

pub(crate) async fn create(shared: &Arc<Shared>, node: &str, params: &BTreeMap<String, String>) -> Reply {
    let vmid: u32 = params["vmid"].parse().expect("the schema checked vmid");
    if let Some(existing) = exists(shared, vmid) {
        return existing;
    }
    if let Some(keys) = params.get("ssh-public-keys")
        && !valid_ssh_keys(keys).await
    {
        return Reply::error(500, "SSH public key validation error");
    }
    let ostemplate = params["ostemplate"].clone();
    if let Err(refused) = check_template(&ostemplate) {
        return refused;
    }
    let config = match initial_config(params, vmid) {
        Ok(config) => config,
        Err(refused) => return refused,
    };
    let keys = match tempfile::Builder::new().prefix(&format!("fake-pve-ct{vmid}-")).tempdir() {
        Ok(keys) => keys,
        Err(err) => return Reply::error(500, format!("unable to create CT {vmid} - {err}")),
    };
    if let Some(authorized) = params.get("ssh-public-keys") {
        let text = format!("{}\n", authorized.trim_end_matches('\n'));
        if let Err(err) = std::fs::write(keys.path().join("authorized_keys"), text) {
            return Reply::error(500, format!("unable to create CT {vmid} - {err}"));
        }
    }
    let hostname = config.get("hostname").cloned().unwrap_or_else(|| format!("CT{vmid}"));
    {
        let mut state = shared.state();
        // Checked again under the lock: a concurrent create may have won meanwhile.
        if let Some(ct) = state.containers.get(&vmid) {
            return Reply::error(500, format!("CT {vmid} already exists on node '{}'", ct.node));
        }
        let ct = Ct { vmid, node: node.to_string(), config, running: false, since: None, keys };
        state.containers.insert(vmid, ct);
    }
    let start = params.get("start").is_some_and(|s| s == "1");
    let upid = tasks::spawn(shared, node, "vzcreate", vmid, Work::Create { ostemplate, hostname, start });
    if std::mem::take(&mut shared.state().faults.drop_create) {
        return Reply::Drop;
    }
    Reply::Data(json!(upid))
}

/// The checks of the create handler after the schema that need no cluster state, as text.
pub(crate) fn static_checks(params: &BTreeMap<String, String>) -> Result<(), String> {
    let vmid = params.get("vmid").and_then(|v| v.parse().ok()).unwrap_or(100);
    let template = params.get("ostemplate").map_or(Ok(()), |t| check_template(t));
    template.and_then(|()| initial_config(params, vmid).map(drop)).map_err(|refused| match refused {
        Reply::Error(_, message) => message,
        _ => "refused".to_string(),
    })
}

fn exists(shared: &Shared, vmid: u32) -> Option<Reply> {
    let state = shared.state();
    let ct = state.containers.get(&vmid)?;
    Some(Reply::error(500, format!("CT {vmid} already exists on node '{}'", ct.node)))
}

/// The config PVE writes for a new container, `lock: create` included.
fn initial_config(params: &BTreeMap<String, String>, vmid: u32) -> Result<BTreeMap<String, String>, Reply> {
    let storage = params.get("storage").map_or("local", String::as_str);
    let mut config: BTreeMap<String, String> =
        params.iter().filter(|(k, _)| !NOT_STORED.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect();
    // PVE 8 writes `unprivileged: 1` only when it is set.
    if config.get("unprivileged").is_some_and(|v| v == "0") {
        config.remove("unprivileged");
    }
    config.entry("arch".into()).or_insert_with(|| "amd64".into());
    config.entry("ostype".into()).or_insert_with(|| "debian".into());
    if let Some(tags) = config.get("tags") {
        let tags = unique_tags(tags);
        config.insert("tags".into(), tags);
    }
    let mut mount_points: Vec<(u32, String)> =
        config.keys().filter_map(|k| Some((k.strip_prefix("mp")?.parse().ok()?, k.clone()))).collect();
    mount_points.sort();
    if !mount_points.is_empty() && !config.contains_key("rootfs") {
        return Err(Reply::error(500, "mount points configured, but 'rootfs' not set - aborting"));
    }
    let mut disks = 0;
    let rootfs = config.get("rootfs").cloned().unwrap_or_else(|| format!("{storage}:4"));
    config.insert("rootfs".into(), allocate(&rootfs, storage, vmid, &mut disks)?);
    for (_, key) in mount_points {
        let value = allocate(&config[&key], storage, vmid, &mut disks)?;
        config.insert(key, value);
    }
    config.insert("lock".into(), "create".into());
    Ok(config)
}

/// PVE::GuestHelpers::get_unique_tags: no duplicates, sorted, `;`-separated.
fn unique_tags(tags: &str) -> String {
    let mut unique: Vec<&str> = split_list(tags);
    unique.sort_by_key(|t| t.to_lowercase());
    unique.dedup();
    unique.join(";")
}

/// The `ostemplate` must be a template volume (`local:vztmpl/<file>`), as
/// `PVE::Storage::check_volume_access` makes it.
fn check_template(ostemplate: &str) -> Result<(), Reply> {
    if ostemplate.starts_with('/') {
        return Err(Reply::error(403, "Permission check failed (only root can use arbitrary paths)"));
    }
    if !is_volume_id(ostemplate) {
        return Err(Reply::error(500, format!("unable to parse volume ID '{ostemplate}'")));
    }
    let (_, volname) = ostemplate.split_once(':').unwrap_or_default();
    match volname.strip_prefix("vztmpl/") {
        Some(file) if !file.is_empty() && !file.contains('/') => Ok(()),
        _ => Err(Reply::error(500, format!("unable to parse directory volume name '{volname}'"))),
    }
}

/// A mount point's volume: `<storage>:<GiB>` (or a bare number, on `storage`) allocates a new
/// disk, `vm-<vmid>-disk-<n>` with `size=`; an existing volume ID is kept; anything else is
/// refused as PVE's `parse_volume_id` refuses it. The members are kept.
fn allocate(value: &str, storage: &str, vmid: u32, disks: &mut u32) -> Result<String, Reply> {
    static NEW_DISK: OnceLock<Regex> = OnceLock::new();
    let new_disk = NEW_DISK.get_or_init(|| Regex::new(r"^([^:\s]+):(\d+(?:\.\d+)?)$").expect("compiles"));
    let mut members: Vec<&str> = value.split(',').filter(|m| !m.is_empty()).collect();
    let at = members.iter().position(|m| !m.contains('=') || m.starts_with("volume=")).unwrap_or(0);
    let volume = members.remove(at);
    let volume = volume.strip_prefix("volume=").unwrap_or(volume);
    let volume = if volume.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        format!("{storage}:{volume}")
    } else {
        volume.into()
    };
    if let Some(caps) = new_disk.captures(&volume) {
        let gib: f64 = caps[2].parse().unwrap_or(0.0);
        let name = format!("{}:vm-{vmid}-disk-{disks}", &caps[1]);
        *disks += 1;
        let size = format!("size={}", format_size((gib * (1u64 << 30) as f64) as u64));
        members.retain(|m| !m.starts_with("size="));
        return Ok(print_mount_point(&name, members.into_iter().map(str::to_string).chain([size]).collect()));
    }
    if volume.starts_with('/') {
        return Err(Reply::error(500, "Only root can pass arbitrary filesystem paths."));
    }
    if !is_volume_id(&volume) {
        return Err(Reply::error(500, format!("unable to parse volume ID '{volume}'")));
    }
    Ok(print_mount_point(&volume, members.into_iter().map(str::to_string).collect()))
}

/// The volume first, then `mp=`, then the other members sorted, as PVE prints them.
fn print_mount_point(volume: &str, mut members: Vec<String>) -> String {
    members.sort_by_key(|m| (!m.starts_with("mp="), m.clone()));
    std::iter::once(volume.to_string()).chain(members).collect::<Vec<_>>().join(",")
}

/// PVE::Tools::validate_ssh_public_keys: every line must be a key `ssh-keygen -l` reads.
async fn valid_ssh_keys(keys: &str) -> bool {
    let Ok(dir) = tempfile::tempdir() else { return false };
    for (i, line) in keys.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let file = dir.path().join(format!("key{i}.pub"));
        if std::fs::write(&file, format!("{line}\n")).is_err() {
            return false;
        }
        let checked = tokio::process::Command::new("ssh-keygen")
            .arg("-l")
            .arg("-f")
            .arg(&file)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .status()
            .await;
        if !checked.is_ok_and(|s| s.success()) {
            return false;
        }
    }
    true
}

/// The config with the types of the schema's `returns` (integers, numbers and booleans as
/// JSON numbers, as PVE answers), and its `digest`.
pub(crate) fn get_config(shared: &Shared, node: &str, vmid: u32, params: &BTreeMap<String, String>) -> Reply {
    let mut state = shared.state();
    let ct = match find(&mut state, node, vmid) {
        Ok(ct) => ct,
        Err(refused) => return refused,
    };
    if let Some(snapshot) = params.get("snapshot") {
        return Reply::error(500, format!("snapshot '{snapshot}' does not exist"));
    }
    let mut data = Map::new();
    for (key, value) in &ct.config {
        let typed = match Schema::official().returned_type("GET", CONFIG, key) {
            Some("integer" | "boolean") => value.parse::<i64>().map(Value::from).ok(),
            Some("number") => {
                value.parse::<f64>().ok().and_then(|n| serde_json::Number::from_f64(n).map(Value::Number))
            }
            _ => None,
        };
        data.insert(key.clone(), typed.unwrap_or_else(|| json!(value)));
    }
    data.insert("digest".into(), json!(ct.digest()));
    Reply::Data(Value::Object(data))
}

/// Synchronous, like PVE's: lock, digest, `delete`, then the new values.
pub(crate) fn put_config(shared: &Shared, node: &str, vmid: u32, params: &BTreeMap<String, String>) -> Reply {
    let mut given = params.clone();
    given.remove("node");
    given.remove("vmid");
    let digest = given.remove("digest");
    if given.is_empty() {
        return Reply::error(500, "no options specified");
    }
    let delete: Vec<String> =
        given.remove("delete").map(|d| split_list(&d).into_iter().map(String::from).collect()).unwrap_or_default();
    let revert: Vec<String> =
        given.remove("revert").map(|d| split_list(&d).into_iter().map(String::from).collect()).unwrap_or_default();
    let mut state = shared.state();
    let ct = match writable(&mut state, node, vmid, digest.as_deref()) {
        Ok(ct) => ct,
        Err(refused) => return refused,
    };
    let properties = Schema::official().entry("PUT", CONFIG).and_then(|e| e["parameters"]["properties"].as_object());
    let exists = |opt: &str| properties.is_some_and(|p| spec_for(p, opt).is_some());
    for opt in &revert {
        if !exists(opt) {
            return Reply::invalid("revert", format!("unknown option '{opt}'"));
        }
        if given.contains_key(opt) {
            return Reply::invalid("revert", format!("you can't use '-{opt}' and '-revert {opt}' at the same time"));
        }
    }
    let mut config = ct.config.clone();
    for opt in &delete {
        if !exists(opt) {
            return Reply::invalid("delete", format!("unknown option '{opt}'"));
        }
        if given.contains_key(opt) {
            return Reply::invalid("delete", format!("you can't use '-{opt}' and -delete {opt}' at the same time"));
        }
        if revert.contains(opt) {
            return Reply::invalid(
                "delete",
                format!("you can't use '-delete {opt}' and '-revert {opt}' at the same time"),
            );
        }
        if !config.contains_key(opt) {
            continue; // PVE warns "cannot delete '<opt>' - not set in current configuration!"
        }
        match opt.as_str() {
            "memory" | "rootfs" | "ostype" => {
                return Reply::error(500, format!("unable to delete required option '{opt}'"));
            }
            "unprivileged" => return Reply::error(500, format!("unable to delete read-only option: '{opt}'")),
            _ => config.remove(opt),
        };
    }
    let mut disks = (0..).find(|n| !config.values().any(|v| v.contains(&format!("vm-{vmid}-disk-{n}")))).unwrap_or(0);
    for (opt, value) in given {
        let value = match opt.as_str() {
            "unprivileged" => return Reply::error(500, format!("unable to modify read-only option: '{opt}'")),
            "rootfs" => match same_volume(config.get("rootfs"), &value) {
                true => value,
                false => {
                    return Reply::error(
                        500,
                        "unable to modify read-only option: 'rootfs' (volume or size; use resize)",
                    );
                }
            },
            "tags" => unique_tags(&value),
            _ if opt.starts_with("mp") && opt[2..].parse::<u32>().is_ok() => {
                match allocate(&value, "local", vmid, &mut disks) {
                    Ok(value) => value,
                    Err(refused) => return refused,
                }
            }
            _ => value,
        };
        config.insert(opt, value);
    }
    ct.config = config;
    Reply::Data(Value::Null)
}

/// Whether a new `rootfs` value names the same volume with the same size.
fn same_volume(current: Option<&String>, new: &str) -> bool {
    let parts = |v: &str| -> (String, Option<String>) {
        let members: Vec<&str> = v.split(',').collect();
        let volume = members.iter().find(|m| !m.contains('=') || m.starts_with("volume=")).copied().unwrap_or("");
        let size = members.iter().find_map(|m| m.strip_prefix("size=")).map(str::to_string);
        (volume.strip_prefix("volume=").unwrap_or(volume).to_string(), size)
    };
    let Some(current) = current else { return false };
    let ((old_volume, old_size), (new_volume, new_size)) = (parts(current), parts(new));
    old_volume == new_volume && new_size.is_none_or(|s| Some(s) == old_size)
}

/// The container a config write may change: it exists on `node`, holds no lock, and its
/// config is still at `digest` when one is given (PVE's answers otherwise).
fn writable<'a>(
    state: &'a mut super::state::State,
    node: &str,
    vmid: u32,
    digest: Option<&str>,
) -> Result<&'a mut Ct, Reply> {
    let ct = find(state, node, vmid)?;
    if let Some(lock) = ct.config.get("lock") {
        return Err(Reply::error(500, format!("CT is locked ({lock})")));
    }
    if digest.is_some_and(|d| d != ct.digest()) {
        return Err(Reply::error(500, "detected modified configuration - file changed by other user? Try again."));
    }
    Ok(ct)
}

pub(crate) fn resize(shared: &Arc<Shared>, node: &str, vmid: u32, params: &BTreeMap<String, String>) -> Reply {
    let (disk, size) = (params["disk"].clone(), params["size"].clone());
    {
        let mut state = shared.state();
        let ct = match writable(&mut state, node, vmid, params.get("digest").map(String::as_str)) {
            Ok(ct) => ct,
            Err(refused) => return refused,
        };
        if !ct.config.contains_key(&disk) {
            return Reply::error(500, format!("disk '{disk}' does not exist"));
        }
    }
    Reply::Data(json!(tasks::spawn(shared, node, "resize", vmid, Work::Resize { disk, size })))
}

/// Start, shutdown, stop, destroy: checks now, the work in a task.
pub(crate) fn lifecycle(
    shared: &Arc<Shared>,
    node: &str,
    vmid: u32,
    kind: &str,
    params: &BTreeMap<String, String>,
) -> Reply {
    {
        let mut state = shared.state();
        let ct = match find(&mut state, node, vmid) {
            Ok(ct) => ct,
            Err(refused) => return refused,
        };
        let skiplock = params.get("skiplock").is_some_and(|s| s == "1") && matches!(kind, "vzstart" | "vzstop");
        if let Some(lock) = ct.config.get("lock")
            && !skiplock
        {
            return Reply::error(500, format!("CT is locked ({lock})"));
        }
        if kind == "vzdestroy" && ct.config.get("protection").is_some_and(|p| p == "1") {
            return Reply::error(500, format!("can't remove CT {vmid} - protection mode enabled"));
        }
    }
    let work = match kind {
        "vzstart" => Work::Start,
        "vzdestroy" => Work::Destroy { force: params.get("force").is_some_and(|f| f == "1") },
        _ => Work::Stop,
    };
    Reply::Data(json!(tasks::spawn(shared, node, kind, vmid, work)))
}
