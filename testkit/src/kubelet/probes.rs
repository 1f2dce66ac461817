//! Startup, liveness and readiness probes: running one check (`httpGet`, `tcpSocket`, `exec`)
//! against a container, and the kubelet's counting of consecutive results against
//! `successThreshold` / `failureThreshold` with `initialDelaySeconds` / `periodSeconds`.
//!
//! HTTP probes speak plain HTTP/1.1 from this host to the pod IP (200–399 is success); an
//! `HTTPS` probe or a `grpc` probe fails with a message saying it is not supported here.

use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecResults};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ContainerPort, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Startup,
    Liveness,
    Readiness,
}

/// One probe of one running container and its consecutive results.
#[derive(Debug, Clone)]
pub(crate) struct ProbeState {
    pub kind: Kind,
    pub probe: Probe,
    pub next_at: Instant,
    successes: i32,
    failures: i32,
    /// The verdict: `None` until a threshold is first reached.
    pub result: Option<bool>,
}

impl ProbeState {
    /// A probe of a container that started at `started`.
    pub fn new(kind: Kind, probe: Probe, started: Instant) -> ProbeState {
        let delay = Duration::from_secs(probe.initial_delay_seconds.unwrap_or(0).max(0) as u64);
        ProbeState { kind, probe, next_at: started + delay, successes: 0, failures: 0, result: None }
    }

    /// How long one check may take.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.probe.timeout_seconds.unwrap_or(1).max(1) as u64)
    }

    /// Records one check's outcome at `now` and schedules the next one.
    pub fn record(&mut self, ok: bool, now: Instant) {
        let period = Duration::from_secs(self.probe.period_seconds.unwrap_or(10).max(1) as u64);
        self.next_at = now + period;
        if ok {
            self.successes += 1;
            self.failures = 0;
            // Liveness and startup probes must have successThreshold 1.
            let threshold = if self.kind == Kind::Readiness { self.probe.success_threshold.unwrap_or(1) } else { 1 };
            if self.successes >= threshold.max(1) {
                self.result = Some(true);
            }
        } else {
            self.failures += 1;
            self.successes = 0;
            if self.failures >= self.probe.failure_threshold.unwrap_or(3).max(1) {
                self.result = Some(false);
            }
        }
    }
}

/// Where a check goes: the container (for `exec`) and the pod IP (for network checks).
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub docker_id: String,
    pub pod_ip: String,
    pub ports: Vec<ContainerPort>,
}

/// Runs one check of `probe` with its timeout; `Err` says why it failed.
pub(crate) async fn check(docker: &Docker, probe: &Probe, target: &Target, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, check_once(docker, probe, target)).await {
        Ok(result) => result,
        Err(_) => Err(format!("timed out after {}s", timeout.as_secs())),
    }
}

async fn check_once(docker: &Docker, probe: &Probe, target: &Target) -> Result<(), String> {
    if let Some(http) = &probe.http_get {
        if http.scheme.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("HTTPS")) {
            return Err("HTTPS probes are not supported by the test kubelet".into());
        }
        let port = port_number(&http.port, &target.ports)?;
        let host = http.host.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| target.pod_ip.clone());
        let path = http.path.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| "/".into());
        let headers: Vec<(String, String)> =
            http.http_headers.iter().flatten().map(|h| (h.name.clone(), h.value.clone())).collect();
        let status = http_get(&host, port, &path, &headers).await?;
        return if (200..400).contains(&status) {
            Ok(())
        } else {
            Err(format!("HTTP probe failed with statuscode: {status}"))
        };
    }
    if let Some(tcp) = &probe.tcp_socket {
        let port = port_number(&tcp.port, &target.ports)?;
        let host = tcp.host.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| target.pod_ip.clone());
        return tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map(drop)
            .map_err(|err| format!("dial tcp {host}:{port}: {err}"));
    }
    if let Some(exec) = &probe.exec {
        let command = exec.command.clone().unwrap_or_default();
        let code = exec_exit_code(docker, &target.docker_id, command).await?;
        return if code == 0 { Ok(()) } else { Err(format!("command exited with {code}")) };
    }
    Err("the probe has no httpGet, tcpSocket or exec handler the test kubelet supports".into())
}

