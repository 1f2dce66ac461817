//! One Kubernetes container as one Docker container: the create body (command, env, user,
//! capabilities, limits, mounts, joined to the pod sandbox's network), and observing,
//! stopping and removing it.
//!
//! Failures carry the waiting reason the real kubelet reports (`CreateContainerConfigError`
//! for a bad reference or an unverifiable `runAsNonRoot`, `CreateContainerError` when the
//! engine refuses the container).

use super::images::ResolvedImage;
use super::sandbox::Sandbox;
use super::volumes::{self, PodVolumes};
use super::{Context, env, quantity};
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::collections::HashMap;

/// Why a container could not be created; `reason` becomes its waiting reason.
#[derive(Debug, Clone)]
pub(crate) struct CreateError {
    pub reason: &'static str,
    pub message: String,
}

fn config_error(message: String) -> CreateError {
    CreateError { reason: "CreateContainerConfigError", message }
}

/// What the engine says about a container.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Observed {
    Running {
        started_at: Time,
    },
    Exited {
        exit_code: i32,
        reason: String,
        message: Option<String>,
        started_at: Option<Time>,
        finished_at: Option<Time>,
    },
}

/// The Docker container name of a pod's container.
pub(crate) fn docker_name(pod: &Pod, container: &str) -> String {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    format!("rtk-{namespace}-{name}-{container}-{}", volumes::short(uid))
}

/// The labels of every Docker object made for `pod`.
pub(crate) fn pod_labels(ctx: &Context, pod: &Pod, container: &str) -> HashMap<String, String> {
    let mut labels = ctx.labels();
    let meta = &pod.metadata;
    labels.insert(super::LABEL_POD_UID.into(), meta.uid.clone().unwrap_or_default());
    labels.insert("io.rivetctl.testkubelet.namespace".into(), meta.namespace.clone().unwrap_or_default());
    labels.insert("io.rivetctl.testkubelet.pod".into(), meta.name.clone().unwrap_or_default());
    labels.insert(super::LABEL_CONTAINER.into(), container.to_string());
    labels
}

/// Creates and starts `container` of `pod` in its sandbox; returns the Docker container id.
/// A container the engine creates but cannot start is returned too: observing it reports the
/// failure as an exit, as the kubelet reports `ContainerCannotRun`.
pub(crate) async fn create_and_start(
    ctx: &Context,
    pod: &Pod,
    container: &Container,
    sandbox: &Sandbox,
    pod_volumes: &PodVolumes,
    image: &ResolvedImage,
) -> Result<String, CreateError> {
    let body = create_body(ctx, pod, container, sandbox, pod_volumes, image).await?;
    let name = docker_name(pod, &container.name);
    // A leftover of an earlier attempt would block the name.
    remove(&ctx.docker, &name).await;
    let options = CreateContainerOptionsBuilder::default().name(&name).build();
    let created = ctx.docker.create_container(Some(options), body).await.map_err(|err| CreateError {
        reason: "CreateContainerError",
        message: format!("creating Docker container {name}: {err}"),
    })?;
    if let Err(err) = ctx.docker.start_container(&created.id, None).await {
        eprintln!("test-kubelet: starting Docker container {name}: {err}");
    }
    Ok(created.id)
}

