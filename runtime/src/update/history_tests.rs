//! The rollback history's file: migration of the first format, strict reading, atomic
//! writing, and how records move between the lists.

use super::*;

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

#[test]
fn the_first_format_is_read_as_deployed_images_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let old = r#"{"n1": ["agent:aaa", "agent:bbb"], "n2": ["agent:bbb"]}"#;
    std::fs::write(path(dir.path()), old).unwrap();
    let history = read(dir.path()).unwrap();
    assert_eq!(history.version, FILE_VERSION);
    assert_eq!(images(&history.node("n1").deployed), ["agent:aaa", "agent:bbb"]);
    assert_eq!(images(&history.node("n2").deployed), ["agent:bbb"]);
    assert!(history.node("n1").rejected.is_empty());
    assert_eq!(history.node("n1").deployed[0].at, None);

    // Written back, it is the new format, and reads the same.
    write(dir.path(), &history).unwrap();
    let text = std::fs::read_to_string(path(dir.path())).unwrap();
    assert!(text.contains("\"version\": 2"), "{text}");
    assert_eq!(read(dir.path()).unwrap(), history);
}

#[test]
fn a_missing_file_is_an_empty_history() {
    let dir = tempfile::tempdir().unwrap();
    let history = read(dir.path()).unwrap();
    assert!(history.nodes.is_empty());
}

#[test]
fn a_corrupt_file_is_an_error_naming_it_with_a_hint() {
    for text in ["{\"version\": 2, \"nodes\": {\"n1\": {\"deployed\": [", "[1, 2]", "{\"n1\": \"agent:aaa\"}", ""] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(path(dir.path()), text).unwrap();
        let err = read(dir.path()).unwrap_err();
        let hint = err.downcast_ref::<crate::exit::Hinted>().unwrap_or_else(|| panic!("{text:?}: {err:#}"));
        assert!(hint.message.contains(&path(dir.path()).display().to_string()), "{text:?}: {}", hint.message);
        assert!(hint.message.contains("unreadable"), "{}", hint.message);
        assert!(hint.hint.contains("move it aside"), "{}", hint.hint);
    }
}

#[test]
fn a_newer_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(path(dir.path()), r#"{"version": 3, "nodes": {}}"#).unwrap();
    let err = format!("{:#}", read(dir.path()).unwrap_err());
    assert!(err.contains("format version 3, expected 2"), "{err}");
}

#[test]
fn a_directory_in_the_way_is_an_error_not_an_empty_history() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(path(dir.path())).unwrap();
    let err = format!("{:#}", read(dir.path()).unwrap_err());
    assert!(err.contains("images.json is unreadable"), "{err}");
}

#[test]
fn writes_are_atomic_and_leave_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    update(dir.path(), |h| h.node_mut("n1").made_current(record("agent:aaa", "2026-01-01T00:00:00Z", "ok"))).unwrap();
    update(dir.path(), |h| h.node_mut("n1").made_current(record("agent:bbb", "2026-01-02T00:00:00Z", "ok"))).unwrap();
    let names: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["images.json"]);
    assert_eq!(images(&read(dir.path()).unwrap().node("n1").deployed), ["agent:aaa", "agent:bbb"]);
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
