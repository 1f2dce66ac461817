//! Putting an image built on the control host onto a node's engine, in one of two ways:
//! [`ship`], `docker save` streamed into `docker load` (through the SSH connection for remote
//! nodes), or [`pull`], the node's engine pulling it by digest from the registry it was
//! pushed to (a node told `images: pull`). Either way the image ID on the node is then
//! compared with the source's, and nothing moves when the node has it already.

use bollard::query_parameters::{ImportImageOptionsBuilder, TagImageOptionsBuilder};
use futures_util::StreamExt;

use super::Engine;
use crate::registry::{self, Credentials, RegistryError};

/// What shipping did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shipped {
    /// The node had the image with the same ID.
    Present,
    /// Streamed over; `bytes` were sent.
    Sent { bytes: u64 },
}

/// A failure to ship.
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error("image {image} is not on the control host")]
    Missing { image: String },
    #[error("cannot export {image} from the control host")]
    Export {
        image: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("cannot load {image} on node {node}")]
    Load {
        image: String,
        node: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("image {image} on node {node} has ID {found}, expected {expected}")]
    Mismatch { image: String, node: String, expected: String, found: String },
    #[error("node {node} cannot pull {pinned}")]
    Pull {
        pinned: String,
        node: String,
        #[source]
        source: RegistryError,
    },
    #[error("cannot tag {pinned} as {image} on node {node}")]
    Tag {
        image: String,
        pinned: String,
        node: String,
        #[source]
        source: bollard::errors::Error,
    },
}

async fn image_id(engine: &Engine, image: &str) -> Option<String> {
    engine.call().inspect_image(image).await.ok().and_then(|i| i.id)
}

/// Ships `image` from `from` (the control host) to `to` (a node) and verifies its ID there.
pub async fn ship(from: &Engine, to: &Engine, image: &str) -> Result<Shipped, ShipError> {
    let expected = image_id(from, image).await.ok_or_else(|| ShipError::Missing { image: image.to_string() })?;
    if image_id(to, image).await.as_deref() == Some(expected.as_str()) {
        return Ok(Shipped::Present);
    }
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = sent.clone();
    let name = image.to_string();
    let export = from.call().export_image(image).map(move |chunk| {
        chunk
            .inspect(|bytes| {
                counter.fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
            })
            .map_err(|e| std::io::Error::other(format!("exporting {name}: {e}")))
    });
    let options = ImportImageOptionsBuilder::default().quiet(true).build();
    let mut load = to.call().import_image_stream(options, export, None);
    while let Some(item) = load.next().await {
        if let Err(source) = item {
            return Err(ShipError::Load { image: image.to_string(), node: to.node.clone(), source });
        }
    }
    let found = image_id(to, image).await.unwrap_or_else(|| "(none)".to_string());
    if found != expected {
        return Err(ShipError::Mismatch { image: image.to_string(), node: to.node.clone(), expected, found });
    }
    Ok(Shipped::Sent { bytes: sent.load(std::sync::atomic::Ordering::Relaxed) })
}

/// What pulling did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pulled {
    /// The node had the image with the same ID.
    Present,
    /// The node's engine pulled it (or had its layers) and tagged it.
    Pulled,
}

/// Makes the node `to` hold `image` (`rivetos-agent:<hash>`, as containers name it) by
/// pulling `pinned` (`<registry>/rivetos-agent:<hash>@sha256:…`, which the control host
/// `from` pushed) with the node's engine, tagging it `image` there, and checking its ID
/// against the control host's.
pub async fn pull(
    from: &Engine,
    to: &Engine,
    image: &str,
    pinned: &str,
    credentials: Option<&Credentials>,
) -> Result<Pulled, ShipError> {
    let expected = image_id(from, image).await.ok_or_else(|| ShipError::Missing { image: image.to_string() })?;
    if image_id(to, image).await.as_deref() == Some(expected.as_str()) {
        return Ok(Pulled::Present);
    }
    registry::pull(to, pinned, credentials).await.map_err(|source| ShipError::Pull {
        pinned: pinned.to_string(),
        node: to.node.clone(),
        source,
    })?;
    let (repository, tag) = image.rsplit_once(':').unwrap_or((image, "latest"));
    let tagging = TagImageOptionsBuilder::default().repo(repository).tag(tag).build();
    to.call().tag_image(pinned, Some(tagging)).await.map_err(|source| ShipError::Tag {
        image: image.to_string(),
        pinned: pinned.to_string(),
        node: to.node.clone(),
        source,
    })?;
    let found = image_id(to, image).await.unwrap_or_else(|| "(none)".to_string());
    if found != expected {
        return Err(ShipError::Mismatch { image: image.to_string(), node: to.node.clone(), expected, found });
    }
    Ok(Pulled::Pulled)
}
