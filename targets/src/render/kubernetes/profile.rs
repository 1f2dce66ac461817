//! What the cluster serves that the manifests depend on: the API version of each kind that
//! has more than one, and the fields newer than the oldest supported server (1.20).
//!
//! Offline rendering (`infra preview --out` with no cluster) takes a [`Profile`] from the
//! declared `deployment.kubernetes.version`; against a live server the adapter builds one
//! from discovery and the server's OpenAPI (`targets::kubernetes::discovery`), so no object
//! carries an API version that is not served or a field the server does not know (a v1.20
//! server's server-side apply refuses unknown fields: "field not declared in schema").

/// The manifests' dependence on the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// `(major, minor)` of the server, or of the declared version offline.
    pub version: (u32, u32),
    /// The PodDisruptionBudget API served (`policy/v1` from 1.21, `policy/v1beta1` before
    /// 1.25); `None`: no served version can hold it (named in preview; `up` refuses unless
    /// `--skip-unserved`).
    pub pdb_api: Option<String>,
    /// `StatefulSetSpec.persistentVolumeClaimRetentionPolicy` (beta and on from 1.27).
    pub claim_retention: bool,
    /// `PodDisruptionBudgetSpec.unhealthyPodEvictionPolicy` (beta and on from 1.27).
    pub pdb_unhealthy_policy: bool,
}

impl Profile {
    /// What a server of `version` serves, by the Kubernetes release notes.
    pub fn for_version(version: (u32, u32)) -> Profile {
        let minor = version.1;
        let pdb_api = if minor >= 21 { "policy/v1" } else { "policy/v1beta1" };
        Profile {
            version,
            pdb_api: Some(pdb_api.to_string()),
            claim_retention: minor >= 27,
            pdb_unhealthy_policy: minor >= 27,
        }
    }

    /// `1.33`.
    pub fn version_text(&self) -> String {
        format!("{}.{}", self.version.0, self.version.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_choose_apis_and_fields() {
        let old = Profile::for_version((1, 20));
        assert_eq!(old.pdb_api.as_deref(), Some("policy/v1beta1"));
        assert!(!old.claim_retention && !old.pdb_unhealthy_policy);
        let current = Profile::for_version((1, 33));
        assert_eq!(current.pdb_api.as_deref(), Some("policy/v1"));
        assert!(current.claim_retention && current.pdb_unhealthy_policy);
        assert_eq!(current.version_text(), "1.33");
    }
}
