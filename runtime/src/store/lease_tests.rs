//! The lease against the in-memory store: two runs, takeovers, renewals, status and release.

use std::time::Duration;

use orchestrator::port::StateStore;
use orchestrator::state::MemoryStore;
use orchestrator::state::lock::TakeOver;

use super::lease::{self, Lease, LeaseError, age};
use super::tests_support::{Clock, Processes, runner};

const TTL: Duration = Duration::from_secs(600);
const START: u64 = 1_700_000_000_000;

async fn acquire(
    store: &MemoryStore,
    host: &str,
    pid: u32,
    clock: &Clock,
    processes: &Processes,
) -> Result<Lease, LeaseError> {
    Lease::acquire_as(store, "demo", "rivetctl update", TTL, runner(host, pid, clock, processes)).await
}

fn held_message(err: LeaseError) -> String {
    match err {
        LeaseError::Held(held) => held.to_string(),
        other => panic!("expected the lock to be held, got: {other}"),
    }
}

#[test]
fn ages_read_as_people_say_them() {
    assert_eq!(age(123_456), "2m 3s");
    assert_eq!(age(45_999), "45s");
    assert_eq!(age(3_900_000), "1h 5m");
    assert_eq!(age(0), "0s");
}

#[tokio::test]
async fn a_second_run_is_refused_naming_the_first_and_gets_the_lock_once_released() {
    let (store, clock, processes) = (MemoryStore::new(), Clock::at(START), Processes::with(&[123, 456]));
    let first = acquire(&store, "ci-1", 123, &clock, &processes).await.expect("a free lock is taken");
    assert_eq!(store.calls(), 2, "acquire is one load and one write");
    assert!(first.took_over().is_none());
    clock.advance(123_000);
    let err = acquire(&store, "ci-2", 456, &clock, &processes).await.err().expect("the second run is refused");
    assert_eq!(
        held_message(err),
        "deployment \"demo\" is locked by `rivetctl update` on ci-1 (pid 123), held for 2m 3s"
    );
    // The same host too, while the holder's process exists.
    let err = acquire(&store, "ci-1", 456, &clock, &processes).await.err().expect("refused on the same host");
    assert!(held_message(err).contains("on ci-1 (pid 123)"));

    let calls = store.calls();
    first.release(&store).await.expect("release");
    assert_eq!(store.calls() - calls, 1, "release is one write");
    let second = acquire(&store, "ci-2", 456, &clock, &processes).await.expect("taken after the release");
    assert_eq!(second.record().host, "ci-2");
    assert!(second.took_over().is_none());
}

#[tokio::test]
async fn a_dead_holder_on_this_host_is_taken_over_at_once_a_live_one_only_after_the_ttl() {
    let (store, clock, processes) = (MemoryStore::new(), Clock::at(START), Processes::with(&[123, 456]));
    let _hung = acquire(&store, "ci-1", 123, &clock, &processes).await.unwrap();
    clock.advance(TTL.as_millis() as u64 - 1);
    assert!(matches!(acquire(&store, "ci-1", 456, &clock, &processes).await, Err(LeaseError::Held(_))), "live: kept");
    assert!(
        matches!(acquire(&store, "ci-2", 456, &clock, &processes).await, Err(LeaseError::Held(_))),
        "elsewhere: kept"
    );
    clock.advance(1);
    let taken = acquire(&store, "ci-2", 456, &clock, &processes).await.expect("taken over once the TTL passed");
    assert_eq!(taken.took_over().map(|(r, why)| (r.pid, *why)), Some((123, TakeOver::Expired)));

    // kill -9 of the new holder: a run on its host takes over at once.
    processes.kill(456);
    clock.advance(1_000);
    let err = acquire(&store, "ci-1", 789, &clock, &processes).await.err().expect("another host must wait");
    assert!(held_message(err).contains("on ci-2 (pid 456)"));
    let resumed = acquire(&store, "ci-2", 789, &clock, &processes).await.expect("a dead holder here is taken over");
    assert_eq!(resumed.took_over().map(|(r, why)| (r.pid, *why)), Some((456, TakeOver::Dead)));
}

