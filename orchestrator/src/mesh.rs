//! RivetOS's mesh registry (`mesh.json`) and which configured nodes it lets an update reach.
//!
//! The registry is written by the running mesh (`/rivet-shared/mesh.json`). rivetctl reads
//! it to skip nodes that must not be updated now: offline (stale heartbeat), marked
//! `metadata.deployable: false`, or not on Linux. The config's nodes stay the source of
//! truth for what runs where; the registry only removes nodes from an update.

use std::collections::BTreeMap;

use serde::Deserialize;

/// One node of `mesh.json` (the fields rivetctl reads; the rest is ignored).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshNode {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub platform: Option<String>,
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
    #[serde(default)]
    pub version: Option<String>,
}

/// The registry document.
#[derive(Debug, Clone, Deserialize)]
pub struct MeshRegistry {
    pub version: u32,
    #[serde(default)]
    pub nodes: BTreeMap<String, MeshNode>,
}

/// Why `mesh.json` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("mesh.json is not valid: {0}")]
    Invalid(#[from] serde_json::Error),
    #[error("mesh.json has version {0}; rivetctl reads version 1")]
    Version(u32),
}

/// Parses `mesh.json`.
pub fn parse(text: &str) -> Result<MeshRegistry, MeshError> {
    let registry: MeshRegistry = serde_json::from_str(text)?;
    if registry.version != 1 {
        return Err(MeshError::Version(registry.version));
    }
    Ok(registry)
}

/// A configured node left out of an update, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub node: String,
    pub reason: String,
}

impl MeshRegistry {
    /// The registry entry of a configured node: by name, else by id.
    pub fn find(&self, node: &str) -> Option<&MeshNode> {
        self.nodes.values().find(|n| n.name == node).or_else(|| self.nodes.get(node))
    }

    /// Why `node` must not be updated now, if it must not.
    pub fn skip_reason(&self, node: &str) -> Option<String> {
        let entry = self.find(node)?;
        if entry.status.as_deref() == Some("offline") {
            return Some("offline in mesh.json (no heartbeat)".into());
        }
        let deployable = entry.metadata.as_ref().and_then(|m| m.get("deployable")).and_then(|d| d.as_bool());
        if deployable == Some(false) {
            return Some("metadata.deployable is false in mesh.json".into());
        }
        match entry.platform.as_deref() {
            Some(platform) if platform != "linux" => {
                Some(format!("platform \"{platform}\" (only linux nodes are updated)"))
            }
            _ => None,
        }
    }

    /// Splits configured nodes into those an update may reach and those it skips.
    pub fn filter<'a>(&self, nodes: impl IntoIterator<Item = &'a str>) -> (Vec<String>, Vec<Skipped>) {
        let mut reachable = Vec::new();
        let mut skipped = Vec::new();
        for node in nodes {
            match self.skip_reason(node) {
                Some(reason) => skipped.push(Skipped { node: node.to_string(), reason }),
                None => reachable.push(node.to_string()),
            }
        }
        (reachable, skipped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGISTRY: &str = r#"{
      "version": 1,
      "updatedAt": 1760000000000,
      "nodes": {
        "n1": {"id": "n1", "name": "hub", "status": "online", "platform": "linux", "agents": ["opus"], "host": "10.0.0.1", "port": 3100},
        "n2": {"id": "n2", "name": "edge", "status": "offline", "platform": "linux"},
        "n3": {"id": "n3", "name": "laptop", "status": "online", "platform": "darwin"},
        "n4": {"id": "n4", "name": "lab", "status": "degraded", "metadata": {"deployable": false}},
        "n5": {"id": "n5", "name": "spare", "status": "updating"}
      }
    }"#;

    #[test]
    fn skips_offline_undeployable_and_non_linux_nodes() {
        let registry = parse(REGISTRY).unwrap();
        let (reachable, skipped) = registry.filter(["hub", "edge", "laptop", "lab", "spare", "unlisted"]);
        assert_eq!(reachable, ["hub", "spare", "unlisted"]);
        let reasons: Vec<(&str, &str)> = skipped.iter().map(|s| (s.node.as_str(), s.reason.as_str())).collect();
        assert_eq!(
            reasons,
            [
                ("edge", "offline in mesh.json (no heartbeat)"),
                ("laptop", "platform \"darwin\" (only linux nodes are updated)"),
                ("lab", "metadata.deployable is false in mesh.json"),
            ]
        );
    }

    #[test]
    fn other_versions_are_refused() {
        assert!(matches!(parse(r#"{"version": 2, "nodes": {}}"#), Err(MeshError::Version(2))));
        assert!(matches!(parse("{"), Err(MeshError::Invalid(_))));
    }
}
