//! A real image registry per test: Debian's `docker-registry` (distribution 2.8) on a free
//! loopback port, with its own config file and storage in a temporary directory, optionally
//! behind htpasswd (bcrypt) authentication.
//!
//! The Docker Engine treats 127.0.0.0/8 registries as insecure-allowed, so it pushes to and
//! pulls from this one over plain HTTP. Measured with distribution 2.8.2 and Engine 20.10:
//! distribution accepts htpasswd authentication over plain HTTP (it only warns about it in
//! its documentation), and the engine sends the credentials it is given to a plain-HTTP
//! loopback registry.
//!
//! The process is killed when the [`Registry`] is dropped, and by the kernel when the thread
//! that started it ends (`PR_SET_PDEATHSIG`), so it never outlives its test, even one that
//! aborts. Start it from the test's own thread, not from a pool thread that may be retired
//! while the registry is still in use.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine as _;

/// How long the registry may take to answer `/v2/` after it was started.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Ports tried when the free port found was taken before the registry bound it.
const PORT_ATTEMPTS: usize = 3;
/// bcrypt cost of the htpasswd line: the minimum. distribution checks the password on every
/// request, and at the default cost (10) that is tens of milliseconds each.
const BCRYPT_COST: u32 = 4;

/// What registry to start.
#[derive(Clone, Default)]
pub struct RegistryOptions {
    /// `Some((user, password))`: require HTTP Basic authentication (htpasswd) for everything.
    pub user: Option<(String, String)>,
}

/// A running registry; killed, and its storage removed, on drop.
pub struct Registry {
    child: Child,
    address: String,
    user: Option<(String, String)>,
    log: PathBuf,
    // Last: removed after the process is gone.
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry and waits until it answers `GET /v2/`. Fails, with its log, when the
    /// binary is missing or the registry does not come up.
    pub fn start(options: RegistryOptions) -> anyhow::Result<Registry> {
        let binary = find_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("rivet-registry-")
            .tempdir()
            .context("creating the registry's directory")?;
        let htpasswd = match &options.user {
            Some((user, password)) => Some(write_htpasswd(dir.path(), user, password)?),
            None => None,
        };
        let log = dir.path().join("registry.log");
        let config = dir.path().join("config.yml");
        for _ in 0..PORT_ATTEMPTS {
            let address = free_address()?;
            std::fs::write(&config, config_text(&address, &dir.path().join("storage"), htpasswd.as_deref()))
                .with_context(|| format!("writing {}", config.display()))?;
            let mut child = spawn(&binary, &config, &log)?;
            match wait_ready(&mut child, &address, &log) {
                Ok(()) => return Ok(Registry { child, address, user: options.user, log, _dir: dir }),
                Err(failure) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    if let Startup::Failed(message) = failure {
                        bail!("{message}\n{}", read_log(&log));
                    }
                }
            }
        }
        bail!("the registry did not start: {PORT_ATTEMPTS} free ports were taken before it could bind them")
    }

    /// `127.0.0.1:PORT`, the registry part of image references pushed here.
    pub fn address(&self) -> String {
        self.address.clone()
    }

    /// The registry's own digest of `repository:tag` (its `Docker-Content-Digest` for the
    /// Docker schema 2 manifest), `None` when it has no such manifest. Authenticates with the
    /// registry's user, if it has one.
    pub fn manifest_digest(&self, repository: &str, tag: &str) -> anyhow::Result<Option<String>> {
        let path = format!("/v2/{repository}/manifests/{tag}");
        let accept = "application/vnd.docker.distribution.manifest.v2+json";
        let response = self.get(&path, &[("Accept", accept)])?;
        match response.status {
            200 => {
                let digest = response
                    .header("docker-content-digest")
                    .with_context(|| format!("GET {path} answered 200 without Docker-Content-Digest"))?;
                Ok(Some(digest.to_string()))
            }
            404 => Ok(None),
            other => bail!("GET {path} answered {other}: {}", response.body),
        }
    }

    /// The registry's log so far (stdout and stderr), for failure messages.
    pub fn log(&self) -> String {
        read_log(&self.log)
    }

    /// A plain HTTP/1.1 GET, with Basic authentication when the registry has a user.
    fn get(&self, path: &str, headers: &[(&str, &str)]) -> anyhow::Result<Response> {
        let mut request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n", self.address);
        if let Some((user, password)) = &self.user {
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            request.push_str(&format!("Authorization: Basic {token}\r\n"));
        }
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        http_exchange(&self.address, &request).with_context(|| format!("GET http://{}{path}", self.address))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `/v2/` answers (200, or 401 behind authentication).
fn wait_ready(child: &mut Child, address: &str, log: &Path) -> Result<(), Startup> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            if read_log(log).contains("address already in use") {
                return Err(Startup::PortTaken);
            }
            return Err(Startup::Failed(format!("docker-registry exited ({status}) before answering")));
        }
        let request = format!("GET /v2/ HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
        if let Ok(response) = http_exchange(address, &request) {
            if response.status == 200 || response.status == 401 {
                return Ok(());
            }
            return Err(Startup::Failed(format!("GET /v2/ answered {}: {}", response.status, response.body)));
        }
        if Instant::now() > deadline {
            return Err(Startup::Failed(format!(
                "docker-registry did not answer on {address} within {READY_TIMEOUT:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The registry's log, or why it cannot be read.
fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()))
}

/// Why a start attempt failed.
enum Startup {
    /// Another process bound the port between [`free_address`] and the registry.
    PortTaken,
    Failed(String),
}

/// An HTTP response, as much of it as the tests need.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    /// A header's value (names compared case-insensitively).
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Sends `request` and reads the response until the server closes the connection.
fn http_exchange(address: &str, request: &str) -> anyhow::Result<Response> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").context("the response has no end of headers")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP status line: {status_line:?}"))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_string(), value.trim().to_string()))
        .collect();
    Ok(Response { status, headers, body: body.to_string() })
}

