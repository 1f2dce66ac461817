//! Images and what the commands read about running objects: building the fleet's images
//! from source and providing them where its units run, the images a node keeps for
//! `rollback`, and the per-object details `status` shows.

use std::path::Path;

use super::TargetError;
use crate::fleet::ImageSpec;
use crate::resource::{ObservedResource, Resource};

/// Where the images are made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provide {
    /// Built (or found) where each node runs them (`infra up`).
    OnEachNode,
    /// Built once on the control host, then shipped to these nodes and verified there,
    /// before anything on them is stopped (`update`).
    OnceThenShip { nodes: Vec<String> },
}

/// What [`Artifacts::provide_images`] should make available.
#[derive(Debug, Clone, Copy)]
pub struct ImageRequest<'a> {
    pub images: &'a [ImageSpec],
    /// The source tree the images build from (`None`: nothing builds from source).
    pub source_root: Option<&'a Path>,
    /// The source revision, recorded on built images.
    pub revision: &'a str,
    /// Where full build logs are written.
    pub log_dir: &'a Path,
    pub provide: &'a Provide,
}

/// Something that happened while providing images, for progress output.
#[derive(Debug, Clone, Copy)]
pub enum ImageEvent<'a> {
    /// A step of one image on one node (`build` or `ship`; `started`, `done`).
    Note { step: &'a str, node: &'a str, image: &'a str, status: &'a str, detail: &'a str },
    /// A line of a build's output.
    BuildLine { image: &'a str, line: &'a str },
}

/// What a node's engine says about an image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageFacts {
    pub id: Option<String>,
    /// `org.opencontainers.image.revision`.
    pub revision: Option<String>,
    /// `org.opencontainers.image.version`.
    pub version: Option<String>,
}

/// One image of a repository kept on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredImage {
    pub id: String,
    pub reference: String,
    pub revision: Option<String>,
    pub version: Option<String>,
    /// Creation time, seconds since the epoch.
    pub created: i64,
}

/// What `status` shows of one running object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Details {
    pub component: String,
    pub image: String,
    pub revision: String,
    pub state: String,
    /// The target's own health check, or `-`.
    pub health: String,
    /// When it started (RFC 3339), while it runs.
    pub started_at: Option<String>,
}

/// Images and object details.
#[allow(async_fn_in_trait)] // see `super::Target`
pub trait Artifacts: super::Target {
    /// Makes every image of the request available where it is needed (content-addressed:
    /// an image already there is not built again). `cancelled` is checked before each build
    /// or ship; an interruption is a [`TargetError`] of kind `Interrupted`.
    async fn provide_images(
        &self,
        request: &ImageRequest<'_>,
        cancelled: &dyn Fn() -> bool,
        events: &(dyn Fn(ImageEvent<'_>) + Sync),
    ) -> Result<(), TargetError>;

    /// Refuses objects whose image would run as root with no user set.
    async fn check_users(&self, desired: &[Resource<Self::Payload>]) -> Result<(), TargetError>;

    /// The images of `repository` kept on `node`, newest first.
    async fn stored_images(&self, node: &str, repository: &str) -> Result<Vec<StoredImage>, TargetError>;

    /// What `node` knows of `image` (`None` when it is not there).
    async fn image_facts(&self, node: &str, image: &str) -> Option<ImageFacts>;

    /// Removes those of `images` from `node` that no object there uses; returns the removed.
    async fn remove_images(&self, node: &str, images: &[String]) -> Result<Vec<String>, TargetError>;

    /// What `status` shows of an observed object.
    async fn details(&self, observed: &ObservedResource) -> Result<Details, TargetError>;
}
