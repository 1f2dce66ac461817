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
pub(crate) fn checked<'a>(what: &str, name: &'a str) -> Result<&'a str, ProvisionError> {
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
pub(crate) fn quote(text: &str) -> String {
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
EnvironmentFile=-/opt/rivetos/agents/%i/current/.rivetctl/release.env
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
                    "#!/bin/sh\nmkdir -p /var/log/rivetos\nexec >>/var/log/rivetos/{agent}.log 2>&1\nset -a\n[ -f {ROOT}/agents/{agent}/current/.rivetctl/release.env ] && . {ROOT}/agents/{agent}/current/.rivetctl/release.env\n. /etc/rivetos/agents/{agent}/env\nset +a\nexec chpst -u {USER}:{USER} {ROOT}/agents/{agent}/current/bin/rivetos start\n"
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
        self.control_script_within(agent, verb, 10)
    }

    /// `verb` of the agent's service, waiting up to `wait_s` seconds for it (the stop grace).
    fn control_script_within(self, agent: &str, verb: &str, wait_s: u64) -> String {
        let unit = unit_name(agent);
        match self {
            ServiceManager::Systemd => format!("systemctl {verb} {unit}.service"),
            // `sv -w` sends SIGTERM and waits for the change. A stopped service keeps a
            // `down` file so that a restart of the container does not start it.
            ServiceManager::Runit => {
                let down = if verb == "stop" { "touch" } else { "rm -f" };
                format!("{}; {down} /etc/sv/{unit}/down; sv -w {wait_s} {verb} /etc/service/{unit}", supervised(&unit))
            }
        }
    }

    /// Prints `run` when the agent's service runs, something else when it does not.
    fn status_script(self, agent: &str) -> String {
        self.unit_state(&unit_name(agent))
    }

    /// Prints `run` when service `unit` runs, `down` when it does not.
    pub(crate) fn unit_state(self, unit: &str) -> String {
        match self {
            ServiceManager::Systemd => {
                format!("[ \"$(systemctl is-active {unit}.service 2>/dev/null)\" = active ] && echo run || echo down")
            }
            ServiceManager::Runit => {
                format!("sv status /etc/service/{unit} 2>/dev/null | grep -q '^run:' && echo run || echo down")
            }
        }
    }

    /// The last `lines` lines the agent's service printed.
    fn logs_script(self, agent: &str, lines: usize) -> String {
        let unit = unit_name(agent);
        match self {
            ServiceManager::Systemd => {
                format!("journalctl -u {unit}.service -n {lines} --no-pager -o cat 2>/dev/null || true")
            }
            ServiceManager::Runit => format!("tail -n {lines} /var/log/rivetos/{agent}.log 2>/dev/null || true"),
        }
    }

    /// Stops and removes the agent's service definition (idempotent).
    fn remove_script(self, agent: &str) -> String {
        let unit = unit_name(agent);
        match self {
            ServiceManager::Systemd => format!("systemctl disable --now {unit}.service 2>/dev/null; true"),
            ServiceManager::Runit => format!(
                "if [ -e /etc/service/{unit} ]; then sv -w 30 stop /etc/service/{unit} 2>/dev/null; rm -f /etc/service/{unit}; fi; rm -rf /etc/sv/{unit}"
            ),
        }
    }
}

/// Waits (up to 10 s) until runit supervises service `unit`: its `supervise/` appears within
/// runsvdir's 5 s scan of a new service.
pub(crate) fn supervised(unit: &str) -> String {
    format!(
        "i=0; while [ ! -p /etc/service/{unit}/supervise/control ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done"
    )
}

/// Writes `contents` (over standard input) to `path` as root's, mode 0600, replacing it
/// whole (a new file renamed over the old one; a unique name, so concurrent writers of one
/// path do not mix).
pub(crate) async fn write_private(
    session: &Session,
    what: &str,
    path: &str,
    contents: &[u8],
) -> Result<(), ProvisionError> {
    let path = quote(path);
    let write = format!(
        "umask 077 && mkdir -p \"$(dirname {path})\" && t={path}.new.$$ && cat > \"$t\" && chmod 0600 \"$t\" && mv \"$t\" {path}"
    );
    script_with_input(session, what, &write, Some(contents)).await.map(|_| ())
}

