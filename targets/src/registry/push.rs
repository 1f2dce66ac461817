//! Pushing a local image to a registry through the engine, asking the registry for a tag's
//! digest, and pulling by digest on a node told to pull.
//!
//! The engine reports registry failures as text (in the progress stream, or in an API
//! error). They are classified by the messages of the engine's registry client, which are
//! stable across versions: 401/denied messages are [`RegistryError::Denied`], failed dials
//! [`RegistryError::Unreachable`], anything else the operation's own variant.
//!
//! The digest of a push is the one the engine reports when the manifest is stored (its
//! `<tag>: digest: sha256:… size: N` line; bollard's `PushImageInfo` drops the `aux` record
//! that carries the same digest), else the image's repo digest for the registry.

use bollard::errors::Error as DockerError;
use bollard::query_parameters::{CreateImageOptionsBuilder, PushImageOptionsBuilder, TagImageOptionsBuilder};
use futures_util::StreamExt;

use super::reference::{registry_host, split_local, split_remote};
use super::{Credentials, RegistryError};
use crate::docker::Engine;

/// What a push produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// `<registry>/<repo>:<tag>`.
    pub reference: String,
    /// The manifest digest the registry holds, `sha256:<64 hex>`.
    pub digest: String,
    /// `<registry>/<repo>:<tag>@sha256:…`, as manifests name the image.
    pub pinned: String,
}

/// Tags the local image `local` (`rivetos-agent:abc123`) as `<registry>/<repo>:<tag>` under
/// the registry prefix `registry` (`127.0.0.1:5000/rivetos`, `ghcr.io/org`) and pushes it,
/// reporting each progress line to `events`. Pushing what the registry has already sends
/// no layers; callers that want to skip even that ask [`remote_digest`] first.
pub async fn push(
    engine: &Engine,
    local: &str,
    registry: &str,
    credentials: Option<&Credentials>,
    events: &(dyn Fn(&str) + Sync),
) -> Result<Pushed, RegistryError> {
    let (repository, tag) = split_local(local)?;
    let prefix = registry.trim_end_matches('/');
    if prefix.is_empty() {
        return Err(RegistryError::Reference { reference: registry.to_string(), problem: "is no registry prefix" });
    }
    let host = registry_host(prefix);
    let remote = format!("{prefix}/{repository}");
    let reference = format!("{remote}:{tag}");
    let tagging = TagImageOptionsBuilder::default().repo(&remote).tag(tag).build();
    if let Err(source) = engine.call().tag_image(local, Some(tagging)).await {
        if status_of(&source) == Some(404) {
            return Err(RegistryError::LocalMissing { image: local.to_string(), engine: engine.address.clone() });
        }
        return Err(RegistryError::Tag {
            image: local.to_string(),
            target: reference,
            engine: engine.address.clone(),
            source: Box::new(source),
        });
    }
    let options = PushImageOptionsBuilder::default().tag(tag).build();
    let docker_credentials = credentials.map(|c| c.docker_credentials(host));
    let mut stream = engine.call().push_image(&remote, Some(options), docker_credentials);
    let mut digest = None;
    let mut last = String::new();
    while let Some(item) = stream.next().await {
        let info = item.map_err(|source| {
            classify(source, engine, host, credentials, |source| RegistryError::Push {
                reference: reference.clone(),
                source,
            })
        })?;
        let Some(status) = info.status else { continue };
        if let Some(found) = reported_digest(&status) {
            digest = Some(found.to_string());
        }
        if status != last {
            events(&status);
            last = status;
        }
    }
    let digest = match digest {
        Some(digest) => digest,
        None => repo_digest(engine, &reference, &remote)
            .await
            .ok_or_else(|| RegistryError::NoDigest { reference: reference.clone(), registry: host.to_string() })?,
    };
    let pinned = format!("{reference}@{digest}");
    Ok(Pushed { reference, digest, pinned })
}

