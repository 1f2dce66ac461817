//! Linux hosts reached over SSH (russh): run commands, reach the host's Docker Engine
//! through its Unix socket, probe services that only the host can reach.
//!
//! Security defaults (DESIGN.md, "Security defaults"): the server's host key must be
//! recorded in known_hosts, unknown and changed keys are refused with the fingerprint and
//! the commands to check and record it; logins use a key file or the ssh-agent's keys, never
//! a password.
//!
//! Crypto: russh is built on ring (`default-features = false, features = ["ring", "flate2",
//! "rsa"]`) so that the workspace has one crypto backend; russh's default would add
//! aws-lc-rs, with its C/CMake build.
//!
//! ```no_run
//! # async fn example() -> Result<(), rivet_targets::ssh::SshError> {
//! use rivet_targets::ssh::{SshOptions, connect};
//! let options = SshOptions::new("~/.ssh/known_hosts");
//! let session = connect("node-2.example.com", 22, "deploy", &options).await?;
//! let output = session.exec("systemctl is-active docker").await?;
//! assert!(output.success());
//! # Ok(()) }
//! ```

mod auth;
mod docker;
mod error;
mod host_key;
mod http;
mod session;

use std::path::{Path, PathBuf};
use std::time::Duration;

use orchestrator::config::model::SshSettings;

pub(crate) use docker::origin_form;
pub use docker::{DEFAULT_DOCKER_SOCKET, connect_engine, docker_over_ssh};
pub use error::SshError;
pub use session::{ExecOutput, Session, SshStream, connect};

/// How to reach and trust hosts (`deployment.ssh` of the config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshOptions {
    /// The known_hosts file host keys are checked against; `~/` means `$HOME/`.
    pub known_hosts: PathBuf,
    /// The private key to log in with; without it, the agent's keys are tried.
    pub identity_file: Option<PathBuf>,
    /// The ssh-agent's socket; `None` means `$SSH_AUTH_SOCK` at connect time.
    pub agent_socket: Option<PathBuf>,
    /// Host key fingerprints (`SHA256:…`) trusted instead of known_hosts, when the host's
    /// keys are known from a trusted channel: a Proxmox VE container's, from its create task
    /// read over the pinned API. Any other key is refused.
    pub pinned: Option<Vec<String>>,
    /// Connecting, the key exchange and authentication together; also opening a channel.
    pub connect_timeout: Duration,
    /// One remote command ([`Session::exec`]).
    pub command_timeout: Duration,
}

impl SshOptions {
    /// The defaults of `deployment.ssh`: 10 s to connect, 10 min per command, the agent.
    pub fn new(known_hosts: impl Into<PathBuf>) -> Self {
        SshOptions {
            known_hosts: known_hosts.into(),
            identity_file: None,
            agent_socket: None,
            pinned: None,
            connect_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(600),
        }
    }

    /// From the validated config (timeouts in milliseconds).
    pub fn from_settings(settings: &SshSettings) -> Self {
        SshOptions {
            known_hosts: PathBuf::from(&settings.known_hosts),
            identity_file: settings.identity_file.as_ref().map(PathBuf::from),
            agent_socket: None,
            pinned: None,
            connect_timeout: Duration::from_millis(settings.connect_timeout),
            command_timeout: Duration::from_millis(settings.command_timeout),
        }
    }
}

/// `~` or `~/…` with `$HOME` in place of the `~`; other paths as they are.
pub fn expand_home(path: &Path) -> Result<PathBuf, SshError> {
    let Ok(rest) = path.strip_prefix("~") else {
        return Ok(path.to_path_buf());
    };
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| SshError::NoHome { path: path.to_path_buf() })?;
    Ok(PathBuf::from(home).join(rest))
}

/// `host:port`, with IPv6 addresses in brackets.
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_expansion() {
        let home = PathBuf::from(std::env::var_os("HOME").expect("HOME is set for tests"));
        assert_eq!(expand_home(Path::new("~/.ssh/known_hosts")).unwrap(), home.join(".ssh/known_hosts"));
        assert_eq!(expand_home(Path::new("~")).unwrap(), home);
        assert_eq!(expand_home(Path::new("/etc/ssh/known")).unwrap(), PathBuf::from("/etc/ssh/known"));
        assert_eq!(expand_home(Path::new("~other/x")).unwrap(), PathBuf::from("~other/x"));
    }

    #[test]
    fn addresses() {
        assert_eq!(host_port("10.0.0.2", 22), "10.0.0.2:22");
        assert_eq!(host_port("::1", 2222), "[::1]:2222");
    }
}
