//! The agent images kept on a node for `rollback`: listing them, and removing this
//! deployment's images beyond the newest `keep_images` that no container uses. Only images
//! in the deployment's rollback history are ever removed, so other deployments' images on
//! a shared engine are never touched.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use bollard::query_parameters::{ListContainersOptionsBuilder, ListImagesOptionsBuilder, RemoveImageOptionsBuilder};

use super::choose::Present;
use super::history;
use crate::engines::Link;

/// The images of `repository` on the node, newest first.
pub async fn present(link: &Link, repository: &str) -> anyhow::Result<Vec<Present>> {
    let filters = HashMap::from([("reference".to_string(), vec![repository.to_string()])]);
    let options = ListImagesOptionsBuilder::default().filters(&filters).build();
    let mut out: Vec<Present> = link
        .engine
        .call()
        .list_images(Some(options))
        .await?
        .into_iter()
        .filter_map(|image| {
            let reference = image.repo_tags.iter().find(|t| t.starts_with(&format!("{repository}:")))?.clone();
            Some(Present {
                id: image.id,
                reference,
                revision: image.labels.get("org.opencontainers.image.revision").cloned(),
                version: image.labels.get("org.opencontainers.image.version").cloned(),
                created: image.created,
            })
        })
        .collect();
    out.sort_by(|a, b| b.created.cmp(&a.created).then(a.reference.cmp(&b.reference)));
    Ok(out)
}

/// The images to remove from a node's history: beyond the newest `keep` of each list,
/// unless the other list keeps them or a container uses them.
fn excess(node: &history::NodeHistory, keep: usize, used: &BTreeSet<String>) -> Vec<String> {
    fn split(list: &[history::ImageRecord], keep: usize) -> (Vec<String>, Vec<String>) {
        let images: Vec<String> = list.iter().map(|r| r.image.clone()).collect();
        let at = images.len().saturating_sub(keep);
        (images[..at].to_vec(), images[at..].to_vec())
    }
    let (old_deployed, kept_deployed) = split(&node.deployed, keep);
    let (old_rejected, kept_rejected) = split(&node.rejected, keep);
    let kept: BTreeSet<String> = kept_deployed.into_iter().chain(kept_rejected).collect();
    let mut out: Vec<String> = old_deployed.into_iter().chain(old_rejected).collect();
    out.retain(|image| !kept.contains(image) && !used.contains(image));
    out.dedup();
    out
}

/// Removes this deployment's images beyond the newest `keep` (of those that became current,
/// and of those rejected) that no container on the node uses. Returns what was removed.
pub async fn prune(state_dir: &Path, link: &Link, keep: usize) -> anyhow::Result<Vec<String>> {
    let node = history::read(state_dir)?.node(&link.name);
    let used: BTreeSet<String> = link
        .engine
        .call()
        .list_containers(Some(ListContainersOptionsBuilder::default().all(true).build()))
        .await?
        .into_iter()
        .filter_map(|c| c.image)
        .collect();
    let mut removed = Vec::new();
    for image in excess(&node, keep, &used) {
        let options = RemoveImageOptionsBuilder::default().build();
        match link.engine.call().remove_image(&image, Some(options), None).await {
            Ok(_) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {
                removed.push(image)
            }
            // In use by something else (another tag, a container of another deployment): kept.
            Err(_) => {}
        }
    }
    if !removed.is_empty() {
        history::update(state_dir, |h| {
            let node = h.node_mut(&link.name);
            for image in &removed {
                node.forget(image);
            }
        })?;
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
    fn keeps_the_newest_of_each_list_and_what_containers_use() {
        let used = BTreeSet::from(["a1".to_string()]);
        assert_eq!(excess(&node(&["a1", "a2", "a3", "a4"], &["r1", "r2", "r3"]), 2, &used), ["a2", "r1"]);
        assert!(excess(&node(&["a1", "a2"], &["r1"]), 2, &BTreeSet::new()).is_empty());
        // An image current once and rejected since is kept while either list keeps it.
        assert_eq!(excess(&node(&["a1", "a2", "a3"], &["a1"]), 2, &BTreeSet::new()), Vec::<String>::new());
    }
}
