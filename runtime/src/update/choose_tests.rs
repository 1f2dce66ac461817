//! `rollback`'s choice: never a rejected image unless named, the history before the
//! creation times, and only images still on the node.

use super::*;
use crate::update::history::{ImageRecord, NodeHistory};

fn present(images: &[(&str, i64)]) -> Vec<Present> {
    // Newest first, as the engine listing is sorted.
    let mut out: Vec<Present> = images
        .iter()
        .map(|(reference, created)| Present {
            id: format!("sha256:{reference}"),
            reference: reference.to_string(),
            revision: Some(format!("rev{}", &reference[reference.len() - 1..])),
            version: None,
            created: *created,
        })
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.created));
    out
}

fn record(image: &str) -> ImageRecord {
    ImageRecord::now(image, None, None, "update", "passed its health gate")
}

/// `deployed` in order; `rejected` images rejected after that.
fn history(deployed: &[&str], rejected: &[&str]) -> NodeHistory {
    let mut node = NodeHistory::default();
    for image in deployed {
        node.made_current(record(image));
    }
    for image in rejected {
        node.rejected(ImageRecord::now(image, None, None, "update", "failed its health gate"));
    }
    node
}

fn check(node: &NodeHistory, current: &str, on_node: &[(&str, i64)], to: Option<&str>, expect: Option<&str>) {
    let present = present(on_node);
    let id = format!("sha256:{current}");
    let chosen = choose(node, current, Some(&id), &present, to);
    assert_eq!(chosen.as_ref().map(|c| c.image.as_str()), expect, "current {current}, to {to:?}, history {node:#?}");
}

#[test]
fn the_issue_a_rejected_revision_between_two_good_ones_is_skipped() {
    // up a1, update a2, a3's canary failed (rejected), a4 killed and resumed.
    let node = history(&["a1", "a2"], &["a3"]);
    let mut node = node;
    node.made_current(record("a4"));
    let all = [("a1", 1), ("a2", 2), ("a3", 3), ("a4", 4)];
    check(&node, "a4", &all, None, Some("a2"));
}

#[test]
fn a_rejected_image_is_never_chosen_even_when_it_was_current_once() {
    // a2 ran, then was reverted by a later rollout's failure on this node.
    let mut node = history(&["a1", "a2", "a3"], &[]);
    node.rejected(ImageRecord::now("a2", None, None, "update", "rolled back"));
    let all = [("a1", 1), ("a2", 2), ("a3", 3)];
    check(&node, "a3", &all, None, Some("a1"));
    // Nothing older that is good: nothing (not the rejected one).
    let node = history(&["a2", "a3"], &["a2"]);
    check(&node, "a3", &[("a2", 2), ("a3", 3)], None, None);
}

#[test]
fn without_a_record_of_the_current_image_the_newest_older_good_image_is_chosen() {
    let node = history(&[], &["a3"]);
    let all = [("a1", 1), ("a2", 2), ("a3", 3), ("a4", 4), ("a5", 5)];
    check(&node, "a4", &all, None, Some("a2"));
    // The newer image a5 is not "previous".
    check(&NodeHistory::default(), "a4", &all, None, Some("a3"));
}

#[test]
fn images_no_longer_on_the_node_are_skipped() {
    let node = history(&["a1", "a2", "a3"], &[]);
    check(&node, "a3", &[("a1", 1), ("a3", 3)], None, Some("a1"));
    check(&node, "a3", &[("a3", 3)], None, None);
}

#[test]
fn after_a_rollback_the_previous_one_is_the_image_rolled_back_from() {
    let node = history(&["a1", "a2", "a1"], &[]);
    check(&node, "a1", &[("a1", 1), ("a2", 2)], None, Some("a2"));
}

#[test]
fn to_may_name_a_rejected_image_and_says_so() {
    let node = history(&["a1", "a2", "a4"], &["a3"]);
    let all = present(&[("a1", 1), ("a2", 2), ("a3", 3), ("a4", 4)]);
    let chosen = choose(&node, "a4", Some("sha256:a4"), &all, Some("rev3")).unwrap();
    assert_eq!(chosen.image, "a3");
    assert_eq!(chosen.rejected.as_deref(), Some("failed its health gate"));
    let chosen = choose(&node, "a4", Some("sha256:a4"), &all, Some("a1")).unwrap();
    assert_eq!(chosen, Chosen { image: "a1".into(), rejected: None });
    assert_eq!(choose(&node, "a4", Some("sha256:a4"), &all, Some("nope")), None);
}

#[test]
fn to_prefers_another_image_over_the_running_one_with_the_same_revision() {
    let node = NodeHistory::default();
    let mut all = present(&[("x1", 1), ("x2", 2)]);
    for p in &mut all {
        p.revision = Some("c0ffee-dirty".into());
    }
    let chosen = choose(&node, "x2", Some("sha256:x2"), &all, Some("c0ffee")).unwrap();
    assert_eq!(chosen.image, "x1");
}
