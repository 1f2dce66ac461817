//! The contract of [`StateStore`], written once and run against every store (the memory
//! store's unit tests, the Docker store against the real engine). Not part of the API.

use crate::port::{StateError, StateStore};

fn generation_of(docs: &std::collections::BTreeMap<String, crate::port::Document>, name: &str) -> Option<u64> {
    docs.get(name).map(|d| d.generation)
}

fn assert_conflict<T: std::fmt::Debug>(
    result: Result<T, StateError>,
    name: &str,
    expected: Option<u64>,
    found: Option<u64>,
    what: &str,
) {
    match result {
        Err(StateError::Conflict { name: n, expected: e, found: f }) => {
            assert_eq!((n.as_str(), e, f), (name, expected, found), "{what}: the conflict names the wrong generations")
        }
        other => panic!("{what}: expected a conflict, got {other:?}"),
    }
}

/// Checks the compare-and-swap contract on an empty store, through two handles `a` and `b`
/// to the same deployment's documents (two runners). Panics naming the broken rule; leaves
/// the store empty (destroyed) when it passes.
pub async fn check<S: StateStore>(a: &S, b: &S) {
    let docs = a.load().await.expect("load");
    assert!(docs.is_empty(), "a new store is empty, found {:?}", docs.keys().collect::<Vec<_>>());

    // Create: only when absent.
    let body = "{\"text\": \"line one\\nline two\", \"quote\": \"\\\"\", \"ünïcode\": \"✓\"}\n  trailing";
    let g1 = a.store("doc", None, body).await.expect("create");
    let docs = b.load().await.expect("load");
    assert_eq!(
        docs.get("doc").map(|d| (d.generation, d.body.as_str())),
        Some((g1, body)),
        "another handle reads the write"
    );
    assert_conflict(b.store("doc", None, "second create").await, "doc", None, Some(g1), "a second create");

    // Update: only from the current generation; generations increase.
    let g2 = a.store("doc", Some(g1), "two").await.expect("update from the current generation");
    assert!(g2 > g1, "generations increase ({g1} then {g2})");
    assert_conflict(
        b.store("doc", Some(g1), "stale").await,
        "doc",
        Some(g1),
        Some(g2),
        "a write one generation behind",
    );
    let g3 = a.store("doc", Some(g2), "three").await.expect("update");
    let g4 = a.store("doc", Some(g3), "four").await.expect("update");
    assert_conflict(
        b.store("doc", Some(g1), "stale").await,
        "doc",
        Some(g1),
        Some(g4),
        "a write three generations behind",
    );
    assert_conflict(
        b.store("doc", Some(g2), "stale").await,
        "doc",
        Some(g2),
        Some(g4),
        "a write two generations behind",
    );
    assert_conflict(
        b.store("doc", Some(g4 + 1), "ahead").await,
        "doc",
        Some(g4 + 1),
        Some(g4),
        "a write from the future",
    );
    let docs = b.load().await.expect("load");
    assert_eq!(
        docs.get("doc").map(|d| (d.generation, d.body.as_str())),
        Some((g4, "four")),
        "failed writes change nothing"
    );

    // Documents are independent.
    let other = b.store("other", None, "x").await.expect("create another document");
    let g5 = a.store("doc", Some(g4), "five").await.expect("update");
    let docs = a.load().await.expect("load");
    assert_eq!((generation_of(&docs, "doc"), generation_of(&docs, "other")), (Some(g5), Some(other)));
    assert_eq!(docs.len(), 2, "load returns every document and nothing else");

    // Remove: only from the current generation; a removed document is absent, and its
    // generation never goes backwards.
    assert_conflict(b.remove("doc", g4).await, "doc", Some(g4), Some(g5), "a stale remove");
    a.remove("doc", g5).await.expect("remove");
    let docs = b.load().await.expect("load");
    assert!(!docs.contains_key("doc"), "a removed document is not loaded");
    assert_eq!(generation_of(&docs, "other"), Some(other), "removing one document keeps the others");
    assert_conflict(b.remove("doc", g5).await, "doc", Some(g5), None, "removing a removed document");
    assert_conflict(
        b.store("doc", Some(g5), "after removal").await,
        "doc",
        Some(g5),
        None,
        "updating a removed document",
    );
    assert_conflict(b.store("doc", Some(g3), "stale").await, "doc", Some(g3), None, "a stale write after removal");
    let g6 = b.store("doc", None, "again").await.expect("create after removal");
    assert!(g6 > g5, "a document created again continues its generations ({g5} then {g6})");
    assert_conflict(
        a.store("doc", Some(g4), "stale").await,
        "doc",
        Some(g4),
        Some(g6),
        "a stale write after re-creation",
    );
    assert_conflict(a.remove("doc", 0).await, "doc", Some(0), Some(g6), "removing generation 0");

    // Destroy: everything goes.
    a.destroy().await.expect("destroy");
    assert!(b.load().await.expect("load").is_empty(), "destroy removes every document");
    let fresh = b.store("doc", None, "after destroy").await.expect("create after destroy");
    assert_eq!(b.load().await.expect("load").get("doc").map(|d| d.generation), Some(fresh));
    a.destroy().await.expect("destroy");
    a.destroy().await.expect("destroy is idempotent");
}
