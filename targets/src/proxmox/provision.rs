//! What runs inside a Proxmox VE container, over SSH: releases installed once each as
//! `/opt/rivetos/releases/<rev>`, one `current` link per agent
//! (`/opt/rivetos/agents/<agent>/current → ../../releases/<rev>`), one service per agent
//! (`rivetos@<agent>`) run by the container's service manager as the dedicated user
//! `rivetos`, with its environment in a 0600 file read before privileges are dropped, and
//! its health read on its own port through the SSH connection.
//!
//! An agent rolls (and rolls back) alone: its link is switched atomically (`mv -T` of a new
//! link over the old) and its service restarted; the other agents of the container keep
//! their links and processes.
//!
//! Service managers: systemd in production (a templated unit, hardened: see
//! `render::systemd`), runit where PID 1 is not systemd (the test stand-ins). Both sit behind
//! [`ServiceManager`]; nothing else here knows which one runs.

use std::time::Duration;

use crate::ssh::{Session, SshError};

/// Where releases and agents live in a container.
pub const ROOT: &str = "/opt/rivetos";
/// The account the agents run as.
pub const USER: &str = "rivetos";

/// Why a step inside a container failed.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error(transparent)]
    Ssh(#[from] SshError),
    #[error("{what} failed on {address} (exit {status}): {stderr}")]
    Script { what: String, address: String, status: u32, stderr: String },
    #[error("{what}: {problem}")]
    Invalid { what: String, problem: String },
}

/// The container's service manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceManager {
    Systemd,
    Runit,
}

/// A name safe in paths and unit names (agent ids and revisions are checked by the config,
/// and checked again here since they end up in shell scripts).
fn checked<'a>(what: &str, name: &'a str) -> Result<&'a str, ProvisionError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.');
    if ok {
        Ok(name)
    } else {
        Err(ProvisionError::Invalid { what: what.to_string(), problem: format!("{name:?} is not a safe name") })
    }
}

/// `'…'` for the shell.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The systemd template every agent's service is an instance of (`rivetos@<agent>`): the
/// dedicated user, the environment file read by systemd before it drops privileges, the
/// release through the agent's own `current` link, and the sandbox: nothing writable but
/// the agent's state directory, no privileges to gain, no capabilities, no devices.
pub const SYSTEMD_TEMPLATE: &str = "[Unit]
Description=RivetOS agent %i
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
User=rivetos
Group=rivetos
EnvironmentFile=/etc/rivetos/agents/%i/env
ExecStart=/opt/rivetos/agents/%i/current/bin/rivetos start
Restart=on-failure
RestartSec=2
TimeoutStopSec=30
StateDirectory=rivetos/%i
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictSUIDSGID=yes
RestrictNamespaces=yes
RestrictRealtime=yes
LockPersonality=yes
MemoryDenyWriteExecute=no
CapabilityBoundingSet=
AmbientCapabilities=
SystemCallFilter=@system-service
SystemCallArchitectures=native
UMask=0077

[Install]
WantedBy=multi-user.target
";

/// The service of one agent.
pub fn unit_name(agent: &str) -> String {
    format!("rivetos@{agent}")
}

impl ServiceManager {
    /// Installs (or replaces) the agent's service definition, enabled but not started.
    fn install_script(self, agent: &str) -> String {
        let unit = unit_name(agent);
        match self {
            ServiceManager::Systemd => format!(
                "printf '%s' {template} > /etc/systemd/system/rivetos@.service.new && mv /etc/systemd/system/rivetos@.service.new /etc/systemd/system/rivetos@.service && systemctl daemon-reload && systemctl enable {unit}.service",
                template = quote(SYSTEMD_TEMPLATE)
            ),
            // A `down` file: runsv supervises it but does not start it until asked.
            ServiceManager::Runit => {
                let run = format!(
                    "#!/bin/sh\nexec 2>&1\nset -a\n. /etc/rivetos/agents/{agent}/env\nset +a\nexec chpst -u {USER}:{USER} {ROOT}/agents/{agent}/current/bin/rivetos start\n"
                );
                format!(
                    "mkdir -p /etc/sv/{unit} && printf '%s' {run} > /etc/sv/{unit}/run.new && chmod 0755 /etc/sv/{unit}/run.new && mv /etc/sv/{unit}/run.new /etc/sv/{unit}/run && \
                     if [ ! -e /etc/service/{unit} ]; then touch /etc/sv/{unit}/down && ln -s /etc/sv/{unit} /etc/service/{unit}; fi",
                    run = quote(&run)
                )
            }
        }
    }

