//! Command-level checks of `infra up`, `infra destroy`, the plan, `update`, `rollback` and
//! `update --resume`, generic over the port: each `check_*` runs the commands' code against
//! any `T: Port`. The `memory_*` tests here run them against the in-memory target, the
//! `docker_*` tests of `docker_checks` against the real Docker Engine.
//!
//! What the target must be: connected, with [`CONFIG`]'s fleet (see [`context`]) applied —
//! every object of `target.lower(&ctx.fleet)` created and its agents running on the config's
//! image ([`OLD`]) — holding the images [`NEW`] (healthy, version
//! `2.0.0`) and [`BROKEN`] (its instances exit at once, so the gate fails on the first
//! probe), all listed by `stored_images` with [`OLD`] the oldest, and `max_down()` saying
//! how many agents were down at once at most since the target was set up. The in-memory
//! target (`orchestrator::memory::MemoryTarget`) and the Docker adapter on a real engine
//! both fit. ([`check_up_then_destroy`] starts from a target holding nothing instead.)

use std::sync::Arc;

use orchestrator::port::{Port, Rollouts, StateStore, Unit};
use orchestrator::rollout::Status;

use super::journal::{self, Journal, Kind};
use super::rollout;
use super::{history, prepare, resume, roll_out};
use crate::cli::{ColorChoice, DestroyArgs, GlobalArgs, OutputFormat, RollbackArgs, UpArgs};
use crate::exit::ExitStatus;
use crate::printer::Printer;
use crate::session::{self, Context};

/// The image the fleet runs when a check starts.
pub const OLD: &str = "local/rivetos-agent:0.9.0";
/// A healthy newer image.
pub const NEW: &str = "local/rivetos-agent:2.0.0";
/// An image whose instances fail their gate at once.
pub const BROKEN: &str = "local/rivetos-agent:broken";

/// The fleet of the checks: one node, a datahub, three agents, one at a time behind a
/// canary, with short gate times.
pub const CONFIG: &str = r#"
deployment:
  target: docker
  docker: { project_name: rollout-check, network: rollout-check-net, postgres_port: 0 }
  image: { build_from_source: false, registry: local, agent_image: rivetos-agent, tag: "0.9.0" }
  update: { max_parallel: 1, canary: 1, min_healthy_time: 0s, healthy_deadline: 20s, stop_grace_period: 1s, probe_interval: 10ms }
agents:
  opus: { provider: anthropic, model: claude-opus-4 }
  grok: { provider: xai, model: grok-4 }
  gemini: { provider: google, model: gemini-2.5-pro }
"#;

/// A printer that prints only errors and data.
pub fn quiet_printer() -> Printer {
    Printer::new(&global("rivet.config.yaml".into()))
}

fn global(config: std::path::PathBuf) -> GlobalArgs {
    GlobalArgs { config, output: OutputFormat::Text, color: ColorChoice::Never, quiet: true, verbose: 0, context: None }
}

/// [`CONFIG`] loaded as `update` loads it, from a directory of its own (kept while the
/// returned guard lives).
pub async fn context() -> (tempfile::TempDir, Context) {
    context_of(CONFIG, "POSTGRES_PASSWORD=check-only\n").await
}

/// `config` (with `env` as its `.env`) loaded as `update` loads it, from a directory of its
/// own (kept while the returned guard lives).
pub async fn context_of(config: &str, env_text: &str) -> (tempfile::TempDir, Context) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(dir.path().join("rivet.config.yaml"), config).expect("the config is written");
    let env = dir.path().join(".env");
    std::fs::write(&env, env_text).expect("the .env is written");
    let private = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600);
    std::fs::set_permissions(&env, private).expect("the .env is made private");
    let ctx = session::load(&quiet_printer(), &global(dir.path().join("rivet.config.yaml")), "update")
        .await
        .expect("the check's config loads");
    (dir, ctx)
}

/// Every agent unit of the fleet, moving to `image`.
fn units_on<T: Rollouts>(target: &T, ctx: &Context, image: &str) -> Vec<Unit<T::Payload>> {
    let nodes: Vec<String> = ctx.fleet.nodes.iter().map(|n| n.name.clone()).collect();
    prepare::agent_units(target, &ctx.fleet, &nodes)
        .into_iter()
        .map(|unit| Unit { desired: Arc::new(target.with_image(&unit.desired, image)), ..unit })
        .collect()
}

/// The image each unit runs now, and whether it runs.
async fn running<T: Rollouts>(target: &T, units: &[Unit<T::Payload>]) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    for unit in units {
        let current = target.current(unit).await.expect("the target answers").expect("the unit is deployed");
        out.push((current.image, current.running));
    }
    out
}

