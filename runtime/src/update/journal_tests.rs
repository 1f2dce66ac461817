//! The journal's document: its kinds, reading it back, compare-and-swap writes, and that
//! only changes of the machine's durable state are written.

use orchestrator::config::model::FailureAction;
use orchestrator::rollout::{Event, InstanceSpec, Policy, ProbeReport};

use super::*;
use crate::update::test_store::TestStore;

fn machine(agents: &[&str]) -> Rollout {
    let specs = agents
        .iter()
        .map(|agent| InstanceSpec {
            node: "n1".into(),
            agent: (*agent).into(),
            agents: Vec::new(),
            from_image: "img:1".into(),
            to_image: "img:2".into(),
            from_version: None,
            to_version: None,
        })
        .collect();
    let policy = Policy {
        max_parallel: 1,
        canary: 1,
        approve: false,
        min_healthy_time_ms: 1000,
        healthy_deadline_ms: 60_000,
        progress_deadline_ms: 600_000,
        stop_grace_ms: 1000,
        failure_action: FailureAction::Rollback,
        max_failure_ratio: 0.0,
    };
    Rollout::new(specs, policy, 0)
}

fn journal(kind: Kind) -> Journal {
    Journal::new(kind, "demo", "abc123".into(), vec!["n1".into()], Vec::new(), Vec::new())
}

fn healthy() -> ProbeReport {
    ProbeReport { running: true, live: true, status: Some("healthy".into()), ..ProbeReport::default() }
}

#[test]
fn an_up_is_journaled_as_up_and_resumed_like_an_update() {
    assert_eq!(serde_json::to_value(Kind::Up).unwrap(), "up");
    assert_eq!(serde_json::from_str::<Kind>("\"up\"").unwrap(), Kind::Up);
    assert!(Kind::Up.follows_config() && Kind::Update.follows_config() && !Kind::Rollback.follows_config());
}

#[tokio::test]
async fn a_written_journal_reads_back_with_its_generation() {
    let store = TestStore::default();
    assert!(read(&store).await.unwrap().is_none());
    let mut machine = machine(&["a1"]);
    let mut journal = journal(Kind::Update);
    let mut writer = Writer::new(&store, None);
    writer.persist(&mut journal, &machine).await.unwrap();
    let _ = machine.start(1);
    writer.persist(&mut journal, &machine).await.unwrap();
    let stored = read(&store).await.unwrap().expect("written");
    assert_eq!(stored.generation, 2);
    assert_eq!(stored.journal.kind, Kind::Update);
    assert_eq!(stored.journal.machine().unwrap(), machine);

    remove(&store, stored.generation).await.unwrap();
    assert!(read(&store).await.unwrap().is_none());
}

#[tokio::test]
async fn probes_and_ticks_that_change_only_the_clock_are_not_written() {
    let store = TestStore::default();
    let mut machine = machine(&["a1", "a2"]);
    let mut journal = journal(Kind::Update);
    let mut writer = Writer::new(&store, None);
    writer.persist(&mut journal, &machine).await.unwrap();
    let mut writes = vec![store.writes()];
    // Stop → Start → gating probes → done, for the canary.
    let _ = machine.start(0);
    writer.persist(&mut journal, &machine).await.unwrap();
    writes.push(store.writes());
    let _ = machine.step(Event::Stopped { instance: 0 });
    writer.persist(&mut journal, &machine).await.unwrap();
    writes.push(store.writes());
    let _ = machine.step(Event::Started { instance: 0 });
    writer.persist(&mut journal, &machine).await.unwrap();
    writes.push(store.writes());
    let gating = store.writes();
    for now_ms in [100, 200, 300] {
        let _ = machine.step(Event::Tick { now_ms });
        writer.persist(&mut journal, &machine).await.unwrap();
        let _ = machine.step(Event::Probed { instance: 0, now_ms: now_ms + 50, report: healthy() });
        writer.persist(&mut journal, &machine).await.unwrap();
    }
    assert_eq!(store.writes(), gating, "gating probes and ticks wrote the journal");
    let _ = machine.step(Event::Probed { instance: 0, now_ms: 2000, report: healthy() });
    writer.persist(&mut journal, &machine).await.unwrap();
    assert_eq!(machine.instances()[0].state, InstanceState::Done);
    assert_eq!(store.writes(), gating + 1, "the gate passing is a state change");
    // Pending → Draining and Draining → Starting are written (a Stop, a Start follows);
    // Starting → Gating issues only a probe and is not.
    assert_eq!(writes, [1, 2, 3, 3], "every state change a Stop or Start follows is written");
    // What was written is the machine's state at the last change.
    let stored = read(&store).await.unwrap().unwrap();
    assert_eq!(Durable::of(&stored.journal.machine().unwrap()), Durable::of(&machine));
}

#[tokio::test]
async fn a_journal_changed_by_another_run_stops_this_one() {
    let store = TestStore::default();
    let mut machine = machine(&["a1"]);
    let mut journal = journal(Kind::Update);
    let mut writer = Writer::new(&store, None);
    writer.persist(&mut journal, &machine).await.unwrap();
    // A second runner resumes the same rollout and writes its journal.
    let other = read(&store).await.unwrap().unwrap();
    store.overwrite(DOCUMENT, &serde_json::to_string(&other.journal).unwrap());
    let _ = machine.start(0);
    let err = writer.persist(&mut journal, &machine).await.unwrap_err();
    assert!(format!("{err:#}").contains("another run changed the rollout journal"), "{err:#}");
    // A new rollout that did not read the journal does not overwrite it either.
    let err = Writer::new(&store, None).persist(&mut journal, &machine).await.unwrap_err();
    assert!(format!("{err:#}").contains("another run changed the rollout journal"), "{err:#}");
}

#[tokio::test]
async fn a_document_of_another_format_is_an_error_naming_it() {
    let store = TestStore::with(DOCUMENT, "{\"version\": 9}");
    let err = format!("{:#}", read(&store).await.unwrap_err());
    assert!(err.contains("the test store"), "{err}");
    let mut journal = journal(Kind::Rollback);
    journal.version = 2;
    let store = TestStore::with(DOCUMENT, &serde_json::to_string(&journal).unwrap());
    let err = format!("{:#}", read(&store).await.unwrap_err());
    assert!(err.contains("format version 2, expected 1"), "{err}");
}