/// A probe port: a number, or the name of one of the container's ports.
pub(crate) fn port_number(port: &IntOrString, ports: &[ContainerPort]) -> Result<u16, String> {
    match port {
        IntOrString::Int(number) => u16::try_from(*number).map_err(|_| format!("bad probe port {number}")),
        IntOrString::String(name) => match name.parse::<u16>() {
            Ok(number) => Ok(number),
            Err(_) => ports
                .iter()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .ok_or_else(|| format!("the container has no port named {name:?}")),
        },
    }
}

/// `GET path` on `host:port`; the response's status code.
async fn http_get(host: &str, port: u16, path: &str, headers: &[(String, String)]) -> Result<u16, String> {
    let mut stream =
        tokio::net::TcpStream::connect((host, port)).await.map_err(|err| format!("dial tcp {host}:{port}: {err}"))?;
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.20\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Accept: */*\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.map_err(|err| format!("writing the probe request: {err}"))?;
    let mut head = Vec::new();
    let mut buffer = [0u8; 512];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 8192 {
        let read = stream.read(&mut buffer).await.map_err(|err| format!("reading the probe response: {err}"))?;
        if read == 0 {
            break;
        }
        head.extend_from_slice(&buffer[..read]);
    }
    let line = String::from_utf8_lossy(&head);
    let status = line.split_whitespace().nth(1).and_then(|code| code.parse().ok());
    status.ok_or_else(|| format!("not an HTTP response: {:?}", line.lines().next().unwrap_or_default()))
}

/// Runs `command` in the container and returns its exit code.
async fn exec_exit_code(docker: &Docker, container: &str, command: Vec<String>) -> Result<i64, String> {
    let options = CreateExecOptions {
        cmd: Some(command),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        ..Default::default()
    };
    let exec = docker.create_exec(container, options).await.map_err(|err| format!("exec: {err}"))?;
    if let StartExecResults::Attached { mut output, .. } =
        docker.start_exec(&exec.id, None).await.map_err(|err| format!("exec: {err}"))?
    {
        while output.next().await.is_some() {}
    }
    let inspect = docker.inspect_exec(&exec.id).await.map_err(|err| format!("exec: {err}"))?;
    inspect.exit_code.ok_or_else(|| "exec: the engine reported no exit code".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(success: i32, failure: i32) -> Probe {
        Probe {
            success_threshold: Some(success),
            failure_threshold: Some(failure),
            period_seconds: Some(1),
            ..Default::default()
        }
    }

    #[test]
    fn thresholds_count_consecutive_results() {
        let now = Instant::now();
        let mut readiness = ProbeState::new(Kind::Readiness, probe(2, 2), now);
        readiness.record(true, now);
        assert_eq!(readiness.result, None, "one success of two");
        readiness.record(true, now);
        assert_eq!(readiness.result, Some(true));
        readiness.record(false, now);
        assert_eq!(readiness.result, Some(true), "one failure of two keeps it ready");
        readiness.record(true, now);
        readiness.record(false, now);
        readiness.record(false, now);
        assert_eq!(readiness.result, Some(false));
        assert_eq!(readiness.next_at, now + Duration::from_secs(1));
        let mut liveness = ProbeState::new(Kind::Liveness, probe(5, 1), now);
        liveness.record(true, now);
        assert_eq!(liveness.result, Some(true), "liveness ignores successThreshold");
    }

    #[test]
    fn named_ports() {
        let ports = [ContainerPort { name: Some("http".into()), container_port: 8080, ..Default::default() }];
        assert_eq!(port_number(&IntOrString::Int(80), &ports), Ok(80));
        assert_eq!(port_number(&IntOrString::String("http".into()), &ports), Ok(8080));
        assert_eq!(port_number(&IntOrString::String("9090".into()), &ports), Ok(9090));
        assert!(port_number(&IntOrString::String("grpc".into()), &ports).is_err());
    }

    #[tokio::test]
    async fn http_probe_reads_the_status_code() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = tokio::spawn(async move {
            for status in ["204 No Content", "503 Service Unavailable"] {
                let (mut socket, _) = listener.accept().await.expect("accept");
                let mut request = vec![0u8; 1024];
                let read = socket.read(&mut request).await.expect("read");
                assert!(String::from_utf8_lossy(&request[..read]).starts_with("GET /health HTTP/1.1\r\n"));
                socket.write_all(format!("HTTP/1.1 {status}\r\n\r\n").as_bytes()).await.expect("write");
            }
        });
        assert_eq!(http_get("127.0.0.1", port, "/health", &[]).await, Ok(204));
        assert_eq!(http_get("127.0.0.1", port, "/health", &[]).await, Ok(503));
        server.await.expect("server");
    }
}
