//! A real OpenSSH server on loopback for tests, and an ssh-agent to go with it.
//!
//! [`Sshd::start`] writes a host key, a client key pair, `authorized_keys`, a known_hosts that
//! trusts the server and an `sshd_config` into a temporary directory, runs
//! `/usr/sbin/sshd -D -e -f <config>` on a free 127.0.0.1 port as the current user and
//! returns once the port answers with an SSH banner. Logins are as the current user, by key.
//! Dropping it kills sshd (and every connection it serves) and removes the directory.
//!
//! Needs `openssh-server` (`/usr/sbin/sshd`) and the OpenSSH client tools (`ssh-keygen`,
//! `ssh-agent`, `ssh-add`); a missing binary is a loud failure, never a skipped test.
//! Works as root (then `/run/sshd`, the privilege separation directory, is created) and as an
//! ordinary user (sshd then serves only that user; `StrictModes no`, `UsePAM no`).
//!
//! Depends only on std and `tempfile`, so other test crates can include it with
//! `#[path = "../../targets/tests/sshd/mod.rs"] mod sshd;`.

#![allow(dead_code)]

use std::fs;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SSHD: &str = "/usr/sbin/sshd";
const HOST: &str = "127.0.0.1";
/// How long sshd (or the agent) may take to come up before the test fails.
const STARTUP: Duration = Duration::from_secs(15);

/// An sshd serving the current user on 127.0.0.1.
pub struct Sshd {
    dir: tempfile::TempDir,
    port: u16,
    user: String,
    child: Option<Child>,
}

