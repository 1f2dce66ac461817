//! The HTTP client of the Proxmox VE API: HTTPS with the trust of [`super::tls`] (a pinned
//! fingerprint, a CA file or the system roots), the API token in the `Authorization`
//! header, one kept-alive HTTP/1.1 connection, answers unwrapped from `{"data": …}`.
//!
//! Retries: what the API itself says is transient (5xx, `got timeout`, `can't lock file …
//! got timeout`, see [`super::task::is_transient`]) is tried again with a growing pause until
//! the retry deadline; a 4xx or any other error is not. A request that got no answer at all
//! (the connection broke after it was sent) is retried only when it reads (GET): a write may
//! have happened, so [`ApiError::NoAnswer`] goes back to the caller, which looks for what it
//! asked for (a container by its tags) before doing it again.
//!
//! Tasks: a write that starts a task answers with a UPID; [`Client::run_task`] polls
//! `tasks/{upid}/status` on the UPID's node until `stopped` (the API has no watch), then
//! `OK` is success, `WARNINGS: n` success with the log's `WARN:` lines, anything else a
//! failure carrying the first lines of the task log.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::rustls::pki_types::ServerName;

use super::api::{self, LogLine, Method, Request, TaskStatus};
use super::task::{TaskState, Token, Upid, is_transient};
use super::tls::{self, Trust};

/// The most of an answer read.
const MAX_BODY: usize = 16 * 1024 * 1024;
/// Task log lines shown with a failure.
const LOG_LINES: u32 = 20;

/// How long transient failures are retried, and how long a task may run.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// Retrying one request that keeps failing transiently.
    pub retry: Duration,
    /// A task from its start to `stopped`.
    pub task: Duration,
    /// The first pause between retries and between task polls (doubled up to 1 s).
    pub pause: Duration,
    /// Connecting and the TLS handshake.
    pub connect: Duration,
}

impl Default for Deadlines {
    fn default() -> Deadlines {
        Deadlines {
            retry: Duration::from_secs(60),
            task: Duration::from_secs(600),
            pause: Duration::from_millis(100),
            connect: Duration::from_secs(10),
        }
    }
}

/// Why a request failed. No message holds the token's secret.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("deployment.proxmox.api_url {url:?} {problem}")]
    Url { url: String, problem: &'static str },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot reach the Proxmox VE API at {address}: {reason}")]
    Unreachable { address: String, reason: String },
    #[error("{message}")]
    Token { message: String, hint: String },
    #[error("{request} failed ({status}): {message}")]
    Refused { request: String, status: u16, message: String, errors: BTreeMap<String, String> },
    #[error("{request} kept failing for {waited:?} ({status}: {message}); the API called it transient")]
    GaveUp { request: String, status: u16, message: String, waited: Duration },
    #[error("{request} got no answer ({reason}); it may or may not have happened")]
    NoAnswer { request: String, reason: String },
    #[error("{request}: the answer is not what the API schema describes: {problem}")]
    Answer { request: String, problem: String },
    #[error("{what} failed: {status}{}", log_tail(.log))]
    Task { what: String, upid: String, status: String, log: Vec<String> },
    #[error("{what} was still running after {waited:?} (task {upid})")]
    TaskTimeout { what: String, upid: String, waited: Duration },
}

fn log_tail(log: &[String]) -> String {
    if log.is_empty() { String::new() } else { format!("\n--- task log ---\n{}", log.join("\n")) }
}

impl ApiError {
    /// What to do about it, when there is something to say.
    pub fn hint(&self) -> Option<String> {
        match self {
            ApiError::Token { hint, .. } => Some(hint.clone()),
            ApiError::Unreachable { .. } => {
                Some("check deployment.proxmox.api_url and that port 8006 is reachable from here".into())
            }
            ApiError::Tls(_) => {
                Some("pin the certificate: `fingerprint:` from `pvenode cert info` (docs/proxmox.md, TLS)".into())
            }
            _ => None,
        }
    }
}

/// What a task that succeeded said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskDone {
    pub upid: String,
    /// The `WARN:` lines of a task that ended `WARNINGS: n`.
    pub warnings: Vec<String>,
    /// Its whole log.
    pub log: Vec<String>,
}

