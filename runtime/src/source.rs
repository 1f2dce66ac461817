//! Where images come from: the source tree (a local checkout, or a git URL and ref
//! resolved to a commit), its Dockerfiles, and the content-addressed tags they get.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;
use orchestrator::digest::sha256_hex;
use orchestrator::fleet::{BuildSpec, Component, ImageSpec, ResolvedImages};
use targets::build::context;

use crate::exit::hinted;
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

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
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
fn checkout_git(url: &str, git_ref: &str) -> anyhow::Result<Source> {
    let base = cache_dir().join("git").join(&sha256_hex(url.as_bytes())[..16]);
    let mirror = base.join("mirror.git");
    let run = |args: &[&str], what: &str| -> anyhow::Result<String> {
        let out = Command::new("git").args(args).output().with_context(|| format!("cannot run git to {what}"))?;
        if !out.status.success() {
            return Err(hinted(
                format!("git failed to {what}: {}", String::from_utf8_lossy(&out.stderr).trim()),
                format!("check deployment.source.git ({url}) and deployment.source.ref ({git_ref})"),
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    std::fs::create_dir_all(&base).with_context(|| format!("cannot create {}", base.display()))?;
    let mirror_s = mirror.to_string_lossy().to_string();
    if !mirror.exists() {
        run(&["clone", "--quiet", "--mirror", url, &mirror_s], "clone the source")?;
    } else {
        run(&["--git-dir", &mirror_s, "fetch", "--quiet", "--prune", "origin"], "fetch the source")?;
    }
    let commit = run(&["--git-dir", &mirror_s, "rev-parse", &format!("{git_ref}^{{commit}}")], "resolve the ref")?;
    let tree = base.join("trees").join(&commit);
    if !tree.exists() {
        let partial = base.join("trees").join(format!("{commit}.partial"));
        let _ = std::fs::remove_dir_all(&partial);
        std::fs::create_dir_all(&partial)?;
        let archive = Command::new("git").args(["--git-dir", &mirror_s, "archive", &commit]).output()?;
        if !archive.status.success() {
            anyhow::bail!("git archive {commit} failed: {}", String::from_utf8_lossy(&archive.stderr));
        }
        tar::Archive::new(archive.stdout.as_slice()).unpack(&partial).context("cannot unpack the source")?;
        std::fs::rename(&partial, &tree)?;
    }
    let version = package_version(&tree);
    Ok(Source { root: tree, revision: Some(commit), version })
}

/// Finds the source tree of a project.
pub fn locate(project: &Project) -> anyhow::Result<Source> {
    let settings = &project.config.raw.deployment.source;
    if let Some(url) = &settings.git {
        return checkout_git(url, &settings.git_ref);
    }
    let root = project.dir.join(&settings.path);
    let root = root.canonicalize().map_err(|_| {
        hinted(
            format!("the source directory {} does not exist", root.display()),
            "set deployment.source.path (relative to the config) or deployment.source.git",
        )
    })?;
    let revision = in_git_tree(&root).then(|| git(&root, &["rev-parse", "HEAD"])).flatten().map(|commit| {
        let dirty =
            git(&root, &["status", "--porcelain", "--untracked-files=no", "--", "."]).is_some_and(|s| !s.is_empty());
        if dirty { format!("{commit}-dirty") } else { commit }
    });
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
/// the source tree (reading the tree, building nothing).
pub fn resolve(project: &Project) -> anyhow::Result<Resolved> {
    let deployment = &project.config.raw.deployment;
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
    let source = locate(project)?;
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
