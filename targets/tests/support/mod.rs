//! Shared helpers of the renderers' tests: configs to fleets, golden files, external tools.
//! (The fleet helpers follow orchestrator/tests/support/mod.rs.)

#![allow(dead_code)]

#[path = "../../../orchestrator/tests/support/golden.rs"]
mod golden;

#[path = "../../../orchestrator/tests/support/fleets.rs"]
mod fleets;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub use fleets::dotenv;
use orchestrator::fleet::Fleet;

const HASH: &str = "1111111111111111111111111111111111111111111111111111111111111111";

fn build(source: &str, prebuilt_datahub: bool) -> Fleet {
    fleets::fleet_from(source, HASH, prebuilt_datahub)
}

/// The fleet of a config text (datahub built from source); panics when it is invalid.
pub fn fleet(source: &str) -> Fleet {
    build(source, false)
}

/// The fleet of a config text with the prebuilt `pgvector/pgvector` datahub.
pub fn fleet_prebuilt(source: &str) -> Fleet {
    build(source, true)
}

/// Every secret value the fleet was given.
pub fn secret_values() -> Vec<String> {
    dotenv().into_values().collect()
}

/// Compares `actual` with the golden file at `tests/golden/<name>`.
pub fn golden(name: &str, actual: &str) {
    golden::compare(&golden_path(name), actual);
}

pub fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name)
}

/// Runs an external checker; panics (never skips) when it is not installed.
pub fn run_tool(program: &str, args: &[&str], cwd: Option<&Path>, install_hint: &str) -> Output {
    let mut command = Command::new(program);
    command.args(args);
    if let Some(dir) = cwd {
        command.current_dir(dir);
    }
    match command.output() {
        Ok(output) => output,
        Err(err) => panic!("cannot run `{program}` ({err}); {install_hint}"),
    }
}
