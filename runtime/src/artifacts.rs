//! Writing rendered artifacts to a directory: secret-bearing files 0600, the rest 0644.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::Context as _;
use targets::render::Artifact;

/// Writes every artifact under `dir`, replacing files atomically (write, then rename; not
/// fsynced: they are rendered again at will, unlike the rollout journal).
pub fn write(dir: &Path, artifacts: &[Artifact]) -> anyhow::Result<()> {
    for artifact in artifacts {
        let path = dir.join(&artifact.path);
        let parent = path.parent().unwrap_or(dir);
        fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        let mode = if artifact.secret { 0o600 } else { 0o644 };
        let partial = path.with_extension("rivetctl-partial");
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&partial)
            .with_context(|| format!("cannot write {}", partial.display()))?;
        // The mode given to open() only applies to new files.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(artifact.contents.as_bytes()).with_context(|| format!("cannot write {}", partial.display()))?;
        fs::rename(&partial, &path).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
