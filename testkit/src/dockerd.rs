//! A second Docker Engine per test: the machine's own `dockerd`, started on a unix socket in
//! a temporary directory with its own data root, exec root (so its own containerd) and the
//! `vfs` storage driver, and no iptables rules. It starts with no images, which is the
//! point: a test node that must get an image from somewhere (a registry) can be told apart
//! from one that already had it, as every node of the shared engine has.
//!
//! Its default bridge is a Linux bridge of its own (`rvtd…`, on a /24 of 10.213.0.0/16 no
//! interface of the machine uses), made before it starts and deleted after it stops. Not
//! `--bridge none`: with that, dockerd deletes the machine's `docker0` at start, which breaks
//! the main engine (measured with Engine 20.10: the next `docker run` fails "could not find
//! bridge docker0").
//!
//! It needs root, as any dockerd. The machine's `/etc/docker/daemon.json` is not read (an
//! empty config file is given instead: its `data-root` would clash with the flag). On drop
//! its containers and networks are removed (the networks' bridges would outlive it) and it
//! gets SIGTERM; the kernel sends SIGTERM too when the thread that started it ends
//! (`PR_SET_PDEATHSIG`), so it never outlives its test; dockerd stops the containerd it
//! started on the way out.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long the engine may take to answer `/_ping` after it was started.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long it may take to stop on SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// A running engine; stopped, and its storage removed, on drop.
pub struct Dockerd {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
    // After the process: its bridge is deleted once it has stopped.
    _bridge: Bridge,
    // Last: removed after the process is gone.
    dir: tempfile::TempDir,
}

impl Dockerd {
    /// Starts the engine and waits until it answers `GET /_ping`. Fails, with its log, when
    /// `dockerd` is missing, this process is not root, or the engine does not come up.
    pub fn start() -> anyhow::Result<Dockerd> {
        let binary = find_binary()?;
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!("a second dockerd needs root; run the tests as root (CI does)");
        }
        // Short: the socket's path must fit a sockaddr_un (108 bytes).
        let dir =
            tempfile::Builder::new().prefix("rivet-dockerd-").tempdir_in("/tmp").context("creating its directory")?;
        let config = dir.path().join("daemon.json");
        std::fs::write(&config, "{}\n").context("writing daemon.json")?;
        let socket = dir.path().join("docker.sock");
        let log = dir.path().join("dockerd.log");
        let bridge = Bridge::create()?;
        let mut child = spawn(&binary, dir.path(), &config, &socket, &log, &bridge)?;
        if let Err(err) = wait_ready(&mut child, &socket) {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{err}\n--- dockerd log ---\n{}", read_log(&log));
        }
        Ok(Dockerd { child, socket, log, _bridge: bridge, dir })
    }

    /// `unix:///tmp/rivet-dockerd-…/docker.sock`, as a node's `host` names it.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// The engine's log so far, for failure messages.
    pub fn log(&self) -> String {
        read_log(&self.log)
    }

    /// Its data root (images and containers), under the temporary directory.
    pub fn data_root(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let host = self.host();
        let docker = |args: &[&str]| Command::new("docker").arg("-H").arg(&host).args(args).output();
        if let Ok(out) = docker(&["ps", "-aq"]) {
            let ids = String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_string).collect::<Vec<_>>();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f", "-v"];
                args.extend(ids.iter().map(String::as_str));
                let _ = docker(&args);
            }
        }
        let _ = docker(&["network", "prune", "-f"]);
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The engine's default bridge: a Linux bridge made for it, deleted on drop.
struct Bridge {
    name: String,
    /// N of its 10.213.N.1/24: also picks the engine's own pool for the networks it
    /// creates (10.(100+N).0.0/16), apart from the main engine's 172.16/12 and 192.168/16
    /// and from every other test engine's. Without it, both engines may pick the same free
    /// subnet at the same moment, and the host's route to one network leads into the other
    /// (seen: a main-engine agent whose health probes went to the second engine's bridge).
    slot: u8,
}

impl Bridge {
    /// Makes `rvtd<pid hex>` on the first 10.213.N.1/24 no interface uses. Picking and
    /// adding happen under an exclusive lock on a file in /tmp, so concurrent test
    /// processes never pick the same subnet.
    fn create() -> anyhow::Result<Bridge> {
        let lock = File::create("/tmp/rivet-dockerd-bridges.lock").context("creating the bridge lock file")?;
        // SAFETY: flock on a file descriptor we own; released when `lock` is closed.
        if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) } != 0 {
            bail!("locking /tmp/rivet-dockerd-bridges.lock: {}", std::io::Error::last_os_error());
        }
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("rvtd{:x}{n}", std::process::id() & 0xff_ffff);
        let used = ip(&["-4", "-o", "addr", "show"])?;
        let third = (0..150u8)
            .find(|i| !used.contains(&format!(" 10.213.{i}.")))
            .context("no free /24 left in 10.213.0.0/16 for a test engine's bridge")?;
        ip(&["link", "add", &name, "type", "bridge"])?;
        let bridge = Bridge { name, slot: third };
        ip(&["addr", "add", &format!("10.213.{third}.1/24"), "dev", &bridge.name])?;
        ip(&["link", "set", &bridge.name, "up"])?;
        Ok(bridge)
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.name]);
    }
}

/// Runs `ip ARGS` (iproute2), its stdout.
fn ip(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running `ip` (install iproute2; scripts/install-prerequisites.sh does)")?;
    if !out.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `dockerd` on PATH or in /usr/sbin, or an error saying how to install it.
fn find_binary() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("dockerd"))
        .find(|candidate| candidate.is_file())
        .context("dockerd is not installed: install Docker Engine (Debian's docker.io)")
}

fn spawn(
    binary: &Path,
    dir: &Path,
    config: &Path,
    socket: &Path,
    log: &Path,
    bridge: &Bridge,
) -> anyhow::Result<Child> {
    let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone()?;
    let mut command = Command::new(binary);
    command
        .arg("--config-file")
        .arg(config)
        .arg("--data-root")
        .arg(dir.join("data"))
        .arg("--exec-root")
        .arg(dir.join("exec"))
        .arg("--pidfile")
        .arg(dir.join("dockerd.pid"))
        .arg("--host")
        .arg(format!("unix://{}", socket.display()))
        .args(["--bridge", &bridge.name, "--iptables=false", "--ip6tables=false", "--storage-driver", "vfs"])
        .arg("--default-address-pool")
        .arg(format!("base=10.{}.0.0/16,size=24", 100 + u16::from(bridge.slot)))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    crate::die_with_parent(&mut command, libc::SIGTERM);
    command.spawn().with_context(|| format!("starting {}", binary.display()))
}

/// Waits until the engine answers `GET /_ping` with `OK` on its socket.
fn wait_ready(child: &mut Child, socket: &Path) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            bail!("dockerd exited ({status}) before answering");
        }
        if let Ok(mut stream) = std::os::unix::net::UnixStream::connect(socket) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let request = "GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n";
            let mut answer = String::new();
            if stream.write_all(request.as_bytes()).is_ok()
                && stream.read_to_string(&mut answer).is_ok()
                && answer.starts_with("HTTP/1.1 200")
            {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("dockerd did not answer on {} within {READY_TIMEOUT:?}", socket.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()))
}
