//! Finding a pod's image on the local Docker Engine, pulling it from a loopback registry.
//!
//! The engines this runs against have no way out to public registries, so an image is used
//! from the engine's store, and pulled only when its reference names a registry on this
//! machine (`127.0.0.1:5000/app:1`, `localhost:5000/app@sha256:…`). `imagePullPolicy: Always`
//! pulls only such images; for any other reference it falls back to the local store (a real
//! kubelet would fail to pull). Failures are `ErrImagePull` / `ErrImageNeverPull` messages the
//! pod status shows. `imagePullSecrets` (`kubernetes.io/dockerconfigjson` Secrets) give the
//! credentials for a registry that wants them.

use super::refs::{self, Source};
use base64::Engine as _;
use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::CreateImageOptionsBuilder;
use futures_util::TryStreamExt;
use k8s_openapi::api::core::v1::Pod;

/// An image reference split the way Docker's reference grammar splits it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ImageRef {
    /// The repository, registry host included (`127.0.0.1:5000/team/app`, `busybox`).
    pub repository: String,
    /// The tag, when one is written.
    pub tag: Option<String>,
    /// The digest, when one is written (`sha256:…`).
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses `name[:tag][@digest]`.
    pub fn parse(reference: &str) -> ImageRef {
        let (name, digest) = match reference.split_once('@') {
            Some((name, digest)) => (name, Some(digest.to_string())),
            None => (reference, None),
        };
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let (repository, tag) = match name[last_slash..].rfind(':') {
            Some(colon) => (&name[..last_slash + colon], Some(name[last_slash + colon + 1..].to_string())),
            None => (name, None),
        };
        ImageRef { repository: repository.to_string(), tag, digest }
    }

    /// The registry host, when the first path component is one (has a `.` or `:`, or is
    /// `localhost`).
    pub fn registry(&self) -> Option<&str> {
        let (first, _) = self.repository.split_once('/')?;
        (first.contains(['.', ':']) || first == "localhost").then_some(first)
    }

    /// Whether the registry is on this machine's loopback interface.
    pub fn has_loopback_registry(&self) -> bool {
        let Some(host) = self.registry() else { return false };
        let host = match host.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(v6),
            None => host.split(':').next().unwrap_or(host),
        };
        host == "localhost" || host == "::1" || host.starts_with("127.")
    }

    /// The references the local store may know the image by, most specific first.
    fn local_candidates(&self) -> Vec<String> {
        let mut candidates = Vec::new();
        if let Some(digest) = &self.digest {
            candidates.push(format!("{}@{digest}", self.repository));
            // An image loaded locally (not pulled) has no repo digest but may carry the tag.
            if let Some(tag) = &self.tag {
                candidates.push(format!("{}:{tag}", self.repository));
            }
        } else {
            candidates.push(format!("{}:{}", self.repository, self.tag.as_deref().unwrap_or("latest")));
        }
        candidates
    }
}

/// An image found or pulled: the reference to create containers from and its identity.
#[derive(Debug, Clone)]
pub(crate) struct ResolvedImage {
    /// What `docker create` is given.
    pub reference: String,
    /// `imageID` for the container status (`docker-pullable://repo@sha256:…` for pulled
    /// images, else `docker://sha256:…`, as dockershim reports them).
    pub image_id: String,
    /// The image's configured user (`Config.User`), for `runAsNonRoot` checks.
    pub user: String,
}

/// Why an image could not be had; `reason` is the container's waiting reason.
#[derive(Debug, Clone)]
pub(crate) struct ImageError {
    pub reason: &'static str,
    pub message: String,
}

/// Finds `reference` locally or pulls it (with `credentials`), following `pull_policy`
/// (`Always`, `IfNotPresent`, `Never`; the API server always fills it in).
pub(crate) async fn resolve(
    docker: &Docker,
    reference: &str,
    pull_policy: Option<&str>,
    credentials: Option<DockerCredentials>,
) -> Result<ResolvedImage, ImageError> {
    let image = ImageRef::parse(reference);
    let pullable = image.has_loopback_registry();
    let policy = pull_policy.unwrap_or("IfNotPresent");
    if policy == "Always" && pullable {
        pull(docker, &image, reference, credentials.clone()).await?;
    }
    if let Some(found) = find_local(docker, &image).await {
        return Ok(found);
    }
    if policy == "Never" {
        return Err(ImageError {
            reason: "ErrImageNeverPull",
            message: format!("Container image {reference:?} is not present with pull policy of Never"),
        });
    }
    if !pullable {
        return Err(ImageError {
            reason: "ErrImagePull",
            message: format!(
                "image {reference:?} is not in the local Docker Engine's store, and the test kubelet pulls only from \
                 registries on 127.0.0.1/localhost (build or load it first)"
            ),
        });
    }
    if policy != "Always" {
        pull(docker, &image, reference, credentials).await?;
    }
    find_local(docker, &image).await.ok_or_else(|| ImageError {
        reason: "ErrImagePull",
        message: format!("image {reference:?} was pulled but the engine does not list it under that reference"),
    })
}

async fn find_local(docker: &Docker, image: &ImageRef) -> Option<ResolvedImage> {
    for candidate in image.local_candidates() {
        let Ok(inspect) = docker.inspect_image(&candidate).await else { continue };
        let id = inspect.id.unwrap_or_default();
        let repo_digest =
            inspect.repo_digests.unwrap_or_default().into_iter().find(|d| d.starts_with(&image.repository));
        let image_id = match repo_digest {
            Some(digest) => format!("docker-pullable://{digest}"),
            None => format!("docker://{id}"),
        };
        let user = inspect.config.and_then(|config| config.user).unwrap_or_default();
        return Some(ResolvedImage { reference: candidate, image_id, user });
    }
    None
}

