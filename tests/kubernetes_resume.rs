//! The deployment's state on a real Kubernetes API server (v1.20 with its controller manager,
//! and the test kubelet), through the `rivetctl` binary:
//! - a second `update` while one runs is refused by the Lease, which names the holder; after
//!   `kill -9` of the first, `update --resume` from another working directory takes the dead
//!   holder's lock over at once and finishes the rollout;
//! - every connection to the API server cut (by a TCP proxy in the test) while the rollout
//!   waits: the update resumes its watches and finishes;
//! - `doctor` lists the RBAC permissions a user lacks, and the Role of docs/kubernetes.md
//!   ("RBAC") grants every one of them.
//!
//! The progress lines keyed on are rivetctl's rollout events on stderr,
//! `[   0.4s] <namespace>/<agent>: gating`. Assertions read the cluster with kubectl.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use support::kube::KubeFleet;
use support::{describe, mesh, rivetctl, run};

const AGENTS: &[&str] = &["a1", "a2", "a3"];
const UP: &[&str] = &["infra", "up", "--yes", "--no-push"];
const UPDATE: &[&str] = &["update", "--no-push"];
/// From a progress line to the end of a whole rollout, on a busy machine.
const ROLLOUT_LIMIT: Duration = Duration::from_secs(240);

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The three-agent quickstart on Kubernetes, one agent at a time after a one-agent canary,
/// each gate held for `min_healthy_time`: the rollout takes at least three times that.
fn fleet(test: &str, min_healthy_time: &str) -> KubeFleet {
    let k = KubeFleet::new(test, AGENTS);
    k.fleet.edit(|text| {
        text.replace(
            "    max_parallel: 1\n    min_healthy_time: 2s\n",
            &format!("    max_parallel: 1\n    canary: 1\n    min_healthy_time: {min_healthy_time}\n    healthy_deadline: 60s\n"),
        )
    });
    k
}

/// Whether `line` is the rollout event of agent `id` entering `state`.
fn progress(k: &KubeFleet, id: &str, state: &str) -> impl Fn(&str) -> bool {
    let wanted = format!("{}/{id}: {state}", k.namespace);
    move |line: &str| line.trim_end().ends_with(&wanted)
}

/// `agent → rivetctl.io/revision` of every agent's Deployment.
fn revisions(k: &KubeFleet) -> BTreeMap<String, String> {
    AGENTS
        .iter()
        .map(|id| {
            let deployment = k.get("deployment", &k.agent(id));
            let revision = deployment["metadata"]["annotations"]["rivetctl.io/revision"].as_str().unwrap_or_default();
            (id.to_string(), revision.to_string())
        })
        .collect()
}

/// The rollout journal in the state ConfigMap, if any.
fn journal(k: &KubeFleet) -> Option<serde_json::Value> {
    let map = k.get("configmap", &format!("{}-state", k.fleet.name));
    map["data"]["journal"].as_str().map(|text| serde_json::from_str(text).expect("the journal is JSON"))
}

/// Asserts the rollout in the journal succeeded, and that every agent's Deployment is on its
/// revision (changed from `before`), rolled out and available.
fn assert_all_on_new_revision(k: &KubeFleet, before: &BTreeMap<String, String>) {
    let journal = journal(k).expect("a journal in the state ConfigMap");
    assert_eq!(journal["rollout"]["status"], "succeeded", "{journal:#}");
    let revision = journal["revision"].as_str().expect("the journal names its revision").to_string();
    for id in AGENTS {
        let deployment = k.get("deployment", &k.agent(id));
        let (metadata, status) = (&deployment["metadata"], &deployment["status"]);
        let now = metadata["annotations"]["rivetctl.io/revision"].as_str().unwrap_or_default();
        assert_ne!(now, before[*id], "{id} is still on its old revision");
        assert_eq!(now, revision, "{id} is on the rollout's revision");
        assert_eq!(status["observedGeneration"], metadata["generation"], "{id}: {status:#}");
        for field in ["replicas", "updatedReplicas", "readyReplicas", "availableReplicas"] {
            assert_eq!(status[field], 1, "{id}: {field} in {status:#}");
        }
    }
}

/// The Lease's holder identity (empty when released).
fn lease_holder(k: &KubeFleet) -> String {
    let lease = k.get("lease", &format!("{}-lock", k.fleet.name));
    lease["spec"]["holderIdentity"].as_str().unwrap_or_default().to_string()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").expect("the host name").trim().to_string()
}

/// A rivetctl whose stderr is read line by line (as `support::watch::Watched`, which does not
/// give its pid), killed with SIGKILL when the test ends before it was waited for.
struct Running {
    child: std::process::Child,
    pid: u32,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    waited: bool,
}