/// `docker-registry` on PATH, or an error saying how to install it.
fn find_binary() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|dir| dir.join("docker-registry")).find(|candidate| candidate.is_file()).context(
        "docker-registry is not on PATH: install Debian's package (`apt-get install -y docker-registry`; \
         scripts/install-prerequisites.sh does)",
    )
}

/// A loopback address whose port was free a moment ago.
fn free_address() -> anyhow::Result<String> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free loopback port")?;
    Ok(listener.local_addr()?.to_string())
}

/// Writes `user:<bcrypt hash>` (the only htpasswd format distribution accepts).
fn write_htpasswd(dir: &Path, user: &str, password: &str) -> anyhow::Result<PathBuf> {
    let hash = bcrypt::hash(password, BCRYPT_COST).context("hashing the registry password")?;
    let path = dir.join("htpasswd");
    std::fs::write(&path, format!("{user}:{hash}\n")).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The registry's configuration: storage under the test's directory, listening on
/// `address` only, deletes allowed, htpasswd authentication when given.
fn config_text(address: &str, storage: &Path, htpasswd: Option<&Path>) -> String {
    let mut text = format!(
        "version: 0.1\n\
         log:\n  level: info\n  accesslog:\n    disabled: true\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
         http:\n  addr: {address}\n",
        storage.display()
    );
    if let Some(path) = htpasswd {
        text.push_str(&format!("auth:\n  htpasswd:\n    realm: rivet-test\n    path: {}\n", path.display()));
    }
    text
}

/// Starts `docker-registry serve CONFIG` with its output in `log`, to be killed by the kernel
/// when the calling thread ends.
fn spawn(binary: &Path, config: &Path, log: &Path) -> anyhow::Result<Child> {
    let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone()?;
    let mut command = Command::new(binary);
    command.arg("serve").arg(config).stdin(Stdio::null()).stdout(out).stderr(err);
    crate::die_with_parent(&mut command, libc::SIGKILL);
    command.spawn().with_context(|| format!("starting {} serve {}", binary.display(), config.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(registry: &Registry, authorization: Option<&str>) -> u16 {
        let mut request = format!("GET /v2/ HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n", registry.address);
        if let Some(token) = authorization {
            request.push_str(&format!("Authorization: Basic {token}\r\n"));
        }
        request.push_str("\r\n");
        http_exchange(&registry.address, &request).unwrap().status
    }

    fn basic(user: &str, password: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    }

    /// Whether process `pid` is gone (or a zombie: dead, not yet reaped).
    fn gone(pid: u32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')),
        }
    }

    fn wait_gone(pid: u32) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if gone(pid) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    #[test]
    fn htpasswd_is_enforced_over_plain_http() {
        let options = RegistryOptions { user: Some(("alice".into(), "right".into())) };
        let registry = Registry::start(options).unwrap();
        assert!(registry.address().starts_with("127.0.0.1:"), "{}", registry.address());
        assert_eq!(status(&registry, None), 401);
        assert_eq!(status(&registry, Some(&basic("alice", "wrong"))), 401);
        assert_eq!(status(&registry, Some(&basic("alice", "right"))), 200);
        assert_eq!(registry.manifest_digest("rivetos/none", "v1").unwrap(), None);
    }

    #[test]
    fn drop_kills_the_registry_and_frees_its_port() {
        let registry = Registry::start(RegistryOptions::default()).unwrap();
        assert_eq!(status(&registry, None), 200);
        let (pid, address) = (registry.child.id(), registry.address());
        drop(registry);
        assert!(gone(pid), "the registry process {pid} survived its drop");
        assert!(TcpStream::connect(&address).is_err(), "{address} still answers");
    }

    #[test]
    fn the_registry_dies_with_the_thread_that_started_it() {
        // The Registry is leaked, so only PR_SET_PDEATHSIG can end the process.
        let (pid, dir) = std::thread::spawn(|| {
            let registry = Registry::start(RegistryOptions::default()).unwrap();
            let found = (registry.child.id(), registry._dir.path().to_path_buf());
            std::mem::forget(registry);
            found
        })
        .join()
        .unwrap();
        let died = wait_gone(pid);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(died, "the registry process {pid} outlived the thread that started it");
    }
}
