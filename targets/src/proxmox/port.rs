//! The rest of the port for Proxmox VE: the state store, and the rollout and artifact halves.
//!
//! A unit is one agent's service in its node's container (`rivetos@<agent>`): a container
//! hosting several agents rolls them one at a time, each behind the health gate, and rolls
//! one back without touching the others. Stopping the old instance keeps its link target,
//! environment and record beside it; starting the previous one puts those back and starts
//! the service: the exact previous release, still in the container.
//!
//! Images: the agent image is built from source on this machine's engine, as for Docker;
//! its `/opt/rivetos` is the release each container gets (over SSH, once per container),
//! so containers need no compiler, Docker or registry.

use std::sync::Arc;
use std::time::Duration;

use orchestrator::fleet::Component as ImageComponent;
use orchestrator::gate::ProbeReport;
use orchestrator::lower::proxmox::services::{self, KIND as SERVICE};
use orchestrator::port::{
    Artifacts, Current, Details, ImageEvent, ImageFacts, ImageRequest, Port, Provide, Rollouts, StoredImage,
    TargetError, Unit,
};
use orchestrator::resource::{FieldValue, ObservedResource, Resource};
use serde_json::Value;

use super::agents::provision_error;
use super::provision;
use super::store::ProxmoxStore;
use super::target::ProxmoxTarget;

impl Port for ProxmoxTarget<'_> {
    type Store = ProxmoxStore;

    fn store(&self) -> &ProxmoxStore {
        &self.store
    }
}

/// The container and agent of a unit.
fn names(unit: &Unit<Value>) -> (&str, &str) {
    let payload = &unit.desired.payload;
    (payload["container"].as_str().unwrap_or_default(), payload["agent"].as_str().unwrap_or_default())
}

impl Rollouts for ProxmoxTarget<'_> {
    fn units(&self, desired: &[Arc<Resource<Value>>]) -> Vec<Unit<Value>> {
        Unit::per_agent(desired, |r| r.key.kind == SERVICE)
    }

    fn with_image(&self, resource: &Resource<Value>, image: &str) -> Resource<Value> {
        let mut copy = resource.clone();
        let release = services::release_of(image);
        copy.fields.insert("image".into(), FieldValue::plain(image));
        copy.fields.insert("release".into(), FieldValue::plain(release.as_str()));
        copy.payload["image"] = Value::String(image.to_string());
        copy.payload["release"] = Value::String(release);
        copy
    }

    async fn current(&self, unit: &Unit<Value>) -> Result<Option<Current>, TargetError> {
        let (container, agent) = names(unit);
        let session = self.session(container).await?;
        let found = provision::found(&session, self.manager()).await.map_err(|e| provision_error(container, e))?;
        let Some(found) = found.into_iter().find(|f| f.agent == agent) else { return Ok(None) };
        let record: Value = serde_json::from_str(&found.record).unwrap_or(Value::Null);
        Ok(Some(Current {
            image: record["image"].as_str().unwrap_or_default().to_string(),
            spec_hash: record["spec_hash"].as_str().map(str::to_string),
            revision: record["revision"].as_str().map(str::to_string),
            running: found.running,
        }))
    }

    async fn version(&self, node: &str, image: &str) -> Option<String> {
        self.image_version(node, image).await
    }

    async fn stop_old(&self, unit: &Unit<Value>, grace: Duration) -> Result<(), TargetError> {
        let (container, agent) = names(unit);
        let failed = |e| provision_error(container, e);
        let session = self.session(container).await?;
        // The new release is installed while the old one still serves: not downtime.
        let payload = &unit.desired.payload;
        let (release, image) =
            (payload["release"].as_str().unwrap_or_default(), payload["image"].as_str().unwrap_or_default());
        self.ensure_release(container, &session, release, image).await?;
        provision::keep_previous(&session, agent).await.map_err(failed)?;
        provision::stop(&session, self.manager(), agent, grace).await.map_err(failed)
    }

    async fn stop_new(&self, unit: &Unit<Value>, grace: Duration) -> Result<(), TargetError> {
        let (container, agent) = names(unit);
        let session = self.session(container).await?;
        provision::stop(&session, self.manager(), agent, grace).await.map_err(|e| provision_error(container, e))
    }

    async fn start_new(&self, unit: &Unit<Value>) -> Result<(), TargetError> {
        let (container, agent) = names(unit);
        let session = self.install_agent(&unit.desired).await?;
        provision::control(&session, self.manager(), agent, "start").await.map_err(|e| provision_error(container, e))
    }

    async fn start_previous(&self, unit: &Unit<Value>, image: &str) -> Result<(), TargetError> {
        let (container, agent) = names(unit);
        let failed = |e| provision_error(container, e);
        let session = self.session(container).await?;
        if provision::restore_previous(&session, agent).await.map_err(failed)?.is_none() {
            // Nothing kept (removed by hand, or a rollback to a named revision): the
            // desired agent on `image`'s release.
            self.install_agent(&self.with_image(&unit.desired, image)).await?;
        }
        provision::control(&session, self.manager(), agent, "start").await.map_err(failed)
    }

    async fn probe(&self, unit: &Unit<Value>) -> Result<ProbeReport, TargetError> {
        match self.probe_agent(&unit.desired).await {
            Ok(report) => Ok(report),
            Err(error) if error.is_unreachable() => Err(error),
            // A probe that fails in a container that answers is a failed probe.
            Err(_) => Ok(ProbeReport::default()),
        }
    }

    async fn settle(&self, unit: &Unit<Value>, done: bool) -> Result<(), TargetError> {
        if !done {
            // What was kept stays for a later revert (a paused rollout).
            return Ok(());
        }
        let (container, agent) = names(unit);
        let session = self.session(container).await?;
        provision::drop_previous(&session, agent).await.map_err(|e| provision_error(container, e))
    }
}

