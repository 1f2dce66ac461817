//! Prints the Proxmox lowering (`orchestrator::lower::proxmox`): `proxmox/<container>.json`,
//! the request body of `POST /nodes/{node}/lxc` of every container (`datahub.json`,
//! `agents-<node>.json`), exactly as the lowering decided it, with the tags the adapter adds
//! (identity and spec hash). No choice is made here: vmids, addresses and every parameter are
//! the lowering's; the template only lays the parameters out in the API's order, numbers and
//! booleans as JSON numbers. Offline, without the cluster's containers to read identities
//! from, vmids come from `ctid_start` (see the lowering).

use orchestrator::fleet::{Fleet, TargetSettings};
use orchestrator::lower::proxmox as lowering;
use orchestrator::resource::Resource;
use serde_json::{Value, json};

pub use orchestrator::lower::proxmox::{FIRST_HOST, FIRST_VMID, KIND, REPLACE_ON, hostname};

use crate::proxmox::containers;

/// Parameters the API types as integers (booleans are `0`/`1` integers too).
const NUMBERS: &[&str] = &["vmid", "cores", "memory", "swap", "unprivileged", "onboot", "start"];

use super::{Artifact, RenderError};

/// The template of one container's parameters.
pub const TEMPLATE: &str = "lxc.json.j2";

fn invalid(detail: String) -> RenderError {
    RenderError { template: TEMPLATE, source: minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, detail) }
}

/// The lowered containers of a Proxmox fleet (none for a fleet of another target). Fails
/// when two nodes would get the same vmid or the subnet runs out of addresses.
pub fn resources(fleet: &Fleet) -> Result<Vec<Resource<Value>>, RenderError> {
    match &fleet.target_settings {
        TargetSettings::Proxmox(settings) => {
            lowering::lower(fleet, settings, &lowering::Cluster::default()).map_err(|err| invalid(err.to_string()))
        }
        _ => Ok(Vec::new()),
    }
}

/// The request body of one lowered container, `tags` included: what `POST
/// /nodes/{node}/lxc` is sent.
pub fn create_params(deployment: &str, resource: &Resource<Value>) -> std::collections::BTreeMap<String, String> {
    let mut params: std::collections::BTreeMap<String, String> =
        serde_json::from_value(resource.payload["params"].clone()).unwrap_or_default();
    let container = resource.payload["container"].as_str().unwrap_or_default();
    params.insert("tags".into(), containers::tags(deployment, container, &resource.spec_hash()));
    params
}

/// `proxmox/<container>.json` of one lowered container.
pub fn artifact(deployment: &str, resource: &Resource<Value>) -> Result<Artifact, RenderError> {
    let typed: serde_json::Map<String, Value> = create_params(deployment, resource)
        .into_iter()
        .map(|(name, text)| {
            let value = match text.parse::<u64>() {
                Ok(number) if NUMBERS.contains(&name.as_str()) => json!(number),
                _ => json!(text),
            };
            (name, value)
        })
        .collect();
    let contents = super::render(TEMPLATE, &json!({ "params": typed }))?;
    let container = resource.payload["container"].as_str().unwrap_or_default();
    Ok(Artifact { path: format!("proxmox/{container}.json"), contents, secret: false })
}

/// `proxmox/<container>.json` for every container.
pub fn artifacts(fleet: &Fleet) -> Result<Vec<Artifact>, RenderError> {
    resources(fleet)?
        .iter()
        .filter(|resource| resource.key.kind == lowering::KIND)
        .map(|resource| artifact(&fleet.name, resource))
        .collect()
}

/// The units installed in the containers, as they are installed: the agents' template
/// `systemd/rivetos@.service` (one instance per agent) and the datahub's
/// `systemd/rivetos-datahub.service` (PostgreSQL of `deployment.datahub.postgres_version`
/// where Debian's package puts it).
pub fn unit_artifacts(fleet: &Fleet) -> Vec<Artifact> {
    let mut out = Vec::new();
    if !fleet.agents.is_empty() {
        out.push(Artifact {
            path: "systemd/rivetos@.service".into(),
            contents: crate::proxmox::provision::SYSTEMD_TEMPLATE.to_string(),
            secret: false,
        });
    }
    if let Some(hub) = &fleet.datahub {
        let pgbin = format!("/usr/lib/postgresql/{}/bin", hub.postgres_version);
        out.push(Artifact {
            path: format!("systemd/{}.service", crate::proxmox::datahub::SERVICE),
            contents: crate::proxmox::datahub::systemd_unit(&pgbin),
            secret: false,
        });
    }
    out
}
