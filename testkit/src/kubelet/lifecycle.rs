//! One container's life inside its pod: pull and create, observe, restart after a back-off
//! (`CrashLoopBackOff`, `ImagePullBackOff`), and act on probe results (readiness, a liveness
//! or startup failure kills the container, which the restart policy then restarts).

use super::containers::{self, Observed};
use super::images;
use super::probes::{self, Kind, ProbeState, Target};
use super::sandbox::Sandbox;
use super::status::{ContainerRun, RunState, Terminated, restarts};
use super::volumes::PodVolumes;
use super::{Context, MAX_BACKOFF};
use k8s_openapi::api::core::v1::{Container, Pod};
use tokio::time::Instant;

/// Init containers run to completion one after another; main containers run together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Init,
    Main,
}

/// What a container step needs of its pod.
pub(crate) struct PodEnv<'a> {
    pub ctx: &'a Context,
    pub pod: &'a Pod,
    pub sandbox: &'a Sandbox,
    pub volumes: &'a PodVolumes,
}

impl PodEnv<'_> {
    fn restart_policy(&self) -> &str {
        self.pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()).unwrap_or("Always")
    }

    fn grace_seconds(&self) -> i64 {
        self.pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).unwrap_or(30)
    }

    fn pod_name(&self) -> String {
        let meta = &self.pod.metadata;
        format!(
            "{}_{}({})",
            meta.name.as_deref().unwrap_or_default(),
            meta.namespace.as_deref().unwrap_or_default(),
            meta.uid.as_deref().unwrap_or_default()
        )
    }
}

/// Advances one container by what can be done now: a new attempt when none runs and no
/// back-off holds it, else a look at the running one.
pub(crate) async fn step(env: &PodEnv<'_>, run: &mut ContainerRun, container: &Container, role: Role) {
    if run.finished {
        return;
    }
    let now = Instant::now();
    let Some(docker_id) = run.docker_id.clone() else {
        if run.retry_at.is_some_and(|at| at > now) {
            if let RunState::Waiting { reason, .. } = &mut run.state
                && reason == "ErrImagePull"
            {
                *reason = "ImagePullBackOff".into();
            }
            return;
        }
        start(env, run, container, role).await;
        return;
    };
    match containers::observe(&env.ctx.docker, &docker_id).await {
        Some(Observed::Running { started_at }) => {
            run.state = RunState::Running { started_at };
            if role == Role::Main {
                apply_probes(env, run, container, &docker_id).await;
            } else {
                run.started = true;
            }
        }
        Some(Observed::Exited { exit_code, reason, message, started_at, finished_at }) => {
            let ended =
                Terminated { exit_code, reason, message, started_at, finished_at, container_id: Some(docker_id) };
            exited(env, run, ended, role);
        }
        None => {
            let ended = Terminated {
                exit_code: 137,
                reason: "Error".into(),
                message: Some("the Docker container disappeared".into()),
                started_at: None,
                finished_at: Some(containers::now()),
                container_id: Some(docker_id),
            };
            exited(env, run, ended, role);
        }
    }
}

async fn start(env: &PodEnv<'_>, run: &mut ContainerRun, container: &Container, role: Role) {
    let reference = container.image.clone().unwrap_or_default();
    let credentials = images::pull_credentials(&env.ctx.client, env.pod, &reference).await;
    let policy = container.image_pull_policy.as_deref();
    let image = match images::resolve(&env.ctx.docker, &reference, policy, credentials).await {
        Ok(image) => image,
        Err(err) => {
            eprintln!("test-kubelet: pod {} container {}: {}", env.pod_name(), container.name, err.message);
            run.state = RunState::Waiting { reason: err.reason.into(), message: Some(err.message) };
            run.retry_at = Some(Instant::now() + run.pull_backoff);
            run.pull_backoff = (run.pull_backoff * 2).min(MAX_BACKOFF);
            return;
        }
    };
    run.image_id = image.image_id.clone();
    run.pull_backoff = env.ctx.options.restart_backoff;
    match containers::create_and_start(env.ctx, env.pod, container, env.sandbox, env.volumes, &image).await {
        Ok(id) => {
            if run.ever_created {
                run.restart_count += 1;
            }
            run.ever_created = true;
            run.docker_id = Some(id);
            run.retry_at = None;
            run.ready = false;
            run.started = false;
            let started = Instant::now();
            run.running_since = Some(started);
            run.state = RunState::Running { started_at: containers::now() };
            run.probes = if role == Role::Main { container_probes(container, started) } else { Vec::new() };
        }
        Err(err) => {
            eprintln!("test-kubelet: pod {} container {}: {}", env.pod_name(), container.name, err.message);
            run.state = RunState::Waiting { reason: err.reason.into(), message: Some(err.message) };
            run.retry_at = Some(Instant::now() + env.ctx.options.restart_backoff);
        }
    }
}

