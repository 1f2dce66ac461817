//! Build contexts: the files an image is built from, their content hash, and the tar
//! stream the engine receives.
//!
//! The hash covers every input that can change the image: each context file's path,
//! executable bit and bytes (after the ignore rules), the Dockerfile's path and bytes, and
//! the build arguments. Equal hash ⇒ equal inputs ⇒ no rebuild.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::ignore::{IgnoreRules, PatternError};

/// rivetctl's state directory, next to the config (which may be the source root).
pub const STATE_DIR: &str = ".rivetctl";

/// A scanned context.
#[derive(Debug, Clone)]
pub struct Context {
    pub root: PathBuf,
    /// Dockerfile path relative to the root.
    pub dockerfile: String,
    /// Included files, relative `/`-separated paths, sorted.
    pub files: Vec<ContextFile>,
}

/// One file of a context.
#[derive(Debug, Clone)]
pub struct ContextFile {
    pub path: String,
    pub executable: bool,
    /// Symlinks are sent as links, with their target.
    pub link: Option<String>,
}

/// Why a context could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("the Dockerfile {path} does not exist")]
    MissingDockerfile { path: PathBuf },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid ignore file {path}")]
    Ignore {
        path: PathBuf,
        #[source]
        source: PatternError,
    },
}

fn read_err(path: &Path) -> impl FnOnce(std::io::Error) -> ContextError + '_ {
    move |source| ContextError::Read { path: path.to_path_buf(), source }
}

/// The ignore rules for a Dockerfile: `<Dockerfile>.dockerignore` if present, else the
/// root's `.dockerignore`, else none.
fn rules_for(root: &Path, dockerfile: &str) -> Result<IgnoreRules, ContextError> {
    for candidate in [root.join(format!("{dockerfile}.dockerignore")), root.join(".dockerignore")] {
        match fs::read_to_string(&candidate) {
            Ok(text) => {
                return IgnoreRules::parse(&text).map_err(|source| ContextError::Ignore { path: candidate, source });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(ContextError::Read { path: candidate, source });
            }
        }
    }
    Ok(IgnoreRules::default())
}

/// Lists the files of the context of `dockerfile` under `root`.
pub fn scan(root: &Path, dockerfile: &str) -> Result<Context, ContextError> {
    let dockerfile_path = root.join(dockerfile);
    if !dockerfile_path.is_file() {
        return Err(ContextError::MissingDockerfile { path: dockerfile_path });
    }
    let rules = rules_for(root, dockerfile)?;
    let mut files = Vec::new();
    let mut walker = walkdir::WalkDir::new(root).follow_links(false).sort_by_file_name().into_iter();
    while let Some(entry) = walker.next() {
        let entry = entry.map_err(|e| {
            let path = e.path().map(Path::to_path_buf).unwrap_or_else(|| root.to_path_buf());
            ContextError::Read { path, source: e.into() }
        })?;
        let Ok(relative) = entry.path().strip_prefix(root) else {
            continue;
        };
        let rel = relative.to_string_lossy().replace('\\', "/");
        if rel.is_empty() {
            continue;
        }
        // rivetctl's own state (locks, logs, journals) is never a build input.
        if rel == STATE_DIR || rel.starts_with(&format!("{STATE_DIR}/")) {
            walker.skip_current_dir();
            continue;
        }
        let always = rel == dockerfile || rel == ".dockerignore";
        if !always && rules.is_excluded(&rel) {
            // An exception (`!pattern`) may re-include something below: then keep walking.
            if entry.file_type().is_dir() && !rules.has_exceptions() {
                walker.skip_current_dir();
            }
            continue;
        }
        let file_type = entry.file_type();
        if file_type.is_symlink() {
            let target = fs::read_link(entry.path()).map_err(read_err(entry.path()))?;
            files.push(ContextFile { path: rel, executable: false, link: Some(target.to_string_lossy().into_owned()) });
        } else if file_type.is_file() {
            let mode = entry
                .metadata()
                .map_err(|e| ContextError::Read { path: entry.path().to_path_buf(), source: e.into() })?
                .permissions()
                .mode();
            files.push(ContextFile { path: rel, executable: mode & 0o111 != 0, link: None });
        }
    }
    Ok(Context { root: root.to_path_buf(), dockerfile: dockerfile.to_string(), files })
}

