//! The agent images kept on a node for `rollback`: removing this deployment's images
//! beyond the newest `keep_images` that no object uses. Only images in the deployment's
//! rollback history are ever removed, so other deployments' images on a shared engine are
//! never touched.

use std::collections::BTreeSet;

use orchestrator::port::{Artifacts, StateStore};

use super::history;
use crate::session::target_error;

/// The images to remove from a node's history: beyond the newest `keep` of each list,
/// unless the other list keeps them. (The target keeps those an object still uses.)
fn excess(node: &history::NodeHistory, keep: usize) -> Vec<String> {
    fn split(list: &[history::ImageRecord], keep: usize) -> (Vec<String>, Vec<String>) {
        let images: Vec<String> = list.iter().map(|r| r.image.clone()).collect();
        let at = images.len().saturating_sub(keep);
        (images[..at].to_vec(), images[at..].to_vec())
    }
    let (old_deployed, kept_deployed) = split(&node.deployed, keep);
    let (old_rejected, kept_rejected) = split(&node.rejected, keep);
    let kept: BTreeSet<String> = kept_deployed.into_iter().chain(kept_rejected).collect();
    let mut out: Vec<String> = old_deployed.into_iter().chain(old_rejected).collect();
    out.retain(|image| !kept.contains(image));
    out.dedup();
    out
}

/// Removes this deployment's images on `node` beyond the newest `keep` (of those that
/// became current, and of those rejected) that no object there uses, and forgets them in
/// the history. Returns what was removed.
pub async fn prune<T: Artifacts, S: StateStore>(
    store: &S,
    target: &T,
    node: &str,
    keep: usize,
) -> anyhow::Result<Vec<String>> {
    let excess = excess(&history::read(store).await?.node(node), keep);
    if excess.is_empty() {
        return Ok(Vec::new());
    }
    let removed = target.remove_images(node, &excess).await.map_err(target_error)?;
    if !removed.is_empty() {
        history::update(store, |h| {
            let node = h.node_mut(node);
            for image in &removed {
                node.forget(image);
            }
        })
        .await?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::update::history::{ImageRecord, NodeHistory};

    fn node(deployed: &[&str], rejected: &[&str]) -> NodeHistory {
        let mut node = NodeHistory::default();
        for image in deployed {
            node.made_current(ImageRecord::now(image, None, None, "update", "ok"));
        }
        for image in rejected {
            node.rejected(ImageRecord::now(image, None, None, "update", "failed"));
        }
        node
    }

    #[test]
    fn keeps_the_newest_of_each_list() {
        assert_eq!(excess(&node(&["a1", "a2", "a3", "a4"], &["r1", "r2", "r3"]), 2), ["a1", "a2", "r1"]);
        assert!(excess(&node(&["a1", "a2"], &["r1"]), 2).is_empty());
        // An image current once and rejected since is kept while either list keeps it.
        assert_eq!(excess(&node(&["a1", "a2", "a3"], &["a1"]), 2), Vec::<String>::new());
    }
}
