//! A registry's credentials, looked up as the Docker CLI does, so `docker login` is all a
//! user needs: the environment (`RIVET_REGISTRY_USERNAME` + `RIVET_REGISTRY_PASSWORD`) first,
//! then the Docker config file (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`)
//! with its `auths` entries and its credential helpers (`credHelpers`, `credsStore`).
//!
//! Secrets never reach a message: [`Credentials`] prints its secret redacted, errors name the
//! user and the source, and JSON read from files and helpers is taken apart by hand, since
//! serde's type errors quote the offending value.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use bollard::auth::DockerCredentials;
use serde_json::{Map, Value};

use super::reference::{auth_key, key_host};
use super::{RegistryError, helper};

/// The user name variable; with [`PASSWORD_VAR`], it overrides the Docker config file.
pub const USERNAME_VAR: &str = "RIVET_REGISTRY_USERNAME";
/// The password (or access token) variable.
pub const PASSWORD_VAR: &str = "RIVET_REGISTRY_PASSWORD";

/// Padding optional when decoding, as Go's decoder is lenient about it in practice.
const BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// Where credentials came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// `RIVET_REGISTRY_USERNAME` and `RIVET_REGISTRY_PASSWORD`.
    Environment,
    /// An `auths` entry of this Docker config file.
    File { path: PathBuf },
    /// A credential helper (`docker-credential-pass`), named in this config file.
    Helper { program: String, config: PathBuf },
}

impl fmt::Display for CredentialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialSource::Environment => write!(f, "the environment ({USERNAME_VAR}, {PASSWORD_VAR})"),
            CredentialSource::File { path } => write!(f, "the Docker config file {}", path.display()),
            CredentialSource::Helper { program, config } => {
                write!(f, "the credential helper {program} (named in {})", config.display())
            }
        }
    }
}

#[derive(Clone, PartialEq, Eq)]
enum Secret {
    Password(String),
    /// An OAuth refresh token the engine exchanges at the registry (`identitytoken`).
    IdentityToken(String),
}

/// A registry user and its secret. Its `Debug` shows the user and the source only.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    user: String,
    secret: Secret,
    source: CredentialSource,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.secret {
            Secret::Password(_) => "password",
            Secret::IdentityToken(_) => "identity token",
        };
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("secret", &format_args!("<{kind} redacted>"))
            .field("source", &self.source)
            .finish()
    }
}

impl Credentials {
    /// A user and password (or an access token used as the password).
    pub fn with_password(user: impl Into<String>, password: impl Into<String>, source: CredentialSource) -> Self {
        Credentials { user: user.into(), secret: Secret::Password(password.into()), source }
    }

    /// An identity token (`identitytoken`), with the user it belongs to (may be empty).
    pub fn with_identity_token(user: impl Into<String>, token: impl Into<String>, source: CredentialSource) -> Self {
        Credentials { user: user.into(), secret: Secret::IdentityToken(token.into()), source }
    }

    /// The user name (shown in messages).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Where they came from.
    pub fn source(&self) -> &CredentialSource {
        &self.source
    }

    /// What the engine's `X-Registry-Auth` header carries for `host`.
    pub(crate) fn docker_credentials(&self, host: &str) -> DockerCredentials {
        let serveraddress = Some(auth_key(host).to_string());
        match &self.secret {
            Secret::Password(password) => DockerCredentials {
                username: Some(self.user.clone()),
                password: Some(password.clone()),
                serveraddress,
                ..Default::default()
            },
            Secret::IdentityToken(token) => {
                DockerCredentials { identitytoken: Some(token.clone()), serveraddress, ..Default::default() }
            }
        }
    }
}

/// The lookup of a registry's credentials (see the module doc for the order).
pub struct RegistryAuth;

impl RegistryAuth {
    /// The credentials for registry `host` (`127.0.0.1:5000`, `ghcr.io`), `None` when neither
    /// the environment nor the Docker config file has any (anonymous access). `env` reads a
    /// variable (`|name| std::env::var(name).ok()`); it also provides `DOCKER_CONFIG`, `HOME`
    /// and the `PATH` helpers are found on. An empty variable counts as unset.
    pub fn for_registry(
        host: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Credentials>, RegistryError> {
        let var = |name: &str| env(name).filter(|value| !value.is_empty());
        match (var(USERNAME_VAR), var(PASSWORD_VAR)) {
            (Some(user), Some(password)) => {
                return Ok(Some(Credentials::with_password(user, password, CredentialSource::Environment)));
            }
            (Some(_), None) => return Err(RegistryError::HalfCredentials { set: USERNAME_VAR, missing: PASSWORD_VAR }),
            (None, Some(_)) => return Err(RegistryError::HalfCredentials { set: PASSWORD_VAR, missing: USERNAME_VAR }),
            (None, None) => {}
        }
        let Some(path) = config_path(&var) else { return Ok(None) };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(RegistryError::ConfigRead { path, source }),
        };
        // An empty file is no configuration, as for the CLI.
        if text.trim().is_empty() {
            return Ok(None);
        }
        // Parsed as a `Value` first: its errors are positions only, never quoted content.
        let config: Value =
            serde_json::from_str(&text).map_err(|source| RegistryError::ConfigSyntax { path: path.clone(), source })?;
        let key = auth_key(host);
        let file = ConfigFile { path: &path, host, key, config: &config };
        match file.helper()? {
            Some(helper) => helper::get(&helper, key, host, &path, &var),
            None => file.auths_entry(),
        }
    }
}

