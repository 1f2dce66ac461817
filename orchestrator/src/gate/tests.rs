//! The gate's decisions, one probe sequence per case.

use super::*;

const RULES: Rules = Rules { min_healthy_time_ms: 2_000, deadline_ms: 10_000, engine_check: false };

fn good() -> ProbeReport {
    ProbeReport::healthy(Some("v2"))
}

fn with_engine(engine: EngineReport) -> ProbeReport {
    ProbeReport { engine, ..good() }
}

/// Feeds `(now_ms, report)` probes to a fresh gate with `rules`; returns the verdict of each
/// probe, and of a deadline check right after it.
fn run(rules: Rules, probes: &[(u64, ProbeReport)]) -> (Gate, Vec<(Verdict, Verdict)>) {
    let mut gate = Gate::default();
    let verdicts = probes
        .iter()
        .map(|(now, report)| (gate.record(*now, report, Some("v2"), rules), gate.check(*now, rules)))
        .collect();
    (gate, verdicts)
}

/// The verdict of the last probe of a sequence.
fn last(rules: Rules, probes: &[(u64, ProbeReport)]) -> Verdict {
    run(rules, probes).1.pop().expect("at least one probe").0
}

#[test]
fn good_probes_held_for_min_healthy_time_pass_and_a_bad_one_resets_the_clock() {
    let (_, verdicts) = run(RULES, &[(0, good()), (1_000, good()), (2_000, good())]);
    assert_eq!(
        verdicts.iter().map(|v| v.0.clone()).collect::<Vec<_>>(),
        [Verdict::Pending, Verdict::Pending, Verdict::Passed]
    );
    let degraded = ProbeReport { status: Some("degraded".into()), ..good() };
    let (gate, verdicts) = run(RULES, &[(0, good()), (1_500, degraded), (2_000, good()), (3_500, good())]);
    assert!(verdicts.iter().all(|v| v.0 == Verdict::Pending), "{verdicts:?}");
    assert_eq!(gate.healthy_since_ms, Some(2_000));
    assert_eq!(
        last(RULES, &[(0, good()), (1_500, ProbeReport::healthy(Some("v1"))), (3_000, good()), (5_000, good())]),
        Verdict::Passed
    );
}

#[test]
fn definite_signals_fail_at_once_and_say_which() {
    let check = |engine: EngineReport, name: &str, message: &str| {
        let verdict = last(RULES, &[(0, good()), (1_234, with_engine(engine))]);
        let Verdict::Failed(failure) = verdict else { panic!("{name}: {verdict:?}") };
        assert_eq!(failure.signal().map(Signal::name), Some(name));
        assert_eq!(failure.to_string(), format!("health gate failed after 1.2 s: {message}"));
    };
    let exit = |code, oom_killed| Some(Exit { code, oom_killed });
    check(EngineReport { exit: exit(1, false), ..Default::default() }, "exited", "the container exited with code 1");
    check(
        EngineReport { exit: exit(137, true), ..Default::default() },
        "exited",
        "the container exited with code 137 (killed: out of memory)",
    );
    check(
        EngineReport { restarting: true, exit: exit(1, false), ..Default::default() },
        "restarting",
        "the container exited with code 1 and the engine is restarting it",
    );
    check(
        EngineReport { restarts: 2, ..Default::default() },
        "restarting",
        "the container exited and the engine restarted it (2 restarts since the gate began)",
    );
    check(
        EngineReport {
            health: Some(EngineHealth::Unhealthy { output: "wget: server returned error:\n HTTP/1.1 503\n".into() }),
            ..Default::default()
        },
        "unhealthy",
        "the engine's health check reports the container unhealthy (last check: wget: server returned error: HTTP/1.1 503)",
    );
}

#[test]
fn restarts_count_from_the_first_probe_of_the_gate() {
    // A container put back on revert keeps its old restart count: that is no signal.
    let old = with_engine(EngineReport { restarts: 3, ..Default::default() });
    assert_eq!(last(RULES, &[(0, old.clone()), (2_000, old.clone())]), Verdict::Passed);
    let again = with_engine(EngineReport { restarts: 4, ..Default::default() });
    let verdict = last(RULES, &[(0, old), (500, again)]);
    assert!(
        matches!(&verdict, Verdict::Failed(f) if f.signal() == Some(&Signal::Restarting { restarts: 1, last_exit: None })),
        "{verdict:?}"
    );
}

#[test]
fn a_signal_fails_the_gate_even_before_any_good_probe_and_past_the_deadline() {
    let exited = with_engine(EngineReport { exit: Some(Exit { code: 2, oom_killed: false }), ..Default::default() });
    assert!(matches!(last(RULES, &[(0, exited.clone())]), Verdict::Failed(_)));
    assert!(matches!(last(RULES, &[(0, good()), (60_000, exited)]), Verdict::Failed(Failure::Signal { .. })));
}

#[test]
fn the_silent_case_fails_at_the_deadline_with_how_far_it_got() {
    let dead_air = ProbeReport { live: false, ..good() };
    let (_, verdicts) = run(RULES, &[(0, dead_air.clone()), (10_000, dead_air.clone()), (10_001, dead_air)]);
    assert_eq!(verdicts[1], (Verdict::Pending, Verdict::Pending), "the deadline itself is still in time");
    assert_eq!(
        verdicts[2].1,
        Verdict::Failed(Failure::Deadline {
            deadline_ms: 10_000,
            detail: "last probe: GET /health/live did not answer 200".into()
        })
    );
    // A good probe past the deadline does not pass it.
    let (_, verdicts) = run(RULES, &[(0, good()), (10_500, good())]);
    assert_eq!(verdicts[1].0, Verdict::Pending);
    assert_eq!(
        verdicts[1].1.clone(),
        Verdict::Failed(Failure::Deadline {
            deadline_ms: 10_000,
            detail: "healthy for 10500 ms of the 2000 ms required".into()
        })
    );
    let mut gate = Gate::default();
    assert_eq!(gate.check(5, RULES), Verdict::Pending);
    assert_eq!(
        gate.check(10_006, RULES).clone(),
        Verdict::Failed(Failure::Deadline { deadline_ms: 10_000, detail: "no probe answered".into() })
    );
}

#[test]
fn engine_check_waits_for_the_engines_first_verdict_only_when_asked() {
    let starting = with_engine(EngineReport { health: Some(EngineHealth::Starting), ..Default::default() });
    let healthy = with_engine(EngineReport { health: Some(EngineHealth::Healthy), ..Default::default() });
    assert_eq!(last(RULES, &[(0, starting.clone()), (2_000, starting.clone())]), Verdict::Passed);
    let strict = Rules { engine_check: true, ..RULES };
    let (gate, verdicts) = run(strict, &[(0, starting.clone()), (2_000, starting)]);
    assert_eq!(verdicts[1].0, Verdict::Pending);
    assert_eq!(gate.last_probe_problem.as_deref(), Some("the engine's health check has not passed yet"));
    assert_eq!(last(strict, &[(0, healthy.clone()), (2_000, healthy)]), Verdict::Passed);
}
