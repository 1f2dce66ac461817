//! Where images come from: the source tree (a local checkout, or a git URL and ref
//! resolved to a commit), its Dockerfiles, and the content-addressed tags they get.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use orchestrator::config::model::{Deployment, SourceSettings};
use orchestrator::digest::sha256_hex;
use orchestrator::fleet::{BuildSpec, Component, ImageSpec, ResolvedImages};
use targets::build::context;

use crate::exit::hinted;
use crate::git;
use crate::project::Project;

/// Agent Dockerfiles of RivetOS's layouts, newest first.
pub const AGENT_DOCKERFILES: &[&str] = &["infra/containers/rivetos/Dockerfile", "containers/agent/Dockerfile"];
/// The older layout's datahub Dockerfile.
pub const DATAHUB_DOCKERFILE: &str = "containers/datahub/Dockerfile";

/// The source tree images are built from.
#[derive(Debug, Clone)]
pub struct Source {
    pub root: PathBuf,
    /// A commit (with `-dirty` when the work tree has changes), or `content:<hash>`.
    pub revision: Option<String>,
    /// `version` of the tree's package.json (what a RivetOS agent reports in `/health`).
    pub version: Option<String>,
}

/// What is resolved about images, plus where to build them from.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub images: ResolvedImages,
    pub source: Option<Source>,
}

/// Whether `dir` is inside a git work tree (checked without running git).
fn in_git_tree(dir: &Path) -> bool {
    dir.ancestors().any(|d| d.join(".git").exists())
}

/// Arguments of one git command: `head` (paths), then `tail`.
fn args<'a>(head: &[&'a OsStr], tail: &[&'a str]) -> Vec<&'a OsStr> {
    head.iter().copied().chain(tail.iter().map(|arg| OsStr::new(*arg))).collect()
}

/// Runs git for `what`; a timeout is an error with a hint, a failure is `Ok` with the status.
fn git_run(args: &[&OsStr], what: &str, timeout: Duration) -> anyhow::Result<git::Finished> {
    git::run(args, timeout).map_err(|err| explain(err, what))
}

/// A git error as people read it: what was stopped, and what to do.
fn explain(err: git::GitError, what: &str) -> anyhow::Error {
    match err {
        git::GitError::TimedOut { .. } => hinted(
            format!("{err} (it was to {what})"),
            "check that the repository is reachable from this machine, or raise deployment.source.git_timeout",
        ),
        git::GitError::Spawn(_) => hinted(
            format!("cannot run git to {what}"),
            "install git, or set deployment.source.path to a checkout and leave deployment.source.git unset",
        ),
    }
}

/// The commit of a local checkout (`-dirty` when tracked files changed), if it is a git tree.
fn local_revision(root: &Path, timeout: Duration) -> anyhow::Result<Option<String>> {
    if !in_git_tree(root) {
        return Ok(None);
    }
    let in_root = [OsStr::new("-C"), root.as_os_str()];
    let head = match git::run(&args(&in_root, &["rev-parse", "HEAD"]), timeout) {
        // Without git the tree is still a source; its revision is its content hash.
        Err(git::GitError::Spawn(_)) => return Ok(None),
        other => other.map_err(|err| explain(err, "read the checkout's commit"))?,
    };
    let commit = head.text();
    if !head.status.success() || !git::is_object_id(&commit) {
        return Ok(None);
    }
    let changes = ["status", "--porcelain", "--untracked-files=no", "--", "."];
    let status = git_run(&args(&in_root, &changes), "check the checkout for changes", timeout)?;
    let dirty = status.status.success() && !status.text().is_empty();
    Ok(Some(if dirty { format!("{commit}-dirty") } else { commit }))
}

fn package_version(root: &Path) -> Option<String> {
    let text = std::fs::read_to_string(root.join("package.json")).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value.get("version")?.as_str().map(str::to_string)
}

/// The cache directory for git sources.
fn cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("rivetctl")
}

