//! Waiting for a container to be ready: healthy (or running, without a health check), or
//! exited 0 for one-shot steps, within a deadline. Failures carry the last log lines.

use std::time::{Duration, Instant};

use bollard::models::{ContainerStateStatusEnum, HealthStatusEnum};
use bollard::query_parameters::LogsOptionsBuilder;
use futures_util::StreamExt;

use super::Engine;

/// How often the container is inspected while waiting.
const POLL: Duration = Duration::from_millis(200);
/// Log lines kept for a failure report.
pub const LOG_TAIL: usize = 30;

/// What to wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    Healthy,
    Completed,
}

/// How waiting ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    Failed { reason: String, logs: Vec<String> },
}

/// The last `tail` lines a container wrote.
pub async fn last_logs(engine: &Engine, container: &str, tail: usize) -> Vec<String> {
    let options = LogsOptionsBuilder::default().stdout(true).stderr(true).tail(&tail.to_string()).build();
    let mut stream = engine.call().logs(container, Some(options));
    let mut text = String::new();
    while let Some(Ok(chunk)) = stream.next().await {
        text.push_str(&chunk.to_string());
    }
    text.lines().map(str::to_string).collect()
}

/// Waits until `container` is ready, fails, or `deadline` passes.
pub async fn wait_ready(
    engine: &Engine,
    container: &str,
    ready: Ready,
    deadline: Duration,
) -> Result<Readiness, bollard::errors::Error> {
    let started = Instant::now();
    loop {
        let info = engine.call().inspect_container(container, None).await?;
        let state = info.state.unwrap_or_default();
        let status = state.status.unwrap_or(ContainerStateStatusEnum::EMPTY);
        let health = state.health.as_ref().and_then(|h| h.status);
        let fail = |reason: String| async move {
            Ok(Readiness::Failed { reason, logs: last_logs(engine, container, LOG_TAIL).await })
        };
        match (ready, status) {
            (Ready::Completed, ContainerStateStatusEnum::EXITED) => {
                let code = state.exit_code.unwrap_or(-1);
                return if code == 0 { Ok(Readiness::Ready) } else { fail(format!("exited with code {code}")).await };
            }
            (Ready::Healthy, ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD) => {
                let code = state.exit_code.unwrap_or(-1);
                let oom = if state.oom_killed == Some(true) { " (killed: out of memory)" } else { "" };
                return fail(format!("exited with code {code}{oom}")).await;
            }
            (Ready::Healthy, ContainerStateStatusEnum::RUNNING) => match health {
                Some(HealthStatusEnum::HEALTHY) | None | Some(HealthStatusEnum::NONE) => {
                    return Ok(Readiness::Ready);
                }
                Some(HealthStatusEnum::UNHEALTHY) => {
                    let last = state
                        .health
                        .and_then(|h| h.log)
                        .and_then(|log| log.last().and_then(|r| r.output.clone()))
                        .map(|o| format!(": {}", o.trim()))
                        .unwrap_or_default();
                    return fail(format!("health check failed{last}")).await;
                }
                _ => {}
            },
            _ => {}
        }
        if started.elapsed() >= deadline {
            let what = match (ready, health) {
                (Ready::Healthy, Some(h)) => {
                    format!("not healthy after {}s (health: {h})", deadline.as_secs())
                }
                (Ready::Healthy, None) => format!("not running after {}s (state: {status})", deadline.as_secs()),
                (Ready::Completed, _) => format!("not finished after {}s (state: {status})", deadline.as_secs()),
            };
            return fail(what).await;
        }
        tokio::time::sleep(POLL).await;
    }
}