impl Running {
    fn spawn(mut command: Command) -> Running {
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn rivetctl");
        let stderr = child.stderr.take().expect("piped stderr");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Running { pid: child.id(), child, lines, seen: Vec::new(), waited: false }
    }

    /// Waits (at most `limit`) for a stderr line that satisfies `wanted`, and returns it.
    fn wait_for(&mut self, what: &str, limit: Duration, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        loop {
            match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if wanted(&line) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no stderr line {what} within {limit:?} (exit: {:?}); stderr so far:\n{}",
                    self.child.try_wait(),
                    self.seen.join("\n")
                ),
            }
        }
    }

    fn kill(&mut self) {
        self.child.kill().expect("SIGKILL to rivetctl");
    }

    /// Waits (at most `limit`) for the process to end; its output has every stderr line.
    fn finish(mut self, limit: Duration) -> Output {
        let deadline = Instant::now() + limit;
        let mut stderr = std::mem::take(&mut self.seen);
        // The reader ends at EOF: when the process (and every holder of the pipe) is gone.
        loop {
            match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => stderr.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("rivetctl still runs after {limit:?}; stderr:\n{}", stderr.join("\n"))
                }
            }
        }
        let status = self.child.wait().expect("wait for rivetctl");
        self.waited = true;
        let mut stdout = Vec::new();
        if let Some(mut out) = self.child.stdout.take() {
            out.read_to_end(&mut stdout).unwrap();
        }
        Output { status, stdout, stderr: stderr.join("\n").into_bytes() }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.waited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Copies `from` into a new temporary directory, without rivetctl's local `.rivetctl/`:
/// the same config and source tree, another working directory.
fn copy_of(from: &Path) -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path) {
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let (source, target) = (entry.path(), to.join(entry.file_name()));
            if entry.file_name() == ".rivetctl" {
                continue;
            }
            if entry.file_type().unwrap().is_dir() {
                std::fs::create_dir(&target).unwrap();
                copy(&source, &target);
            } else {
                std::fs::copy(&source, &target).unwrap();
            }
        }
    }
    let dir = tempfile::Builder::new().prefix("rivetctl-e2e-runner2-").tempdir().unwrap();
    copy(from, dir.path());
    dir
}

#[test]
fn a_second_update_is_refused_by_the_lease_and_a_killed_one_resumes_elsewhere() {
    let k = fleet("k8sresume", "5s");
    k.expect(UP, 0);
    let before = revisions(&k);
    mesh::bump(&k.fleet, "2.0.0");

    let mut first = Running::spawn(k.command(UPDATE));
    let pid = first.pid;
    let line = first.wait_for("of the canary's gate", ROLLOUT_LIMIT, progress(&k, "a1", "gating"));
    eprintln!("acting on: {line}");

    // A second update while the first runs: refused by the lock, naming the holder.
    let started = Instant::now();
    let second = k.expect(UPDATE, 1);
    eprintln!("the second update was refused in {:?}", started.elapsed());
    let refused = stderr(&second);
    let holder = format!("`rivetctl update` on {} (pid {pid})", hostname());
    assert!(refused.contains(&format!("is locked by {holder}")), "{}", describe(&second));
    let lease = format!("{}-lock", k.fleet.name);
    let identity = format!("rivetctl update on {} (pid {pid})", hostname());
    let table = k.kubectl(&["get", "lease", "-n", &k.namespace]);
    assert!(table.contains(&lease) && table.contains(&identity), "kubectl get lease:\n{table}");

    // kill -9 in mid-rollout: the lock stays with the dead holder, the journal unfinished.
    first.kill();
    let killed = first.finish(Duration::from_secs(30));
    assert_eq!(killed.status.signal(), Some(libc::SIGKILL), "{}", describe(&killed));
    let unfinished = journal(&k).expect("the killed update left its journal");
    assert_eq!(unfinished["rollout"]["status"], "running", "killed mid-rollout: {unfinished:#}");
    assert_eq!(lease_holder(&k), identity, "the dead holder's lock is still on the cluster");

    // The same config and source in another directory resumes it, taking the lock at once.
    let elsewhere = copy_of(k.fleet.dir.path());
    assert!(!elsewhere.path().join(".rivetctl").exists(), "the copy holds no local state");
    let mut resume = rivetctl(elsewhere.path());
    resume
        .arg("-c")
        .arg(elsewhere.path().join("rivet.config.yaml"))
        .args(["update", "--resume", "--no-push"])
        .env("KUBECONFIG", k.server.kubeconfig());
    let started = Instant::now();
    let resumed = run(&mut resume);
    eprintln!("the resume took {:?}", started.elapsed());
    assert_eq!(resumed.status.code(), Some(0), "update --resume elsewhere:\n{}", describe(&resumed));
    let took_over = format!("Took over the lock of {holder}: its process is gone.");
    assert!(stderr(&resumed).contains(&took_over), "{}", describe(&resumed));
    assert_all_on_new_revision(&k, &before);
    assert_eq!(lease_holder(&k), "", "the resume released the lock");

    // Checked last, so that a refusal without it still has the rest of the test run.
    assert!(
        refused.contains(&lease),
        "the refusal names where the lock is, the Lease {lease} (in namespace {}):\n{}",
        k.namespace,
        describe(&second)
    );
}

