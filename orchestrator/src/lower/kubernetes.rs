//! Kubernetes' choices that the rest of its lowering builds on: object names and how an
//! agent reaches the datahub.
//!
//! The datahub is the StatefulSet behind the headless Service `datahub` in the deployment's
//! namespace, so every agent and the migrate job reach it at `@datahub:5432`, whichever
//! node (Kubernetes has one logical node) they run on. Object names are DNS labels built
//! from the settings' project name.
//!
//! The manifests themselves are still built by `targets/src/render/kubernetes.rs` from these
//! (issue 8, section 2 follow-up: building the objects here, in code, as Docker and Proxmox
//! do, so the renderer only prints them).

use crate::fleet::{EnvValue, Fleet, KubernetesSettings, container_name_of};

/// The datahub's Service name, which agents use as its host.
pub const DATAHUB_SERVICE: &str = "datahub";
/// PostgreSQL's port on the datahub's Service.
pub const POSTGRES_PORT: u16 = 5432;

/// The base of object names: the project name as a DNS label (lower-cased, `_` and `.` as `-`).
pub fn prefix(settings: &KubernetesSettings) -> String {
    container_name_of(&settings.project)
}

/// The shared directory's claim, when shared storage is on.
pub fn shared_claim(fleet: &Fleet, settings: &KubernetesSettings) -> Option<String> {
    fleet.shared_storage.then(|| container_name_of(&format!("{}-shared", settings.project)))
}

/// `RIVETOS_PG_URL` of every agent and of the migrate job: the datahub's Service.
pub fn database_url(fleet: &Fleet) -> Option<EnvValue> {
    fleet.datahub.as_ref().map(|hub| hub.url(DATAHUB_SERVICE, POSTGRES_PORT))
}
