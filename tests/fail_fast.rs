//! A broken revision fails in seconds, not at the deadline: the health gate fails at once
//! on a definite signal (the engine calls the container unhealthy, or it exited), names
//! the signal, and shows the container's last log lines — for `update` and `infra up`.
//!
//! Timings are measured against the engine's own record (`docker events`), not rivetctl's.

mod support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::describe;
use support::docker::{TestFleet, docker};

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// One `health_status` event of the deployment's containers.
#[derive(Debug)]
struct HealthEvent {
    at_ns: u128,
    id: String,
    status: String,
}

/// The deployment's health events from `since` (Unix seconds) until now.
fn health_events(fleet: &TestFleet, since: u64) -> Vec<HealthEvent> {
    let until = (unix_now() + 1).to_string();
    let label = format!("label=io.rivetctl.deployment={}", fleet.name);
    let text = docker(&[
        "events",
        "--since",
        &since.to_string(),
        "--until",
        &until,
        "--filter",
        "event=health_status",
        "--filter",
        &label,
        "--format",
        "{{.TimeNano}} {{.ID}} {{.Status}}",
    ]);
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ' ');
            let at_ns = parts.next()?.parse().ok()?;
            let id = parts.next()?.to_string();
            let status = parts.next()?.trim_start_matches("health_status:").trim().to_string();
            Some(HealthEvent { at_ns, id, status })
        })
        .collect()
}

/// Waits (at most `limit`) until Docker reports `container` healthy.
fn wait_healthy(fleet: &TestFleet, container: &str, limit: Duration) {
    let start = Instant::now();
    loop {
        let health = fleet.containers().get(container).map(|c| (c.state.clone(), c.health.clone()));
        if health.as_ref().is_some_and(|(state, health)| state == "running" && health == "healthy") {
            return;
        }
        assert!(start.elapsed() < limit, "{container} not healthy after {limit:?}: {health:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn break_health(fleet: &TestFleet) {
    std::fs::write(fleet.dir.path().join("containers/agent/FAIL_HEALTH"), "broken on purpose\n").unwrap();
}

#[test]
fn a_failing_canary_is_back_on_the_old_image_seconds_after_docker_calls_it_unhealthy() {
    let fleet = TestFleet::new("ffcanary");
    fleet.expect(&["infra", "up", "--yes"], 0);
    let (canary, other) = (fleet.agent("grok"), fleet.agent("opus"));
    let before = fleet.containers();
    let since = unix_now();
    break_health(&fleet);

    let started = Instant::now();
    let output = fleet.expect(&["update"], 3);
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("local/grok (rolled_back): health gate failed after")
            && stderr.contains("the engine's health check reports the container unhealthy"),
        "the error names the signal:\n{}",
        describe(&output)
    );
    assert!(
        stderr.contains("log lines of the failed container") && stderr.contains("FAIL_HEALTH knob is set"),
        "{stderr}"
    );
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.lines().any(|l| l.starts_with("local") && l.contains("rolled back")), "{table}");

    // Back on the exact previous container, healthy by Docker's own check; the other agent
    // was never touched.
    wait_healthy(&fleet, &canary, Duration::from_secs(30));
    let after = fleet.containers();
    assert_eq!((&after[&canary].id, &after[&canary].image), (&before[&canary].id, &before[&canary].image));
    assert_eq!(after[&other].id, before[&other].id);
    assert!(!after.keys().any(|n| n.ends_with("-rivetctl-prev") || n.ends_with("-rivetctl-next")), "{after:#?}");

    let events = health_events(&fleet, since);
    let old = &before[&canary].id;
    let unhealthy = events
        .iter()
        .find(|e| e.status == "unhealthy" && e.id != *old)
        .unwrap_or_else(|| panic!("Docker never called the new container unhealthy: {events:#?}"));
    let back = events
        .iter()
        .find(|e| e.status == "healthy" && e.id == *old && e.at_ns > unhealthy.at_ns)
        .unwrap_or_else(|| panic!("the old container never became healthy again: {events:#?}"));
    let recovery = Duration::from_nanos((back.at_ns - unhealthy.at_ns) as u64);
    eprintln!("update took {took:?}; unhealthy → old container healthy again: {recovery:?}");
    assert!(recovery < Duration::from_secs(30), "back {recovery:?} after Docker reported unhealthy");
    assert!(took < Duration::from_secs(45), "the failing update took {took:?}");
}

#[test]
fn infra_up_with_a_failing_revision_fails_fast_and_keeps_the_previous_containers_serving() {
    // `infra up` replaces running agents through the rollout engine: the canary fails its
    // gate, is returned to its previous container, and the other agent is never touched.
    let fleet = TestFleet::new("ffup");
    fleet.expect(&["infra", "up", "--yes"], 0);
    let ids = |fleet: &TestFleet| -> Vec<(String, String)> {
        fleet.containers().into_iter().filter(|(n, _)| !n.ends_with("-migrate")).map(|(n, c)| (n, c.id)).collect()
    };
    let before = ids(&fleet);
    break_health(&fleet);
    let started = Instant::now();
    let output = fleet.expect(&["infra", "up"], 3);
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("health gate failed after")
            && stderr.contains("the engine's health check reports the container unhealthy"),
        "{}",
        describe(&output)
    );
    assert!(stderr.contains("(rolled_back)") && stderr.contains("the rollout rolled back"), "{stderr}");
    assert!(stderr.contains("log lines") && stderr.contains("FAIL_HEALTH knob is set"), "{stderr}");
    // Docker calls it unhealthy after ~10 s (start period 5 s, then 3 failed checks 2 s apart);
    // the deadline (`deployment.health.deadline`) is 90 s.
    assert!(took < Duration::from_secs(45), "infra up took {took:?}");
    assert_eq!(ids(&fleet), before, "the previous containers are untouched");
    fleet.assert_healthy(&["grok", "opus"]);
    assert!(!fleet.containers().keys().any(|n| n.ends_with("-rivetctl-next")));
}

#[test]
fn a_revision_whose_container_exits_at_once_fails_with_the_exit_signal() {
    let fleet = TestFleet::new("ffexit");
    fleet.expect(&["infra", "up", "--yes"], 0);
    let opus = fleet.agent("opus");
    let before = fleet.containers();
    // The entrypoint refuses a health port that is not a number and exits 1 at once.
    fleet.edit(|text| text.replace("LOG_LEVEL: info }", "LOG_LEVEL: info, RIVETOS_HEALTH_PORT: bad }"));
    let started = Instant::now();
    let output = fleet.expect(&["update"], 3);
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The restart policy brings it back at once: the gate sees it exited (code 1, while
    // the engine waits to restart it) or restarted (a grown restart count; the engine no
    // longer shows the code), depending on when the probe lands. Both name the exit.
    assert!(
        stderr.contains("local/opus (rolled_back): health gate failed after")
            && (stderr.contains("the container exited with code 1")
                || stderr.contains("the container exited and the engine restarted it")),
        "{}",
        describe(&output)
    );
    assert!(stderr.contains("RIVETOS_HEALTH_PORT must be a port number"), "the logs show why: {stderr}");
    // Without the signal this would wait for healthy_deadline (5 min).
    assert!(took < Duration::from_secs(30), "the update took {took:?}");
    wait_healthy(&fleet, &opus, Duration::from_secs(30));
    assert_eq!(fleet.containers()[&opus].id, before[&opus].id, "the previous container is back");
}
