//! Why an SSH operation failed, and what to do about it ([`SshError::hint`]).
//!
//! Every variant names the host (or `user@host:port`) it concerns, so a message from a
//! mesh-wide rollout says which node failed without further context.

use std::path::PathBuf;
use std::time::Duration;

/// An SSH connection, authentication or remote operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("`~` in {path} cannot be expanded: HOME is not set")]
    NoHome { path: PathBuf },
    #[error("cannot read the known_hosts file {path}")]
    KnownHosts {
        path: PathBuf,
        #[source]
        source: russh::keys::Error,
    },
    #[error(
        "refusing to connect to {host}:{port}: its host key ({key_type} {fingerprint}) is not in {}",
        known_hosts.display()
    )]
    UnknownHostKey { host: String, port: u16, fingerprint: String, key_type: String, known_hosts: PathBuf },
    #[error(
        "refusing to connect to {host}:{port}: ITS HOST KEY HAS CHANGED. {}:{line} records a different {key_type} key; the server presented {fingerprint}",
        known_hosts.display()
    )]
    HostKeyChanged { host: String, port: u16, line: usize, fingerprint: String, key_type: String, known_hosts: PathBuf },
    #[error(
        "refusing to connect to {host}:{port}: its host key {fingerprint} is not one of those pinned for it ({})",
        pinned.join(", ")
    )]
    NotPinned { host: String, port: u16, fingerprint: String, pinned: Vec<String> },
    #[error(
        "refusing to connect to {host}:{port}: it presented a host certificate, and only plain host keys recorded in known_hosts are trusted"
    )]
    HostCertificate { host: String, port: u16 },
    #[error("cannot connect to {host}:{port}")]
    Connect {
        host: String,
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to {host}:{port} timed out after {timeout:?} (during {phase})")]
    ConnectTimeout { host: String, port: u16, timeout: Duration, phase: &'static str },
    #[error("the SSH handshake with {host}:{port} failed")]
    Handshake {
        host: String,
        port: u16,
        #[source]
        source: Box<russh::Error>,
    },
    #[error("cannot load the SSH identity file {path}")]
    IdentityFile {
        path: PathBuf,
        #[source]
        source: russh::keys::Error,
    },
    #[error("the SSH identity file {path} is protected by a passphrase, which rivetctl does not ask for")]
    IdentityEncrypted { path: PathBuf },
    #[error("no SSH key to log in to {host} as {user}: no identity_file is configured and SSH_AUTH_SOCK is not set")]
    NoIdentity { user: String, host: String },
    #[error("cannot use the ssh-agent at {socket}")]
    Agent {
        socket: PathBuf,
        #[source]
        source: russh::keys::Error,
    },
    #[error("{host}:{port} did not accept any key for user {user} (tried: {})", tried_list(tried))]
    AuthFailed { user: String, host: String, port: u16, tried: Vec<String> },
    #[error("cannot open {target} through the SSH connection to {address}")]
    ChannelOpen {
        address: String,
        target: String,
        #[source]
        source: Box<russh::Error>,
    },
    #[error("running `{command}` on {address} failed")]
    Command {
        address: String,
        command: String,
        #[source]
        source: Box<russh::Error>,
    },
    #[error("{address} refused to run `{command}`")]
    CommandRefused { address: String, command: String },
    #[error("`{command}` on {address} did not finish within {timeout:?}")]
    Timeout { address: String, command: String, timeout: Duration },
    #[error("{request} through {address} failed")]
    Http {
        address: String,
        request: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the Docker Engine behind {address} did not answer")]
    Docker {
        address: String,
        #[source]
        source: bollard::errors::Error,
    },
}

fn tried_list(tried: &[String]) -> String {
    if tried.is_empty() { "no keys".to_string() } else { tried.join(", ") }
}

/// The SSH failure behind a bollard error, when the Docker transport could not open its
/// channel (it travels through bollard as an `io::Error`).
fn ssh_cause(err: &bollard::errors::Error) -> Option<&SshError> {
    match err {
        bollard::errors::Error::IOError { err } => err.get_ref()?.downcast_ref::<SshError>(),
        _ => None,
    }
}

/// The `-t` name `ssh-keyscan` takes for an SSH key algorithm name.
fn keyscan_type(key_type: &str) -> &str {
    match key_type {
        "ssh-ed25519" => "ed25519",
        "ssh-rsa" | "rsa-sha2-256" | "rsa-sha2-512" => "rsa",
        "sk-ssh-ed25519@openssh.com" => "ed25519-sk",
        "sk-ecdsa-sha2-nistp256@openssh.com" => "ecdsa-sk",
        t if t.starts_with("ecdsa-") => "ecdsa",
        t => t,
    }
}

/// `host` as known_hosts and ssh-keygen spell it for `port`.
fn host_pattern(host: &str, port: u16) -> String {
    if port == 22 { host.to_string() } else { format!("[{host}]:{port}") }
}

impl SshError {
    /// What to do about it.
    /// Whether the host did not answer (or the connection was lost), as opposed to
    /// answering with a refusal: what a resumed command can get past.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            SshError::Connect { .. }
                | SshError::ConnectTimeout { .. }
                | SshError::Handshake { .. }
                | SshError::ChannelOpen { .. }
                | SshError::Command { .. }
                | SshError::Timeout { .. }
        )
    }

    pub fn hint(&self) -> String {
        match self {
            SshError::NoHome { .. } => "set HOME, or give the path without `~`".into(),
            SshError::KnownHosts { path, .. } => format!(
                "check that {} is readable and holds OpenSSH known_hosts lines (`ssh-keygen -lf {}` lists them)",
                path.display(),
                path.display()
            ),
            SshError::UnknownHostKey { host, port, fingerprint, key_type, known_hosts } => {
                let known_hosts = known_hosts.display();
                format!(
                    "rivetctl never trusts a host key it has not been told about. Check that {fingerprint} is the host's key \
                     out of band (on the host: `ssh-keygen -lf /etc/ssh/ssh_host_{kind}_key.pub`), then record it: \
                     `ssh-keyscan -p {port} -t {kind} {host} >> {known_hosts}` and confirm that \
                     `ssh-keygen -lf {known_hosts} -F '{pattern}'` shows the same fingerprint",
                    kind = keyscan_type(key_type),
                    pattern = host_pattern(host, *port),
                )
            }
            SshError::NotPinned { .. } => "the pinned keys are those the Proxmox VE create task printed for this container; \
                 a different key means another machine answers at its address, or its keys were regenerated: \
                 check on the node (`pct exec <vmid> -- ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`)"
                .into(),
            SshError::HostKeyChanged { host, port, known_hosts, .. } => {
                let known_hosts = known_hosts.display();
                format!(
                    "someone may be intercepting the connection, or the host was reinstalled. Ask the host's administrator \
                     for its key fingerprint; only if it matches, remove the old entry with \
                     `ssh-keygen -R '{pattern}' -f {known_hosts}` and add the new key (`ssh-keyscan -p {port} {host}`)",
                    pattern = host_pattern(host, *port),
                )
            }
            SshError::HostCertificate { host, port } => format!(
                "record the plain host key of {host}:{port} in known_hosts (`ssh-keyscan -p {port} {host}`) after checking its fingerprint"
            ),
            SshError::Connect { host, port, .. } => format!(
                "is sshd running on {host} and listening on port {port}, and does a firewall let this machine through? (`ssh -p {port} {host} true` shows the same problem)"
            ),
            SshError::ConnectTimeout { host, port, .. } => format!(
                "{host}:{port} did not answer in time: check the address and firewalls, or raise deployment.ssh.connect_timeout"
            ),
            SshError::Handshake { host, port, .. } => format!(
                "the SSH server at {host}:{port} and rivetctl found no common algorithms or the connection broke; `ssh -v -p {port} {host}` shows what the server offers"
            ),
            SshError::IdentityFile { path, .. } => format!(
                "check deployment.ssh.identity_file: {} must be an unencrypted OpenSSH, PEM or PKCS#8 private key readable by this user",
                path.display()
            ),
            SshError::IdentityEncrypted { path } => format!(
                "load the key into an agent instead: `ssh-add {}`, then remove deployment.ssh.identity_file so the agent at SSH_AUTH_SOCK is used",
                path.display()
            ),
            SshError::NoIdentity { .. } => {
                "set deployment.ssh.identity_file, or start an ssh-agent and `ssh-add` the key (SSH_AUTH_SOCK must be set)".into()
            }
            SshError::Agent { socket, .. } => format!(
                "is the ssh-agent still running? `SSH_AUTH_SOCK={} ssh-add -l` should list its keys",
                socket.display()
            ),
            SshError::AuthFailed { user, host, port, tried } if tried.is_empty() => format!(
                "the ssh-agent holds no keys: `ssh-add` the key whose public half is in ~{user}/.ssh/authorized_keys on {host} (port {port})"
            ),
            SshError::AuthFailed { user, host, .. } => format!(
                "add the public key to ~{user}/.ssh/authorized_keys on {host}, or point deployment.ssh.identity_file at the key that is there. \
                 Passwords are never used. With many keys in the agent, the server's MaxAuthTries may stop the attempt early: set identity_file"
            ),
            SshError::ChannelOpen { target, .. } if target.starts_with("unix socket") => format!(
                "the remote sshd must allow `AllowStreamLocalForwarding` (the default), and the SSH user must be allowed to use the {target} (for Docker: a member of the `docker` group)"
            ),
            SshError::ChannelOpen { .. } => {
                "the remote sshd must allow `AllowTcpForwarding` (the default), the target must be listening, and the connection must still be up".into()
            }
            SshError::Command { .. } => "the SSH connection was probably lost; check the host and run again".into(),
            SshError::CommandRefused { .. } => {
                "the server's sshd_config may force a command or forbid sessions for this user (ForceCommand, Match blocks)".into()
            }
            SshError::Timeout { command, .. } if command.starts_with("GET ") || command.starts_with("opening ") => {
                "the remote side accepted the connection but did not answer in time; check that it is healthy".into()
            }
            SshError::Timeout { .. } => "the command was sent SIGTERM and its channel closed (sshd ignores the signal for root \
                 logins; such a command stops when it next writes). Raise deployment.ssh.command_timeout if it needs longer"
                .into(),
            SshError::Http { .. } => "check that the service is listening at that address as seen from the remote host".into(),
            SshError::Docker { source, .. } if let Some(ssh) = ssh_cause(source) => ssh.hint(),
            SshError::Docker { address, .. } => format!(
                "check that the Docker Engine runs on the host and that the SSH user may use its socket (`ssh {address} docker version`)"
            ),
        }
    }
}