/// Runs `script` as root over `session`, failing with its stderr when it exits non-zero.
pub(crate) async fn script(session: &Session, what: &str, script: &str) -> Result<String, ProvisionError> {
    script_with_input(session, what, script, None).await
}

/// [`script`] with `input` as its standard input: files and secrets, never on a command line.
pub(crate) async fn script_with_input(
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

/// What a release is, recorded beside its files (`.rivetctl/` in the release directory):
/// the image it was made from, and the environment the image set for its program (the
/// version and revision it reports), which its services read before their own.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReleaseMeta {
    pub reference: String,
    pub revision: Option<String>,
    pub version: Option<String>,
    /// Seconds since the epoch, when it was installed.
    #[serde(default)]
    pub created: i64,
}

impl ReleaseMeta {
    fn env_file(&self) -> String {
        let mut text = String::new();
        if let Some(version) = &self.version {
            text.push_str(&format!("RIVETOS_VERSION={}\n", quote(version)));
        }
        if let Some(revision) = &self.revision {
            text.push_str(&format!("RIVETOS_REVISION={}\n", quote(revision)));
        }
        text
    }
}

/// Installs release `rev` from `tarball` (a tar of the built tree) unless it is there: into
/// a `.partial` directory first, with its [`ReleaseMeta`], renamed into place when
/// complete, so a release directory is always whole. Whether it was installed now.
pub async fn install_release(
    session: &Session,
    rev: &str,
    tarball: &[u8],
    meta: &ReleaseMeta,
) -> Result<bool, ProvisionError> {
    let rev = checked("release", rev)?;
    if has_release(session, rev).await? {
        return Ok(false);
    }
    let dir = format!("{ROOT}/releases/{rev}");
    let meta = ReleaseMeta { created: now(), ..meta.clone() };
    let json = serde_json::to_string(&meta).unwrap_or_default();
    let unpack = format!(
        "rm -rf {dir}.partial && mkdir -p {dir}.partial/.rivetctl && tar -x -C {dir}.partial && printf '%s' {json} > {dir}.partial/.rivetctl/release.json && printf '%s' {env} > {dir}.partial/.rivetctl/release.env && chmod -R go-w {dir}.partial && mv -T {dir}.partial {dir}",
        json = quote(&json),
        env = quote(&meta.env_file()),
    );
    script_with_input(session, &format!("installing release {rev}"), &unpack, Some(tarball)).await?;
    Ok(true)
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Whether release `rev` is installed.
pub async fn has_release(session: &Session, rev: &str) -> Result<bool, ProvisionError> {
    let rev = checked("release", rev)?;
    let present =
        script(session, "checking the release", &format!("[ -d {ROOT}/releases/{rev} ] && echo yes || echo no"))
            .await?;
    Ok(present.trim() == "yes")
}

/// The releases installed, with what each records, and which agents' links use each.
pub async fn releases(session: &Session) -> Result<Vec<(String, ReleaseMeta, Vec<String>)>, ProvisionError> {
    let list = format!(
        "for d in {ROOT}/releases/*/; do [ -d \"$d\" ] || continue; r=$(basename \"$d\"); case $r in *.partial) continue;; esac; \
         users=''; for l in {ROOT}/agents/*/current; do [ \"$(readlink \"$l\" 2>/dev/null)\" = \"../../releases/$r\" ] && users=\"$users $(basename $(dirname \"$l\"))\"; done; \
         printf '%s\\t%s\\t' \"$r\" \"$users\"; tr -d '\\n' < \"$d.rivetctl/release.json\" 2>/dev/null; echo; done"
    );
    let out = script(session, "listing the releases", &list).await?;
    Ok(out
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, '\t');
            let rev = parts.next()?.to_string();
            let users = parts.next()?.split_whitespace().map(str::to_string).collect();
            let meta = serde_json::from_str(parts.next().unwrap_or_default()).unwrap_or_default();
            Some((rev, meta, users))
        })
        .collect())
}

