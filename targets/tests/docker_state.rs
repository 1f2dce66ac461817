//! The Docker state store against this machine's engine: the port's CAS contract, racing
//! writers of which exactly one wins, tombstones, a 1 MB body, destroy, what the docker CLI
//! sees, and what the lock's acquire and release cost in API calls and time.
//!
//! Every test uses its own deployment name (pid and a counter) and removes its volumes on
//! every path, also when it panics.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use orchestrator::config::rules::{Endpoint, TcpSecurity};
use orchestrator::port::{StateError, StateStore};
use rivet_targets::docker::state::{DockerStore, labels};
use rivet_targets::docker::{self, Engine};

/// A unique deployment whose state volumes are removed when it goes out of scope.
struct Deployment(String);

impl Deployment {
    fn new(what: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        Deployment(format!("st-{what}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)))
    }

    /// Names of its state volumes, as the docker CLI lists them.
    fn volumes(&self) -> Vec<String> {
        let out = Command::new("docker")
            .args(["volume", "ls", "-q", "--filter", &format!("label={}={}", labels::STATE_OF, self.0)])
            .output()
            .expect("the docker CLI runs");
        assert!(out.status.success(), "docker volume ls: {}", String::from_utf8_lossy(&out.stderr));
        let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
        names.sort();
        names
    }

    /// One label of one volume, read with the docker CLI.
    fn label(volume: &str, label: &str) -> String {
        let format = format!("{{{{index .Labels \"{label}\"}}}}");
        let out =
            Command::new("docker").args(["volume", "inspect", "-f", &format, volume]).output().expect("docker runs");
        assert!(out.status.success(), "docker volume inspect: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim_end_matches('\n').to_string()
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        let volumes = self.volumes();
        if !volumes.is_empty() {
            let _ = Command::new("docker").args(["volume", "rm", "-f"]).args(&volumes).output();
        }
    }
}

async fn engine() -> Engine {
    docker::connect("hub", &Endpoint::Local, &TcpSecurity::Unset)
        .await
        .unwrap_or_else(|err| panic!("these tests need the Docker Engine: {err}\nhint: {}", err.hint()))
}

async fn store(deployment: &Deployment) -> DockerStore {
    DockerStore::new(engine().await, deployment.0.clone())
}

#[tokio::test]
async fn the_docker_store_keeps_the_contract() {
    let deployment = Deployment::new("contract");
    let (a, b) = (store(&deployment).await, store(&deployment).await);
    orchestrator::state::contract::check(&a, &b).await;
    assert_eq!(deployment.volumes(), Vec::<String>::new());
}

#[tokio::test]
async fn of_racing_writers_exactly_one_wins_each_round() {
    let deployment = Deployment::new("race");
    let mut stores = Vec::new();
    for _ in 0..6 {
        stores.push(store(&deployment).await);
    }
    let mut expected = None;
    for round in 0..4 {
        let writes = stores.iter().enumerate().map(|(i, s)| {
            let body = format!("round {round} writer {i}");
            async move { (body.clone(), s.store("lock", expected, &body).await) }
        });
        let results = join_all(writes).await;
        let won: Vec<&(String, Result<u64, StateError>)> = results.iter().filter(|(_, r)| r.is_ok()).collect();
        assert_eq!(won.len(), 1, "round {round}: exactly one writer wins: {results:?}");
        for (_, result) in &results {
            if let Err(err) = result {
                assert!(matches!(err, StateError::Conflict { .. }), "round {round}: a loser sees a conflict: {err}");
            }
        }
        let (body, generation) = (&won[0].0, *won[0].1.as_ref().unwrap());
        let docs = stores[0].load().await.expect("load");
        assert_eq!(docs["lock"].body, *body, "round {round}: the winner's body is the document");
        assert_eq!(docs["lock"].generation, generation);
        expected = Some(generation);
    }
    // Losers removed their volumes, the winner the older generations: one volume is left.
    assert_eq!(deployment.volumes().len(), 1, "{:?}", deployment.volumes());
}

#[tokio::test]
async fn the_volumes_are_what_the_docker_cli_and_observe_see() {
    let deployment = Deployment::new("format");
    let store = store(&deployment).await;
    let g1 = store.store("journal", None, "{\"v\": 1}").await.expect("create");
    let g2 = store.store("journal", Some(g1), "{\"v\": 2}").await.expect("update");
    let volume = store.volume_name("journal", g2);
    assert_eq!(deployment.volumes(), vec![volume.clone()], "the older generation was removed");
    let label = |key| Deployment::label(&volume, key);
    assert_eq!(label(labels::MANAGED_BY), "rivetctl");
    assert_eq!(label(labels::STATE_OF), deployment.0);
    assert_eq!(label(labels::DOCUMENT), "journal");
    assert_eq!(label(labels::GENERATION), g2.to_string());
    assert_eq!(label(labels::BODY), "{\"v\": 2}");
    assert!(!label(labels::WRITER).is_empty());
    assert_eq!(label(orchestrator::docker::labels::DEPLOYMENT), "", "state volumes are not deployment objects");
    let observed = docker::observe(store.engine(), &deployment.0).await.expect("observe");
    assert!(observed.is_empty(), "observe sees state volumes: {observed:?}");

    // A removal leaves a tombstone, so generations never go backwards.
    store.remove("journal", g2).await.expect("remove");
    let tombstone = store.volume_name("journal", g2 + 1);
    assert_eq!(deployment.volumes(), vec![tombstone.clone()]);
    assert_eq!(Deployment::label(&tombstone, labels::REMOVED), "true");
    assert!(store.load().await.expect("load").is_empty());
    let fresh = DockerStore::new(engine().await, deployment.0.clone());
    assert_eq!(fresh.store("journal", None, "again").await.expect("create over a tombstone"), g2 + 2);

    store.destroy().await.expect("destroy");
    assert_eq!(deployment.volumes(), Vec::<String>::new());
}

#[tokio::test]
async fn a_1_mb_body_round_trips() {
    let deployment = Deployment::new("large");
    let store = store(&deployment).await;
    let body: String = (0..1_048_576).map(|i| char::from(b'a' + (i % 26) as u8)).collect::<String>() + "\n\"✓\"";
    let generation = store.store("history", None, &body).await.expect("store 1 MB");
    let docs = DockerStore::new(engine().await, deployment.0.clone()).load().await.expect("load");
    assert_eq!(docs["history"].generation, generation);
    assert!(docs["history"].body == body, "the 1 MB body came back changed");
    store.destroy().await.expect("destroy");
}

#[tokio::test]
async fn a_volume_of_an_unknown_format_is_an_error_and_is_not_written_over() {
    let deployment = Deployment::new("future");
    let store = store(&deployment).await;
    let volume = store.volume_name("lock", 1);
    let out = Command::new("docker")
        .args(["volume", "create", "--label", &format!("{}={}", labels::STATE_OF, deployment.0)])
        .args(["--label", &format!("{}=lock", labels::DOCUMENT), "--label", &format!("{}=1", labels::GENERATION)])
        .args(["--label", &format!("{}=9", labels::FORMAT), "--label", &format!("{}=x", labels::WRITER), &volume])
        .output()
        .expect("docker runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let err = store.load().await.expect_err("an unknown format is an error");
    assert!(err.to_string().contains(&format!("{volume} is unreadable: it has format version 9")), "{err}");
    let err = store.store("lock", None, "{}").await.expect_err("a write over an unknown format fails");
    assert!(err.to_string().contains("format version 9"), "{err}");
    assert_eq!(deployment.volumes(), vec![volume]);
    assert_eq!(Deployment::label(&store.volume_name("lock", 1), labels::FORMAT), "9");
}

/// What the deployment lock costs a no-op `up` on Docker: acquire (load, then a create of
/// the lock) and release (a tombstone), in API calls and wall time. Prints the figures.
#[tokio::test]
async fn acquire_and_release_cost_few_calls() {
    let deployment = Deployment::new("cost");
    let store = store(&deployment).await;
    let body = r#"{"v":1,"token":"t","host":"h","pid":1,"command":"rivetctl infra up","since":0,"expires":1}"#;
    let mut samples = Vec::new();
    let mut calls = Vec::new();
    for _ in 0..11 {
        let (before, start) = (store.engine().calls(), Instant::now());
        let docs = store.load().await.expect("load");
        let generation = store.store("lock", docs.get("lock").map(|d| d.generation), body).await.expect("acquire");
        let acquired = store.engine().calls() - before;
        store.remove("lock", generation).await.expect("release");
        samples.push(start.elapsed());
        calls.push((acquired, store.engine().calls() - before - acquired));
    }
    samples.sort();
    let median = samples[samples.len() / 2];
    // The first round finds nothing to clean up; every later one removes the previous
    // generation (the tombstone) after its write.
    let (acquire, release) = calls[calls.len() - 1];
    eprintln!(
        "lock on Docker: acquire {acquire} API calls, release {release}; acquire + release median {:.1} ms (min {:.1}, max {:.1}, 11 runs)",
        median.as_secs_f64() * 1e3,
        samples[0].as_secs_f64() * 1e3,
        samples[samples.len() - 1].as_secs_f64() * 1e3
    );
    assert_eq!((acquire, release), (4, 3), "acquire: list, create, verify, clean; release: create, verify, clean");
    assert!(median < Duration::from_secs(2), "acquire + release took {median:?}");
    store.destroy().await.expect("destroy");
}
