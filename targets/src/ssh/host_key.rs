//! Host key verification against a known_hosts file: the only way a server becomes trusted.
//!
//! A key recorded for `host` (port 22) or `[host]:port` is accepted; a different key of the
//! same type is a changed key; anything else is an unknown host. Unknown and changed keys are
//! both refused: there is no "accept new keys" switch, the user records the key after
//! checking its fingerprint out of band ([`SshError::hint`] says how).
//!
//! Parsing is russh's (`known_host_keys_path`): plain and hashed (`|1|`) host names, comma
//! lists; not wildcards, negations or `@cert-authority` / `@revoked` markers (lines with
//! markers never match, so such hosts are refused as unknown rather than trusted).

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use russh::keys::{Algorithm, HashAlg, PublicKey, PublicKeyOrCertificate};

use super::SshError;

/// The russh client handler: checks the server's host key, nothing else.
pub(super) struct HostKeyCheck {
    host: String,
    port: u16,
    known_hosts: PathBuf,
    /// Fingerprints trusted instead of known_hosts ([`super::SshOptions::pinned`]).
    pinned: Option<Vec<String>>,
}

impl HostKeyCheck {
    pub(super) fn new(host: &str, port: u16, known_hosts: PathBuf, pinned: Option<Vec<String>>) -> Self {
        HostKeyCheck { host: host.to_string(), port, known_hosts, pinned }
    }
}

/// Accepts `key` only if its fingerprint is one of `pinned`.
fn verify_pinned(host: &str, port: u16, key: &PublicKey, pinned: &[String]) -> Result<(), SshError> {
    let seen = fingerprint(key);
    if pinned.iter().any(|p| p.trim() == seen) {
        return Ok(());
    }
    Err(SshError::NotPinned { host: host.to_string(), port, fingerprint: seen, pinned: pinned.to_vec() })
}

/// What ends a handshake: russh's own errors, or our refusal of the host key.
#[derive(Debug)]
pub(super) enum HandshakeError {
    Russh(russh::Error),
    Refused(Box<SshError>),
}

impl From<russh::Error> for HandshakeError {
    fn from(err: russh::Error) -> Self {
        HandshakeError::Russh(err)
    }
}

impl russh::client::Handler for HostKeyCheck {
    type Error = HandshakeError;

    async fn check_server_key(&mut self, server_key: &PublicKeyOrCertificate) -> Result<bool, HandshakeError> {
        let verdict = match server_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => match &self.pinned {
                Some(pinned) => verify_pinned(&self.host, self.port, key, pinned),
                None => verify(&self.host, self.port, key, &self.known_hosts),
            },
            // Only offered when the client advertises certificate algorithms, which it does not.
            PublicKeyOrCertificate::Certificate(_) => {
                Err(SshError::HostCertificate { host: self.host.clone(), port: self.port })
            }
        };
        verdict.map(|()| true).map_err(|err| HandshakeError::Refused(Box::new(err)))
    }
}

/// `SHA256:…`, as `ssh-keygen -l` prints it.
pub(super) fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// The keys known_hosts records for `host:port`, with their line numbers.
fn recorded_keys(host: &str, port: u16, known_hosts: &Path) -> Result<Vec<(usize, PublicKey)>, SshError> {
    let failed = |source| SshError::KnownHosts { path: known_hosts.to_path_buf(), source };
    // russh treats a file it cannot open as empty; only a missing file may mean that.
    if let Err(err) = std::fs::File::open(known_hosts)
        && err.kind() != std::io::ErrorKind::NotFound
    {
        return Err(failed(err.into()));
    }
    let keys = russh::keys::known_hosts::known_host_keys_path(host, port, known_hosts).map_err(failed)?;
    // russh numbers lines without counting comment lines; report the line an editor shows.
    let text = std::fs::read_to_string(known_hosts).unwrap_or_default();
    let physical: Vec<usize> =
        text.split_inclusive('\n').enumerate().filter(|(_, line)| !line.starts_with('#')).map(|(i, _)| i + 1).collect();
    Ok(keys
        .into_iter()
        .map(|(line, key)| (line.checked_sub(1).and_then(|i| physical.get(i)).copied().unwrap_or(line), key))
        .collect())
}

/// Accepts `key` for `host:port` only if known_hosts records exactly that key.
pub(super) fn verify(host: &str, port: u16, key: &PublicKey, known_hosts: &Path) -> Result<(), SshError> {
    let recorded = recorded_keys(host, port, known_hosts)?;
    if recorded.iter().any(|(_, known)| known.key_data() == key.key_data()) {
        return Ok(());
    }
    let key_type = key.algorithm().as_str().to_string();
    if let Some((line, _)) = recorded.iter().find(|(_, known)| known.algorithm() == key.algorithm()) {
        return Err(SshError::HostKeyChanged {
            host: host.to_string(),
            port,
            line: *line,
            fingerprint: fingerprint(key),
            key_type,
            known_hosts: known_hosts.to_path_buf(),
        });
    }
    Err(SshError::UnknownHostKey {
        host: host.to_string(),
        port,
        fingerprint: fingerprint(key),
        key_type,
        known_hosts: known_hosts.to_path_buf(),
    })
}

/// russh's host key algorithm preferences, with the types known_hosts records for this host
/// first, so that a host whose ed25519 key is unknown but whose RSA key is recorded is
/// verified with the RSA key (as OpenSSH does) instead of being refused.
pub(super) fn preferred_algorithms(host: &str, port: u16, known_hosts: &Path) -> Result<russh::Preferred, SshError> {
    let recorded = recorded_keys(host, port, known_hosts)?;
    let is_known = |algorithm: &Algorithm| {
        recorded.iter().any(|(_, key)| {
            let known = key.algorithm();
            known == *algorithm || (known.is_rsa() && matches!(algorithm, Algorithm::Rsa { .. }))
        })
    };
    let defaults = russh::Preferred::default();
    let (mut keys, others): (Vec<Algorithm>, Vec<Algorithm>) = defaults.key.iter().cloned().partition(is_known);
    keys.extend(others);
    Ok(russh::Preferred { key: Cow::Owned(keys), ..defaults })
}
