//! Shared helpers of the renderers' tests: configs to fleets, golden files, external tools.
//! (The fleet helpers follow orchestrator/tests/support/mod.rs.)

#![allow(dead_code)]

#[path = "../../../orchestrator/tests/support/golden.rs"]
mod golden;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use orchestrator::config::{self, Variables};
use orchestrator::fleet::{BuildSpec, Component, Fleet, FleetInputs, ImageSpec, ResolvedImages};

/// The `.env` every test fleet uses: all of it is secret.
pub fn dotenv() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("POSTGRES_PASSWORD".to_string(), "correct-horse".to_string()),
        ("ANTHROPIC_API_KEY".to_string(), "sk-ant-test".to_string()),
        ("DISCORD_BOT_TOKEN".to_string(), "discord-token-test".to_string()),
    ])
}

/// Image inputs with a given content hash; `prebuilt_datahub` uses pgvector as it is.
pub fn images(hash: &str, prebuilt_datahub: bool) -> ResolvedImages {
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
        datahub: (!prebuilt_datahub).then(|| ImageSpec {
            component: Component::Datahub,
            reference: format!("rivetos-datahub:{}", &hash[..12]),
            build: Some(build("containers/datahub/Dockerfile")),
        }),
        revision: format!("content:{}", &hash[..12]),
    }
}

const HASH: &str = "1111111111111111111111111111111111111111111111111111111111111111";

fn build(source: &str, prebuilt_datahub: bool) -> Fleet {
    let vars = Variables { dotenv: dotenv(), environment: BTreeMap::new() };
    let loaded = match config::load(source, &vars) {
        Ok(loaded) => loaded,
        Err(diags) => panic!("invalid config: {diags:#?}"),
    };
    let inputs = FleetInputs {
        dotenv: dotenv(),
        images: images(HASH, prebuilt_datahub),
        config_file: "/srv/rivet/rivet.config.yaml".into(),
        config_text: source.to_string(),
    };
    Fleet::build(&loaded.config, &inputs).expect("fleet")
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