/// A TCP proxy on loopback to one port, which can cut every open connection at once while
/// it keeps accepting new ones.
struct Proxy {
    port: u16,
    shared: Arc<Connections>,
    stop: Arc<AtomicBool>,
    accepting: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Connections {
    /// Open connections: both sockets of each, by connection number.
    open: Mutex<BTreeMap<usize, [TcpStream; 2]>>,
    accepted: AtomicUsize,
}

impl Connections {
    /// Cuts every open connection (both sides); returns how many there were.
    fn cut(&self) -> usize {
        let open = std::mem::take(&mut *self.open.lock().unwrap());
        for sockets in open.values() {
            for socket in sockets {
                let _ = socket.shutdown(Shutdown::Both);
            }
        }
        open.len()
    }

    /// Connections accepted so far.
    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Forgets connection `id` once both directions ended.
    fn ended(&self, id: usize, halves: &AtomicUsize) {
        if halves.fetch_add(1, Ordering::SeqCst) == 1 {
            self.open.lock().unwrap().remove(&id);
        }
    }
}

impl Proxy {
    fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Connections::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (connections, stopping) = (shared.clone(), stop.clone());
        let accepting = std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else { continue };
                let id = connections.accepted.fetch_add(1, Ordering::SeqCst);
                let sockets = [client.try_clone().unwrap(), server.try_clone().unwrap()];
                connections.open.lock().unwrap().insert(id, sockets);
                let halves = Arc::new(AtomicUsize::new(0));
                for (mut from, mut to) in [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)]
                {
                    let (connections, halves) = (connections.clone(), halves.clone());
                    std::thread::spawn(move || {
                        let mut buffer = [0u8; 16 * 1024];
                        while let Ok(n @ 1..) = from.read(&mut buffer) {
                            if to.write_all(&buffer[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(Shutdown::Write);
                        connections.ended(id, &halves);
                    });
                }
            }
        });
        Proxy { port, shared, stop, accepting: Some(accepting) }
    }

    /// Cuts every open connection: see [`Connections::cut`].
    fn cut(&self) -> usize {
        self.shared.cut()
    }

    fn accepted(&self) -> usize {
        self.shared.accepted()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(accepting) = self.accepting.take() {
            let _ = accepting.join();
        }
        self.cut();
    }
}

/// The admin kubeconfig with its server replaced by the proxy's address.
fn kubeconfig_through(k: &KubeFleet, proxy: &Proxy, dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(k.server.kubeconfig()).unwrap();
    let server = format!("server: {}\n", k.server.url());
    assert!(text.contains(&server), "the kubeconfig names {server}: {text}");
    let path = dir.join("kubeconfig-proxied");
    std::fs::write(&path, text.replace(&server, &format!("server: https://127.0.0.1:{}\n", proxy.port))).unwrap();
    path
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().and_then(|port| port.trim_end_matches('/').parse().ok()).expect("a port in the URL")
}

/// One cut of every connection: when, how many were open, how many had been accepted.
#[derive(Debug)]
struct Cut {
    when: String,
    open: usize,
    accepted: usize,
}

#[test]
fn a_watch_cut_mid_rollout_is_resumed() {
    let k = fleet("k8scut", "3s");
    k.expect(UP, 0);
    let before = revisions(&k);
    mesh::bump(&k.fleet, "2.0.0");

    let proxy = Proxy::start(port_of(&k.server.url()));
    let kubeconfig = tempfile::tempdir().unwrap();
    let mut command = k.fleet.command(UPDATE);
    command.env("KUBECONFIG", kubeconfig_through(&k, &proxy, kubeconfig.path()));
    let mut update = Running::spawn(command);

    // Cut every connection as a2 is started (its apply is about to go out, or in flight: an
    // idempotent call is made again after a cut), then again while a3 is gated (the
    // rollout's watches and probes reconnect).
    let when = update.wait_for("of a2 starting", ROLLOUT_LIMIT, progress(&k, "a2", "starting"));
    let mut cuts = vec![Cut { accepted: proxy.accepted(), open: proxy.cut(), when }];
    let when = update.wait_for("of a3 gating", ROLLOUT_LIMIT, progress(&k, "a3", "gating"));
    cuts.push(Cut { accepted: proxy.accepted(), open: proxy.cut(), when });
    let output = update.finish(ROLLOUT_LIMIT);
    eprintln!("cuts: {cuts:?}; {} connections accepted in all", proxy.accepted());
    assert_eq!(output.status.code(), Some(0), "the update through the cut proxy:\n{}", describe(&output));
    for cut in &cuts {
        assert!(cut.open > 0, "no connection was open to cut on {}: {cut:?}", cut.when);
    }
    assert!(proxy.accepted() > cuts[0].accepted, "rivetctl opened no connection after the first cut: {cuts:?}");
    assert_all_on_new_revision(&k, &before);
}