/// Rolls `units` out as `command` under the deployment's lock, as the commands do.
async fn locked_roll_out<T: Port>(
    ctx: &Context,
    target: &T,
    units: Vec<Unit<T::Payload>>,
    kind: Kind,
) -> anyhow::Result<ExitStatus> {
    let printer = quiet_printer();
    let store = target.store();
    session::locked(&printer, ctx, store, kind.as_str(), async |held| {
        roll_out(&printer, ctx, target, held, units, kind, false).await
    })
    .await
}

/// `infra up --yes --no-build` as the command runs it, under the lock.
pub async fn locked_up<T: Port>(ctx: &Context, target: &T) -> anyhow::Result<ExitStatus> {
    let (printer, args) = (quiet_printer(), UpArgs { yes: true, no_build: true, kubernetes: Default::default() });
    let store = target.store();
    session::locked(&printer, ctx, store, "infra up", async |held| {
        crate::commands::up::up(&printer, ctx, target, held, &args).await
    })
    .await
}

/// `infra destroy --volumes --yes` as the command runs it, under the lock.
pub async fn locked_destroy<T: Port>(ctx: &Context, target: &T) -> anyhow::Result<ExitStatus> {
    let (printer, args) = (quiet_printer(), DestroyArgs { volumes: true, yes: true });
    let store = target.store();
    session::locked(&printer, ctx, store, "infra destroy", async |held| {
        crate::commands::destroy::destroy(&printer, ctx, target, held, &args).await
    })
    .await
}

async fn stored_journal<T: Port>(target: &T) -> Journal {
    journal::read(target.store()).await.expect("the journal reads").expect("there is a journal").journal
}

/// A rollout to a healthy image moves every unit, one agent at a time, journals success
/// and records the image as current on the node.
pub async fn check_a_rollout_moves_every_unit(ctx: &Context, target: &impl Port, max_down: &dyn Fn() -> usize) {
    let units = units_on(target, ctx, NEW);
    assert_eq!(units.len(), 3, "one unit per agent of the check's fleet");
    let exit = locked_roll_out(ctx, target, units.clone(), Kind::Update).await.expect("the rollout runs");
    assert_eq!(exit, ExitStatus::Success);
    assert_eq!(running(target, &units).await, vec![(NEW.to_string(), true); 3]);
    assert_eq!(max_down(), 1, "max_parallel 1: never more than one agent down");
    let journal = stored_journal(target).await;
    assert_eq!(journal.kind, Kind::Update);
    assert_eq!(journal.machine().unwrap().status(), Status::Succeeded);
    let history = history::read(target.store()).await.unwrap();
    let node = &units[0].node;
    assert_eq!(history.node(node).deployed.last().map(|r| r.image.as_str()), Some(NEW), "{history:?}");

    // Nothing left to do: a second rollout of the same units starts nothing.
    let again = locked_roll_out(ctx, target, units.clone(), Kind::Up).await.unwrap();
    assert_eq!(again, ExitStatus::Success);
    assert_eq!(stored_journal(target).await.kind, Kind::Update, "a rollout with nothing to do writes no journal");
}

/// A revision that fails its gate is rolled back after the canary: exit 3, every unit back
/// on its image, the image rejected in the history, the other agents never touched.
pub async fn check_a_failing_revision_rolls_back(ctx: &Context, target: &impl Port, max_down: &dyn Fn() -> usize) {
    let units = units_on(target, ctx, BROKEN);
    let before = running(target, &units).await;
    let exit = locked_roll_out(ctx, target, units.clone(), Kind::Up).await.expect("the rollout runs");
    assert_eq!(exit, ExitStatus::RolloutFailed);
    assert_eq!(running(target, &units).await, before, "every unit is back on its image");
    assert_eq!(max_down(), 1);
    let journal = stored_journal(target).await;
    assert_eq!(journal.kind, Kind::Up);
    let machine = journal.machine().unwrap();
    assert_eq!(machine.status(), Status::RolledBack);
    assert_eq!(machine.failures(), 1, "the canary failed; the others never started");
    let history = history::read(target.store()).await.unwrap();
    let rejection = history.node(&units[0].node).rejection(BROKEN).cloned();
    assert!(rejection.is_some_and(|r| r.by.as_deref() == Some("infra up")), "{history:?}");
}

