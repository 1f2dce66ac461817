//! The rest of the port for Proxmox VE: the state store, and the rollout and artifact halves.
//!
//! Rolling updates (`update`, `rollback`) run agents as service units inside the
//! containers, provisioned over SSH; that part is not built yet (docs/proxmox.md, Status), so
//! every rollout operation says so instead of pretending. `infra up` needs no image: the
//! containers come from the OS template.

use std::sync::Arc;
use std::time::Duration;

use orchestrator::gate::ProbeReport;
use orchestrator::port::{
    Artifacts, Current, Details, ImageEvent, ImageFacts, ImageRequest, Port, Provide, Rollouts, StoredImage,
    TargetError, Unit,
};
use orchestrator::resource::{ObservedResource, Resource};
use serde_json::Value;

use super::store::ProxmoxStore;
use super::target::ProxmoxTarget;

/// What rollout operations answer until provisioning over SSH exists.
fn not_yet() -> TargetError {
    TargetError::failed("rolling updates on the Proxmox VE target are not implemented yet (the agents' service units are provisioned over SSH, which is being built)")
        .with_hint("`infra up` creates and updates the containers; see docs/proxmox.md, Status")
}

impl Port for ProxmoxTarget<'_> {
    type Store = ProxmoxStore;

    fn store(&self) -> &ProxmoxStore {
        &self.store
    }
}

impl Rollouts for ProxmoxTarget<'_> {
    fn units(&self, _desired: &[Arc<Resource<Value>>]) -> Vec<Unit<Value>> {
        Vec::new()
    }

    fn with_image(&self, resource: &Resource<Value>, _image: &str) -> Resource<Value> {
        resource.clone()
    }

    async fn current(&self, _unit: &Unit<Value>) -> Result<Option<Current>, TargetError> {
        Err(not_yet())
    }

    async fn version(&self, _node: &str, _image: &str) -> Option<String> {
        None
    }

    async fn stop_old(&self, _unit: &Unit<Value>, _grace: Duration) -> Result<(), TargetError> {
        Err(not_yet())
    }

    async fn stop_new(&self, _unit: &Unit<Value>, _grace: Duration) -> Result<(), TargetError> {
        Err(not_yet())
    }

    async fn start_new(&self, _unit: &Unit<Value>) -> Result<(), TargetError> {
        Err(not_yet())
    }

    async fn start_previous(&self, _unit: &Unit<Value>, _image: &str) -> Result<(), TargetError> {
        Err(not_yet())
    }

    async fn probe(&self, _unit: &Unit<Value>) -> Result<ProbeReport, TargetError> {
        Err(not_yet())
    }

    async fn settle(&self, _unit: &Unit<Value>, _done: bool) -> Result<(), TargetError> {
        Err(not_yet())
    }
}

impl Artifacts for ProxmoxTarget<'_> {
    async fn provide_images(
        &self,
        request: &ImageRequest<'_>,
        _cancelled: &dyn Fn() -> bool,
        _events: &(dyn Fn(ImageEvent<'_>) + Sync),
    ) -> Result<(), TargetError> {
        match request.provide {
            // `infra up`: the containers come from the OS template; nothing to build yet.
            Provide::OnEachNode => Ok(()),
            Provide::OnceThenShip { .. } => Err(not_yet()),
        }
    }

    async fn check_users(&self, _desired: &[Resource<Value>]) -> Result<(), TargetError> {
        // Containers are unprivileged unless `unprivileged: false` was asked for.
        Ok(())
    }

    async fn stored_images(&self, _node: &str, _repository: &str) -> Result<Vec<StoredImage>, TargetError> {
        Ok(Vec::new())
    }

    async fn image_facts(&self, _node: &str, _image: &str) -> Option<ImageFacts> {
        None
    }

    async fn remove_images(&self, _node: &str, _images: &[String]) -> Result<Vec<String>, TargetError> {
        Ok(Vec::new())
    }

    async fn details(&self, observed: &ObservedResource) -> Result<Details, TargetError> {
        let running = matches!(observed.state, orchestrator::resource::ObservedState::Running);
        Ok(Details {
            component: match &observed.component {
                orchestrator::resource::Component::Datahub => "datahub".into(),
                _ => "host".into(),
            },
            image: String::new(),
            revision: String::new(),
            state: if running { "running".into() } else { "stopped".into() },
            health: "-".into(),
            started_at: None,
        })
    }
}
