//! What the live server serves: its version, its API group versions (discovery), and the
//! fields its OpenAPI schema declares, so the manifests name only served API versions and
//! known fields (a v1.20 server's server-side apply refuses an unknown field outright).

use std::collections::BTreeSet;
use std::sync::Arc;

use orchestrator::port::TargetError;

use super::{Cluster, classify};
use crate::render::kubernetes::{Profile, Schema};

/// The server's answers.
#[derive(Debug, Clone)]
pub struct Served {
    /// `(major, minor)`.
    pub version: (u32, u32),
    /// `v1.20.2`.
    pub git_version: String,
    /// Every served `group/version` (`v1` for the core group).
    pub group_versions: BTreeSet<String>,
    /// The server's OpenAPI schema: which fields each definition declares.
    pub schema: Arc<Schema>,
}

/// The definitions (and fields) whose presence changes the manifests.
const PROBED: &[(&str, &str)] = &[
    ("io.k8s.api.apps.v1.StatefulSetSpec", "persistentVolumeClaimRetentionPolicy"),
    ("io.k8s.api.policy.v1.PodDisruptionBudgetSpec", "unhealthyPodEvictionPolicy"),
];

impl Served {
    /// Whether `group/version` is served.
    pub fn serves(&self, group_version: &str) -> bool {
        self.group_versions.contains(group_version)
    }

    fn declares(&self, definition: &str, field: &str) -> bool {
        self.schema.declares(definition, field)
    }

    /// The manifests' profile for this server.
    pub fn profile(&self) -> Profile {
        let pdb_api = ["policy/v1", "policy/v1beta1"].into_iter().find(|v| self.serves(v)).map(str::to_string);
        Profile {
            version: self.version,
            pdb_api,
            claim_retention: self.declares(PROBED[0].0, PROBED[0].1),
            pdb_unhealthy_policy: self.declares(PROBED[1].0, PROBED[1].1),
        }
    }
}

/// `"20"`, `"20+"` → 20.
fn number(text: &str) -> u32 {
    text.trim_end_matches('+').parse().unwrap_or(0)
}

/// Asks the server: `/version`, the API groups, `/openapi/v2` (four calls).
pub async fn discover(cluster: &Cluster) -> Result<Served, TargetError> {
    let info =
        cluster.call().apiserver_version().await.map_err(|e| classify(&format!("cannot reach {}", cluster.url), &e))?;
    let mut group_versions = BTreeSet::new();
    let core =
        cluster.call().list_core_api_versions().await.map_err(|e| classify("cannot list the core API versions", &e))?;
    group_versions.extend(core.versions);
    let groups = cluster.call().list_api_groups().await.map_err(|e| classify("cannot list the API groups", &e))?;
    for group in groups.groups {
        group_versions.extend(group.versions.into_iter().map(|v| v.group_version));
    }
    let request = http::Request::get("/openapi/v2").body(Vec::new()).expect("a static request");
    let text = cluster
        .call()
        .request_text(request)
        .await
        .map_err(|e| classify("cannot read the server's OpenAPI schema", &e))?;
    let schema = Schema::parse(&text).ok_or_else(|| {
        TargetError::failed(format!("the server at {} answered /openapi/v2 with no OpenAPI document", cluster.url))
    })?;
    Ok(Served {
        version: (number(&info.major), number(&info.minor)),
        git_version: info.git_version,
        group_versions,
        schema: Arc::new(schema),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server serving `versions` whose schema declares `fields` (`definition.field`).
    fn served(versions: &[&str], fields: &[&str]) -> Served {
        let mut definitions = serde_json::Map::new();
        for field in fields {
            let (definition, name) = field.rsplit_once('.').expect("definition.field");
            let entry = definitions.entry(definition).or_insert_with(|| serde_json::json!({"properties": {}}));
            entry["properties"][name] = serde_json::json!({"type": "string"});
        }
        let document = serde_json::json!({ "definitions": definitions }).to_string();
        Served {
            version: (1, 20),
            git_version: "v1.20.2".into(),
            group_versions: versions.iter().map(|v| v.to_string()).collect(),
            schema: Arc::new(Schema::parse(&document).expect("a document")),
        }
    }

    #[test]
    fn the_profile_follows_what_is_served() {
        let old = served(&["v1", "apps/v1", "policy/v1beta1"], &[]).profile();
        assert_eq!(old.pdb_api.as_deref(), Some("policy/v1beta1"));
        assert!(!old.claim_retention && !old.pdb_unhealthy_policy);
        let new = served(
            &["v1", "apps/v1", "policy/v1"],
            &[
                "io.k8s.api.apps.v1.StatefulSetSpec.persistentVolumeClaimRetentionPolicy",
                "io.k8s.api.policy.v1.PodDisruptionBudgetSpec.unhealthyPodEvictionPolicy",
            ],
        )
        .profile();
        assert_eq!(new.pdb_api.as_deref(), Some("policy/v1"));
        assert!(new.claim_retention && new.pdb_unhealthy_policy);
        assert_eq!(served(&["v1"], &[]).profile().pdb_api, None);
    }

    #[test]
    fn minor_versions_read_with_their_plus() {
        assert_eq!(number("20+"), 20);
        assert_eq!(number("x"), 0);
    }
}
