//! A real Kubernetes API server for tests: Kubernetes v1.20.2 `kube-apiserver` (and, when asked,
//! `kube-controller-manager`) on Debian's etcd, on loopback only.
//!
//! Why a real one: server-side apply (a re-apply that writes, a field the server's schema lacks),
//! RBAC and the controllers behave in ways no fake reproduces. Every [`ApiServer`] is private to
//! its test: its own free ports, its own temporary directory with its own PKI, token file,
//! kubeconfigs, logs and etcd data, so tests run in parallel (cargo-nextest runs each test in its
//! own process) and share nothing.
//!
//! The binaries come from `scripts/kubernetes/build-apiserver.sh` (run by
//! `scripts/install-prerequisites.sh`): `$RIVET_K8S_BIN`, else `/opt/rivetctl/kubernetes/bin`;
//! `etcd` (Debian's etcd-server) and `openssl` come from `PATH`. When one is missing, or the
//! server does not come up, [`ApiServer::start`] panics with the tail of the logs and the fix:
//! a test that needs this server never passes without one.
//!
//! The child processes cannot outlive the test process, even one killed with SIGKILL: each is
//! started with `PR_SET_PDEATHSIG` (SIGKILL), in its own process group. Authentication is by
//! bearer token (the users are in [`ApiServer::kubeconfig_for`]); authorization is RBAC.

mod process;
mod setup;