/// Fetches `url` into a mirror and extracts `git_ref`'s commit into its own directory.
/// The URL and ref are passed after `--` / `--end-of-options`, and what the ref resolves to
/// must be an object id before it reaches `git archive`.
fn checkout_git(cache: &Path, url: &str, git_ref: &str, timeout: Duration) -> anyhow::Result<Source> {
    let shown = git::redact_url(url);
    let base = cache.join("git").join(&sha256_hex(url.as_bytes())[..16]);
    let mirror = base.join("mirror.git");
    let run = |args: &[&OsStr], what: &str| -> anyhow::Result<git::Finished> {
        let done = git_run(args, what, timeout)?;
        if !done.status.success() {
            return Err(hinted(
                format!("git failed to {what}: {}", done.errors()),
                format!("check deployment.source.git ({shown}) and deployment.source.ref ({git_ref})"),
            ));
        }
        Ok(done)
    };
    std::fs::create_dir_all(&base).with_context(|| format!("cannot create {}", base.display()))?;
    let git_dir = [OsStr::new("--git-dir"), mirror.as_os_str()];
    if !mirror.exists() {
        // Cloned beside and renamed: a clone killed at its deadline leaves no half mirror.
        let partial = base.join("mirror.git.partial");
        let _ = std::fs::remove_dir_all(&partial);
        let mut clone = args(&[], &["clone", "--quiet", "--mirror", "--", url]);
        clone.push(partial.as_os_str());
        run(&clone, "clone the source")?;
        std::fs::rename(&partial, &mirror).with_context(|| format!("cannot create {}", mirror.display()))?;
    } else {
        run(&args(&git_dir, &["fetch", "--quiet", "--prune", "origin"]), "fetch the source")?;
    }
    let wanted = format!("{git_ref}^{{commit}}");
    let commit =
        run(&args(&git_dir, &["rev-parse", "--verify", "--end-of-options", &wanted]), "resolve the ref")?.text();
    if !git::is_object_id(&commit) {
        return Err(hinted(
            format!("deployment.source.ref {git_ref:?} did not resolve to a commit (git answered {commit:?})"),
            "set deployment.source.ref to a branch, tag or commit id of the repository",
        ));
    }
    let tree = base.join("trees").join(&commit);
    if !tree.exists() {
        let partial = base.join("trees").join(format!("{commit}.partial"));
        let _ = std::fs::remove_dir_all(&partial);
        std::fs::create_dir_all(&partial)?;
        let archive =
            run(&args(&git_dir, &["archive", "--format=tar", "--end-of-options", &commit]), "export the commit")?;
        tar::Archive::new(archive.stdout.as_slice()).unpack(&partial).context("cannot unpack the source")?;
        std::fs::rename(&partial, &tree)?;
    }
    let version = package_version(&tree);
    Ok(Source { root: tree, revision: Some(commit), version })
}

/// Finds the source tree of a project whose config is in `dir`. Blocking (git, files).
pub fn locate(dir: &Path, settings: &SourceSettings) -> anyhow::Result<Source> {
    let timeout = Duration::from_millis(settings.git_timeout);
    if let Some(url) = &settings.git {
        return checkout_git(&cache_dir(), url, &settings.git_ref, timeout);
    }
    let root = dir.join(&settings.path);
    let root = root.canonicalize().map_err(|_| {
        hinted(
            format!("the source directory {} does not exist", root.display()),
            "set deployment.source.path (relative to the config) or deployment.source.git",
        )
    })?;
    let revision = local_revision(&root, timeout)?;
    let version = package_version(&root);
    Ok(Source { root, revision, version })
}

fn image(
    component: Component,
    repository: &str,
    source: &Source,
    dockerfile: &str,
    build_args: BTreeMap<String, String>,
) -> anyhow::Result<ImageSpec> {
    let scanned = context::scan(&source.root, dockerfile).map_err(|err| match err {
        context::ContextError::MissingDockerfile { path } => hinted(
            format!("the {} Dockerfile {} does not exist", component.as_str(), path.display()),
            format!("set deployment.source.dockerfiles.{} (relative to {})", component.as_str(), source.root.display()),
        ),
        other => anyhow::Error::new(other),
    })?;
    let hash = context::content_hash(&scanned, &build_args)?;
    Ok(ImageSpec {
        component,
        reference: format!("{repository}:{}", &hash[..12]),
        build: Some(BuildSpec { dockerfile: dockerfile.to_string(), content_hash: hash, build_args }),
    })
}

/// Resolves the images a project runs: prebuilt references, or content-addressed tags of
/// the source tree (reading the tree, building nothing). git and hashing run on a blocking
/// thread, off the async runtime.
pub async fn resolve(project: &Project) -> anyhow::Result<Resolved> {
    let dir = project.dir.clone();
    let deployment = project.config.raw.deployment.clone();
    tokio::task::spawn_blocking(move || resolve_blocking(&dir, &deployment))
        .await
        .context("resolving the source stopped unexpectedly")?
}

