//! The in-memory target's images and state store: [`Artifacts`] over a per-node image list
//! (what the runtime's `rollback` reads and `update` prunes), and [`Port`] with a
//! [`MemoryStore`].
//!
//! Providing an image records it on every node (or the nodes shipped to) with its revision,
//! without building anything; a test can add images a node keeps with
//! [`MemoryTarget::add_image`].

use super::state::image_of;
use super::target::MemoryTarget;
use crate::port::{Artifacts, Details, ImageEvent, ImageFacts, ImageRequest, Port, Provide, StoredImage, TargetError};
use crate::resource::{Component, ObservedResource, ObservedState, Resource};
use crate::state::MemoryStore;

/// An image a node of the in-memory target keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptImage {
    pub reference: String,
    pub revision: Option<String>,
    pub version: Option<String>,
    /// In the order images arrived: larger is newer.
    pub created: i64,
}

/// The repository of an image reference (`local/agent:2` → `local/agent`).
fn repository(reference: &str) -> &str {
    match reference.rsplit_once(':') {
        Some((repository, tag)) if !tag.contains('/') => repository,
        _ => reference,
    }
}

impl<P> MemoryTarget<P> {
    /// Makes `node` keep `reference` (with the revision and version it reports), newest of
    /// all so far.
    pub fn add_image(&self, node: &str, reference: &str, revision: Option<&str>, version: Option<&str>) {
        let mut state = self.lock();
        let created = state.images.values().flatten().map(|i| i.created).max().unwrap_or(0) + 1;
        let images = state.images.entry(node.to_string()).or_default();
        images.retain(|i| i.reference != reference);
        images.push(KeptImage {
            reference: reference.to_string(),
            revision: revision.map(str::to_string),
            version: version.map(str::to_string),
            created,
        });
        if let Some(version) = version {
            state.versions.insert(reference.to_string(), version.to_string());
        }
    }

    /// The images `node` keeps, oldest first.
    pub fn images(&self, node: &str) -> Vec<KeptImage> {
        self.lock().images.get(node).cloned().unwrap_or_default()
    }
}

impl<P: Clone> Artifacts for MemoryTarget<P> {
    async fn provide_images(
        &self,
        request: &ImageRequest<'_>,
        cancelled: &dyn Fn() -> bool,
        events: &(dyn Fn(ImageEvent<'_>) + Sync),
    ) -> Result<(), TargetError> {
        let nodes: Vec<String> = match request.provide {
            Provide::OnceThenShip { nodes } => nodes.clone(),
            Provide::OnEachNode => {
                let state = self.lock();
                let mut nodes: Vec<String> = state.objects.keys().map(|k| k.node.clone()).collect();
                nodes.extend(state.images.keys().cloned());
                nodes.sort();
                nodes.dedup();
                nodes
            }
        };
        for node in &nodes {
            for image in request.images {
                if cancelled() {
                    return Err(TargetError::interrupted("interrupted before providing the images"));
                }
                self.lock().reach(node)?;
                let present = self.images(node).iter().any(|i| i.reference == image.reference);
                if !present {
                    let version = self.lock().versions.get(&image.reference).cloned();
                    self.add_image(node, &image.reference, Some(request.revision), version.as_deref());
                }
                let detail = if present { "present" } else { "provided" };
                events(ImageEvent::Note { step: "image", node, image: &image.reference, status: "done", detail });
            }
        }
        Ok(())
    }

    async fn check_users(&self, _desired: &[Resource<P>]) -> Result<(), TargetError> {
        // Images of the in-memory target declare no user: there is nothing to check.
        Ok(())
    }

    async fn stored_images(&self, node: &str, repository_name: &str) -> Result<Vec<StoredImage>, TargetError> {
        self.lock().reach(node)?;
        let mut images: Vec<StoredImage> = self
            .images(node)
            .into_iter()
            .filter(|i| repository(&i.reference) == repository_name)
            .map(|i| StoredImage {
                id: format!("memory:{}", i.reference),
                reference: i.reference,
                revision: i.revision,
                version: i.version,
                created: i.created,
            })
            .collect();
        images.sort_by_key(|i| std::cmp::Reverse(i.created));
        Ok(images)
    }

    async fn image_facts(&self, node: &str, image: &str) -> Option<ImageFacts> {
        let kept = self.images(node).into_iter().find(|i| i.reference == image)?;
        Some(ImageFacts {
            id: Some(format!("memory:{}", kept.reference)),
            revision: kept.revision,
            version: kept.version,
        })
    }

    async fn remove_images(&self, node: &str, images: &[String]) -> Result<Vec<String>, TargetError> {
        let mut state = self.lock();
        state.reach(node)?;
        let used: Vec<String> = state
            .objects
            .values()
            .filter(|o| o.key.node == node)
            .map(|o| image_of(&o.fields.clone().unwrap_or_default()))
            .chain(
                state
                    .units
                    .iter()
                    .filter(|(k, _)| k.node == node)
                    .flat_map(|(_, u)| u.instances.iter().map(|i| i.image.clone()).collect::<Vec<_>>()),
            )
            .collect();
        let mut removed = Vec::new();
        if let Some(kept) = state.images.get_mut(node) {
            kept.retain(|i| {
                let remove = images.contains(&i.reference) && !used.contains(&i.reference);
                if remove {
                    removed.push(i.reference.clone());
                }
                !remove
            });
        }
        Ok(removed)
    }

    async fn details(&self, observed: &ObservedResource) -> Result<Details, TargetError> {
        let fields = observed.fields.clone().unwrap_or_default();
        let state = match &observed.state {
            ObservedState::Running => "running".to_string(),
            ObservedState::Present => "present".to_string(),
            ObservedState::Stopped(Some(code)) => format!("exited ({code})"),
            ObservedState::Stopped(None) => "stopped".to_string(),
            ObservedState::Other(state) => state.clone(),
        };
        let component = match &observed.component {
            Component::Foundation => "foundation",
            Component::Storage => "storage",
            Component::Datahub => "datahub",
            Component::Migrate => "migrate",
            Component::Host => "host",
            Component::Database => "database",
            Component::Agent(_) => "agent",
        };
        Ok(Details {
            component: component.to_string(),
            image: image_of(&fields),
            revision: fields.get("revision").map(|v| v.text.to_string()).unwrap_or_else(|| "-".into()),
            state,
            health: "-".into(),
            started_at: None,
        })
    }
}

impl<P: Clone> Port for MemoryTarget<P> {
    type Store = MemoryStore;

    fn store(&self) -> &MemoryStore {
        &self.store
    }
}