/// A rollout interrupted after its canary stopped (the runner died) refuses a new rollout,
/// and `update --resume` finishes it from the journal on the target alone. (Journaled as a
/// rollback to [`NEW`]: an update or `infra up` resumes only while the config still names
/// the image it rolls out, and the check's config names [`OLD`].)
pub async fn check_resume_finishes_an_interrupted_rollout(ctx: &Context, target: &impl Port) {
    let printer = quiet_printer();
    let units = units_on(target, ctx, NEW);
    let planned = rollout::plan(target, units.clone()).await.unwrap();
    let policy = super::policy(&ctx.fleet, &Default::default(), planned.specs.len());
    let mut machine = orchestrator::rollout::Rollout::new(planned.specs, policy, super::driver::now_ms());
    let mut journal = Journal::new(
        Kind::Rollback,
        &ctx.fleet.name,
        ctx.fleet.revision.clone(),
        vec![units[0].node.clone()],
        vec![],
        vec![],
    );
    let existing = journal::read(target.store()).await.unwrap().map(|s| s.generation);
    let mut writer = journal::Writer::new(target.store(), existing);
    // The first runner: the canary's stop is journaled, then carried out, then it dies.
    let commands = machine.start(super::driver::now_ms());
    writer.persist(&mut journal, &machine).await.unwrap();
    let Some(orchestrator::rollout::Command::Stop { instance, grace_ms }) = commands.first().cloned() else {
        panic!("a rollout starts with a stop: {commands:?}")
    };
    target.stop_old(&planned.units[instance], std::time::Duration::from_millis(grace_ms)).await.unwrap();

    let refused = locked_roll_out(ctx, target, units.clone(), Kind::Update).await.unwrap_err();
    assert!(format!("{refused:#}").contains("an unfinished rollback"), "{refused:#}");

    // Another runner, with only the config and the target.
    let held = session::hold(&printer, ctx, target.store(), "update").await.unwrap();
    let existing = journal::from_documents(held.documents(), &target.store().location()).unwrap();
    let result = resume::run(&printer, ctx, target, &held, existing, false).await;
    let exit = held.release(&printer, result).await.expect("the resume runs");
    assert_eq!(exit, ExitStatus::Success);
    assert_eq!(running(target, &units).await, vec![(NEW.to_string(), true); 3]);
    assert_eq!(stored_journal(target).await.machine().unwrap().status(), Status::Succeeded);
}

/// After an update to [`NEW`], `rollback` returns every unit to the image that was current
/// before ([`OLD`], recorded by `infra up`).
pub async fn check_rollback_returns_to_the_previous_image(ctx: &Context, target: &impl Port) {
    let printer = quiet_printer();
    let nodes: Vec<&str> = ctx.fleet.nodes.iter().map(|n| n.name.as_str()).collect();
    super::record::up(target, &nodes, OLD, &ctx.fleet.revision).await.unwrap();
    let units = units_on(target, ctx, NEW);
    assert_eq!(locked_roll_out(ctx, target, units.clone(), Kind::Update).await.unwrap(), ExitStatus::Success);
    let names: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
    let args = RollbackArgs { to: None, list: false, node: Vec::new() };
    let held = session::hold(&printer, ctx, target.store(), "rollback").await.unwrap();
    let result = super::rollback::rollback(&printer, ctx, target, &held, &args, names, Vec::new()).await;
    let exit = held.release(&printer, result).await.unwrap();
    assert_eq!(exit, ExitStatus::Success);
    assert_eq!(running(target, &units).await, vec![(OLD.to_string(), true); 3]);
    let journal = stored_journal(target).await;
    assert_eq!((journal.kind, journal.machine().unwrap().status()), (Kind::Rollback, Status::Succeeded));
}

/// What a plan does, for messages: `create container x`.
fn keys<P>(plan: &orchestrator::plan::Plan<P>) -> Vec<String> {
    plan.steps.iter().map(|s| format!("{} {} {}", s.action.as_str(), s.key.kind, s.key.name)).collect()
}

