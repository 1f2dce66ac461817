//! Prints the Proxmox lowering (`orchestrator::lower::proxmox`): `proxmox/<node>.json`, the
//! request body of `POST /nodes/{node}/lxc` of every node's container, exactly as the
//! lowering decided it. No choice is made here: vmids, addresses and every parameter are the
//! lowering's; the template only lays the parameters out in the API's order.

use orchestrator::fleet::{Fleet, TargetSettings};
use orchestrator::lower::proxmox as lowering;
use orchestrator::resource::Resource;
use serde_json::{Value, json};

pub use orchestrator::lower::proxmox::{FIRST_HOST, FIRST_VMID, KIND, REPLACE_ON, hostname};

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
        TargetSettings::Proxmox(settings) => lowering::lower(fleet, settings).map_err(|err| invalid(err.to_string())),
        _ => Ok(Vec::new()),
    }
}

/// `proxmox/<node>.json` of one lowered container.
pub fn artifact(resource: &Resource<Value>) -> Result<Artifact, RenderError> {
    let contents = super::render(TEMPLATE, &json!({ "params": resource.payload }))?;
    Ok(Artifact { path: format!("proxmox/{}.json", resource.key.node), contents, secret: false })
}

/// `proxmox/<node>.json` for every node.
pub fn artifacts(fleet: &Fleet) -> Result<Vec<Artifact>, RenderError> {
    resources(fleet)?.iter().map(artifact).collect()
}