/// The content hash of a context plus build arguments (lower-case hex SHA-256).
pub fn content_hash(context: &Context, build_args: &BTreeMap<String, String>) -> Result<String, ContextError> {
    let mut hasher = Sha256::new();
    hasher.update(b"rivetctl-context-v1\0");
    hasher.update(context.dockerfile.as_bytes());
    hasher.update(b"\0");
    for (key, value) in build_args {
        hasher.update(format!("arg\0{key}\0{value}\0").as_bytes());
    }
    let mut buffer = vec![0u8; 64 * 1024];
    for file in &context.files {
        hasher.update(format!("file\0{}\0{}\0", file.path, u8::from(file.executable)).as_bytes());
        if let Some(target) = &file.link {
            hasher.update(format!("link\0{target}\0").as_bytes());
            continue;
        }
        let path = context.root.join(&file.path);
        let mut handle = fs::File::open(&path).map_err(read_err(&path))?;
        let mut file_hasher = Sha256::new();
        loop {
            let n = handle.read(&mut buffer).map_err(read_err(&path))?;
            if n == 0 {
                break;
            }
            file_hasher.update(&buffer[..n]);
        }
        hasher.update(file_hasher.finalize());
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The context as an uncompressed tar stream, with stable metadata (owner 0, fixed mtime),
/// so equal contexts give equal bytes.
pub fn tar(context: &Context) -> Result<Vec<u8>, ContextError> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.mode(tar::HeaderMode::Deterministic);
    for file in &context.files {
        let path = context.root.join(&file.path);
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        if let Some(target) = &file.link {
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            header.set_mode(0o777);
            builder.append_link(&mut header, &file.path, target).map_err(read_err(&path))?;
            continue;
        }
        let bytes = fs::read(&path).map_err(read_err(&path))?;
        header.set_size(bytes.len() as u64);
        header.set_mode(if file.executable { 0o755 } else { 0o644 });
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, &file.path, bytes.as_slice()).map_err(read_err(&path))?;
    }
    builder.into_inner().map_err(read_err(&context.root))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, path: &str, text: &str) {
        let full = root.join(path);
        fs::create_dir_all(full.parent().unwrap()).unwrap();
        fs::write(full, text).unwrap();
    }

    #[test]
    fn hash_follows_inputs_and_ignores_excluded_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "Dockerfile", "FROM scratch\nCOPY app /app\n");
        write(root, "app", "v1");
        write(root, ".dockerignore", "docs\n");
        write(root, "docs/readme.md", "one");
        let args = BTreeMap::new();
        let first = content_hash(&scan(root, "Dockerfile").unwrap(), &args).unwrap();
        write(root, "docs/readme.md", "two");
        assert_eq!(
            first,
            content_hash(&scan(root, "Dockerfile").unwrap(), &args).unwrap(),
            "ignored files do not count"
        );
        write(root, "app", "v2");
        let second = content_hash(&scan(root, "Dockerfile").unwrap(), &args).unwrap();
        assert_ne!(first, second, "context files count");
        let with_arg = BTreeMap::from([("A".to_string(), "1".to_string())]);
        assert_ne!(second, content_hash(&scan(root, "Dockerfile").unwrap(), &with_arg).unwrap(), "build args count");
    }

    #[test]
    fn per_dockerfile_ignore_files_take_precedence() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "a/Dockerfile", "FROM scratch\n");
        write(root, "a/Dockerfile.dockerignore", "*\n!a\n");
        write(root, "a/x", "1");
        write(root, "b/y", "2");
        let files: Vec<String> = scan(root, "a/Dockerfile").unwrap().files.into_iter().map(|f| f.path).collect();
        assert_eq!(files, ["a/Dockerfile", "a/Dockerfile.dockerignore", "a/x"]);
    }

    #[test]
    fn tar_is_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "Dockerfile", "FROM scratch\n");
        write(dir.path(), "f", "x");
        let context = scan(dir.path(), "Dockerfile").unwrap();
        assert_eq!(tar(&context).unwrap(), tar(&context).unwrap());
    }
}
