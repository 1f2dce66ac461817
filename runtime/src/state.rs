//! rivetctl's own files for a deployment: the local lock and build logs, in `.rivetctl/`
//! next to the config (or `RIVETCTL_STATE_DIR`). The rollout journal and the rollback
//! history are on the target (`update::journal`, `update::history`). Nothing here is
//! needed to know what is deployed: that is read from the target itself.

use std::path::PathBuf;

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