async fn pull(
    docker: &Docker,
    image: &ImageRef,
    reference: &str,
    credentials: Option<DockerCredentials>,
) -> Result<(), ImageError> {
    let tag = image.digest.as_deref().or(image.tag.as_deref()).unwrap_or("latest");
    let options = CreateImageOptionsBuilder::default().from_image(&image.repository).tag(tag).build();
    let pulled = docker.create_image(Some(options), None, credentials).try_collect::<Vec<_>>().await;
    pulled
        .map(drop)
        .map_err(|err| ImageError { reason: "ErrImagePull", message: format!("pulling image {reference:?}: {err}") })
}

/// The credentials the pod's `imagePullSecrets` hold for the registry of `reference`, if any.
/// A missing secret is skipped, as the kubelet does (the pull then fails without credentials).
pub(crate) async fn pull_credentials(client: &kube::Client, pod: &Pod, reference: &str) -> Option<DockerCredentials> {
    let registry = ImageRef::parse(reference).registry()?.to_string();
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    for secret in pod.spec.as_ref()?.image_pull_secrets.iter().flatten() {
        let keys = match refs::keys(client, namespace, Source::Secret, &secret.name).await {
            Ok(Some(keys)) => keys,
            Ok(None) => continue,
            Err(err) => {
                eprintln!("test-kubelet: imagePullSecrets: {err}");
                continue;
            }
        };
        let config = keys.get(".dockerconfigjson").or(keys.get(".dockercfg"));
        if let Some(found) = config.and_then(|config| credentials_in(config, &registry)) {
            return Some(found);
        }
    }
    None
}

/// The entry for `registry` in a Docker config (`{"auths": {host: {...}}}` or the older bare
/// map), from `username`/`password` or `auth` (base64 `user:password`).
fn credentials_in(config: &[u8], registry: &str) -> Option<DockerCredentials> {
    let config: serde_json::Value = serde_json::from_slice(config).ok()?;
    let auths = config.get("auths").unwrap_or(&config);
    let entry = auths.as_object()?.iter().find_map(|(host, entry)| {
        let host = host.trim_start_matches("https://").trim_start_matches("http://").trim_end_matches('/');
        (host == registry).then_some(entry)
    })?;
    let text = |key: &str| entry.get(key).and_then(|v| v.as_str()).map(str::to_string);
    let (mut username, mut password) = (text("username"), text("password"));
    if username.is_none()
        && let Some(auth) = text("auth")
        && let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(auth)
        && let Some((user, pass)) = String::from_utf8_lossy(&decoded).split_once(':')
    {
        (username, password) = (Some(user.to_string()), Some(pass.to_string()));
    }
    Some(DockerCredentials { username, password, serveraddress: Some(registry.to_string()), ..Default::default() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(reference: &str, repository: &str, tag: Option<&str>, digest: Option<&str>, loopback: bool) {
        let parsed = ImageRef::parse(reference);
        assert_eq!(parsed.repository, repository, "{reference}");
        assert_eq!(parsed.tag.as_deref(), tag, "{reference}");
        assert_eq!(parsed.digest.as_deref(), digest, "{reference}");
        assert_eq!(parsed.has_loopback_registry(), loopback, "{reference}");
    }

    #[test]
    fn references() {
        check("busybox", "busybox", None, None, false);
        check("rivetos-base:busybox", "rivetos-base", Some("busybox"), None, false);
        check("127.0.0.1:5000/app", "127.0.0.1:5000/app", None, None, true);
        check("127.0.0.1:5000/team/app:1.2", "127.0.0.1:5000/team/app", Some("1.2"), None, true);
        check("localhost:5000/app:1@sha256:ab", "localhost:5000/app", Some("1"), Some("sha256:ab"), true);
        check("localhost:5000/app@sha256:ab", "localhost:5000/app", None, Some("sha256:ab"), true);
        check("localhost/app", "localhost/app", None, None, true);
        check("[::1]:5000/app:2", "[::1]:5000/app", Some("2"), None, true);
        check("registry.example.com:443/app:2", "registry.example.com:443/app", Some("2"), None, false);
        check("ghcr.io/rivet/agent:1", "ghcr.io/rivet/agent", Some("1"), None, false);
    }

    #[test]
    fn credentials_from_docker_configs() {
        let config = br#"{"auths":{"127.0.0.1:5000":{"auth":"cml2ZXQ6czNjcmV0"},"other:1":{"username":"u"}}}"#;
        let found = credentials_in(config, "127.0.0.1:5000").expect("an entry");
        assert_eq!((found.username.as_deref(), found.password.as_deref()), (Some("rivet"), Some("s3cret")));
        let plain = br#"{"http://localhost:5000/":{"username":"a","password":"b"}}"#;
        assert_eq!(credentials_in(plain, "localhost:5000").and_then(|c| c.password).as_deref(), Some("b"));
        assert!(credentials_in(config, "127.0.0.1:6000").is_none());
    }

    #[test]
    fn local_candidates_prefer_the_digest() {
        assert_eq!(ImageRef::parse("app").local_candidates(), ["app:latest"]);
        assert_eq!(ImageRef::parse("a/b:1@sha256:x").local_candidates(), ["a/b@sha256:x", "a/b:1"]);
    }
}
