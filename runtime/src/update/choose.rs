//! Which image `rollback` returns an agent to: a pure decision over the node's rollback
//! history and the images still on the node.
//!
//! Without `--to`: the newest image that became current before the one running now, was
//! not rejected on the node since, and is still there. When the history does not know the
//! running image (deployed before rivetctl recorded it), the newest older image of the
//! repository on the node that was never rejected. `--to` may name a rejected image: the
//! choice then says so, for a warning.

use super::history::NodeHistory;

/// One image of the agent repository on a node, as the target keeps it
/// (`Artifacts::stored_images`).
pub use orchestrator::port::StoredImage as Present;

/// The image chosen, and why it may need a warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    pub image: String,
    /// Why the image was rejected on this node, when it was (only ever with `--to`).
    pub rejected: Option<String>,
}

/// Whether `present` is what `--to wanted` names: a revision prefix, the reference, or a tag.
pub fn names(present: &Present, wanted: &str) -> bool {
    present.revision.as_deref().is_some_and(|r| r.starts_with(wanted))
        || present.reference == wanted
        || present.reference.ends_with(&format!(":{wanted}"))
}

/// The image to return to, or `None` when there is no earlier one. `present` is the node's
/// images of the repository, newest first; `current` the running image (`current_id` its ID).
pub fn choose(
    history: &NodeHistory,
    current: &str,
    current_id: Option<&str>,
    present: &[Present],
    to: Option<&str>,
) -> Option<Chosen> {
    let on_node = |image: &str| present.iter().any(|p| p.reference == image);
    let rejected = |image: &str| history.rejection(image).map(|r| r.outcome.clone());
    let is_current = |p: &Present| Some(p.id.as_str()) == current_id || p.reference == current;
    if let Some(wanted) = to {
        // Several images can carry one revision (builds of a dirty tree): not the running one.
        let found = present
            .iter()
            .find(|p| names(p, wanted) && !is_current(p))
            .or_else(|| present.iter().find(|p| names(p, wanted)))?;
        return Some(Chosen { image: found.reference.clone(), rejected: rejected(&found.reference) });
    }
    if let Some(at) = history.deployed.iter().rposition(|r| r.image == current) {
        // The history knows what came before: it decides (an image it never recorded here
        // may belong to another deployment on a shared engine).
        return history.deployed[..at]
            .iter()
            .rev()
            .find(|r| rejected(&r.image).is_none() && on_node(&r.image))
            .map(|r| Chosen { image: r.image.clone(), rejected: None });
    }
    let now = present.iter().find(|p| is_current(p)).map_or(i64::MAX, |p| p.created);
    present
        .iter()
        .find(|p| !is_current(p) && p.created <= now && rejected(&p.reference).is_none())
        .map(|p| Chosen { image: p.reference.clone(), rejected: None })
}

#[cfg(test)]
#[path = "choose_tests.rs"]
mod tests;