/// A connection to the API of one Proxmox VE cluster.
pub struct Client {
    host: String,
    port: u16,
    /// `/api2/json`, or what the URL gives before it.
    base: String,
    server_name: ServerName<'static>,
    tls: Arc<ClientConfig>,
    token: Token,
    deadlines: Deadlines,
    connection: tokio::sync::Mutex<Option<SendRequest<Full<Bytes>>>>,
    calls: AtomicUsize,
    writes: AtomicUsize,
}

impl Client {
    /// A client of the API at `url` (`https://pve1.lan:8006`, with or without `/api2/json`);
    /// nothing is sent yet.
    pub fn new(url: &str, trust: &Trust, token: Token, deadlines: Deadlines) -> Result<Client, ApiError> {
        let bad = |problem| ApiError::Url { url: url.to_string(), problem };
        let uri: http::Uri = url.parse().map_err(|_| bad("is not a URL"))?;
        if uri.scheme_str() != Some("https") {
            return Err(bad("must start with https:// (the API is only served over TLS)"));
        }
        let host = uri.host().ok_or_else(|| bad("names no host"))?.trim_matches(['[', ']']).to_string();
        let port = uri.port_u16().unwrap_or(8006);
        let path = uri.path().trim_end_matches('/');
        let base = if path.ends_with("/api2/json") { path.to_string() } else { format!("{path}/api2/json") };
        let server_name = ServerName::try_from(host.clone()).map_err(|_| bad("names no valid host"))?;
        Ok(Client {
            host,
            port,
            base,
            server_name,
            tls: tls::client_config(trust)?,
            token,
            deadlines,
            connection: tokio::sync::Mutex::new(None),
            calls: AtomicUsize::new(0),
            writes: AtomicUsize::new(0),
        })
    }

    /// `host:port`, for messages.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// How long it retries and waits for tasks.
    pub fn deadlines(&self) -> Deadlines {
        self.deadlines
    }

    /// Requests sent so far (retries included), and how many of them wrote.
    pub fn counts(&self) -> (usize, usize) {
        (self.calls.load(Ordering::Relaxed), self.writes.load(Ordering::Relaxed))
    }

    /// Sends `request` (retrying what is transient) and decodes its `data`.
    pub async fn call<T: DeserializeOwned>(&self, request: &Request) -> Result<T, ApiError> {
        let data = self.call_value(request).await?;
        serde_json::from_value(data)
            .map_err(|err| ApiError::Answer { request: request.describe(), problem: err.to_string() })
    }