impl ProxmoxTarget<'_> {
    /// The agents containers on `nodes` that run now.
    fn running_agent_containers(&self, nodes: &[String]) -> Vec<String> {
        orchestrator::lower::proxmox::layout(self.fleet, self.settings)
            .into_iter()
            .filter(|c| !c.agents.is_empty() && nodes.contains(&c.node))
            .filter(|c| self.live.get(&super::containers::tag_safe(&c.id)).is_some_and(|l| l.found.running))
            .map(|c| c.id)
            .collect()
    }

    /// The releases in the agents container of `node`.
    pub(crate) async fn releases_on(
        &self,
        node: &str,
    ) -> Result<Vec<(String, provision::ReleaseMeta, Vec<String>)>, TargetError> {
        let container = orchestrator::lower::proxmox::agents_container(node);
        let session = self.session(&container).await?;
        provision::releases(&session).await.map_err(|e| provision_error(&container, e))
    }
}

impl Artifacts for ProxmoxTarget<'_> {
    async fn provide_images(
        &self,
        request: &ImageRequest<'_>,
        cancelled: &dyn Fn() -> bool,
        events: &(dyn Fn(ImageEvent<'_>) + Sync),
    ) -> Result<(), TargetError> {
        // The datahub runs PostgreSQL from the container's packages: only the agent image.
        let images: Vec<_> = request.images.iter().filter(|i| i.component == ImageComponent::Agent).cloned().collect();
        let Some(agent) = images.first().map(|i| i.reference.clone()) else { return Ok(()) };
        let request = ImageRequest { images: &images, ..*request };
        let engine = self.engine().await?;
        crate::docker::port::images::with_token(cancelled, |token| async move {
            crate::docker::port::images::build_on(engine, "local", &request, &token, events).await
        })
        .await?;
        let release = services::release_of(&agent);
        self.built(&release, &agent).await?;
        let Provide::OnceThenShip { nodes } = request.provide else {
            // `infra up` installs the release where it creates or changes an agent.
            return Ok(());
        };
        for container in self.running_agent_containers(nodes) {
            if cancelled() {
                return Err(TargetError::interrupted("interrupted while shipping the release; nothing was stopped"));
            }
            let node = self
                .live
                .get(&super::containers::tag_safe(&container))
                .map(|l| l.found.node.clone())
                .unwrap_or_default();
            let note = |status: &str, detail: &str| {
                events(ImageEvent::Note { step: "ship", node: &node, image: &agent, status, detail })
            };
            note("started", &format!("release {release} to {container}"));
            let session = self.session(&container).await?;
            provision::ensure_user(&session).await.map_err(|e| provision_error(&container, e))?;
            let installed = self.ensure_release(&container, &session, &release, &agent).await?;
            note("done", if installed { "installed" } else { "already there" });
        }
        Ok(())
    }

    async fn check_users(&self, _desired: &[Resource<Value>]) -> Result<(), TargetError> {
        // Containers are unprivileged unless `unprivileged: false` was asked for, and the
        // agents run as the dedicated user `rivetos` whatever the image says.
        Ok(())
    }

    async fn stored_images(&self, node: &str, repository: &str) -> Result<Vec<StoredImage>, TargetError> {
        let mut out: Vec<StoredImage> = self
            .releases_on(node)
            .await?
            .into_iter()
            .filter(|(_, meta, _)| meta.reference.starts_with(&format!("{repository}:")))
            .map(|(rev, meta, _)| StoredImage {
                id: rev,
                reference: meta.reference,
                revision: meta.revision,
                version: meta.version,
                created: meta.created,
            })
            .collect();
        out.sort_by_key(|image| std::cmp::Reverse(image.created));
        Ok(out)
    }

    async fn image_facts(&self, node: &str, image: &str) -> Option<ImageFacts> {
        let name = services::release_of(image);
        let releases = self.releases_on(node).await.ok()?;
        releases.into_iter().find(|(rev, _, _)| *rev == name).map(|(rev, meta, _)| ImageFacts {
            id: Some(rev),
            revision: meta.revision,
            version: meta.version,
        })
    }

    async fn remove_images(&self, node: &str, images: &[String]) -> Result<Vec<String>, TargetError> {
        let container = orchestrator::lower::proxmox::agents_container(node);
        let session = self.session(&container).await?;
        let mut removed = Vec::new();
        for image in images {
            let release = services::release_of(image);
            if provision::remove_release(&session, &release).await.map_err(|e| provision_error(&container, e))? {
                removed.push(image.clone());
            }
        }
        Ok(removed)
    }

    async fn details(&self, observed: &ObservedResource) -> Result<Details, TargetError> {
        let running = matches!(observed.state, orchestrator::resource::ObservedState::Running);
        let state = if running { "running" } else { "stopped" }.to_string();
        if observed.key.kind == SERVICE {
            let (container, agent) = observed.id.split_once('/').unwrap_or_default();
            let record = self
                .agents
                .get(container)
                .and_then(|found| found.iter().find(|f| f.agent == agent))
                .and_then(|f| serde_json::from_str::<Value>(&f.record).ok())
                .unwrap_or(Value::Null);
            let field = |name: &str| observed.fields.as_ref().and_then(|f| f.get(name)).map(|v| v.text.to_string());
            return Ok(Details {
                component: if observed.component == orchestrator::resource::Component::Database {
                    "database"
                } else {
                    "agent"
                }
                .into(),
                image: field("image").unwrap_or_default(),
                revision: record["revision"].as_str().unwrap_or_default().to_string(),
                state,
                health: "-".into(),
                started_at: None,
            });
        }
        Ok(Details {
            component: match &observed.component {
                orchestrator::resource::Component::Datahub => "datahub".into(),
                _ => "host".into(),
            },
            image: String::new(),
            revision: String::new(),
            state,
            health: "-".into(),
            started_at: None,
        })
    }
}
