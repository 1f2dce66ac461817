//! What `rivetctl doctor` checks of a Proxmox VE fleet: the API answers over the configured
//! TLS trust with the token (and its version), every configured node is in the cluster and
//! online, which of the deployment's containers exist, and that each running agents
//! container answers over SSH with its pinned host keys and has its service manager. The
//! token's privileges cannot be
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
    let desired: Vec<String> = target
        .desired
        .iter()
        .filter(|r| r.key.kind == orchestrator::lower::proxmox::KIND)
        .map(|r| r.key.name.clone())
        .collect();
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
    for (id, live) in &target.live {
        if !id.starts_with("agents-") || !live.found.running {
            continue;
        }
        let name = format!("ssh {}", live.config.get("hostname").cloned().unwrap_or_default());
        checks.push(match ssh_check(&target, id).await {
            Ok(detail) => Check::ok(name, detail),
            Err(err) => Check::failed(name, err.message, err.hint),
        });
    }
    checks
}

/// Connects to an agents container as provisioning does (pinned host keys, the key of
/// `deployment.ssh`) and asks its service manager.
async fn ssh_check(target: &ProxmoxTarget<'_>, container: &str) -> Result<String, orchestrator::port::TargetError> {
    let session = target.session(container).await?;
    let manager = target.manager();
    let tool = match manager {
        super::provision::ServiceManager::Systemd => "systemctl",
        super::provision::ServiceManager::Runit => "sv",
    };
    let out = session
        .exec(&format!("command -v {tool} >/dev/null && echo ok"))
        .await
        .map_err(|e| super::agents::provision_error(container, super::provision::ProvisionError::Ssh(e)))?;
    if String::from_utf8_lossy(&out.stdout).trim() != "ok" {
        return Err(orchestrator::port::TargetError::failed(format!(
            "{} has no `{tool}`: deployment.proxmox.service_manager says {manager:?}",
            session.address()
        ))
        .with_hint("set deployment.proxmox.service_manager to what the container's init is"));
    }
    Ok(format!("{} answers with its pinned host key; {tool} is there", session.address()))
}
