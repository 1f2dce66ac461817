//! Public key authentication: the configured identity file, else every key of the ssh-agent.
//!
//! Passwords and keyboard-interactive logins are never attempted, and a passphrase is never
//! asked for: an encrypted key belongs in an agent.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use russh::AgentAuthError;
use russh::client::{AuthResult, Handle};
use russh::keys::agent::AgentIdentity;
use russh::keys::agent::client::AgentClient;
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKey};

use super::host_key::{HostKeyCheck, fingerprint};
use super::{SshError, SshOptions, expand_home};

/// Who is logging in where, for error messages.
pub(super) struct Login<'a> {
    pub user: &'a str,
    pub host: &'a str,
    pub port: u16,
}

impl Login<'_> {
    fn handshake_error(&self, source: russh::Error) -> SshError {
        SshError::Handshake { host: self.host.to_string(), port: self.port, source: Box::new(source) }
    }

    fn failed(&self, tried: Vec<String>) -> SshError {
        SshError::AuthFailed { user: self.user.to_string(), host: self.host.to_string(), port: self.port, tried }
    }
}

/// Logs in with the identity file if one is configured, else with the agent's keys.
pub(super) async fn authenticate(
    handle: &mut Handle<HostKeyCheck>,
    login: &Login<'_>,
    options: &SshOptions,
) -> Result<(), SshError> {
    match &options.identity_file {
        Some(path) => with_identity_file(handle, login, &expand_home(path)?).await,
        None => {
            let socket = agent_socket(options)
                .ok_or_else(|| SshError::NoIdentity { user: login.user.to_string(), host: login.host.to_string() })?;
            with_agent(handle, login, &socket).await
        }
    }
}

/// `options.agent_socket`, else `SSH_AUTH_SOCK`.
fn agent_socket(options: &SshOptions) -> Option<PathBuf> {
    options
        .agent_socket
        .clone()
        .or_else(|| std::env::var_os("SSH_AUTH_SOCK").filter(|s| !s.is_empty()).map(PathBuf::from))
}

/// `ssh-ed25519 SHA256:… (where)`, as listed in [`SshError::AuthFailed`].
fn describe(key: &PublicKey, source: &str) -> String {
    format!("{} {} ({source})", key.algorithm().as_str(), fingerprint(key))
}

/// The RSA signature hash the server accepts best; `None` for other key types.
async fn rsa_hash(
    handle: &Handle<HostKeyCheck>,
    key: &PublicKey,
    login: &Login<'_>,
) -> Result<Option<HashAlg>, SshError> {
    if !key.algorithm().is_rsa() {
        return Ok(None);
    }
    let best = handle.best_supported_rsa_hash().await.map_err(|source| login.handshake_error(source))?;
    Ok(best.flatten())
}

async fn with_identity_file(handle: &mut Handle<HostKeyCheck>, login: &Login<'_>, path: &Path) -> Result<(), SshError> {
    let key = match russh::keys::load_secret_key(path, None) {
        Ok(key) => key,
        Err(russh::keys::Error::KeyIsEncrypted) => {
            return Err(SshError::IdentityEncrypted { path: path.to_path_buf() });
        }
        Err(source) => return Err(SshError::IdentityFile { path: path.to_path_buf(), source }),
    };
    let tried = describe(key.public_key(), &path.display().to_string());
    let hash = rsa_hash(handle, key.public_key(), login).await?;
    let result = handle
        .authenticate_publickey(login.user, PrivateKeyWithHashAlg::new(Arc::new(key), hash))
        .await
        .map_err(|source| login.handshake_error(source))?;
    if result.success() { Ok(()) } else { Err(login.failed(vec![tried])) }
}

async fn with_agent(handle: &mut Handle<HostKeyCheck>, login: &Login<'_>, socket: &Path) -> Result<(), SshError> {
    let agent_failed = |source| SshError::Agent { socket: socket.to_path_buf(), source };
    let mut agent = AgentClient::connect_uds(socket).await.map_err(agent_failed)?;
    // Tells OpenSSH's agent which host it signs for, so destination-constrained keys
    // (`ssh-add -h`) work; agents without the extension refuse it, which changes nothing.
    if let Some(binding) = handle.agent_session_binding().cloned() {
        let _ = agent.bind_session(&binding, false).await;
    }
    let identities = agent.request_identities().await.map_err(agent_failed)?;
    let mut tried = Vec::new();
    for identity in identities {
        let key = identity.public_key().into_owned();
        let description = describe(&key, &format!("agent: {}", identity.comment()));
        let hash = rsa_hash(handle, &key, login).await?;
        let result = match identity {
            AgentIdentity::PublicKey { key, .. } => {
                handle.authenticate_publickey_with(login.user, key, hash, &mut agent).await
            }
            AgentIdentity::Certificate { certificate, .. } => {
                handle.authenticate_certificate_with(login.user, certificate, hash, &mut agent).await
            }
        };
        match result {
            Ok(AuthResult::Success) => return Ok(()),
            Ok(AuthResult::Failure { .. }) => tried.push(description),
            Err(AgentAuthError::Key(err)) => tried.push(format!("{description}: the agent did not sign: {err}")),
            Err(AgentAuthError::Send(_)) => return Err(login.handshake_error(russh::Error::SendError)),
        }
    }
    Err(login.failed(tried))
}