async fn create_body(
    ctx: &Context,
    pod: &Pod,
    container: &Container,
    sandbox: &Sandbox,
    pod_volumes: &PodVolumes,
    image: &ResolvedImage,
) -> Result<ContainerCreateBody, CreateError> {
    let spec = pod.spec.as_ref().ok_or_else(|| config_error("the pod has no spec".into()))?;
    let vars = env::resolve(ctx, pod, container, &sandbox.ip).await.map_err(config_error)?;
    let defined: HashMap<&str, &str> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    // An empty command or args list means "the image's", as an absent one does.
    let expand_all = |list: &Option<Vec<String>>| {
        list.as_ref().filter(|l| !l.is_empty()).map(|l| l.iter().map(|s| env::expand(s, &defined)).collect())
    };

    let pod_security = spec.security_context.as_ref();
    let security = container.security_context.as_ref();
    let run_as_user = security.and_then(|s| s.run_as_user).or(pod_security.and_then(|s| s.run_as_user));
    let run_as_group = security.and_then(|s| s.run_as_group).or(pod_security.and_then(|s| s.run_as_group));
    let run_as_non_root = security.and_then(|s| s.run_as_non_root).or(pod_security.and_then(|s| s.run_as_non_root));
    if run_as_non_root == Some(true) {
        check_non_root(run_as_user, &image.user).map_err(config_error)?;
    }
    let user = match (run_as_user, run_as_group) {
        (Some(uid), Some(gid)) => Some(format!("{uid}:{gid}")),
        (Some(uid), None) => Some(uid.to_string()),
        (None, Some(gid)) => {
            // Docker needs a user with a group; keep the image's user (by name or uid).
            let image_user = image.user.split(':').next().filter(|u| !u.is_empty()).unwrap_or("0");
            Some(format!("{image_user}:{gid}"))
        }
        (None, None) => None,
    };
    let mut group_add: Vec<String> = Vec::new();
    if let Some(pod_security) = pod_security {
        group_add.extend(pod_security.fs_group.map(|g| g.to_string()));
        group_add.extend(pod_security.supplemental_groups.iter().flatten().map(|g| g.to_string()));
    }

    let capabilities = security.and_then(|s| s.capabilities.as_ref());
    let caps =
        |list: Option<&Vec<String>>| list.map(|l| l.iter().map(|c| c.trim_start_matches("CAP_").to_string()).collect());
    let mut security_opt = Vec::new();
    if security.and_then(|s| s.allow_privilege_escalation) == Some(false) {
        security_opt.push("no-new-privileges".to_string());
    }
    let seccomp =
        security.and_then(|s| s.seccomp_profile.as_ref()).or(pod_security.and_then(|s| s.seccomp_profile.as_ref()));
    if seccomp.map(|p| p.type_.as_str()) == Some("Unconfined") {
        security_opt.push("seccomp=unconfined".to_string());
    }

    let limits = container.resources.as_ref().and_then(|r| r.limits.as_ref());
    let memory =
        limits.and_then(|l| l.get("memory")).map(|q| quantity::bytes(&q.0)).transpose().map_err(config_error)?;
    let nano_cpus =
        limits.and_then(|l| l.get("cpu")).map(|q| quantity::nano_cpus(&q.0)).transpose().map_err(config_error)?;

    let mounts =
        volumes::mounts(pod_volumes, container.volume_mounts.as_deref().unwrap_or_default()).map_err(config_error)?;
    let grace = spec.termination_grace_period_seconds.unwrap_or(30);

    Ok(ContainerCreateBody {
        image: Some(image.reference.clone()),
        entrypoint: expand_all(&container.command),
        cmd: expand_all(&container.args),
        env: Some(vars.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        working_dir: container.working_dir.clone().filter(|w| !w.is_empty()),
        user,
        tty: container.tty,
        open_stdin: container.stdin,
        labels: Some(pod_labels(ctx, pod, &container.name)),
        stop_timeout: Some(grace),
        host_config: Some(HostConfig {
            network_mode: Some(format!("container:{}", sandbox.id)),
            mounts: Some(mounts),
            cap_add: caps(capabilities.and_then(|c| c.add.as_ref())),
            cap_drop: caps(capabilities.and_then(|c| c.drop.as_ref())),
            security_opt: (!security_opt.is_empty()).then_some(security_opt),
            readonly_rootfs: security.and_then(|s| s.read_only_root_filesystem),
            privileged: security.and_then(|s| s.privileged),
            group_add: (!group_add.is_empty()).then_some(group_add),
            memory,
            nano_cpus,
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The kubelet's `runAsNonRoot` verification: a uid must be known and non-zero.
fn check_non_root(run_as_user: Option<i64>, image_user: &str) -> Result<(), String> {
    match run_as_user {
        Some(0) => Err("container's runAsUser breaks non-root policy".into()),
        Some(_) => Ok(()),
        None => {
            let user = image_user.split(':').next().unwrap_or_default();
            match user.parse::<i64>() {
                Ok(0) => Err("container has runAsNonRoot and image will run as root".into()),
                Ok(_) => Ok(()),
                Err(_) if user.is_empty() || user == "root" => {
                    Err("container has runAsNonRoot and image will run as root".into())
                }
                Err(_) => Err(format!(
                    "container has runAsNonRoot and image has non-numeric user ({user}), cannot verify user is non-root"
                )),
            }
        }
    }
}

/// Looks at a container; `None` when the engine no longer has it.
pub(crate) async fn observe(docker: &Docker, id: &str) -> Option<Observed> {
    let inspect = docker.inspect_container(id, None).await.ok()?;
    let state = inspect.state.unwrap_or_default();
    if state.running == Some(true) {
        return Some(Observed::Running { started_at: time(state.started_at.as_deref()).unwrap_or_else(now) });
    }
    let exit_code = state.exit_code.unwrap_or(0) as i32;
    let error = state.error.filter(|e| !e.is_empty());
    let reason = if error.is_some() {
        "ContainerCannotRun"
    } else if state.oom_killed == Some(true) {
        "OOMKilled"
    } else if exit_code == 0 {
        "Completed"
    } else {
        "Error"
    };
    Some(Observed::Exited {
        exit_code: if error.is_some() && exit_code == 0 { 128 } else { exit_code },
        reason: reason.to_string(),
        message: error,
        started_at: time(state.started_at.as_deref()),
        finished_at: time(state.finished_at.as_deref()),
    })
}

/// Stops a container with SIGTERM, then SIGKILL after `grace_seconds`.
pub(crate) async fn stop(docker: &Docker, id: &str, grace_seconds: i64) {
    let options = StopContainerOptionsBuilder::default().t(grace_seconds.clamp(0, i32::MAX as i64) as i32).build();
    if let Err(err) = docker.stop_container(id, Some(options)).await
        && !is_gone(&err)
    {
        eprintln!("test-kubelet: stopping Docker container {id}: {err}");
    }
}

/// Removes a container (and its anonymous volumes); a missing one is fine.
pub(crate) async fn remove(docker: &Docker, id: &str) {
    let options = RemoveContainerOptionsBuilder::default().force(true).v(true).build();
    if let Err(err) = docker.remove_container(id, Some(options)).await
        && !is_gone(&err)
    {
        eprintln!("test-kubelet: removing Docker container {id}: {err}");
    }
}

fn is_gone(err: &bollard::errors::Error) -> bool {
    matches!(err, bollard::errors::Error::DockerResponseServerError { status_code: 404 | 304, .. })
}

/// A Docker timestamp as a Kubernetes time (Docker's zero time is "never").
pub(crate) fn time(docker_time: Option<&str>) -> Option<Time> {
    let stamp: k8s_openapi::jiff::Timestamp = docker_time?.parse().ok()?;
    (stamp.as_second() > 0).then_some(Time(stamp))
}

/// The current time, to the second (what the API server stores).
pub(crate) fn now() -> Time {
    let seconds = k8s_openapi::jiff::Timestamp::now().as_second();
    Time(k8s_openapi::jiff::Timestamp::from_second(seconds).unwrap_or_else(|_| k8s_openapi::jiff::Timestamp::now()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_root_checks() {
        assert!(check_non_root(Some(1000), "").is_ok());
        assert!(check_non_root(Some(0), "1000").is_err());
        assert!(check_non_root(None, "10001:10001").is_ok());
        assert!(check_non_root(None, "").is_err());
        assert!(check_non_root(None, "root").is_err());
        let named = check_non_root(None, "postgres").expect_err("a user name cannot be verified");
        assert!(named.contains("non-numeric user (postgres)"), "{named}");
    }

    #[test]
    fn docker_times() {
        assert_eq!(time(Some("0001-01-01T00:00:00Z")), None);
        let t = time(Some("2026-12-02T18:18:32.123456789Z")).expect("parsed");
        assert_eq!(serde_json::to_value(&t).expect("json"), "2026-12-02T18:18:32Z");
    }
}
