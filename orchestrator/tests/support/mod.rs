//! Shared helpers of the orchestrator's integration tests: configs to fleets, golden files.

#![allow(dead_code)]

#[path = "golden.rs"]
mod golden;

use std::collections::BTreeMap;
use std::path::PathBuf;

use orchestrator::config::{self, Variables};
use orchestrator::docker::{self, DockerResource};
use orchestrator::fleet::{BuildSpec, Component, Fleet, FleetInputs, ImageSpec, ResolvedImages};

/// The `.env` every test fleet uses.
pub fn dotenv() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("POSTGRES_PASSWORD".to_string(), "correct-horse".to_string()),
        ("ANTHROPIC_API_KEY".to_string(), "sk-ant-test".to_string()),
    ])
}

/// Image inputs with a given content hash.
pub fn images(hash: &str) -> ResolvedImages {
    let build = |dockerfile: &str| BuildSpec {
        dockerfile: dockerfile.into(),
        content_hash: hash.into(),
        build_args: BTreeMap::new(),
    };
    ResolvedImages {
        agent: ImageSpec {
            component: Component::Agent,
            reference: format!("rivetos-agent:{}", &hash[..12]),
            build: Some(build("containers/agent/Dockerfile")),
        },
        datahub: Some(ImageSpec {
            component: Component::Datahub,
            reference: format!("rivetos-datahub:{}", &hash[..12]),
            build: Some(build("containers/datahub/Dockerfile")),
        }),
        revision: format!("content:{}", &hash[..12]),
    }
}

/// Builds the fleet of a config text; panics with the diagnostics when it is invalid.
pub fn fleet_with(source: &str, hash: &str) -> Fleet {
    let vars = Variables { dotenv: dotenv(), environment: BTreeMap::new() };
    let loaded = match config::load(source, &vars) {
        Ok(loaded) => loaded,
        Err(diags) => panic!("invalid config: {diags:#?}"),
    };
    let inputs = FleetInputs {
        dotenv: dotenv(),
        images: images(hash),
        config_file: "/srv/rivet/rivet.config.yaml".into(),
        config_text: source.to_string(),
    };
    Fleet::build(&loaded.config, &inputs).expect("fleet")
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