/// [`resolve`], on the calling thread.
fn resolve_blocking(dir: &Path, deployment: &Deployment) -> anyhow::Result<Resolved> {
    let settings = &deployment.image;
    if !settings.build_from_source {
        let agent = ImageSpec {
            component: Component::Agent,
            reference: format!("{}/{}:{}", settings.registry, settings.agent_image, settings.tag),
            build: None,
        };
        let images = ResolvedImages { agent, datahub: None, revision: settings.tag.clone() };
        return Ok(Resolved { images, source: None });
    }
    let source = locate(dir, &deployment.source)?;
    let agent_dockerfile = match &deployment.source.dockerfiles.agent {
        Some(path) => path.clone(),
        None => AGENT_DOCKERFILES
            .iter()
            .find(|p| source.root.join(p).is_file())
            .map(|p| p.to_string())
            .ok_or_else(|| {
                hinted(
                    format!("no agent Dockerfile in {} (looked for {})", source.root.display(), AGENT_DOCKERFILES.join(", ")),
                    "set deployment.source.dockerfiles.agent, or deployment.image.build_from_source: false for prebuilt images",
                )
            })?,
    };
    let datahub_dockerfile = match &deployment.source.dockerfiles.datahub {
        Some(path) => Some(path.clone()),
        None => source.root.join(DATAHUB_DOCKERFILE).is_file().then(|| DATAHUB_DOCKERFILE.to_string()),
    };
    let mut agent_args = deployment.source.build_args.clone();
    if let Some(version) = &source.version {
        agent_args.insert("RIVETOS_VERSION".into(), version.clone());
    }
    let agent = image(Component::Agent, &settings.agent_image, &source, &agent_dockerfile, agent_args)?;
    let datahub = match datahub_dockerfile {
        Some(dockerfile) if deployment.datahub.postgres => {
            let mut args = deployment.source.build_args.clone();
            args.insert("POSTGRES_VERSION".into(), deployment.datahub.postgres_version.clone());
            Some(image(Component::Datahub, &settings.datahub_image, &source, &dockerfile, args)?)
        }
        _ => None,
    };
    let revision = source
        .revision
        .clone()
        .unwrap_or_else(|| format!("content:{}", &agent.build.as_ref().map_or("", |b| b.content_hash.as_str())[..12]));
    Ok(Resolved { images: ResolvedImages { agent, datahub, revision }, source: Some(source) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A repository with one commit holding `package.json`.
    fn repository(dir: &Path) -> String {
        let repo = dir.join("origin");
        std::fs::create_dir_all(&repo).unwrap();
        std::fs::write(repo.join("package.json"), r#"{"version": "1.2.3"}"#).unwrap();
        for command in [
            &["init", "--quiet", "--initial-branch=main"][..],
            &["add", "package.json"],
            &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "-m", "one"],
        ] {
            let done =
                git::run(&args(&[OsStr::new("-C"), repo.as_os_str()], command), Duration::from_secs(30)).unwrap();
            assert!(done.status.success(), "git {command:?}: {}", done.errors());
        }
        repo.to_string_lossy().into_owned()
    }

    #[test]
    fn a_ref_resolves_to_a_commit_whose_tree_is_exported() {
        let dir = tempfile::tempdir().unwrap();
        let url = repository(dir.path());
        let source = checkout_git(&dir.path().join("cache"), &url, "main", Duration::from_secs(60)).unwrap();
        assert!(source.revision.as_deref().is_some_and(git::is_object_id), "{source:?}");
        assert_eq!(source.version.as_deref(), Some("1.2.3"));
        assert!(source.root.join("package.json").is_file());
        // A second resolve fetches into the same mirror.
        let again = checkout_git(&dir.path().join("cache"), &url, "main", Duration::from_secs(60)).unwrap();
        assert_eq!(again.revision, source.revision);
    }

    #[test]
    fn a_ref_that_looks_like_an_option_never_reaches_git_as_one() {
        let dir = tempfile::tempdir().unwrap();
        let url = repository(dir.path());
        let written = dir.path().join("written-by-git");
        for git_ref in [format!("--output={}", written.display()), "-h".to_string()] {
            let err = checkout_git(&dir.path().join("cache"), &url, &git_ref, Duration::from_secs(60)).unwrap_err();
            assert!(format!("{err:#}").starts_with("git failed to resolve the ref"), "{git_ref}: {err:#}");
            assert!(!written.exists() && !dir.path().join(format!("{}^{{commit}}", written.display())).exists());
        }
    }

    #[test]
    fn a_url_that_looks_like_an_option_is_a_repository_name_to_git() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("upload-pack-ran");
        let url = format!("--upload-pack=touch {}", marker.display());
        let err = checkout_git(&dir.path().join("cache"), &url, "main", Duration::from_secs(60)).unwrap_err();
        // git took the whole value for the repository's name, not for an option.
        assert!(format!("{err:#}").contains(&format!("repository '{url}' does not exist")), "{err:#}");
        assert!(!marker.exists(), "git ran the upload-pack command");
    }
}