/// On a target that holds nothing of the fleet: the plan creates everything, `infra up`
/// applies it (every agent running), a second `infra up` has nothing to do, and `infra
/// destroy --volumes` removes every object and the deployment's state.
pub async fn check_up_then_destroy(ctx: &Context, target: &impl Port) {
    let observed = target.observe().await.expect("the target answers");
    let plan = orchestrator::plan::plan(
        &ctx.fleet.name,
        target.kind(),
        target.lower(&ctx.fleet),
        &observed,
        ctx.plan_options(),
    );
    assert!(!plan.is_empty(), "a first plan creates the fleet");
    assert!(plan.steps.iter().all(|s| s.action == orchestrator::plan::Action::Create), "{:?}", keys(&plan));

    for round in ["first", "second"] {
        let exit = locked_up(ctx, target).await.unwrap_or_else(|e| panic!("the {round} up: {e:#}"));
        assert_eq!(exit, ExitStatus::Success, "the {round} up");
    }
    let observed = target.observe().await.unwrap();
    let again = orchestrator::plan::plan(
        &ctx.fleet.name,
        target.kind(),
        target.lower(&ctx.fleet),
        &observed,
        ctx.plan_options(),
    );
    assert!(again.is_empty(), "the target matches the config: {:?}", keys(&again));
    let units = units_on(target, ctx, OLD);
    assert_eq!(running(target, &units).await, vec![(OLD.to_string(), true); ctx.fleet.agents.len()]);

    assert_eq!(locked_destroy(ctx, target).await.unwrap(), ExitStatus::Success);
    assert!(target.observe().await.unwrap().is_empty(), "destroy removed every object");
    assert!(target.store().load().await.unwrap().is_empty(), "--volumes removed the state");
}

#[tokio::test]
async fn the_checks_config_loads_with_three_agents_behind_a_canary_one_at_a_time() {
    let (_dir, ctx) = context().await;
    assert_eq!(ctx.fleet.agents.len(), 3);
    assert_eq!(ctx.fleet.nodes.len(), 1);
    assert!(ctx.fleet.datahub.is_some());
    assert_eq!(ctx.fleet.images[0].reference, OLD);
    assert_eq!(
        prepare::agent_repository(&ctx.fleet),
        "local/rivetos-agent",
        "rollback's candidates carry the registry"
    );
    let policy = super::policy(&ctx.fleet, &Default::default(), 3);
    assert_eq!((policy.max_parallel, policy.canary, policy.min_healthy_time_ms), (1, 1, 0));
}

/// The in-memory target with [`CONFIG`]'s fleet applied as the Docker target lowers it, the
/// agents running [`OLD`], and [`NEW`] and [`BROKEN`] kept on the node.
async fn memory_target(ctx: &Context) -> orchestrator::memory::MemoryTarget<orchestrator::docker::DockerObject> {
    use orchestrator::port::Target as _;
    let target = orchestrator::memory::MemoryTarget::with_kind("docker").with_lowering(orchestrator::docker::resources);
    let plan = orchestrator::plan::plan(&ctx.fleet.name, "docker", target.lower(&ctx.fleet), &[], ctx.plan_options());
    let cancel = targets::cancel::CancellationToken::new();
    let report = crate::execute::execute(&target, &plan, &ctx.execute_options(), &(), &cancel, &|_| {})
        .await
        .expect("the in-memory target applies the fleet");
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    let node = &ctx.fleet.nodes[0].name;
    target.add_image(node, OLD, Some("rev-old"), Some("0.9.0"));
    target.add_image(node, NEW, Some("rev-new"), Some("2.0.0"));
    target.add_image(node, BROKEN, Some("rev-broken"), None);
    target.set_broken(BROKEN, true);
    target.reset_figures();
    target
}

#[tokio::test]
async fn memory_a_rollout_moves_every_unit() {
    let (_dir, ctx) = context().await;
    let target = memory_target(&ctx).await;
    check_a_rollout_moves_every_unit(&ctx, &target, &|| target.max_agents_down()).await;
    assert!(target.agents_that_ran_twice().is_empty(), "{:?}", target.agents_that_ran_twice());
}

#[tokio::test]
async fn memory_a_failing_revision_rolls_back() {
    let (_dir, ctx) = context().await;
    let target = memory_target(&ctx).await;
    check_a_failing_revision_rolls_back(&ctx, &target, &|| target.max_agents_down()).await;
    assert!(target.agents_that_ran_twice().is_empty(), "{:?}", target.agents_that_ran_twice());
}

#[tokio::test]
async fn memory_resume_finishes_an_interrupted_rollout() {
    let (_dir, ctx) = context().await;
    let target = memory_target(&ctx).await;
    check_resume_finishes_an_interrupted_rollout(&ctx, &target).await;
}

#[tokio::test]
async fn memory_rollback_returns_to_the_previous_image() {
    let (_dir, ctx) = context().await;
    let target = memory_target(&ctx).await;
    check_rollback_returns_to_the_previous_image(&ctx, &target).await;
}

#[tokio::test]
async fn memory_up_then_destroy() {
    let (_dir, ctx) = context().await;
    let target = orchestrator::memory::MemoryTarget::with_kind("docker").with_lowering(orchestrator::docker::resources);
    check_up_then_destroy(&ctx, &target).await;
}
