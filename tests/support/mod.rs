//! Helpers shared by the end-to-end tests: running the binary, golden files, Docker.

#![allow(dead_code)]

#[path = "../../orchestrator/tests/support/golden.rs"]
mod golden_files;

pub mod base_image;
pub mod docker;
pub mod kube;
pub mod mesh;
pub mod pve;
pub mod state;
pub mod watch;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// A `rivetctl` command with a clean, predictable environment (no colours, no inherited
/// `RIVET_CONFIG` or `DOCKER_HOST`), run in `dir`.
pub fn rivetctl(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rivetctl"));
    command.current_dir(dir).env_clear();
    for keep in ["PATH", "HOME", "TMPDIR", "XDG_CACHE_HOME"] {
        if let Some(value) = std::env::var_os(keep) {
            command.env(keep, value);
        }
    }
    command.env("NO_COLOR", "1");
    command
}

/// Runs a command and returns its output; panics with the output if it cannot start.
pub fn run(command: &mut Command) -> Output {
    command.output().unwrap_or_else(|err| panic!("cannot run {command:?}: {err}"))
}

/// The exit code, stdout and stderr of a run, as one printable block.
pub fn describe(output: &Output) -> String {
    format!(
        "exit: {:?}\n--- stdout\n{}--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Compares `actual` with `path` (relative to the repository root).
pub fn golden(path: &str, actual: &str) {
    golden_files::compare(&repo().join(path), actual);
}
