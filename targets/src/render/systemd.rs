//! systemd units for nodes that run RivetOS as a process (Proxmox LXC containers and
//! `manual` hosts): `systemd/<node>/rivetos.service` on every node with agents, and
//! `systemd/<node>/rivetos-migrate.service` (a oneshot) on the datahub's node.
//!
//! Upstream's unit runs the source in `/opt/rivetos` as `User=rivet` with
//! `EnvironmentFile=.env` and `ProtectSystem=strict`. These units keep that and harden it
//! (no new privileges, no capabilities, private /tmp, no /home, kernel and cgroup
//! protection, a system-call filter). Where files live, so every path is readable under
//! `ProtectSystem=strict` + `ProtectHome=yes`:
//!
//! - source `/opt/rivetos` (read-only), config `/etc/rivetos/config.yaml` (read-only, named
//!   by `RIVETOS_CONFIG`: upstream's `~/.rivetos/config.yaml` would be hidden by
//!   `ProtectHome`), and `.env` at `/etc/rivetos/rivetos.env`, read by systemd itself before
//!   it drops privileges, so it can be `0600 root:root`;
//! - the writable state in `/var/lib/rivetos` (`StateDirectory=`, also `HOME`), and the
//!   shared directory (`ReadWritePaths=`, when shared storage is on).
//!
//! No secret is ever written into a unit: they come from the environment file only.
//! Pure: no I/O; output is deterministic.

use std::collections::BTreeMap;

use orchestrator::config::Target;
use orchestrator::fleet::{Env, Fleet};
use serde_json::{Value, json};

use super::{Artifact, RenderError};

/// The template of both units.
pub const TEMPLATE: &str = "rivetos.service.j2";
/// The agents' unit.
pub const UNIT: &str = "rivetos.service";
/// The migrations' oneshot unit.
pub const MIGRATE_UNIT: &str = "rivetos-migrate.service";
/// The account the runtime runs as (upstream's).
pub const USER: &str = "rivet";
/// The source checkout (upstream's).
pub const SOURCE_DIR: &str = "/opt/rivetos";
/// The runtime's entry point in the source tree: `rivetos start [--role migrate]`.
pub const EXEC: &str = "/opt/rivetos/bin/rivetos";
/// The `.env` of the node (secrets), installed `0600 root:root`.
pub const ENV_FILE: &str = "/etc/rivetos/rivetos.env";
/// The config file.
pub const CONFIG_FILE: &str = "/etc/rivetos/config.yaml";
/// The writable state directory, `/var/lib/<STATE_DIR>`; also `HOME`.
pub const STATE_DIR: &str = "rivetos";

/// Variables the unit sets itself rather than taking them from the fleet's container env.
const OWN_VARIABLES: &[&str] = &[
    "HOME",
    "RIVETOS_AGENT_ID",
    "RIVETOS_AGENTS",
    "RIVETOS_CONFIG",
    "RIVETOS_HEALTH_PORT",
    "RIVETOS_NODE_NAME",
    "RIVETOS_ROLE",
];

