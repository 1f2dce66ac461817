//! Image references as the registry code needs them: the host of a registry prefix, a local
//! `repository:tag` split in two, and the key credentials are filed under (the Docker CLI's
//! rules, so `docker login` and rivetctl agree).

use super::RegistryError;

/// Docker Hub's key in config files and credential helpers, as the CLI writes it.
pub(crate) const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// Whether `component` (the text before the first `/`) names a registry host rather than a
/// namespace, by the Docker CLI's rule: it has a `.` or a `:`, or is `localhost`.
fn is_host(component: &str) -> bool {
    component.contains('.') || component.contains(':') || component == "localhost"
}

/// The registry host of a registry prefix or image reference: `127.0.0.1:5000/rivetos` →
/// `127.0.0.1:5000`, `ghcr.io/org/agent:v1` → `ghcr.io`; a prefix that names no host
/// (`philbert440`, `philbert440/agent`) is on Docker Hub, `docker.io`.
pub fn registry_host(reference: &str) -> &str {
    let first = reference.split('/').next().unwrap_or_default();
    if is_host(first) { first } else { "docker.io" }
}

/// The key credentials for `host` are filed under: the host itself, Docker Hub's URL for it.
pub(crate) fn auth_key(host: &str) -> &str {
    match host {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB_KEY,
        other => other,
    }
}

/// The host a config-file key names, as the CLI's `ConvertToHostname`: the scheme and any
/// path removed (`https://127.0.0.1:5000/v2/` → `127.0.0.1:5000`).
pub(crate) fn key_host(key: &str) -> &str {
    let rest = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
    rest.split('/').next().unwrap_or_default()
}

/// A local image reference split into repository and tag (`rivetos-agent:abc123` →
/// `("rivetos-agent", "abc123")`). The tag is required, and the repository must name no
/// registry: it is pushed under the configured one.
pub(crate) fn split_local(local: &str) -> Result<(&str, &str), RegistryError> {
    let bad = |problem| Err(RegistryError::Reference { reference: local.to_string(), problem });
    if local.contains('@') {
        return bad("is pinned by digest: push a repository:tag");
    }
    let Some((repository, tag)) = local.rsplit_once(':').filter(|(_, tag)| !tag.contains('/')) else {
        return bad("has no tag");
    };
    if repository.is_empty() || tag.is_empty() {
        return bad("has an empty repository or tag");
    }
    if let Some((first, _)) = repository.split_once('/')
        && is_host(first)
    {
        return bad("already names a registry");
    }
    Ok((repository, tag))
}

/// The repository part of a pushed or pinned reference (`h:5000/r/agent:t@sha256:…` →
/// `h:5000/r/agent`), and its tag if it has one.
pub(crate) fn split_remote(reference: &str) -> (&str, Option<&str>) {
    let named = reference.split_once('@').map_or(reference, |(named, _)| named);
    match named.rsplit_once(':') {
        Some((repository, tag)) if !tag.contains('/') => (repository, Some(tag)),
        _ => (named, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_follow_the_docker_cli() {
        for (reference, host) in [
            ("127.0.0.1:5000/rivetos", "127.0.0.1:5000"),
            ("127.0.0.1:5000", "127.0.0.1:5000"),
            ("ghcr.io/org/agent:v1", "ghcr.io"),
            ("localhost/agent", "localhost"),
            ("philbert440", "docker.io"),
            ("philbert440/agent:v1", "docker.io"),
        ] {
            assert_eq!(registry_host(reference), host, "{reference}");
        }
        assert_eq!(auth_key("docker.io"), DOCKER_HUB_KEY);
        assert_eq!(key_host("https://127.0.0.1:5000/v2/"), "127.0.0.1:5000");
        assert_eq!(key_host("http://ghcr.io"), "ghcr.io");
    }

    #[test]
    fn local_references_split_or_fail() {
        assert_eq!(split_local("rivetos-agent:abc").unwrap(), ("rivetos-agent", "abc"));
        assert_eq!(split_local("rivetos/agent:abc").unwrap(), ("rivetos/agent", "abc"));
        for bad in ["rivetos-agent", "ghcr.io/x/agent:v1", "localhost:5000/agent", "a@sha256:00", ":t", "a:"] {
            assert!(matches!(split_local(bad), Err(RegistryError::Reference { .. })), "{bad}");
        }
        assert_eq!(split_remote("h:5000/r/agent:t@sha256:ab"), ("h:5000/r/agent", Some("t")));
        assert_eq!(split_remote("h:5000/r/agent@sha256:ab"), ("h:5000/r/agent", None));
    }
}
