//! Putting an image built on the control host onto a node's engine: `docker save` streamed
//! into `docker load` (through the SSH connection for remote nodes), then the image ID on
//! the node is compared with the source's. Nothing is shipped when the node has it already.

use bollard::query_parameters::ImportImageOptionsBuilder;
use futures_util::StreamExt;

use super::Engine;

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
