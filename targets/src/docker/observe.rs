//! Reading back what a deployment owns on one engine: containers, networks and volumes
//! labelled with the deployment and the node, with the spec record each carries.

use std::collections::HashMap;

use bollard::models::ContainerSummaryStateEnum;
use bollard::query_parameters::{ListContainersOptionsBuilder, ListNetworksOptions, ListVolumesOptions};
use orchestrator::docker::{KIND_CONTAINER, KIND_NETWORK, KIND_VOLUME, labels};
use orchestrator::resource::{Component, ObservedResource, ObservedState, ResourceKey, decode_record};

use super::Engine;

/// A failed observation.
#[derive(Debug, thiserror::Error)]
#[error("cannot list {what} on {address}")]
pub struct ObserveError {
    pub what: &'static str,
    pub address: String,
    #[source]
    pub source: bollard::errors::Error,
}

fn filters(deployment: &str, node: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([(
        "label".to_string(),
        vec![format!("{}={deployment}", labels::DEPLOYMENT), format!("{}={node}", labels::NODE)],
    )])
}

fn component(labels_: &HashMap<String, String>) -> Component {
    match labels_.get(labels::COMPONENT).map(String::as_str) {
        Some("datahub") => Component::Datahub,
        Some("migrate") => Component::Migrate,
        Some("agent") => Component::Agent(labels_.get(labels::AGENT).cloned().unwrap_or_default()),
        Some("storage") => Component::Storage,
        _ => Component::Foundation,
    }
}

fn observed(
    node: &str,
    kind: &str,
    name: String,
    id: String,
    labels_: &HashMap<String, String>,
    state: ObservedState,
) -> ObservedResource {
    ObservedResource {
        key: ResourceKey { node: node.to_string(), kind: kind.to_string(), name },
        component: component(labels_),
        fields: labels_.get(labels::SPEC).and_then(|text| decode_record(text)),
        spec_hash: labels_.get(labels::SPEC_HASH).cloned(),
        state,
        id,
        stateful: labels_.get(labels::STATEFUL).is_some_and(|v| v == "true"),
        immutable: Vec::new(),
    }
}

/// `Exited (137) 3 minutes ago` → 137.
fn exit_code(status: &str) -> Option<i64> {
    let start = status.find('(')? + 1;
    let end = status[start..].find(')')? + start;
    status[start..end].parse().ok()
}

/// Everything `deployment` owns on this engine's node, sorted by key.
pub async fn observe(engine: &Engine, deployment: &str) -> Result<Vec<ObservedResource>, ObserveError> {
    let err = |what| move |source| ObserveError { what, address: engine.address.clone(), source };
    let node = engine.node.as_str();
    let filter = filters(deployment, node);
    let mut out = Vec::new();

    let options = ListContainersOptionsBuilder::default().all(true).filters(&filter).build();
    for c in engine.call().list_containers(Some(options)).await.map_err(err("containers"))? {
        let labels_ = c.labels.unwrap_or_default();
        let name =
            c.names.unwrap_or_default().first().map(|n| n.trim_start_matches('/').to_string()).unwrap_or_default();
        let state = match c.state {
            Some(ContainerSummaryStateEnum::RUNNING) => ObservedState::Running,
            Some(ContainerSummaryStateEnum::EXITED) => ObservedState::Stopped(c.status.as_deref().and_then(exit_code)),
            Some(other) => ObservedState::Other(other.to_string()),
            None => ObservedState::Other("unknown".into()),
        };
        out.push(observed(node, KIND_CONTAINER, name, c.id.unwrap_or_default(), &labels_, state));
    }
    let options = ListNetworksOptions { filters: Some(filter.clone()) };
    for n in engine.call().list_networks(Some(options)).await.map_err(err("networks"))? {
        let labels_ = n.labels.unwrap_or_default();
        out.push(observed(
            node,
            KIND_NETWORK,
            n.name.unwrap_or_default(),
            n.id.unwrap_or_default(),
            &labels_,
            ObservedState::Present,
        ));
    }
    let options = ListVolumesOptions { filters: Some(filter) };
    let volumes = engine.call().list_volumes(Some(options)).await.map_err(err("volumes"))?;
    for v in volumes.volumes.unwrap_or_default() {
        let name = v.name.clone();
        out.push(observed(node, KIND_VOLUME, name.clone(), name, &v.labels, ObservedState::Present));
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_read_from_the_status() {
        assert_eq!(exit_code("Exited (137) 3 minutes ago"), Some(137));
        assert_eq!(exit_code("Exited (0) Less than a second ago"), Some(0));
        assert_eq!(exit_code("Up 3 minutes"), None);
    }
}