/// `KEY=value` quoted for `Environment=`: `\`, `"` and newlines escaped, `%` doubled (it
/// starts a specifier).
pub fn quote_environment(key: &str, value: &str) -> String {
    let mut quoted = String::from("\"");
    for c in format!("{key}={value}").chars() {
        match c {
            '\\' => quoted.push_str("\\\\"),
            '"' => quoted.push_str("\\\""),
            '\n' => quoted.push_str("\\n"),
            '%' => quoted.push_str("%%"),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// The non-sensitive variables every given environment agrees on (one process serves all
/// of a node's agents, so a value one agent alone has cannot be set).
fn common_plain(envs: &[&Env]) -> BTreeMap<String, String> {
    let Some((first, rest)) = envs.split_first() else {
        return BTreeMap::new();
    };
    first
        .iter()
        .filter(|(key, value)| !value.sensitive && !OWN_VARIABLES.contains(&&***key))
        .filter(|(key, value)| rest.iter().all(|env| env.get(*key) == Some(*value)))
        .map(|(key, value)| (key.to_string(), value.value.to_string()))
        .collect()
}

/// Text for a unit setting: `%` doubled, control characters as spaces.
fn unit_text(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect::<String>().replace('%', "%%")
}

fn seconds(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

fn environment(own: &[(&str, String)], common: BTreeMap<String, String>) -> Vec<String> {
    let mut all: BTreeMap<String, String> = common;
    for (key, value) in own {
        all.insert(key.to_string(), value.clone());
    }
    all.iter().map(|(k, v)| quote_environment(k, v)).collect()
}

fn unit_context(fleet: &Fleet, node: &str, migrate: bool, env: Vec<String>, agents: &[String]) -> Value {
    let role = if migrate { "migrate" } else { "agent" };
    json!({
        "migrate": migrate,
        "deployment": fleet.name,
        "node": node,
        "description": unit_text(&if migrate {
            format!("RivetOS database migrations ({})", fleet.name)
        } else {
            format!("RivetOS agents {} ({})", agents.join(", "), fleet.name)
        }),
        "after_migrate": !migrate && fleet.migrate.as_ref().is_some_and(|m| m.node == node),
        "user": USER,
        "source_dir": SOURCE_DIR,
        "exec": if migrate { format!("{EXEC} start --role {role}") } else { format!("{EXEC} start") },
        "env_file": ENV_FILE,
        "state_dir": STATE_DIR,
        "environment": env,
        "shared_dir": fleet.shared_storage.then(|| fleet.shared_mount_path.clone()),
        "stop_timeout": seconds(fleet.update.stop_grace_period),
        "start_timeout": seconds(fleet.health.deadline),
    })
}

fn own_variables(fleet: &Fleet, node: &str, role: &str) -> Vec<(&'static str, String)> {
    vec![
        ("HOME", format!("/var/lib/{STATE_DIR}")),
        ("RIVETOS_CONFIG", CONFIG_FILE.to_string()),
        ("RIVETOS_NODE_NAME", node.to_string()),
        ("RIVETOS_ROLE", role.to_string()),
        ("RIVETOS_HEALTH_PORT", fleet.health.port.to_string()),
    ]
}

/// The units of every node, as `(artifact path, context)`, in node order. Empty unless the
/// target runs processes (proxmox, manual).
pub fn context(fleet: &Fleet) -> Vec<(String, Value)> {
    if !matches!(fleet.target(), Target::Proxmox | Target::Manual) {
        return Vec::new();
    }
    let mut units = Vec::new();
    for node in &fleet.nodes {
        if let Some(migrate) = fleet.migrate.as_ref().filter(|m| m.node == node.name) {
            let own = own_variables(fleet, &node.name, "migrate");
            let env = environment(&own, common_plain(&[&migrate.env]));
            units.push((
                format!("systemd/{}/{MIGRATE_UNIT}", node.name),
                unit_context(fleet, &node.name, true, env, &[]),
            ));
        }
        if node.agents.is_empty() {
            continue;
        }
        let envs: Vec<&Env> = fleet.agents.iter().filter(|a| a.node == node.name).map(|a| &*a.env).collect();
        let mut own = own_variables(fleet, &node.name, "agent");
        own.push(("RIVETOS_AGENTS", node.agents.join(",")));
        let env = environment(&own, common_plain(&envs));
        units
            .push((format!("systemd/{}/{UNIT}", node.name), unit_context(fleet, &node.name, false, env, &node.agents)));
    }
    units
}

/// Renders every unit (none holds a secret).
pub fn artifacts(fleet: &Fleet) -> Result<Vec<Artifact>, RenderError> {
    context(fleet)
        .into_iter()
        .map(|(path, ctx)| Ok(Artifact { path, contents: super::render(TEMPLATE, &ctx)?, secret: false }))
        .collect()
}