impl Sshd {
    /// Starts a fresh server with fresh keys; panics (with sshd's log) if it does not come up.
    pub fn start() -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: install openssh-server (`apt-get install openssh-server`); the SSH tests need a real sshd"
        );
        let dir = tempfile::Builder::new().prefix("rivet-sshd-").tempdir().expect("create a temporary directory");
        let path = dir.path();
        keygen(&path.join("host_ed25519_key"), "");
        keygen(&path.join("id_ed25519"), "");
        fs::copy(path.join("id_ed25519.pub"), path.join("authorized_keys")).expect("write authorized_keys");
        fs::write(path.join("known_hosts_empty"), "").expect("write an empty known_hosts");
        if is_root() {
            // sshd refuses to start without its privilege separation directory.
            fs::create_dir_all("/run/sshd").expect("create /run/sshd");
        }
        let mut sshd = Sshd { dir, port: 0, user: current_user(), child: None };
        // A free port can be taken between choosing it and sshd binding it: try a few.
        for attempt in 1..=5 {
            sshd.port = free_port();
            sshd.write_config();
            match sshd.spawn() {
                Ok(()) => return sshd,
                Err(log) if attempt < 5 && log.contains("Address already in use") => continue,
                Err(log) => panic!("sshd did not start on port {}:\n{log}", sshd.port),
            }
        }
        unreachable!("the loop returns or panics")
    }

    /// Takes the host "down": kills sshd and every connection it serves (SIGKILL), and asks
    /// the commands they ran to stop (SIGTERM). Each connection's sshd calls setsid(), so the
    /// whole process tree under the listener is walked. The login shells only get SIGTERM
    /// because they may be in the middle of the user's shell startup, whose own lock files
    /// (pyenv's rehash lock, for one) must be released on the way out.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let (daemons, commands): (Vec<_>, Vec<_>) =
                descendants(child.id()).into_iter().partition(|(_, name)| name.starts_with("sshd"));
            signal("-KILL", daemons.iter().map(|(pid, _)| *pid));
            let _ = child.kill();
            let _ = child.wait();
            signal("-TERM", commands.iter().map(|(pid, _)| *pid));
        }
    }

    /// Starts sshd again on the same port with the same keys.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(log) = self.spawn() {
            panic!("sshd did not restart on port {}:\n{log}", self.port);
        }
    }

    pub fn host(&self) -> &'static str {
        HOST
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The login user (the current user).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The temporary directory holding keys, config and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The client private key that `authorized_keys` admits.
    pub fn client_key(&self) -> PathBuf {
        self.dir().join("id_ed25519")
    }

    /// The server's public host key.
    pub fn host_key_pub(&self) -> PathBuf {
        self.dir().join("host_ed25519_key.pub")
    }

    /// A known_hosts file that trusts this server (`[127.0.0.1]:PORT ssh-ed25519 …`).
    pub fn known_hosts(&self) -> PathBuf {
        let path = self.dir().join("known_hosts");
        fs::write(&path, self.known_hosts_line(&self.host_key_pub()) + "\n").expect("write known_hosts");
        path
    }

    /// An empty known_hosts file: the server is unknown.
    pub fn empty_known_hosts(&self) -> PathBuf {
        self.dir().join("known_hosts_empty")
    }

    /// The known_hosts line claiming that `public_key` (a `.pub` file) is this server's key.
    pub fn known_hosts_line(&self, public_key: &Path) -> String {
        let key = fs::read_to_string(public_key).expect("read a public key");
        let mut fields = key.split_whitespace();
        let (kind, blob) = (fields.next().expect("key type"), fields.next().expect("key data"));
        format!("[{HOST}]:{} {kind} {blob}", self.port)
    }

    /// A new key pair in the temporary directory (`name`, `name.pub`), not authorized.
    pub fn new_key(&self, name: &str, passphrase: &str) -> PathBuf {
        let path = self.dir().join(name);
        keygen(&path, passphrase);
        path
    }

    /// `ssh-keygen -lf` of a key: `SHA256:…`.
    pub fn fingerprint(&self, key: &Path) -> String {
        let output = run(Command::new("ssh-keygen").arg("-lf").arg(key));
        output.split_whitespace().nth(1).expect("ssh-keygen -lf prints a fingerprint").to_string()
    }

    /// sshd's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir().join("sshd.log")).unwrap_or_default()
    }

    /// An ssh-agent with its socket in the temporary directory, holding no keys.
    pub fn start_agent(&self, name: &str) -> Agent {
        Agent::start(&self.dir().join(format!("{name}.sock")))
    }

    /// The config of the test's sshd. Commands run through the user's shell, which reads
    /// the user's startup files; on a machine whose startup files run `pyenv rehash`, a
    /// session these tests kill on purpose can leave pyenv's lock behind, and every later
    /// command would wait 60 s for it: `PYENV_REHASH_TIMEOUT=0` makes pyenv give up at once.
    fn write_config(&self) {
        let dir = self.dir();
        let config = format!(
            "ListenAddress {HOST}:{port}\n\
             HostKey {dir}/host_ed25519_key\n\
             AuthorizedKeysFile {dir}/authorized_keys\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\n\
             UsePAM no\n\
             StrictModes no\n\
             PidFile none\n\
             AllowStreamLocalForwarding yes\n\
             AllowTcpForwarding yes\n\
             SetEnv PYENV_REHASH_TIMEOUT=0\n\
             LogLevel VERBOSE\n",
            port = self.port,
            dir = dir.display(),
        );
        fs::write(dir.join("sshd_config"), config).expect("write sshd_config");
    }

    /// Runs sshd and waits until the port answers with an SSH banner; `Err(log)` if sshd
    /// exits or stays silent.
    fn spawn(&mut self) -> Result<(), String> {
        let log =
            fs::OpenOptions::new().create(true).append(true).open(self.dir().join("sshd.log")).expect("open sshd.log");
        let child = Command::new(SSHD)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(self.dir().join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot run {SSHD}: {err}"));
        self.child = Some(child);
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().expect("poll sshd")) {
                self.child = None;
                return Err(format!("sshd exited with {status}\n{}", self.log()));
            }
            if answers_ssh(&address) {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(format!("sshd did not answer within {STARTUP:?}\n{}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An `ssh-agent -D` listening on a socket of the test's own.
pub struct Agent {
    child: Child,
    socket: PathBuf,
}

impl Agent {
    /// Starts the agent and waits until its socket accepts connections.
    pub fn start(socket: &Path) -> Agent {
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot run ssh-agent (install openssh-client): {err}"));
        let mut agent = Agent { child, socket: socket.to_path_buf() };
        let deadline = Instant::now() + STARTUP;
        while std::os::unix::net::UnixStream::connect(socket).is_err() {
            if let Some(status) = agent.child.try_wait().expect("poll ssh-agent") {
                panic!("ssh-agent exited with {status}");
            }
            assert!(Instant::now() < deadline, "ssh-agent did not listen on {} within {STARTUP:?}", socket.display());
            std::thread::sleep(Duration::from_millis(20));
        }
        agent
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `ssh-add KEY`.
    pub fn add(&self, key: &Path) {
        run(Command::new("ssh-add").arg("-q").arg(key).env("SSH_AUTH_SOCK", &self.socket));
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ssh-keygen -q -t ed25519 -N PASSPHRASE -f PATH`.
pub fn keygen(path: &Path, passphrase: &str) {
    run(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", passphrase, "-C", "rivet-test", "-f"]).arg(path));
}

/// Runs a tool to completion; panics with its stderr if it fails. Returns its stdout.
fn run(command: &mut Command) -> String {
    let output =
        command.output().unwrap_or_else(|err| panic!("cannot run {command:?} (install openssh-client): {err}"));
    assert!(output.status.success(), "{command:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn current_user() -> String {
    run(Command::new("id").arg("-un")).trim().to_string()
}

fn is_root() -> bool {
    run(Command::new("id").arg("-u")).trim() == "0"
}

/// `kill SIGNAL PID…`; processes that are already gone are no error.
fn signal(signal: &str, pids: impl Iterator<Item = u32>) {
    let pids: Vec<String> = pids.map(|pid| pid.to_string()).collect();
    if !pids.is_empty() {
        let _ = Command::new("kill").arg(signal).args(&pids).output();
    }
}

/// The processes below `root` (children, grandchildren, …) and their names, from /proc.
fn descendants(root: u32) -> Vec<(u32, String)> {
    let processes: Vec<(u32, u32, String)> = fs::read_dir("/proc")
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .filter_map(|pid| {
                    // `pid (comm) state ppid …`; comm may contain spaces and parentheses.
                    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                    let (head, tail) = stat.rsplit_once(')')?;
                    let name = head.split_once('(')?.1.to_string();
                    let ppid = tail.split_whitespace().nth(1)?.parse().ok()?;
                    Some((pid, ppid, name))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut tree = vec![(root, String::new())];
    let mut next = 0;
    while next < tree.len() {
        let parent = tree[next].0;
        tree.extend(processes.iter().filter(|(_, ppid, _)| *ppid == parent).map(|(pid, _, name)| (*pid, name.clone())));
        next += 1;
    }
    tree.split_off(1)
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((HOST, 0)).expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// Something listens on `address` and greets like an SSH server.
fn answers_ssh(address: &SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(address, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut banner = [0u8; 8];
    stream.read_exact(&mut banner).is_ok() && &banner == b"SSH-2.0-"
}
