//! Pushing images to a registry and resolving their digests (issue 9): images built from
//! source are pushed to `deployment.image.registry`, Kubernetes manifests name them by
//! digest, and Docker nodes told to pull fetch them by the same pinned reference.
//!
//! - [`auth`]: the registry's credentials, from the environment or the Docker config file,
//!   looked up as the Docker CLI does (`helper` speaks the credential-helper protocol), and
//!   the `.dockerconfigjson` body of an imagePullSecret.
//! - [`push`]: tag and push through the engine, the registry's digest of a tag, pull by digest.
//!
//! The engine, not rivetctl, talks to the registry: a registry address is resolved from the
//! engine's host (`127.0.0.1:5000` is the engine's loopback).

pub mod auth;
mod helper;
pub mod push;
mod reference;

use std::path::PathBuf;

pub use auth::{CredentialSource, Credentials, PASSWORD_VAR, RegistryAuth, USERNAME_VAR, docker_config_json};
pub use push::{Ensured, Pushed, ensure_pushed, pull, push, remote_digest};
pub use reference::registry_host;

/// Why a registry operation failed. Messages name users and where their credentials came
/// from, never a secret; [`RegistryError::hint`] says what to do. The engine's errors are
/// boxed: they would make every `Result` of this module large.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{set} is set but {missing} is not")]
    HalfCredentials { set: &'static str, missing: &'static str },
    #[error("cannot read the Docker config file {path}")]
    ConfigRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the Docker config file {path} is not valid JSON")]
    ConfigSyntax {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("the Docker config file {path} has unusable credentials for {host}: {problem}")]
    ConfigEntry { path: PathBuf, host: String, problem: String },
    #[error("the credential helper {program} for {host} (named in {config}) is not on PATH")]
    HelperMissing { program: String, host: String, config: PathBuf },
    #[error("cannot run the credential helper {program} for {host}")]
    HelperRun {
        program: PathBuf,
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the credential helper {program} failed for {host} ({status}): {message}")]
    HelperFailed { program: PathBuf, host: String, status: String, message: String },
    #[error("the credential helper {program} printed no usable credentials for {host}: {problem}")]
    HelperOutput { program: PathBuf, host: String, problem: String },
    #[error("the credentials for {host} from {origin} are an identity token, which an imagePullSecret cannot carry")]
    TokenInPullSecret { host: String, origin: CredentialSource },
    #[error("image reference {reference:?} {problem}")]
    Reference { reference: String, problem: &'static str },
    #[error("image {image} is not on the engine at {engine}")]
    LocalMissing { image: String, engine: String },
    #[error("cannot tag {image} as {target} on the engine at {engine}")]
    Tag {
        image: String,
        target: String,
        engine: String,
        #[source]
        source: Box<bollard::errors::Error>,
    },
    #[error("registry {registry} denied {}", who(.user.as_deref(), .origin.as_ref()))]
    Denied {
        registry: String,
        /// The user the engine presented, `None` when it had no credentials.
        user: Option<String>,
        /// Where that user's credentials came from.
        origin: Option<CredentialSource>,
        #[source]
        source: Box<bollard::errors::Error>,
    },
    #[error("registry {registry} is unreachable from the engine at {engine}")]
    Unreachable {
        registry: String,
        engine: String,
        #[source]
        source: Box<bollard::errors::Error>,
    },
    #[error("pushing {reference} failed")]
    Push {
        reference: String,
        #[source]
        source: Box<bollard::errors::Error>,
    },
    #[error("the engine pushed {reference} but reported no digest, and holds no digest of it from {registry}")]
    NoDigest { reference: String, registry: String },
    #[error("cannot ask registry {registry} about {reference}")]
    Inspect {
        reference: String,
        registry: String,
        #[source]
        source: Box<bollard::errors::Error>,
    },
    #[error("pulling {reference} failed")]
    Pull {
        reference: String,
        #[source]
        source: Box<bollard::errors::Error>,
    },
    #[error("the engine at {engine} pulled {reference} but does not have it")]
    PulledMissing { reference: String, engine: String },
}

/// "user alice (credentials from …)" or "anonymous access".
fn who(user: Option<&str>, origin: Option<&CredentialSource>) -> String {
    match (user, origin) {
        (Some(user), Some(origin)) => format!("user {user} (credentials from {origin})"),
        (Some(user), None) => format!("user {user}"),
        (None, _) => "anonymous access (no credentials found)".to_string(),
    }
}

impl RegistryError {
    /// What to do about it.
    pub fn hint(&self) -> String {
        let login = |registry: &str| format!("run `docker login {registry}`, or set {USERNAME_VAR} and {PASSWORD_VAR}");
        match self {
            RegistryError::HalfCredentials { .. } => {
                format!("set both {USERNAME_VAR} and {PASSWORD_VAR}, or neither to use the Docker config file")
            }
            RegistryError::ConfigRead { path, .. } | RegistryError::ConfigSyntax { path, .. } => {
                format!("fix or remove {}, or set {USERNAME_VAR} and {PASSWORD_VAR}", path.display())
            }
            RegistryError::ConfigEntry { host, .. } => login(host),
            RegistryError::HelperMissing { program, .. } => {
                format!("install {program}, or set {USERNAME_VAR} and {PASSWORD_VAR}")
            }
            RegistryError::HelperRun { program, .. }
            | RegistryError::HelperFailed { program, .. }
            | RegistryError::HelperOutput { program, .. } => format!(
                "check that `echo SERVER | {} get` works, or set {USERNAME_VAR} and {PASSWORD_VAR}",
                program.display()
            ),
            RegistryError::TokenInPullSecret { .. } => format!(
                "set {USERNAME_VAR} and {PASSWORD_VAR} to a user and a password (or an access token used as the password)"
            ),
            RegistryError::Reference { .. } => "write repository:tag, without a registry host".to_string(),
            RegistryError::LocalMissing { .. } => "build the image first (rivetctl builds images from source)".into(),
            RegistryError::Tag { .. } | RegistryError::Push { .. } | RegistryError::Pull { .. } => {
                "the engine's message above says why".to_string()
            }
            RegistryError::Denied { registry, origin: Some(CredentialSource::Environment), .. } => {
                format!("check {USERNAME_VAR} and {PASSWORD_VAR}, and that this user may push to {registry}")
            }
            RegistryError::Denied { registry, user: Some(_), .. } => {
                format!("{}; and check that this user may push to {registry}", login(registry))
            }
            RegistryError::Denied { registry, user: None, .. } => login(registry),
            RegistryError::Unreachable { registry, .. } => format!(
                "check that the registry runs and that {registry} is reachable from the engine's host (`docker pull {registry}/…` there)"
            ),
            RegistryError::NoDigest { .. } | RegistryError::PulledMissing { .. } => {
                "this is an engine or registry fault: try again, and check the engine's log".to_string()
            }
            RegistryError::Inspect { registry, .. } => {
                format!("check that {registry} speaks the registry API v2 (`curl http://{registry}/v2/`)")
            }
        }
    }
}