/// `doctor --output json`'s checks of a run: `name → (ok, detail)`.
fn doctor(k: &KubeFleet, kubeconfig: &Path) -> (Output, BTreeMap<String, (bool, String)>) {
    let mut command = k.fleet.command(&["--output", "json", "doctor"]);
    command.env("KUBECONFIG", kubeconfig);
    let output = run(&mut command);
    let checks = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            let check: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line}\n{}", describe(&output)));
            let name = check["name"].as_str().unwrap().to_string();
            (name, (check["ok"].as_bool().unwrap(), check["detail"].as_str().unwrap_or_default().to_string()))
        })
        .collect();
    (output, checks)
}

/// The RBAC check of a doctor run: `(ok, detail)`.
fn rbac(k: &KubeFleet, output: &Output, checks: &BTreeMap<String, (bool, String)>) -> (bool, String) {
    checks
        .get(&format!("RBAC in namespace {}", k.namespace))
        .cloned()
        .unwrap_or_else(|| panic!("doctor has no RBAC check:\n{}", describe(output)))
}

/// The Role and RoleBinding of docs/kubernetes.md's "RBAC" section, for `namespace`, bound to
/// the user `user` instead of the example's service account.
fn documented_role(namespace: &str, user: &str) -> String {
    let doc = std::fs::read_to_string(support::repo().join("docs/kubernetes.md")).unwrap();
    let section = &doc[doc.find("\n## RBAC\n").expect("docs/kubernetes.md has an RBAC section")..];
    let start = section.find("```yaml\n").expect("a yaml block in the RBAC section") + "```yaml\n".len();
    let yaml = &section[start..start + section[start..].find("```").unwrap()];
    assert!(yaml.contains("kind: Role\n") && yaml.contains("kind: RoleBinding\n"), "{yaml}");
    let example = "  - { kind: ServiceAccount, name: rivetctl-deployer, namespace: ci }\n";
    assert!(yaml.contains(example), "the binding's subject changed in the doc: {yaml}");
    yaml.replace("namespace: rivet-prod", &format!("namespace: {namespace}"))
        .replace(example, &format!("  - {{ kind: User, name: {user}, apiGroup: rbac.authorization.k8s.io }}\n"))
}

#[test]
fn doctor_lists_the_rbac_permissions_a_user_lacks() {
    let k = KubeFleet::new("k8sdoctor", &["a1"]);
    // The namespace as a platform team would create it (`limited` may not).
    k.kubectl(&["create", "namespace", &k.namespace]);
    let limited = k.server.kubeconfig_for("limited");

    let (output, checks) = doctor(&k, &limited);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let (ok, detail) = rbac(&k, &output, &checks);
    assert!(!ok, "{detail}");
    let missing: Vec<&str> = detail.strip_prefix("missing: ").expect("`missing: ` and the list").split(", ").collect();
    for wanted in ["get pods/proxy", "create apps/deployments", "update coordination.k8s.io/leases"] {
        assert!(missing.contains(&wanted), "{wanted} is not listed as missing: {detail}");
    }

    let (output, checks) = doctor(&k, &k.server.kubeconfig());
    let (ok, detail) = rbac(&k, &output, &checks);
    assert!(ok, "admin: {detail}\n{}", describe(&output));
    assert_eq!(output.status.code(), Some(0), "doctor as admin:\n{}", describe(&output));

    // The documented Role, bound to `limited`: doctor's RBAC check passes. RBAC follows a
    // new binding within moments: doctor is asked again until it does (or the deadline).
    let role = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(role.path(), documented_role(&k.namespace, "limited")).unwrap();
    k.kubectl(&["apply", "-f", role.path().to_str().unwrap()]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let (output, detail) = loop {
        let (output, checks) = doctor(&k, &limited);
        let (ok, detail) = rbac(&k, &output, &checks);
        if ok {
            break (output, detail);
        }
        assert!(
            Instant::now() < deadline,
            "with the Role of docs/kubernetes.md bound, `limited` still lacks: {detail}\n{}",
            describe(&output)
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    eprintln!("limited with the documented Role: {detail}");
    assert_eq!(output.status.code(), Some(0), "doctor as limited with the documented Role:\n{}", describe(&output));
}