use std::{
    env, fs,
    io::{self, Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::{
    Api, Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
};
use tempfile::TempDir;

use process::{Process, spawn};
use setup::{USERS, apiserver_args, controller_manager_args, etcd_args, kubeconfig_path, write_kubeconfigs, write_pki};

/// Where `scripts/kubernetes/build-apiserver.sh` installs the binaries.
const DEFAULT_BIN_DIR: &str = "/opt/rivetctl/kubernetes/bin";
/// The fix for every failure that is not a bug in the test.
const FIX: &str = "run scripts/install-prerequisites.sh (it installs etcd-server and openssl, and builds \
     kube-apiserver and kube-controller-manager v1.20.2 into /opt/rivetctl/kubernetes/bin; set RIVET_K8S_BIN to \
     use others)";
/// From the first process started to a server that answers (and works, with the controller manager).
const START_TIMEOUT: Duration = Duration::from_secs(60);
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// The longest one readiness probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Starts tried when a port picked as free was taken before the server bound it.
const PORT_ATTEMPTS: usize = 5;
const LOG_TAIL_LINES: usize = 25;

/// What [`ApiServer::start`] starts besides etcd and the apiserver.
#[derive(Debug, Clone, Default)]
pub struct ApiServerOptions {
    /// Also run kube-controller-manager, without the node-lifecycle and persistent-volume
    /// controllers (there are no nodes or volumes): Deployments get ReplicaSets, ReplicaSets get
    /// Pods (which stay Pending: there is no scheduler or kubelet), namespaces get their
    /// `default` ServiceAccount. `start` returns once it works.
    pub controller_manager: bool,
}

/// A running etcd + kube-apiserver (+ kube-controller-manager); dropping it stops them and
/// removes its directory.
#[derive(Debug)]
pub struct ApiServer {
    dir: TempDir,
    ports: Ports,
    /// In start order; stopped in reverse.
    processes: Vec<Process>,
}

impl ApiServer {
    /// Starts a server and waits until it is ready (see [`ApiServerOptions`]). Blocking; may be
    /// called from inside a tokio runtime.
    ///
    /// # Panics
    /// When a binary is missing, or the server does not come up within 60 s: the message has
    /// the tail of each log and the fix, and the directory is kept for the full logs.
    pub fn start(options: ApiServerOptions) -> ApiServer {
        let binaries = Binaries::find(&options);
        let dir = tempfile::Builder::new()
            .prefix("rivet-apiserver-")
            .tempdir()
            .unwrap_or_else(|err| panic!("ApiServer::start: cannot create a temporary directory: {err}"));
        let mut server = ApiServer { dir, ports: Ports::pick(), processes: Vec::new() };
        let started = Instant::now();
        let deadline = started + START_TIMEOUT;
        for attempt in 1..=PORT_ATTEMPTS {
            // The waits poll through a kube client, on a runtime of their own: on a thread of
            // their own, since the caller may be inside a runtime already.
            let outcome = thread::scope(|scope| {
                scope.spawn(|| server.boot(&binaries, deadline)).join().unwrap_or_else(|panic| {
                    std::panic::resume_unwind(panic);
                })
            });
            match outcome {
                Ok(()) => return server,
                Err(Failure::PortTaken { process }) if attempt < PORT_ATTEMPTS => {
                    server.stop_all();
                    let _ = fs::remove_dir_all(server.dir.path().join("etcd-data"));
                    server.ports = Ports::pick();
                    eprintln!("ApiServer::start: {process} found a port taken; trying again on new ports");
                }
                Err(failure) => {
                    server.stop_all();
                    server.dir.disable_cleanup(true);
                    panic!("{}", server.failure_report(&failure, started.elapsed()));
                }
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// The apiserver's URL: `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.ports.apiserver)
    }

    /// The server's directory: `pki/`, the kubeconfigs, `*.log`, `etcd-data/`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A kubeconfig for `admin` (group `system:masters`): context `rivet-test`, namespace
    /// `default`.
    pub fn kubeconfig(&self) -> PathBuf {
        self.kubeconfig_for("admin")
    }

    /// A kubeconfig like [`ApiServer::kubeconfig`] for one of the token file's users: `admin`,
    /// or `limited` (no groups: RBAC denies it almost everything).
    ///
    /// # Panics
    /// For any other user.
    pub fn kubeconfig_for(&self, user: &str) -> PathBuf {
        let known: Vec<&str> = USERS.iter().map(|user| user.name).collect();
        assert!(known.contains(&user), "ApiServer has no user {user:?}; its token file has {known:?}");
        kubeconfig_path(self.dir(), user)
    }

    /// The CA that signed the apiserver's certificate (PEM).
    pub fn ca(&self) -> PathBuf {
        self.dir().join("pki/ca.crt")
    }

    /// Every loopback port the server listens on: the apiserver's, etcd's client and peer
    /// ports (the controller manager listens on none).
    pub fn ports(&self) -> Vec<u16> {
        vec![self.ports.apiserver, self.ports.etcd_client, self.ports.etcd_peer]
    }

    /// An admin client, built from [`ApiServer::kubeconfig`].
    pub async fn client(&self) -> Client {
        client_from(&self.kubeconfig()).await.unwrap_or_else(|err| panic!("ApiServer::client: {err}"))
    }

    /// One attempt: starts the processes on `self.ports` and waits for each to be ready.
    fn boot(&mut self, binaries: &Binaries, deadline: Instant) -> Result<(), Failure> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|err| Failure::Broken(format!("cannot build a tokio runtime: {err}")))?;
        let dir = self.dir.path().to_owned();
        let ports = self.ports;
        self.processes.push(spawn("etcd", &binaries.etcd, &etcd_args(&dir, ports), &dir)?);
        // openssl takes about a second: while etcd starts.
        if !dir.join("pki/tokens.csv").exists() {
            write_pki(&binaries.openssl, &dir.join("pki")).map_err(Failure::Broken)?;
        }
        write_kubeconfigs(&dir, ports).map_err(Failure::Broken)?;
        runtime.block_on(async {
            let processes = &mut self.processes;
            wait_for(processes, "etcd to answer /health", deadline, async || etcd_healthy(ports.etcd_client)).await?;
            processes.push(spawn("kube-apiserver", &binaries.apiserver, &apiserver_args(&dir, ports), &dir)?);
            let client = client_from(&kubeconfig_path(&dir, "admin")).await.map_err(Failure::Broken)?;
            wait_for(processes, "kube-apiserver to answer /readyz", deadline, async || {
                let request = http::Request::get("/readyz").body(Vec::new()).expect("a valid request");
                client.request_text(request).await.is_ok()
            })
            .await?;
            // The bootstrap controller creates it after /readyz; without it nothing namespaced works.
            wait_for(processes, "namespace default", deadline, async || {
                Api::<Namespace>::all(client.clone()).get_opt("default").await.is_ok_and(|found| found.is_some())
            })
            .await?;
            if let Some(controller_manager) = &binaries.controller_manager {
                let args = controller_manager_args(&dir);
                processes.push(spawn("kube-controller-manager", controller_manager, &args, &dir)?);
                wait_for(
                    processes,
                    "kube-controller-manager to create ServiceAccount default/default",
                    deadline,
                    async || {
                        let accounts = Api::<ServiceAccount>::namespaced(client.clone(), "default");
                        accounts.get_opt("default").await.is_ok_and(|found| found.is_some())
                    },
                )
                .await?;
            }
            Ok(())
        })
    }

    fn stop_all(&mut self) {
        while let Some(mut process) = self.processes.pop() {
            process.stop();
        }
    }

    /// The panic message of a failed start: what failed, the tail of every log, the fix.
    fn failure_report(&self, failure: &Failure, elapsed: Duration) -> String {
        let what = match failure {
            Failure::PortTaken { process } => format!("{process} found its port taken {PORT_ATTEMPTS} times"),
            Failure::Broken(what) => what.clone(),
        };
        let mut report = format!("ApiServer::start failed after {:.1} s: {what}\n", elapsed.as_secs_f64());
        for name in ["etcd", "kube-apiserver", "kube-controller-manager"] {
            let log = self.dir().join(format!("{name}.log"));
            if let Ok(text) = fs::read_to_string(&log) {
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
                report += &format!("--- {} (last {} lines) ---\n{}\n", log.display(), tail.len(), tail.join("\n"));
            }
        }
        report + &format!("(the directory is kept: {})\nfix: {FIX}", self.dir().display())
    }
}

impl Drop for ApiServer {
    /// Stops the controller manager, the apiserver and etcd (SIGTERM, SIGKILL after 5 s); the
    /// directory goes with `dir`. Blocks: about 1 s, the apiserver's graceful stop. On SIGTERM
    /// kube-apiserver waits for the requests still open, so a watch left open by a client of
    /// this thread's runtime (which cannot run while Drop blocks it) costs the full 5 s: drop
    /// watches and clients first and `tokio::task::yield_now().await` once.
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// Why one start attempt failed.
#[derive(Debug)]
enum Failure {
    /// A port picked as free was taken before the process bound it: try again on other ports.
    PortTaken {
        process: &'static str,
    },
    Broken(String),
}

/// The programs a server runs.
struct Binaries {
    apiserver: PathBuf,
    controller_manager: Option<PathBuf>,
    etcd: PathBuf,
    openssl: PathBuf,
}

impl Binaries {
    /// Finds them, or panics with the fix.
    fn find(options: &ApiServerOptions) -> Binaries {
        let bin_dir = env::var_os("RIVET_K8S_BIN").map_or_else(|| PathBuf::from(DEFAULT_BIN_DIR), PathBuf::from);
        let in_bin_dir = |name: &str| {
            let path = bin_dir.join(name);
            assert!(
                path.is_file(),
                "ApiServer::start: {} not found (RIVET_K8S_BIN or {DEFAULT_BIN_DIR}); fix: {FIX}",
                path.display()
            );
            path
        };
        let on_path = |name: &str| {
            env::split_paths(&env::var_os("PATH").unwrap_or_default())
                .map(|dir| dir.join(name))
                .find(|path| path.is_file())
                .unwrap_or_else(|| panic!("ApiServer::start: {name} not found on PATH; fix: {FIX}"))
        };
        Binaries {
            apiserver: in_bin_dir("kube-apiserver"),
            controller_manager: options.controller_manager.then(|| in_bin_dir("kube-controller-manager")),
            etcd: on_path("etcd"),
            openssl: on_path("openssl"),
        }
    }
}

/// The loopback ports of one server.
#[derive(Debug, Clone, Copy)]
struct Ports {
    apiserver: u16,
    etcd_client: u16,
    etcd_peer: u16,
}

impl Ports {
    /// Three distinct ports free right now. Another process may take one before the server binds
    /// it: the start then fails with "address already in use" and is tried again.
    fn pick() -> Ports {
        let listeners: Vec<TcpListener> = (0..3)
            .map(|_| TcpListener::bind(("127.0.0.1", 0)).expect("ApiServer::start: cannot bind a loopback port"))
            .collect();
        let port = |index: usize| listeners[index].local_addr().expect("a bound listener has an address").port();
        Ports { apiserver: port(0), etcd_client: port(1), etcd_peer: port(2) }
    }
}

/// Polls `probe` every [`POLL_INTERVAL`] until it says yes; fails when a process exits or at
/// `deadline`.
async fn wait_for(
    processes: &mut [Process],
    what: &str,
    deadline: Instant,
    mut probe: impl AsyncFnMut() -> bool,
) -> Result<(), Failure> {
    loop {
        if tokio::time::timeout(PROBE_TIMEOUT, probe()).await.unwrap_or(false) {
            return Ok(());
        }
        for process in processes.iter_mut() {
            if let Ok(Some(status)) = process.child.try_wait() {
                return Err(process.exited(status));
            }
        }
        if Instant::now() >= deadline {
            return Err(Failure::Broken(format!("timed out waiting for {what}")));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// etcd's `/health` says `"health":"true"` (plain HTTP on loopback).
fn etcd_healthy(port: u16) -> bool {
    let answer = || -> io::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(PROBE_TIMEOUT))?;
        stream.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    };
    answer().is_ok_and(|answer| answer.contains(r#""health":"true""#))
}

async fn client_from(kubeconfig: &Path) -> Result<Client, String> {
    let read =
        Kubeconfig::read_from(kubeconfig).map_err(|err| format!("cannot read {}: {err}", kubeconfig.display()))?;
    let config = Config::from_custom_kubeconfig(read, &KubeConfigOptions::default())
        .await
        .map_err(|err| format!("cannot use {}: {err}", kubeconfig.display()))?;
    Client::try_from(config).map_err(|err| format!("cannot build a client from {}: {err}", kubeconfig.display()))
}
