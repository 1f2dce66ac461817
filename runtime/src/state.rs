//! rivetctl's own files for a deployment: locks, journals, the rollback history and build
//! logs, in `.rivetctl/` next to the config (or `RIVETCTL_STATE_DIR`). Nothing here is
//! needed to know what is deployed: that is read from the target itself.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::project::Project;

/// The state directory of a project.
pub fn dir(project: &Project) -> PathBuf {
    std::env::var_os("RIVETCTL_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| project.dir.join(".rivetctl"))
        .join(&project.config.name)
}

/// Where build logs go.
pub fn logs(project: &Project) -> PathBuf {
    dir(project).join("logs")
}

/// Writes `contents` to `path` atomically (a temporary file beside it, fsync, rename, fsync
/// of the directory): a reader, or a crash, sees the old file or the new one, never half.
pub fn write_atomic(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let mut file = fs::File::create(&partial).with_context(|| format!("cannot write {}", partial.display()))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", partial.display()))?;
    fs::rename(&partial, path).with_context(|| format!("cannot write {}", path.display()))?;
    if let Ok(handle) = fs::File::open(dir) {
        let _ = handle.sync_all();
    }
    Ok(())
}