    fn control_script(self, agent: &str, verb: &str) -> String {
        let unit = unit_name(agent);
        match self {
            ServiceManager::Systemd => format!("systemctl {verb} {unit}.service"),
            // `sv` waits up to 7 s for the change; supervise/ appears within runsvdir's 5 s scan.
            ServiceManager::Runit => format!(
                "i=0; while [ ! -p /etc/service/{unit}/supervise/control ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; rm -f /etc/sv/{unit}/down; sv -w 10 {verb} /etc/service/{unit}"
            ),
        }
    }
}

/// Runs `script` as root over `session`, failing with its stderr when it exits non-zero.
async fn script(session: &Session, what: &str, script: &str) -> Result<String, ProvisionError> {
    script_with_input(session, what, script, None).await
}

/// [`script`] with `input` as its standard input: files and secrets, never on a command line.
async fn script_with_input(
    session: &Session,
    what: &str,
    script: &str,
    input: Option<&[u8]>,
) -> Result<String, ProvisionError> {
    let command = format!("sh -c {}", quote(script));
    let out = match input {
        Some(input) => session.exec_with_input(&command, input).await?,
        None => session.exec(&command).await?,
    };
    if !out.success() {
        return Err(ProvisionError::Script {
            what: what.to_string(),
            address: session.address(),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The uid and gid of [`USER`] where rivetctl writes the account itself.
const UID: u32 = 10001;

/// The dedicated user, made once: Debian's `useradd`, else busybox's `adduser`, else the
/// account lines written into /etc/passwd and /etc/group (a minimal root filesystem).
pub async fn ensure_user(session: &Session) -> Result<(), ProvisionError> {
    let make = format!(
        "id -u {USER} >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin {USER} 2>/dev/null \
         || adduser -S -D -H -s /bin/false {USER} 2>/dev/null \
         || {{ echo '{USER}:x:{UID}:' >> /etc/group && echo '{USER}:x:{UID}:{UID}:RivetOS:/nonexistent:/bin/false' >> /etc/passwd; }}; \
         id -u {USER} >/dev/null"
    );
    script(session, "creating the user rivetos", &make).await.map(|_| ())
}

/// Installs release `rev` from `tarball` (a tar of the built tree) unless it is there: into
/// a `.partial` directory first, renamed into place when complete, so a release directory
/// is always whole. Whether it was installed now.
pub async fn install_release(session: &Session, rev: &str, tarball: &[u8]) -> Result<bool, ProvisionError> {
    let rev = checked("release", rev)?;
    let dir = format!("{ROOT}/releases/{rev}");
    let present = script(session, "checking the release", &format!("[ -d {dir} ] && echo yes || echo no")).await?;
    if present.trim() == "yes" {
        return Ok(false);
    }
    let unpack = format!(
        "rm -rf {dir}.partial && mkdir -p {dir}.partial && tar -x -C {dir}.partial && chmod -R go-w {dir}.partial && mv -T {dir}.partial {dir}"
    );
    script_with_input(session, &format!("installing release {rev}"), &unpack, Some(tarball)).await?;
    Ok(true)
}

/// Writes the agent's environment file (mode 0600, root's), from `env` (`KEY=value`), over
/// the connection's standard input: values never appear on a command line.
pub async fn write_env(session: &Session, agent: &str, env: &[(String, String)]) -> Result<(), ProvisionError> {
    let agent = checked("agent", agent)?;
    let mut text = String::new();
    for (key, value) in env {
        checked("environment variable", key)?;
        text.push_str(&format!("{key}={}\n", quote(value)));
    }
    let dir = format!("/etc/rivetos/agents/{agent}");
    let write = format!(
        "umask 077 && mkdir -p {dir} && cat > {dir}/env.new && chmod 0600 {dir}/env.new && mv {dir}/env.new {dir}/env"
    );
    script_with_input(session, &format!("writing the environment of {agent}"), &write, Some(text.as_bytes())).await?;
    Ok(())
}

/// The release the agent's `current` link points at, if any.
pub async fn current(session: &Session, agent: &str) -> Result<Option<String>, ProvisionError> {
    let agent = checked("agent", agent)?;
    let read = format!("readlink {ROOT}/agents/{agent}/current || true");
    let target = script(session, "reading the current release", &read).await?;
    Ok(target.trim().rsplit('/').next().filter(|r| !r.is_empty()).map(str::to_string))
}

/// Points the agent's `current` link at release `rev` (atomically); the release it pointed
/// at before.
pub async fn switch(session: &Session, agent: &str, rev: &str) -> Result<Option<String>, ProvisionError> {
    let (agent, rev) = (checked("agent", agent)?, checked("release", rev)?);
    let before = current(session, agent).await?;
    let dir = format!("{ROOT}/agents/{agent}");
    let link = format!(
        "[ -d {ROOT}/releases/{rev} ] && mkdir -p {dir} && ln -sfn ../../releases/{rev} {dir}/current.new && mv -T {dir}/current.new {dir}/current"
    );
    script(session, &format!("switching {agent} to release {rev}"), &link).await?;
    Ok(before)
}

/// Installs the agent's service definition with `manager` (idempotent).
pub async fn install_service(session: &Session, manager: ServiceManager, agent: &str) -> Result<(), ProvisionError> {
    let agent = checked("agent", agent)?;
    script(session, &format!("installing the service of {agent}"), &manager.install_script(agent)).await.map(|_| ())
}

/// `start`, `stop` or `restart` of the agent's service.
pub async fn control(
    session: &Session,
    manager: ServiceManager,
    agent: &str,
    verb: &str,
) -> Result<(), ProvisionError> {
    let agent = checked("agent", agent)?;
    if !matches!(verb, "start" | "stop" | "restart") {
        return Err(ProvisionError::Invalid { what: "service control".into(), problem: format!("{verb:?}") });
    }
    script(session, &format!("{verb} of {}", unit_name(agent)), &manager.control_script(agent, verb)).await.map(|_| ())
}

/// The agent's health on its port, read from inside the container: whether `/health/live`
/// answered 200, and the `status` of `/health`.
pub async fn health(session: &Session, port: u16) -> (bool, Option<String>) {
    let limit = Duration::from_secs(3);
    let live = matches!(session.http_get("127.0.0.1", port, "/health/live", limit).await, Ok((200, _)));
    let status = match session.http_get("127.0.0.1", port, "/health", limit).await {
        Ok((_, body)) => serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["status"].as_str().map(str::to_string)),
        Err(_) => None,
    };
    (live, status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_reach_a_shell_are_checked_and_values_quoted() {
        assert!(checked("agent", "opus-4_b.1").is_ok());
        for bad in ["", "../x", "a b", "a;rm -rf /", ".hidden", "a'b"] {
            assert!(checked("agent", bad).is_err(), "{bad:?}");
        }
        assert_eq!(quote("it's"), r"'it'\''s'");
    }

    /// systemd is not PID 1 here, so the template's hardening is checked as text.
    #[test]
    fn the_systemd_template_is_hardened() {
        for line in [
            "User=rivetos",
            "EnvironmentFile=/etc/rivetos/agents/%i/env",
            "ExecStart=/opt/rivetos/agents/%i/current/bin/rivetos start",
            "ProtectSystem=strict",
            "NoNewPrivileges=yes",
            "CapabilityBoundingSet=",
            "PrivateTmp=yes",
        ] {
            assert!(SYSTEMD_TEMPLATE.lines().any(|l| l == line), "{line}");
        }
        let install = ServiceManager::Systemd.install_script("opus");
        assert!(install.ends_with("systemctl daemon-reload && systemctl enable rivetos@opus.service"), "{install}");
    }

    #[test]
    fn each_manager_names_the_agent_s_own_service() {
        assert_eq!(ServiceManager::Systemd.control_script("opus", "restart"), "systemctl restart rivetos@opus.service");
        let runit = ServiceManager::Runit.control_script("opus", "stop");
        assert!(runit.ends_with("sv -w 10 stop /etc/service/rivetos@opus"), "{runit}");
        let install = ServiceManager::Runit.install_script("opus");
        assert!(install.contains("chpst -u rivetos:rivetos /opt/rivetos/agents/opus/current/bin/rivetos start"));
        assert!(install.contains(". /etc/rivetos/agents/opus/env"), "{install}");
    }
}
