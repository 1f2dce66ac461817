//! The command-level rollout checks of [`super::tests`] against the real Docker Engine, as
//! they run against the in-memory target there: the same `check_*` functions, through the
//! adapter the factory opens.
//!
//! Setup: the agent images [`OLD`], [`NEW`] (versions 0.9.0 and 2.0.0) built from the
//! quickstart's stand-in agent (`examples/quickstart`, on the local `rivetos-base:busybox`
//! image), [`BROKEN`] (the same image with an entrypoint that exits at once), and the
//! checks' fleet applied with `infra up` under a deployment name of its own.
//! The datahub is off here (its stand-in needs a source build); the checks touch only the
//! agents. A sampler thread counts, with the `docker` CLI, how many agents had no running
//! container at once. Everything the test created goes on every path (a guard).

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use orchestrator::port::Port;
use targets::factory::Visit;

use super::tests::{self, BROKEN, NEW, OLD};
use crate::exit::ExitStatus;
use crate::session::{self, Context};

/// Runs `docker args` and returns stdout; panics with stderr when it fails.
fn docker(args: &[&str]) -> String {
    let output = Command::new("docker").args(args).output().expect("the docker CLI runs");
    assert!(output.status.success(), "docker {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Builds [`OLD`], [`NEW`] and [`BROKEN`] once per test process (the engine's cache makes a
/// rebuild of unchanged content cheap; tests in other processes building the same tags at
/// once build the same content).
fn build_images() {
    static BUILT: Once = Once::new();
    BUILT.call_once(|| {
        let quickstart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart");
        let quickstart = quickstart.to_str().expect("a UTF-8 path");
        for (image, version) in [(OLD, "0.9.0"), (NEW, "2.0.0")] {
            let version = format!("RIVETOS_VERSION={version}");
            let dockerfile = format!("{quickstart}/containers/agent/Dockerfile");
            docker(&["build", "-q", "-f", &dockerfile, "--build-arg", &version, "-t", image, quickstart]);
        }
        let context = tempfile::tempdir().expect("a temporary directory");
        let exits = r#"ENTRYPOINT ["/bin/sh", "-c", "echo 'this revision is broken' >&2; exit 1"]"#;
        let dockerfile = format!("FROM {OLD}\n{exits}\n");
        std::fs::write(context.path().join("Dockerfile"), dockerfile).expect("the Dockerfile is written");
        docker(&["build", "-q", "-t", BROKEN, context.path().to_str().expect("a UTF-8 path")]);
    });
}

/// A deployment name no other test of any process uses.
fn unique_name() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("rt-chk-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The checks' config under `name`, without the datahub.
fn config(name: &str) -> String {
    let config = tests::CONFIG.replace("rollout-check", name);
    config.replace("  image: {", "  datahub: { postgres: false }\n  image: {")
}

/// Counts, every few ms, the agents of `deployment` with no running container.
struct Sampler {
    stop: Arc<AtomicBool>,
    most_down: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(deployment: &str, agents: usize) -> Sampler {
        let (stop, most_down) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
        let filter = format!("label=io.rivetctl.deployment={deployment}");
        let (stop_, most_down_) = (Arc::clone(&stop), Arc::clone(&most_down));
        let thread = std::thread::spawn(move || {
            while !stop_.load(Ordering::Relaxed) {
                let output = Command::new("docker")
                    .args(["ps", "--filter", &filter, "--filter", "label=io.rivetctl.component=agent"])
                    .args(["--format", "{{.Label \"io.rivetctl.agent\"}}"])
                    .output();
                if let Ok(output) = output
                    && output.status.success()
                {
                    let mut running: Vec<String> =
                        String::from_utf8_lossy(&output.stdout).lines().map(str::to_string).collect();
                    running.sort();
                    running.dedup();
                    most_down_.fetch_max(agents.saturating_sub(running.len()), Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Sampler { stop, most_down, thread: Some(thread) }
    }

    fn most_down(&self) -> usize {
        self.most_down.load(Ordering::Relaxed)
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Removes everything of the deployment on every path (containers, networks, volumes, the
/// state volumes), with the engine's CLI: a failed check must not leave its fleet behind.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let filter = format!("label=io.rivetctl.deployment={}", self.0);
        let state = format!("label=io.rivetctl.state-of={}", self.0);
        for (list, remove) in [
            (vec!["ps", "-aq", "--filter", &filter], vec!["rm", "-f"]),
            (vec!["network", "ls", "-q", "--filter", &filter], vec!["network", "rm"]),
            (vec!["volume", "ls", "-q", "--filter", &filter], vec!["volume", "rm", "-f"]),
            (vec!["volume", "ls", "-q", "--filter", &state], vec!["volume", "rm", "-f"]),
        ] {
            let Ok(output) = Command::new("docker").args(&list).output() else { continue };
            let ids: Vec<String> = String::from_utf8_lossy(&output.stdout).lines().map(str::to_string).collect();
            if !ids.is_empty() {
                let _ = Command::new("docker").args(&remove).args(&ids).output();
            }
        }
    }
}

/// Which check to run on the connected target.
#[derive(Clone, Copy)]
enum Check {
    Moves,
    RollsBack,
    Resumes,
    RollsBackToPrevious,
    UpThenDestroy,
}

struct Run<'a> {
    ctx: &'a Context,
    check: Check,
}

impl Visit for Run<'_> {
    type Output = ();

    async fn visit<T: Port>(self, target: &T) {
        let ctx = self.ctx;
        if let Check::UpThenDestroy = self.check {
            return tests::check_up_then_destroy(ctx, target).await;
        }
        // The fleet as `infra up` applies it: every agent running OLD.
        let applied = tests::locked_up(ctx, target).await.expect("infra up applies the checks' fleet");
        assert_eq!(applied, ExitStatus::Success);

        let sampler = Sampler::start(&ctx.fleet.name, ctx.fleet.agents.len());
        let most_down = || sampler.most_down();
        match self.check {
            Check::Moves => tests::check_a_rollout_moves_every_unit(ctx, target, &most_down).await,
            Check::RollsBack => tests::check_a_failing_revision_rolls_back(ctx, target, &most_down).await,
            Check::Resumes => tests::check_resume_finishes_an_interrupted_rollout(ctx, target).await,
            Check::RollsBackToPrevious => tests::check_rollback_returns_to_the_previous_image(ctx, target).await,
            Check::UpThenDestroy => unreachable!("run above"),
        }
        drop(sampler);

        // `infra destroy --volumes` removes the fleet and its state (the guard is for the
        // paths that never get here).
        tests::locked_destroy(ctx, target).await.expect("infra destroy --volumes removes the fleet");
    }
}

async fn run(check: Check) {
    build_images();
    let name = unique_name();
    let _cleanup = Cleanup(name.clone());
    let env = "RIVETOS_PG_URL=postgres://rivet:check-only@db.invalid:5432/rivet\n";
    let (_dir, ctx) = tests::context_of(&config(&name), env).await;
    session::connect(&ctx, None, Run { ctx: &ctx, check }).await.expect("the local engine answers");
    let left = docker(&["ps", "-aq", "--filter", &format!("label=io.rivetctl.deployment={name}")]);
    assert!(left.trim().is_empty(), "destroy left containers: {left}");
    let state = docker(&["volume", "ls", "-q", "--filter", &format!("label=io.rivetctl.state-of={name}")]);
    assert!(state.trim().is_empty(), "destroy --volumes left state volumes: {state}");
}

#[tokio::test]
async fn docker_a_rollout_moves_every_unit() {
    run(Check::Moves).await;
}

#[tokio::test]
async fn docker_a_failing_revision_rolls_back() {
    run(Check::RollsBack).await;
}

#[tokio::test]
async fn docker_resume_finishes_an_interrupted_rollout() {
    run(Check::Resumes).await;
}

#[tokio::test]
async fn docker_rollback_returns_to_the_previous_image() {
    run(Check::RollsBackToPrevious).await;
}

#[tokio::test]
async fn docker_up_then_destroy() {
    run(Check::UpThenDestroy).await;
}