fn container_probes(container: &Container, started: Instant) -> Vec<ProbeState> {
    let mut probes = Vec::new();
    for (kind, probe) in [
        (Kind::Startup, &container.startup_probe),
        (Kind::Liveness, &container.liveness_probe),
        (Kind::Readiness, &container.readiness_probe),
    ] {
        if let Some(probe) = probe {
            probes.push(ProbeState::new(kind, probe.clone(), started));
        }
    }
    probes
}

/// The attempt ended: back off and restart, or finish, by the restart policy.
fn exited(env: &PodEnv<'_>, run: &mut ContainerRun, ended: Terminated, role: Role) {
    run.ready = false;
    run.started = false;
    run.probes.clear();
    let policy = env.restart_policy();
    let again = match role {
        Role::Init => ended.exit_code != 0 && policy != "Never",
        Role::Main => restarts(policy, ended.exit_code),
    };
    if !again {
        run.finished = true;
        run.state = RunState::Terminated(ended);
        return;
    }
    // The kubelet forgets the back-off of a container that ran for twice the cap.
    if run.running_since.is_some_and(|since| since.elapsed() > MAX_BACKOFF * 2) {
        run.crash_backoff = env.ctx.options.restart_backoff;
    }
    let delay = run.crash_backoff;
    run.crash_backoff = (run.crash_backoff * 2).min(MAX_BACKOFF);
    run.retry_at = Some(Instant::now() + delay);
    run.docker_id = None;
    run.running_since = None;
    run.last_state = Some(ended);
    run.state = RunState::Waiting {
        reason: "CrashLoopBackOff".into(),
        message: Some(format!(
            "back-off {}s restarting failed container={} pod={}",
            delay.as_secs().max(1),
            run.name,
            env.pod_name()
        )),
    };
}

/// Runs the probes that are due, updates `started`/`ready`, kills the container when its
/// liveness or startup probe has failed `failureThreshold` times.
async fn apply_probes(env: &PodEnv<'_>, run: &mut ContainerRun, container: &Container, docker_id: &str) {
    let target = Target {
        docker_id: docker_id.to_string(),
        pod_ip: env.sandbox.ip.clone(),
        ports: container.ports.clone().unwrap_or_default(),
    };
    let has_startup = run.probes.iter().any(|p| p.kind == Kind::Startup);
    let startup_passed = run.probes.iter().any(|p| p.kind == Kind::Startup && p.result == Some(true));
    let now = Instant::now();
    let due: Vec<usize> = (0..run.probes.len())
        .filter(|&i| {
            let probe = &run.probes[i];
            let active = match probe.kind {
                Kind::Startup => !startup_passed,
                _ => !has_startup || startup_passed,
            };
            active && probe.next_at <= now
        })
        .collect();
    let checks = due.iter().map(|&i| {
        let probe = &run.probes[i];
        probes::check(&env.ctx.docker, &probe.probe, &target, probe.timeout())
    });
    let results = futures_util::future::join_all(checks).await;
    let now = Instant::now();
    let mut kill = None;
    for (i, result) in due.into_iter().zip(results) {
        let probe = &mut run.probes[i];
        probe.record(result.is_ok(), now);
        if let Err(reason) = &result
            && probe.kind != Kind::Readiness
            && probe.result == Some(false)
        {
            kill = Some(format!("{:?} probe failed: {reason}", probe.kind));
        }
    }
    run.started = !has_startup || run.probes.iter().any(|p| p.kind == Kind::Startup && p.result == Some(true));
    let readiness = run.probes.iter().find(|p| p.kind == Kind::Readiness);
    run.ready = run.started && readiness.is_none_or(|p| p.result == Some(true));
    if let Some(why) = kill {
        eprintln!("test-kubelet: pod {} container {}: {why}; killing it", env.pod_name(), run.name);
        run.ready = false;
        containers::stop(&env.ctx.docker, docker_id, env.grace_seconds()).await;
    }
}

/// When this container next needs attention (a probe or the end of a back-off).
pub(crate) fn next_wake(run: &ContainerRun) -> Option<Instant> {
    let probes = run.probes.iter().map(|p| p.next_at);
    probes.chain(run.retry_at).min()
}