/// Where [`ensure_pushed`] found an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ensured {
    /// The registry held the tag already (`<registry>/<repo>:<tag>@sha256:…`).
    Present(String),
    /// Pushed now.
    Pushed(Pushed),
}

impl Ensured {
    /// The pinned reference, `<registry>/<repo>:<tag>@sha256:…`.
    pub fn pinned(&self) -> &str {
        match self {
            Ensured::Present(pinned) => pinned,
            Ensured::Pushed(pushed) => &pushed.pinned,
        }
    }

    /// What a push step reports: `in the registry already (sha256:…)` or `pushed <pinned>`.
    pub fn detail(&self) -> String {
        match self {
            Ensured::Present(pinned) => {
                format!("in the registry already ({})", pinned.rsplit_once('@').map_or(pinned.as_str(), |(_, d)| d))
            }
            Ensured::Pushed(pushed) => format!("pushed {}", pushed.pinned),
        }
    }
}

/// Pushes `local` under `registry` unless the registry holds its tag already: tags are
/// content hashes, so a tag the registry has holds this very image, and it is not pushed
/// again (not even to find that every layer is there).
pub async fn ensure_pushed(
    engine: &Engine,
    local: &str,
    registry: &str,
    credentials: Option<&Credentials>,
    events: &(dyn Fn(&str) + Sync),
) -> Result<Ensured, RegistryError> {
    let remote = format!("{}/{local}", registry.trim_end_matches('/'));
    if let Ok(Some(digest)) = remote_digest(engine, &remote, credentials).await {
        return Ok(Ensured::Present(format!("{remote}@{digest}")));
    }
    push(engine, local, registry, credentials, events).await.map(Ensured::Pushed)
}

/// The digest the registry holds for `reference` (`<registry>/<repo>:<tag>`), `None` when
/// it has no such tag: so an image pushed from another machine is not pushed again. Asks
/// through the engine (`/distribution/{name}/json`), which downloads no layer.
pub async fn remote_digest(
    engine: &Engine,
    reference: &str,
    credentials: Option<&Credentials>,
) -> Result<Option<String>, RegistryError> {
    let host = registry_host(reference);
    let docker_credentials = credentials.map(|c| c.docker_credentials(host));
    match engine.call().inspect_registry_image(reference, docker_credentials).await {
        Ok(inspect) => match inspect.descriptor.digest {
            Some(digest) => Ok(Some(digest)),
            None => Err(RegistryError::NoDigest { reference: reference.to_string(), registry: host.to_string() }),
        },
        // "manifest unknown" (no such tag) and "name unknown" (no such repository).
        Err(source) if status_of(&source) == Some(404) => Ok(None),
        Err(source) => Err(classify(source, engine, host, credentials, |source| RegistryError::Inspect {
            reference: reference.to_string(),
            registry: host.to_string(),
            source,
        })),
    }
}

/// Makes the engine hold `pinned` (`<registry>/<repo>:<tag>@sha256:…`), pulling it by
/// digest unless it has it already, and tags it `<registry>/<repo>:<tag>` (a pull by digest
/// applies no tag). Idempotent: a second call makes no registry request.
pub async fn pull(engine: &Engine, pinned: &str, credentials: Option<&Credentials>) -> Result<(), RegistryError> {
    let host = registry_host(pinned);
    if engine.call().inspect_image(pinned).await.is_err() {
        let options = CreateImageOptionsBuilder::default().from_image(pinned).build();
        let docker_credentials = credentials.map(|c| c.docker_credentials(host));
        let mut stream = engine.call().create_image(Some(options), None, docker_credentials);
        while let Some(item) = stream.next().await {
            item.map_err(|source| {
                classify(source, engine, host, credentials, |source| RegistryError::Pull {
                    reference: pinned.to_string(),
                    source,
                })
            })?;
        }
        if engine.call().inspect_image(pinned).await.is_err() {
            return Err(RegistryError::PulledMissing { reference: pinned.to_string(), engine: engine.address.clone() });
        }
    }
    if let (repository, Some(tag)) = split_remote(pinned) {
        let tagging = TagImageOptionsBuilder::default().repo(repository).tag(tag).build();
        engine.call().tag_image(pinned, Some(tagging)).await.map_err(|source| RegistryError::Tag {
            image: pinned.to_string(),
            target: format!("{repository}:{tag}"),
            engine: engine.address.clone(),
            source: Box::new(source),
        })?;
    }
    Ok(())
}