/// Removes release `rev` unless an agent's link (current or kept for a revert) uses it.
/// Whether it was removed.
pub async fn remove_release(session: &Session, rev: &str) -> Result<bool, ProvisionError> {
    let rev = checked("release", rev)?;
    let remove = format!(
        "for f in {ROOT}/agents/*/current /etc/rivetos/agents/*/previous; do [ -e \"$f\" ] || continue; \
         t=$(readlink \"$f\" 2>/dev/null || cat \"$f\"); [ \"${{t##*/}}\" = {rev} ] && {{ echo used; exit 0; }}; done; \
         rm -rf {ROOT}/releases/{rev} && echo removed"
    );
    Ok(script(session, &format!("removing release {rev}"), &remove).await?.trim() == "removed")
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
    let path = format!("/etc/rivetos/agents/{agent}/env");
    write_private(session, &format!("writing the environment of {agent}"), &path, text.as_bytes()).await
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

/// Writes the deployment's config file (`RIVETOS_CONFIG`) at `path`, readable by the
/// agents' account (its secrets are `${VAR}` references, their values in each agent's
/// environment file).
pub async fn write_config(session: &Session, path: &str, text: &str) -> Result<(), ProvisionError> {
    let write = format!(
        "mkdir -p \"$(dirname {path})\" && t={path}.new.$$ && cat > \"$t\" && chown root:{USER} \"$t\" && chmod 0640 \"$t\" && mv \"$t\" {path}",
        path = quote(path)
    );
    script_with_input(session, "writing the config file", &write, Some(text.as_bytes())).await.map(|_| ())
}

/// Where an agent's record (what rivetctl installed for it: its fields and spec hash) is.
fn record_path(agent: &str) -> String {
    format!("/etc/rivetos/agents/{agent}/record.json")
}

/// Writes the agent's record (0600, root's; it holds digests of secrets, not secrets).
pub async fn write_record(session: &Session, agent: &str, record: &str) -> Result<(), ProvisionError> {
    let agent = checked("agent", agent)?;
    write_private(session, &format!("recording {agent}"), &record_path(agent), record.as_bytes()).await
}

/// One agent as found in a container: its record, the release its link points at, and
/// whether its service runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub agent: String,
    pub release: Option<String>,
    pub running: bool,
    /// The record's JSON, as written by [`write_record`].
    pub record: String,
}

/// Every agent rivetctl installed in the container (one SSH command).
pub async fn found(session: &Session, manager: ServiceManager) -> Result<Vec<Found>, ProvisionError> {
    let status = manager.status_script("$a");
    let list = format!(
        "for d in /etc/rivetos/agents/*/; do [ -f \"$d/record.json\" ] || continue; a=$(basename \"$d\"); \
         l=$(readlink {ROOT}/agents/$a/current 2>/dev/null); s=$({status}); printf '%s\\t%s\\t%s\\t' \"$a\" \"${{l##*/}}\" \"$s\"; tr -d '\\n' < \"$d/record.json\"; echo; done"
    );
    let out = script(session, "reading the agents", &list).await?;
    Ok(out
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(4, '\t');
            let agent = parts.next()?.to_string();
            let release = Some(parts.next()?.to_string()).filter(|r| !r.is_empty());
            let running = parts.next()? == "run";
            Some(Found { agent, release, running, record: parts.next().unwrap_or_default().to_string() })
        })
        .collect())
}

/// Keeps what the agent runs now (its record, environment and release) for
/// [`restore_previous`], unless kept already (a repeated step keeps the first).
pub async fn keep_previous(session: &Session, agent: &str) -> Result<(), ProvisionError> {
    let agent = checked("agent", agent)?;
    let dir = format!("/etc/rivetos/agents/{agent}");
    let keep = format!(
        "[ -e {dir}/previous ] && exit 0; [ -f {dir}/record.json ] || exit 0; umask 077; \
         cp -p {dir}/record.json {dir}/record.json.prev && cp -p {dir}/env {dir}/env.prev && \
         readlink {ROOT}/agents/{agent}/current > {dir}/previous.new && mv {dir}/previous.new {dir}/previous"
    );
    script(session, &format!("keeping the running revision of {agent}"), &keep).await.map(|_| ())
}

