//! Connections to the Docker Engines of a fleet's nodes.

use orchestrator::config::rules::Endpoint;
use orchestrator::fleet::Fleet;
use orchestrator::resource::ObservedResource;
use targets::docker::{self, Engine};

use crate::exit::hinted;

/// Connects to every node's engine (nodes reached over SSH are not supported here yet).
pub async fn connect_all(fleet: &Fleet) -> anyhow::Result<Vec<Engine>> {
    let mut engines = Vec::new();
    for node in &fleet.nodes {
        if matches!(node.endpoint, Endpoint::Ssh { .. }) {
            return Err(hinted(
                format!(
                    "node {} is reached over SSH ({}), which `infra` commands do not do yet",
                    node.name, node.endpoint
                ),
                "use `rivetctl update` for SSH nodes, or pass --offline to preview against an empty engine",
            ));
        }
        let engine = docker::connect(&node.name, &node.endpoint).await.map_err(|err| {
            let hint = format!("{}; or pass --offline to preview against an empty engine", err.hint());
            hinted(format!("node {}: {err}", node.name), hint)
        })?;
        engines.push(engine);
    }
    Ok(engines)
}

/// Everything the deployment owns on these engines.
pub async fn observe_all(engines: &[Engine], deployment: &str) -> anyhow::Result<Vec<ObservedResource>> {
    let mut observed = Vec::new();
    for engine in engines {
        observed.extend(docker::observe(engine, deployment).await?);
    }
    observed.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(observed)
}