/// The HTTP status of an engine API error.
fn status_of(error: &DockerError) -> Option<u16> {
    match error {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// Denied, unreachable, or `other` (the operation's own variant).
fn classify(
    source: DockerError,
    engine: &Engine,
    host: &str,
    credentials: Option<&Credentials>,
    other: impl FnOnce(Box<DockerError>) -> RegistryError,
) -> RegistryError {
    let message = match &source {
        DockerError::DockerStreamError { error } => error.to_lowercase(),
        DockerError::DockerResponseServerError { message, .. } => message.to_lowercase(),
        _ => return other(Box::new(source)),
    };
    let status = status_of(&source);
    if matches!(status, Some(401 | 403)) || is_denial(&message) {
        return RegistryError::Denied {
            registry: host.to_string(),
            user: credentials.map(|c| c.user().to_string()),
            origin: credentials.map(|c| c.source().clone()),
            source: Box::new(source),
        };
    }
    if is_unreachable(&message) {
        return RegistryError::Unreachable {
            registry: host.to_string(),
            engine: engine.address.clone(),
            source: Box::new(source),
        };
    }
    other(Box::new(source))
}

/// Messages of the engine's registry client for a refused login or access.
fn is_denial(message: &str) -> bool {
    ["unauthorized", "denied", "authentication required", "no basic auth credentials", "401 unauthorized"]
        .iter()
        .any(|m| message.contains(m))
}

/// Messages of Go's dialer: nothing answered at the address.
fn is_unreachable(message: &str) -> bool {
    ["dial tcp", "connection refused", "no such host", "i/o timeout", "network is unreachable", "no route to host"]
        .iter()
        .any(|m| message.contains(m))
}

/// The digest in the engine's `<tag>: digest: sha256:<hex> size: <n>` status line.
fn reported_digest(status: &str) -> Option<&str> {
    let (_, rest) = status.split_once("digest: ")?;
    let digest = rest.split_whitespace().next()?;
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(digest)
}

/// The digest of `reference` among the image's repo digests for `remote` (the repository).
async fn repo_digest(engine: &Engine, reference: &str, remote: &str) -> Option<String> {
    let image = engine.call().inspect_image(reference).await.ok()?;
    let prefix = format!("{remote}@");
    image.repo_digests?.iter().find_map(|d| d.strip_prefix(&prefix).map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engines_digest_line_is_read() {
        let hex = "415d5c319c724cf38e2f151f20914c37472bde1877ea53deefec9842ea10624e";
        let line = format!("one: digest: sha256:{hex} size: 528");
        assert_eq!(reported_digest(&line), Some(format!("sha256:{hex}").as_str()));
        for other in ["Preparing", "Pushed", "one: digest: sha256:abc size: 1", "digest: md5:00"] {
            assert_eq!(reported_digest(other), None, "{other}");
        }
    }

    #[test]
    fn engine_messages_are_classified() {
        // As Engine 20.10 words them (measured against distribution 2.8).
        assert!(is_denial("unauthorized: authentication required"));
        assert!(is_denial(
            &"Head \"http://127.0.0.1:5000/v2/r/manifests/t\": no basic auth credentials".to_lowercase()
        ));
        assert!(is_denial("denied: requested access to the resource is denied"));
        let refused = "get \"http://127.0.0.1:45999/v2/\": dial tcp 127.0.0.1:45999: connect: connection refused";
        assert!(is_unreachable(refused) && !is_denial(refused));
        assert!(!is_denial("manifest unknown: manifest unknown") && !is_unreachable("manifest unknown"));
    }
}
