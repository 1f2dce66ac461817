//! What `rivetctl doctor` checks of a Proxmox VE fleet: the API answers over the configured
//! TLS trust with the token (and its version), every configured node is in the cluster and
//! online, and which of the deployment's containers exist. The token's privileges cannot be
//! asked of the API through the endpoints rivetctl uses; docs/proxmox.md lists the role.

use std::path::Path;

use orchestrator::fleet::Fleet;

use super::target::ProxmoxTarget;
use crate::factory::Check;

/// How the API's certificate is trusted, in words.
fn trust_text(fleet: &Fleet) -> &'static str {
    let proxmox = &fleet.config.raw.deployment.proxmox;
    if proxmox.insecure {
        "any certificate (insecure: true)"
    } else if proxmox.fingerprint.as_deref().is_some_and(|f| !f.trim().is_empty()) {
        "the pinned certificate fingerprint"
    } else if proxmox.ca_file.as_deref().is_some_and(|f| !f.trim().is_empty()) {
        "the configured CA file"
    } else {
        "the system's root certificates"
    }
}

pub async fn checks(fleet: &Fleet, config_dir: &Path) -> Vec<Check> {
    let token = fleet.config.raw.deployment.proxmox.token_id.clone().unwrap_or_default();
    let target = match ProxmoxTarget::open(fleet, config_dir).await {
        Ok(target) => target,
        Err(err) => return vec![Check::failed("proxmox API", err.message, err.hint)],
    };
    let address = target.client.address();
    let mut checks = vec![Check::ok(
        format!("proxmox API {address}"),
        format!("Proxmox VE {}; token {token} accepted; TLS trusts {}", target.version(), trust_text(fleet)),
    )];
    for node in &target.settings.nodes {
        checks.push(Check::ok(format!("node {}", node.name), "in the cluster, online"));
    }
    let desired: Vec<String> = target.desired.iter().map(|r| r.key.name.clone()).collect();
    let found: Vec<String> = target
        .live
        .values()
        .map(|l| format!("{} ({})", l.config.get("hostname").cloned().unwrap_or_default(), l.found.vmid))
        .collect();
    let detail = if found.is_empty() {
        format!("none of {} yet ({})", desired.len(), desired.join(", "))
    } else {
        format!("{} of {} found: {}", found.len(), desired.len(), found.join(", "))
    };
    checks.push(Check::ok(format!("containers of {}", fleet.name), detail));
    checks
}
