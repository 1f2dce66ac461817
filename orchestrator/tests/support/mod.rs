//! Shared helpers of the orchestrator's integration tests: configs to fleets, golden files.

#![allow(dead_code)]

#[path = "golden.rs"]
mod golden;

#[path = "fleets.rs"]
mod fleets;

use std::path::PathBuf;

use orchestrator::docker::{self, DockerResource};
use orchestrator::fleet::Fleet;

/// The fleet of a config text, its images built from source with content hash `hash`.
pub fn fleet_with(source: &str, hash: &str) -> Fleet {
    fleets::fleet_from(source, hash, false)
}

pub fn fleet(source: &str) -> Fleet {
    fleet_with(source, "1111111111111111111111111111111111111111111111111111111111111111")
}

pub fn docker_resources(source: &str) -> Vec<DockerResource> {
    docker::resources(&fleet(source))
}

/// Compares `actual` with the golden file at `tests/golden/<name>`.
pub fn golden(name: &str, actual: &str) {
    golden::compare(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name), actual);
}