    /// Like [`Client::call`], the `data` as JSON.
    pub async fn call_value(&self, request: &Request) -> Result<serde_json::Value, ApiError> {
        let started = Instant::now();
        let mut pause = self.deadlines.pause;
        loop {
            match self.once(request).await {
                Ok(data) => return Ok(data),
                Err(Attempt::Transient { status, message }) => {
                    if started.elapsed() + pause > self.deadlines.retry {
                        return Err(ApiError::GaveUp {
                            request: request.describe(),
                            status,
                            message,
                            waited: started.elapsed(),
                        });
                    }
                }
                Err(Attempt::Lost(reason)) if !request.method.writes() => {
                    if started.elapsed() + pause > self.deadlines.retry {
                        return Err(ApiError::NoAnswer { request: request.describe(), reason });
                    }
                }
                Err(Attempt::Lost(reason)) => return Err(ApiError::NoAnswer { request: request.describe(), reason }),
                Err(Attempt::Final(err)) => return Err(err),
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    /// Sends a request that starts a task and waits for the task; `what` names it in
    /// messages (`creating rivet-pve1 (310) on pve1`).
    pub async fn run_task(&self, request: &Request, what: &str) -> Result<TaskDone, ApiError> {
        let upid: String = self.call(request).await?;
        self.wait_task(&upid, what).await
    }

    /// Polls the task `upid` until it stops, within the task deadline.
    pub async fn wait_task(&self, upid: &str, what: &str) -> Result<TaskDone, ApiError> {
        let parsed = Upid::parse(upid)
            .map_err(|err| ApiError::Answer { request: what.to_string(), problem: err.to_string() })?;
        let started = Instant::now();
        let mut pause = self.deadlines.pause;
        loop {
            let status: TaskStatus = self.call(&api::task_status(&parsed.node, upid)).await?;
            match TaskState::of(&status.status, status.exitstatus.as_deref()) {
                TaskState::Running => {}
                TaskState::Ok => {
                    return Ok(TaskDone { upid: upid.to_string(), warnings: Vec::new(), log: Vec::new() });
                }
                TaskState::Warnings(_) => {
                    let log = self.task_log(&parsed.node, upid, 500).await?;
                    let warnings = log.iter().filter(|l| l.starts_with("WARN")).cloned().collect();
                    return Ok(TaskDone { upid: upid.to_string(), warnings, log });
                }
                TaskState::Failed(status) => {
                    let log = self.task_log(&parsed.node, upid, LOG_LINES).await.unwrap_or_default();
                    return Err(ApiError::Task { what: what.to_string(), upid: upid.to_string(), status, log });
                }
            }
            if started.elapsed() > self.deadlines.task {
                return Err(ApiError::TaskTimeout {
                    what: what.to_string(),
                    upid: upid.to_string(),
                    waited: started.elapsed(),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    /// The first `limit` lines of a task's log.
    pub async fn task_log(&self, node: &str, upid: &str, limit: u32) -> Result<Vec<String>, ApiError> {
        let lines: Vec<LogLine> = self.call(&api::task_log(node, upid, 0, limit)).await?;
        Ok(lines.into_iter().map(|l| l.t).collect())
    }

    /// One attempt: send, read, classify.
    async fn once(&self, request: &Request) -> Result<serde_json::Value, Attempt> {
        let (status, reason, body) = self.exchange(request).await?;
        let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        let message = parsed["message"]
            .as_str()
            .map(|m| m.trim().to_string())
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| reason.trim().to_string());
        if (200..300).contains(&status) {
            if parsed.is_null() && !body.is_empty() {
                let problem = "not JSON".to_string();
                return Err(Attempt::Final(ApiError::Answer { request: request.describe(), problem }));
            }
            return Ok(parsed.get("data").cloned().unwrap_or(serde_json::Value::Null));
        }
        if status == 401 {
            let (message, hint) = self.token.refused(&message);
            return Err(Attempt::Final(ApiError::Token { message, hint }));
        }
        if is_transient(status, &message) {
            return Err(Attempt::Transient { status, message });
        }
        let errors = parsed["errors"]
            .as_object()
            .map(|errors| {
                errors.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().trim().to_string())).collect()
            })
            .unwrap_or_default();
        let message = describe_errors(&message, &errors);
        Err(Attempt::Final(ApiError::Refused { request: request.describe(), status, message, errors }))
    }

    /// Sends `request` on the kept connection (a new one when it is closed) and reads the
    /// status, reason phrase and body.
    async fn exchange(&self, request: &Request) -> Result<(u16, String, Vec<u8>), Attempt> {
        let encoded = encode_params(&request.params);
        let mut uri = format!("{}{}", self.base, request.path);
        let body = if request.method.writes() && request.method != Method::Delete {
            Bytes::from(encoded)
        } else {
            if !encoded.is_empty() {
                uri = format!("{uri}?{encoded}");
            }
            Bytes::new()
        };
        let mut builder = hyper::Request::builder()
            .method(request.method.as_str())
            .uri(uri)
            .header(hyper::header::HOST, self.address())
            .header(hyper::header::AUTHORIZATION, self.token.header())
            .header(hyper::header::ACCEPT, "application/json");
        if !body.is_empty() {
            builder = builder.header(hyper::header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        }
        let http_request = builder.body(Full::new(body)).map_err(|err| {
            Attempt::Final(ApiError::Answer { request: request.describe(), problem: err.to_string() })
        })?;
        let mut slot = self.connection.lock().await;
        let reusable = match slot.as_mut() {
            Some(sender) => sender.ready().await.is_ok(),
            None => false,
        };
        if !reusable {
            *slot = Some(self.connect().await.map_err(Attempt::Final)?);
        }
        let sender = slot.as_mut().expect("connected above");
        self.calls.fetch_add(1, Ordering::Relaxed);
        if request.method.writes() {
            self.writes.fetch_add(1, Ordering::Relaxed);
        }
        let response = match sender.send_request(http_request).await {
            Ok(response) => response,
            Err(err) => {
                *slot = None;
                return Err(Attempt::Lost(err.to_string()));
            }
        };
        let status = response.status().as_u16();
        let reason = response
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned())
            .unwrap_or_else(|| response.status().canonical_reason().unwrap_or_default().to_string());
        match Limited::new(response.into_body(), MAX_BODY).collect().await {
            Ok(body) => Ok((status, reason, body.to_bytes().to_vec())),
            Err(err) => {
                *slot = None;
                Err(Attempt::Lost(err.to_string()))
            }
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, ApiError> {
        let address = self.address();
        let unreachable = |reason: String| ApiError::Unreachable { address: address.clone(), reason };
        let dial = async {
            let tcp =
                TcpStream::connect((self.host.as_str(), self.port)).await.map_err(|e| unreachable(e.to_string()))?;
            let connector = tokio_rustls::TlsConnector::from(Arc::clone(&self.tls));
            let stream = connector
                .connect(self.server_name.clone(), tcp)
                .await
                .map_err(|e| unreachable(format!("the TLS handshake failed: {}", tls::handshake_reason(&e))))?;
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            tokio::spawn(connection);
            Ok(sender)
        };
        match tokio::time::timeout(self.deadlines.connect, dial).await {
            Ok(result) => result,
            Err(_) => Err(unreachable(format!("no connection within {:?}", self.deadlines.connect))),
        }
    }
}

/// One attempt's failure.
enum Attempt {
    Transient {
        status: u16,
        message: String,
    },
    /// Sent, no answer.
    Lost(String),
    Final(ApiError),
}

/// `Parameter verification failed.` with the parameters it names.
fn describe_errors(message: &str, errors: &BTreeMap<String, String>) -> String {
    if errors.is_empty() {
        return message.to_string();
    }
    let named: Vec<String> = errors.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!("{message} ({})", named.join("; "))
}

/// `a=1&b=x%20y`, as `application/x-www-form-urlencoded` wants it.
fn encode_params(params: &BTreeMap<String, String>) -> String {
    let encode = |text: &str| {
        let mut out = String::with_capacity(text.len());
        for byte in text.bytes() {
            match byte {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(byte as char),
                b' ' => out.push('+'),
                other => out.push_str(&format!("%{other:02X}")),
            }
        }
        out
    };
    params.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect::<Vec<_>>().join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_form_encoded() {
        let params = BTreeMap::from([
            ("net0".to_string(), "name=eth0,bridge=vmbr0,ip=10.0.0.5/24".to_string()),
            ("ssh-public-keys".into(), "ssh-ed25519 AAAA x@y\n".into()),
        ]);
        assert_eq!(
            encode_params(&params),
            "net0=name%3Deth0%2Cbridge%3Dvmbr0%2Cip%3D10.0.0.5%2F24&ssh-public-keys=ssh-ed25519+AAAA+x%40y%0A"
        );
    }

    #[test]
    fn urls_must_be_https_and_get_the_api_path() {
        let token = Token::new("rivetctl@pve!deploy", "s").unwrap();
        let client =
            Client::new("https://pve1.lan:8006", &Trust::Insecure, token.clone(), Deadlines::default()).unwrap();
        assert_eq!((client.base.as_str(), client.address()), ("/api2/json", "pve1.lan:8006".to_string()));
        let client =
            Client::new("https://10.0.0.2/api2/json/", &Trust::Insecure, token.clone(), Deadlines::default()).unwrap();
        assert_eq!((client.base.as_str(), client.port), ("/api2/json", 8006));
        let err = Client::new("http://pve1.lan:8006", &Trust::Insecure, token, Deadlines::default()).err().unwrap();
        assert!(err.to_string().contains("must start with https://"), "{err}");
    }

    #[test]
    fn verification_errors_name_their_parameters() {
        let errors = BTreeMap::from([("net0".to_string(), "invalid format".to_string())]);
        assert_eq!(
            describe_errors("Parameter verification failed.", &errors),
            "Parameter verification failed. (net0: invalid format)"
        );
    }
}