/// Puts back what [`keep_previous`] kept (link, environment, record); the release it links
/// again, or `None` when nothing was kept.
pub async fn restore_previous(session: &Session, agent: &str) -> Result<Option<String>, ProvisionError> {
    let agent = checked("agent", agent)?;
    let dir = format!("/etc/rivetos/agents/{agent}");
    let restore = format!(
        "[ -e {dir}/previous ] || exit 0; t=$(cat {dir}/previous); \
         ln -sfn \"$t\" {ROOT}/agents/{agent}/current.new && mv -T {ROOT}/agents/{agent}/current.new {ROOT}/agents/{agent}/current && \
         mv {dir}/env.prev {dir}/env && mv {dir}/record.json.prev {dir}/record.json && rm -f {dir}/previous && echo \"${{t##*/}}\""
    );
    let out = script(session, &format!("restoring the previous revision of {agent}"), &restore).await?;
    Ok(Some(out.trim().to_string()).filter(|r| !r.is_empty()))
}

/// Forgets what [`keep_previous`] kept (the rollout is over).
pub async fn drop_previous(session: &Session, agent: &str) -> Result<(), ProvisionError> {
    let agent = checked("agent", agent)?;
    let dir = format!("/etc/rivetos/agents/{agent}");
    script(
        session,
        "forgetting the previous revision",
        &format!("rm -f {dir}/previous {dir}/env.prev {dir}/record.json.prev"),
    )
    .await
    .map(|_| ())
}

/// Whether the agent's service runs.
pub async fn running(session: &Session, manager: ServiceManager, agent: &str) -> Result<bool, ProvisionError> {
    let agent = checked("agent", agent)?;
    Ok(script(session, "reading the service state", &manager.status_script(agent)).await?.trim() == "run")
}

/// The last `lines` lines the agent printed.
pub async fn logs(session: &Session, manager: ServiceManager, agent: &str, lines: usize) -> Vec<String> {
    let Ok(agent) = checked("agent", agent) else { return Vec::new() };
    match script(session, "reading the logs", &manager.logs_script(agent, lines)).await {
        Ok(out) => out.lines().map(str::to_string).collect(),
        Err(_) => Vec::new(),
    }
}

/// `stop` of the agent's service with `grace` for it to end after SIGTERM.
pub async fn stop(
    session: &Session,
    manager: ServiceManager,
    agent: &str,
    grace: Duration,
) -> Result<(), ProvisionError> {
    let agent = checked("agent", agent)?;
    let wait = grace.as_secs().max(1);
    script(session, &format!("stop of {}", unit_name(agent)), &manager.control_script_within(agent, "stop", wait))
        .await
        .map(|_| ())
}

/// Removes the agent: its service stopped and removed, its link, environment and record
/// (releases stay until no agent uses them).
pub async fn remove_agent(session: &Session, manager: ServiceManager, agent: &str) -> Result<(), ProvisionError> {
    let agent = checked("agent", agent)?;
    let remove = format!("{}; rm -rf {ROOT}/agents/{agent} /etc/rivetos/agents/{agent}", manager.remove_script(agent));
    script(session, &format!("removing {}", unit_name(agent)), &remove).await.map(|_| ())
}

/// The agent's health on its port, read from inside the container: whether `/health/live`
/// answered 200, and the `status` of `/health`.
pub async fn health(session: &Session, port: u16) -> (bool, Option<String>) {
    let reading = read_health(session, port, "/health/live", "/health").await;
    (reading.live, reading.status)
}

/// What an agent's health endpoints said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// The live path answered 200.
    pub live: bool,
    /// `status` and `version` of the health path's JSON.
    pub status: Option<String>,
    pub version: Option<String>,
}

/// Reads `live_path` and `health_path` on `127.0.0.1:port` inside the container.
pub async fn read_health(session: &Session, port: u16, live_path: &str, health_path: &str) -> Health {
    let limit = Duration::from_secs(3);
    let live = matches!(session.http_get("127.0.0.1", port, live_path, limit).await, Ok((200, _)));
    let body = match session.http_get("127.0.0.1", port, health_path, limit).await {
        Ok((_, body)) => serde_json::from_slice::<serde_json::Value>(&body).ok(),
        Err(_) => None,
    };
    let text = |name: &str| body.as_ref().and_then(|v| v[name].as_str()).map(str::to_string);
    Health { live, status: text("status"), version: text("version") }
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