/// `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json` (none without either).
fn config_path(var: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(dir) = var("DOCKER_CONFIG") {
        return Some(Path::new(&dir).join("config.json"));
    }
    var("HOME").map(|home| Path::new(&home).join(".docker").join("config.json"))
}

/// One parsed Docker config file, looked at for one registry.
struct ConfigFile<'a> {
    path: &'a Path,
    host: &'a str,
    /// `host`, or Docker Hub's URL key.
    key: &'a str,
    config: &'a Value,
}

impl ConfigFile<'_> {
    fn problem(&self, problem: impl Into<String>) -> RegistryError {
        RegistryError::ConfigEntry {
            path: self.path.to_path_buf(),
            host: self.host.to_string(),
            problem: problem.into(),
        }
    }

    /// The object at `field` of the top level, if any.
    fn section(&self, field: &str) -> Result<Option<&Map<String, Value>>, RegistryError> {
        match self.config.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(map)) => Ok(Some(map)),
            Some(_) => Err(self.problem(format!("`{field}` is not an object"))),
        }
    }

    /// The entry of `map` for this registry: the exact key, else a key naming the same host
    /// (`https://host`, `http://host/v1/`), as the CLI matches legacy keys.
    fn entry<'m>(&self, map: &'m Map<String, Value>) -> Option<(&'m String, &'m Value)> {
        map.get_key_value(self.key).or_else(|| map.iter().find(|(key, _)| key_host(key) == self.host))
    }

    /// The helper for this registry: `credHelpers.<host>`, else `credsStore`.
    fn helper(&self) -> Result<Option<String>, RegistryError> {
        if let Some(helpers) = self.section("credHelpers")?
            && let Some((key, name)) = self.entry(helpers)
        {
            return match name {
                Value::String(name) if !name.is_empty() => Ok(Some(name.clone())),
                _ => Err(self.problem(format!("`credHelpers.{key}` is not a helper name"))),
            };
        }
        match self.config.get("credsStore") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(name)) if name.is_empty() => Ok(None),
            Some(Value::String(name)) => Ok(Some(name.clone())),
            Some(_) => Err(self.problem("`credsStore` is not a helper name")),
        }
    }

    /// The `auths` entry: `auth` (base64 `user:password`), or `username` and `password`, or
    /// `identitytoken`. An entry with none of these (as `docker login` leaves with a
    /// helper) means no credentials.
    fn auths_entry(&self) -> Result<Option<Credentials>, RegistryError> {
        let Some(auths) = self.section("auths")? else { return Ok(None) };
        let Some((key, entry)) = self.entry(auths) else { return Ok(None) };
        let Value::Object(entry) = entry else {
            return Err(self.problem(format!("`auths.{key}` is not an object")));
        };
        let field = |name: &str| -> Result<Option<String>, RegistryError> {
            match entry.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if s.is_empty() => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(self.problem(format!("`auths.{key}.{name}` is not a string"))),
            }
        };
        let source = CredentialSource::File { path: self.path.to_path_buf() };
        let (mut user, mut password) = (field("username")?, field("password")?);
        if let Some(auth) = field("auth")? {
            let decoded = BASE64
                .decode(auth.trim())
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(|| self.problem(format!("`auths.{key}.auth` is not base64 of user:password")))?;
            let (u, p) = decoded
                .split_once(':')
                .ok_or_else(|| self.problem(format!("`auths.{key}.auth` decodes to no user:password pair")))?;
            (user, password) = (Some(u.to_string()), Some(p.to_string()).filter(|p| !p.is_empty()));
        }
        if let Some(token) = field("identitytoken")? {
            return Ok(Some(Credentials::with_identity_token(user.unwrap_or_default(), token, source)));
        }
        match (user, password) {
            (Some(user), Some(password)) if !user.is_empty() => {
                Ok(Some(Credentials::with_password(user, password, source)))
            }
            (None, None) => Ok(None),
            (Some(user), None) => Err(self.problem(format!("`auths.{key}` has user {user} but no password"))),
            _ => Err(self.problem(format!("`auths.{key}` has a password but no user"))),
        }
    }
}

/// The `.dockerconfigjson` body of a `kubernetes.io/dockerconfigjson` Secret (an
/// imagePullSecret) granting `credentials` for registry `host`:
/// `{"auths":{"HOST":{"username":…,"password":…,"auth":base64("user:password")}}}`.
/// The kubelet uses user and password only, so an identity token is refused.
pub fn docker_config_json(host: &str, credentials: &Credentials) -> Result<String, RegistryError> {
    let Secret::Password(password) = &credentials.secret else {
        return Err(RegistryError::TokenInPullSecret { host: host.to_string(), origin: credentials.source.clone() });
    };
    let user = &credentials.user;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let entry = serde_json::json!({ "username": user, "password": password, "auth": auth });
    let body = serde_json::json!({ "auths": { auth_key(host): entry } });
    Ok(body.to_string())
}
