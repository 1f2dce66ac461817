//! Test fleets from config text: a fixed `.env`, image inputs with a chosen content hash.
//! Shared by the orchestrator's and the targets' tests through `#[path]`.

use std::collections::BTreeMap;

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

/// Builds the fleet of a config text; panics with the diagnostics when it is invalid.
pub fn fleet_from(source: &str, hash: &str, prebuilt_datahub: bool) -> Fleet {
    let vars = Variables { dotenv: dotenv(), environment: BTreeMap::new() };
    let loaded = match config::load(source, &vars) {
        Ok(loaded) => loaded,
        Err(diags) => panic!("invalid config: {diags:#?}"),
    };
    let inputs = FleetInputs {
        dotenv: dotenv(),
        images: images(hash, prebuilt_datahub),
        config_file: "/srv/rivet/rivet.config.yaml".into(),
        config_text: source.to_string(),
    };
    Fleet::build(&loaded.config, &inputs).expect("fleet")
}
