//! The rollback history's document: migration of the first format, strict reading,
//! compare-and-swap writing, and how records move between the lists.

use super::*;
use crate::update::test_store::TestStore;

fn record(image: &str, at: &str, outcome: &str) -> ImageRecord {
    ImageRecord {
        image: image.into(),
        revision: Some(format!("rev-{image}")),
        version: None,
        at: Some(at.into()),
        by: Some("update".into()),
        outcome: outcome.into(),
    }
}

fn images(records: &[ImageRecord]) -> Vec<&str> {
    records.iter().map(|r| r.image.as_str()).collect()
}

#[tokio::test]
async fn the_first_format_is_read_as_deployed_images_in_order() {
    let old = r#"{"n1": ["agent:aaa", "agent:bbb"], "n2": ["agent:bbb"]}"#;
    let store = TestStore::with(DOCUMENT, old);
    let history = read(&store).await.unwrap();
    assert_eq!(history.version, FILE_VERSION);
    assert_eq!(images(&history.node("n1").deployed), ["agent:aaa", "agent:bbb"]);
    assert_eq!(images(&history.node("n2").deployed), ["agent:bbb"]);
    assert!(history.node("n1").rejected.is_empty());
    assert_eq!(history.node("n1").deployed[0].at, None);

    // Written back, it is the new format, and reads the same.
    update(&store, |_| {}).await.unwrap();
    let text = store.body(DOCUMENT).unwrap();
    assert!(text.contains("\"version\": 2"), "{text}");
    assert_eq!(read(&store).await.unwrap(), history);
}

#[tokio::test]
async fn a_missing_document_is_an_empty_history() {
    let history = read(&TestStore::default()).await.unwrap();
    assert!(history.nodes.is_empty());
}

#[tokio::test]
async fn a_corrupt_document_is_an_error_naming_it_with_a_hint() {
    for text in ["{\"version\": 2, \"nodes\": {\"n1\": {\"deployed\": [", "[1, 2]", "{\"n1\": \"agent:aaa\"}", ""] {
        let store = TestStore::with(DOCUMENT, text);
        let err = read(&store).await.unwrap_err();
        let hint = err.downcast_ref::<crate::exit::Hinted>().unwrap_or_else(|| panic!("{text:?}: {err:#}"));
        assert!(hint.message.contains("the test store"), "{text:?}: {}", hint.message);
        assert!(hint.message.contains("unreadable"), "{}", hint.message);
        assert!(hint.hint.contains("document \"history\""), "{}", hint.hint);
    }
}

#[tokio::test]
async fn a_newer_format_is_refused() {
    let store = TestStore::with(DOCUMENT, r#"{"version": 3, "nodes": {}}"#);
    let err = format!("{:#}", read(&store).await.unwrap_err());
    assert!(err.contains("format version 3, expected 2"), "{err}");
}

#[tokio::test]
async fn each_update_is_one_write_and_builds_on_the_last() {
    let store = TestStore::default();
    update(&store, |h| h.node_mut("n1").made_current(record("agent:aaa", "2026-01-01T00:00:00Z", "ok"))).await.unwrap();
    update(&store, |h| h.node_mut("n1").made_current(record("agent:bbb", "2026-01-02T00:00:00Z", "ok"))).await.unwrap();
    assert_eq!(store.writes(), 2);
    assert_eq!(images(&read(&store).await.unwrap().node("n1").deployed), ["agent:aaa", "agent:bbb"]);
}

#[tokio::test]
async fn a_change_by_another_run_between_read_and_write_is_refused_not_overwritten() {
    let store = TestStore::with(DOCUMENT, &render(&History::default()));
    let err = update(&store, |h| {
        h.node_mut("n1").made_current(record("agent:aaa", "2026-01-01T00:00:00Z", "ok"));
        // Another runner writes the history meanwhile.
        store.overwrite(DOCUMENT, &render(&History::default()));
    })
    .await
    .unwrap_err();
    assert!(format!("{err:#}").contains("another run changed the rollback history"), "{err:#}");
    assert!(read(&store).await.unwrap().nodes.is_empty(), "the other run's history stands");
}

#[test]
fn becoming_current_moves_an_image_to_the_end_and_clears_its_rejection() {
    let mut node = NodeHistory::default();
    node.made_current(record("a", "2026-01-01T00:00:00Z", "ok"));
    node.made_current(record("b", "2026-01-02T00:00:00Z", "ok"));
    node.rejected(record("c", "2026-01-03T00:00:00Z", "failed its health gate"));
    assert_eq!(node.rejection("c").unwrap().outcome, "failed its health gate");
    node.made_current(record("a", "2026-01-04T00:00:00Z", "ok"));
    assert_eq!(images(&node.deployed), ["b", "a"]);
    node.made_current(record("c", "2026-01-05T00:00:00Z", "ok"));
    assert!(node.rejection("c").is_none(), "c passed its gate since");
    node.rejected(record("c", "2026-01-06T00:00:00Z", "rolled back"));
    let newest: Vec<&str> = node.newest_first().iter().map(|r| r.image.as_str()).collect();
    assert_eq!(newest, ["c", "a", "b"]);
    assert_eq!(node.newest_first()[0].outcome, "rolled back");
    node.forget("c");
    assert!(node.rejection("c").is_none() && !node.deployed.iter().any(|r| r.image == "c"));
}

#[test]
fn a_record_without_a_revision_keeps_the_one_an_earlier_record_knew() {
    let mut node = NodeHistory::default();
    node.made_current(record("a", "2026-01-01T00:00:00Z", "ok"));
    node.made_current(record("b", "2026-01-02T00:00:00Z", "ok"));
    let mut again = record("a", "2026-01-03T00:00:00Z", "ok");
    again.revision = None;
    node.made_current(again);
    assert_eq!(node.deployed.last().unwrap().revision.as_deref(), Some("rev-a"));
    assert_eq!(node.deployed.last().unwrap().at.as_deref(), Some("2026-01-03T00:00:00Z"));
}
