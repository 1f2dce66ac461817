//! Connections to the nodes of a fleet: the local engine (or `DOCKER_HOST`, `unix://`,
//! `tcp://` over TLS, or plain when asked for), or a node's engine through its SSH
//! connection (host keys checked against known_hosts, key or agent auth), and the control
//! host's engine, where `update` builds its images once.

use std::path::{Path, PathBuf};

use orchestrator::config::rules::{Endpoint, TcpSecurity};
use orchestrator::fleet::{DockerEngine, Fleet};
use orchestrator::port::TargetError;

use crate::docker::{self, Engine};
use crate::probe::Reach;
use crate::ssh::{self, SshOptions};

/// A connected node.
#[derive(Clone)]
pub struct Link {
    pub name: String,
    pub engine: Engine,
    pub reach: Reach,
}

impl Link {
    /// Whether the node still answers (an operation failed: was it the node or the
    /// operation?).
    pub async fn reachable(&self) -> bool {
        if let Reach::Ssh(session) = &self.reach
            && session.is_closed()
        {
            return false;
        }
        tokio::time::timeout(std::time::Duration::from_secs(5), self.engine.docker.ping())
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// An operation's failure, classified: the node does not answer (the work is
    /// interrupted) or it refused (the work failed).
    pub async fn classify(&self, err: impl std::fmt::Display) -> TargetError {
        if self.reachable().await {
            TargetError::failed(err.to_string())
        } else {
            TargetError::unreachable(format!("node {} ({}) does not answer: {err}", self.name, self.engine.address))
        }
    }
}

/// The SSH options of a project: paths relative to the config's directory.
pub fn ssh_options(fleet: &Fleet, config_dir: &Path) -> SshOptions {
    let mut options = SshOptions::from_settings(&fleet.config.raw.deployment.ssh);
    options.known_hosts = relative_to(config_dir, options.known_hosts);
    options.identity_file = options.identity_file.map(|path| relative_to(config_dir, path));
    options
}

/// A path from the config, relative to its directory unless absolute or `~`-based.
fn relative_to(config_dir: &Path, path: PathBuf) -> PathBuf {
    if path.starts_with("~") || path.is_absolute() { path } else { config_dir.join(path) }
}

/// TLS file paths as the config writes them, made usable from anywhere: relative to the
/// config's directory, `~/` under `HOME`.
pub fn resolve_security(security: &TcpSecurity, config_dir: &Path) -> TcpSecurity {
    let resolve = |path: &str| -> String {
        let path = match path.strip_prefix("~/") {
            Some(rest) => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(rest),
            None => config_dir.join(path),
        };
        path.to_string_lossy().into_owned()
    };
    match security {
        TcpSecurity::Tls { ca, cert, key } => {
            TcpSecurity::Tls { ca: resolve(ca), cert: resolve(cert), key: resolve(key) }
        }
        other => other.clone(),
    }
}

/// Connects to one node.
pub async fn connect(node: &DockerEngine, options: &SshOptions, config_dir: &Path) -> Result<Link, TargetError> {
    match &node.endpoint {
        Endpoint::Ssh { user, host, port } => {
            let user = ssh_user(&node.name, user.as_deref(), host, *port)?;
            let (engine, session) = ssh::connect_engine(&node.name, host, *port, &user, options)
                .await
                .map_err(|err| TargetError::failed(format!("node {}: {err}", node.name)).with_hint(err.hint()))?;
            Ok(Link { name: node.name.clone(), engine, reach: Reach::Ssh(session) })
        }
        other => {
            let security = resolve_security(&node.tcp, config_dir);
            let engine = docker::connect(&node.name, other, &security).await.map_err(|err| {
                TargetError::failed(format!("node {}: {}", node.name, with_causes(&err))).with_hint(err.hint())
            })?;
            warn_if_plain(&node.name, &engine);
            // The containers of a tcp:// engine are on another machine: probe from inside them.
            let reach = if engine.address.starts_with("tcp://") { Reach::Engine } else { Reach::Local };
            Ok(Link { name: node.name.clone(), engine, reach })
        }
    }
}

/// The user a node's `ssh://` endpoint logs in as: the one it names, else the local user.
fn ssh_user(node: &str, named: Option<&str>, host: &str, port: u16) -> Result<String, TargetError> {
    match named {
        Some(user) => Ok(user.to_string()),
        None => local_user().ok_or_else(|| {
            TargetError::failed(format!("node {node}: {host} names no SSH user, and this process's user has no name"))
                .with_hint(format!("name the user in the node's host: ssh://<user>@{host}:{port}"))
        }),
    }
}

/// The user an `ssh://host` without `user@` logs in as: the local user, as OpenSSH
/// chooses it (the account of the real uid), else `$USER` (a uid without a passwd entry).
pub fn local_user() -> Option<String> {
    // SAFETY: `getuid` has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    local_user_from(account_name(uid), std::env::var("USER").ok())
}

fn local_user_from(account: Option<String>, env_user: Option<String>) -> Option<String> {
    account.or(env_user).filter(|name| !name.is_empty())
}

/// The passwd name of `uid`.
fn account_name(uid: libc::uid_t) -> Option<String> {
    let mut buffer = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: `getpwuid_r` writes the entry into `entry`
    // and its strings into `buffer` (whose length is passed), and sets `found` to `&entry`
    // or null; `pw_name` is read only when it was found, while `buffer` is alive.
    unsafe {
        let mut entry: libc::passwd = std::mem::zeroed();
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(uid, &mut entry, buffer.as_mut_ptr(), buffer.len(), &mut found);
        if rc != 0 || found.is_null() || entry.pw_name.is_null() {
            return None;
        }
        std::ffi::CStr::from_ptr(entry.pw_name).to_str().ok().map(str::to_string)
    }
}

pub(super) use crate::with_causes;

/// Plain HTTP to an engine was asked for (`insecure: true`): said on every run, even with
/// `-q`, since anyone on the path can run containers as root there.
fn warn_if_plain(node: &str, engine: &Engine) {
    if engine.plain_tcp {
        eprintln!(
            "warning: node {node}: speaking plain HTTP to the Docker Engine at {} (insecure: true): anyone on the path can run containers as root there\nhint: run the engine with --tlsverify and configure `tls: {{ca, cert, key}}` instead",
            engine.address
        );
    }
}

/// The control host's engine, where images are built once: `DOCKER_HOST` or the local
/// socket, with `deployment.docker`'s `tls` / `insecure` when that is `tcp://`.
pub async fn control_host(fleet: &Fleet, config_dir: &Path) -> Result<Engine, TargetError> {
    let docker_settings = &fleet.config.raw.deployment.docker;
    let security = resolve_security(&TcpSecurity::of(&docker_settings.tls, docker_settings.insecure), config_dir);
    let engine = docker::connect("control-host", &Endpoint::Local, &security).await.map_err(|err| {
        let hint = format!("updates build images on this machine's Docker Engine; {}", err.hint());
        TargetError::failed(format!("control host: {}", with_causes(&err))).with_hint(hint)
    })?;
    warn_if_plain("control-host", &engine);
    Ok(engine)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_ssh_user_is_the_local_account_as_openssh_picks_it() {
        let expected = std::process::Command::new("id").arg("-run").output().unwrap();
        let expected = String::from_utf8(expected.stdout).unwrap().trim().to_string();
        assert_eq!(local_user().as_deref(), Some(expected.as_str()));
        assert_eq!(ssh_user("edge", None, "10.0.0.11", 22).unwrap(), expected);
        assert_eq!(ssh_user("edge", Some("deploy"), "10.0.0.11", 22).unwrap(), "deploy");
    }

    #[test]
    fn accounts_are_read_from_the_user_database() {
        let getent = |uid: &str| {
            let out = std::process::Command::new("getent").args(["passwd", uid]).output().unwrap();
            String::from_utf8(out.stdout).unwrap().split(':').next().map(str::to_string).filter(|n| !n.is_empty())
        };
        assert_eq!(account_name(0).as_deref(), Some("root"));
        assert_eq!(account_name(65534), getent("65534"));
        assert_eq!(account_name(4_000_000_000), None);
    }

    #[test]
    fn without_an_account_the_environment_names_the_user() {
        assert_eq!(local_user_from(Some("ana".into()), Some("bob".into())).as_deref(), Some("ana"));
        assert_eq!(local_user_from(None, Some("bob".into())).as_deref(), Some("bob"));
        assert_eq!(local_user_from(None, Some(String::new())), None);
        assert_eq!(local_user_from(None, None), None);
    }
}