#[tokio::test]
async fn renewals_are_cheap_keep_the_lock_and_fail_once_it_was_lost() {
    let (store, clock, processes) = (MemoryStore::new(), Clock::at(START), Processes::with(&[123, 456]));
    let mut lease = acquire(&store, "ci-1", 123, &clock, &processes).await.unwrap();
    let calls = store.calls();
    clock.advance(TTL.as_millis() as u64 / 10 - 1);
    lease.renew(&store).await.expect("renew");
    assert_eq!(store.calls(), calls, "a renewal within a tenth of the TTL writes nothing");
    clock.advance(1);
    lease.renew(&store).await.expect("renew");
    assert_eq!(store.calls(), calls + 1, "then one write");
    assert_eq!(lease.record().expires, START + TTL.as_millis() as u64 / 10 + TTL.as_millis() as u64);

    // Renewed work keeps the lock past its first TTL.
    for _ in 0..15 {
        clock.advance(TTL.as_millis() as u64 / 5);
        lease.renew(&store).await.expect("renew");
    }
    assert!(matches!(acquire(&store, "ci-2", 456, &clock, &processes).await, Err(LeaseError::Held(_))));

    // It hangs past the TTL; another run takes over; its next renewal fails and says who.
    clock.advance(TTL.as_millis() as u64);
    let other = acquire(&store, "ci-2", 456, &clock, &processes).await.expect("taken over");
    match lease.renew(&store).await {
        Err(err @ LeaseError::LostLock { .. }) => assert_eq!(
            err.to_string(),
            "this run lost the lock of deployment \"demo\": `rivetctl update` on ci-2 (pid 456) holds it now"
        ),
        other => panic!("expected LostLock, got {:?}", other.err().map(|e| e.to_string())),
    }
    assert!(matches!(lease.release(&store).await, Err(LeaseError::LostLock { .. })), "nor can it release");
    let status = lease::status(&store, "demo", &runner("ci-2", 1, &clock, &processes)).await.unwrap().unwrap();
    assert_eq!(status.holder, *other.record(), "the lost lease changed nothing");
}

#[tokio::test]
async fn a_hung_holder_that_lapsed_keeps_the_lock_if_nobody_took_it() {
    let (store, clock, processes) = (MemoryStore::new(), Clock::at(START), Processes::with(&[123]));
    let mut lease = acquire(&store, "ci-1", 123, &clock, &processes).await.unwrap();
    clock.advance(2 * TTL.as_millis() as u64);
    lease.renew(&store).await.expect("nobody took it: the renewal succeeds");
    lease.release(&store).await.expect("release");
    assert!(store.load().await.unwrap().is_empty());
}

#[tokio::test]
async fn status_and_release_name_the_holder_and_refuse_a_live_one_without_force() {
    let (store, clock, processes) = (MemoryStore::new(), Clock::at(START), Processes::with(&[123, 7]));
    let here = runner("ci-1", 7, &clock, &processes);
    assert_eq!(lease::status(&store, "demo", &here).await.unwrap(), None);
    let lease = acquire(&store, "ci-1", 123, &clock, &processes).await.unwrap();
    clock.advance(5_000);
    let status = lease::status(&store, "demo", &here).await.unwrap().expect("locked");
    assert_eq!((status.age_ms, status.expired, status.alive, status.live()), (5_000, false, Some(true), true));
    let elsewhere = lease::status(&store, "demo", &runner("ci-2", 7, &clock, &processes)).await.unwrap().unwrap();
    assert_eq!(elsewhere.alive, None, "liveness is known only on the holder's host");

    let err = lease::release(&store, "demo", false, &here).await.expect_err("a live holder is kept");
    assert!(err.to_string().contains("locked by `rivetctl update` on ci-1 (pid 123), held for 5s"), "{err}");
    processes.kill(123);
    let status = lease::status(&store, "demo", &here).await.unwrap().unwrap();
    assert!(!status.live());
    let removed = lease::release(&store, "demo", false, &here).await.expect("a dead holder's lock is removed");
    assert_eq!(removed.map(|r| r.pid), Some(123));
    assert!(matches!(lease.release(&store).await, Err(LeaseError::LostLock { taker: None, .. })));

    let _live = acquire(&store, "ci-2", 9, &clock, &processes).await.unwrap();
    let removed = lease::release(&store, "demo", true, &here).await.expect("--force removes a live one");
    assert_eq!(removed.map(|r| r.host), Some("ci-2".to_string()));
    assert_eq!(lease::release(&store, "demo", true, &here).await.unwrap(), None);
}

#[tokio::test]
async fn an_unreadable_or_newer_lock_is_an_error_not_a_free_lock() {
    let (store, clock, processes) = (MemoryStore::new(), Clock::at(START), Processes::with(&[]));
    store.store("lock", None, r#"{"v":2}"#).await.unwrap();
    let err = acquire(&store, "ci-1", 1, &clock, &processes).await.err().expect("refused");
    let text = format!("{:#}", anyhow::Error::new(err));
    assert_eq!(
        text,
        "the lock of deployment \"demo\" in the in-memory state store is unreadable: the lock record has format version 2, this rivetctl knows version 1"
    );
    assert_eq!(store.load().await.unwrap()["lock"].body, r#"{"v":2}"#, "never written over");
}

#[test]
fn this_process_exists_and_an_unused_pid_does_not() {
    assert!(lease::process_exists(std::process::id()));
    assert!(lease::process_exists(1), "pid 1 exists (EPERM counts as existing)");
    let mut child = std::process::Command::new("true").spawn().expect("spawn true");
    let pid = child.id();
    child.wait().expect("wait");
    assert!(!lease::process_exists(pid), "a reaped child's pid is free");
    assert!(lease::process_exists(0) && lease::process_exists(u32::MAX), "doubtful pids count as alive");
}
