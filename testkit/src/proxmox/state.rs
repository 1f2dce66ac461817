//! What the fake remembers: containers, tasks, the request log and the faults to inject. One
//! mutex over all of it, never held across an `.await`, so every request sees one consistent
//! cluster, as PVE's cluster filesystem gives every node.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::task::AbortHandle;

use super::{Container, Logged, Options, Runtime, lock};

pub(crate) struct Shared {
    pub nodes: Vec<String>,
    pub task_duration: Duration,
    pub runtime: Option<Arc<dyn Runtime>>,
    pub token_id: String,
    pub token_secret: String,
    pub fingerprint: String,
    pub ca_pem: String,
    state: Mutex<State>,
    /// Tasks and runtime calls in flight, aborted when the server is dropped.
    background: Mutex<Vec<AbortHandle>>,
    /// The runtime the server was started on, for work started from synchronous methods.
    handle: tokio::runtime::Handle,
}

impl Shared {
    pub fn new(options: Options, fingerprint: String, ca_pem: String) -> Shared {
        Shared {
            nodes: options.nodes,
            task_duration: options.task_duration,
            runtime: options.runtime,
            token_id: "rivetctl@pve!deploy".into(),
            token_secret: random_uuid(),
            fingerprint,
            ca_pem,
            state: Mutex::new(State::default()),
            background: Mutex::new(Vec::new()),
            handle: tokio::runtime::Handle::current(),
        }
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    pub fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) {
        let task = self.handle.spawn(work);
        let mut background = lock(&self.background);
        background.retain(|t| !t.is_finished());
        background.push(task.abort_handle());
    }

    pub fn abort_background(&self) {
        for task in lock(&self.background).drain(..) {
            task.abort();
        }
    }
}

#[derive(Default)]
pub(crate) struct State {
    pub containers: BTreeMap<u32, Ct>,
    pub tasks: Vec<Task>,
    pub requests: Vec<Logged>,
    pub faults: Faults,
    /// For the PIDs of tasks.
    pub tasks_started: u32,
}

#[derive(Default)]
pub(crate) struct Faults {
    pub fail: Vec<(String, String)>,
    pub warn: Vec<(String, String)>,
    pub lock_timeouts: u32,
    pub server_errors: u32,
    pub drop_create: bool,
    pub token_expired: bool,
}

impl Faults {
    /// The first injected failure (or warning) for tasks of this type, taken.
    pub fn take(list: &mut Vec<(String, String)>, kind: &str) -> Option<String> {
        let at = list.iter().position(|(k, _)| k == kind)?;
        Some(list.remove(at).1)
    }
}

pub(crate) struct Ct {
    pub vmid: u32,
    pub node: String,
    pub config: BTreeMap<String, String>,
    pub running: bool,
    pub since: Option<Instant>,
    pub keys: tempfile::TempDir,
}

impl Ct {
    pub fn snapshot(&self) -> Container {
        Container {
            vmid: self.vmid,
            node: self.node.clone(),
            config: self.config.clone(),
            running: self.running,
            host_keys: self.keys.path().to_path_buf(),
        }
    }

    pub fn set_running(&mut self, running: bool) {
        if running != self.running {
            self.since = running.then(Instant::now);
        }
        self.running = running;
    }

    pub fn uptime(&self) -> u64 {
        self.since.map_or(0, |t| t.elapsed().as_secs())
    }

    /// The config file as PVE writes it (`/etc/pve/nodes/<node>/lxc/<vmid>.conf`): the
    /// description as `#` lines first, then `key: value`.
    pub fn config_text(&self) -> String {
        let mut text = String::new();
        if let Some(description) = self.config.get("description") {
            for line in description.lines() {
                text.push_str(&format!("#{line}\n"));
            }
        }
        for (key, value) in self.config.iter().filter(|(k, _)| *k != "description") {
            text.push_str(&format!("{key}: {value}\n"));
        }
        text
    }

    /// The `digest` of GET config and PUT config: SHA-1 of the config file, hex.
    pub fn digest(&self) -> String {
        sha1_hex(self.config_text().as_bytes())
    }

    /// `rootfs` size in bytes (its `size=` member).
    pub fn disk_bytes(&self, key: &str) -> Option<u64> {
        let value = self.config.get(key)?;
        let size = value.split(',').find_map(|member| member.strip_prefix("size="))?;
        super::formats::parse_size(size)
    }

    pub fn memory_bytes(&self) -> u64 {
        self.config.get("memory").and_then(|m| m.parse().ok()).unwrap_or(512u64) << 20
    }
}

pub(crate) struct Task {
    pub upid: String,
    pub node: String,
    pub kind: String,
    pub id: String,
    pub user: String,
    pub pid: u32,
    pub pstart: u32,
    pub starttime: u64,
    pub log: Vec<String>,
    /// Set when the task has stopped: `OK`, `WARNINGS: 1`, or the error.
    pub exitstatus: Option<String>,
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A random UUID-shaped secret, from the operating system's random source.
fn random_uuid() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS random source");
    let hex = hex::encode(bytes);
    format!("{}-{}-4{}-a{}-{}", &hex[0..8], &hex[8..12], &hex[13..16], &hex[17..20], &hex[20..32])
}

/// SHA-1, as PVE's config digests are.
pub(crate) fn sha1_hex(data: &[u8]) -> String {
    use sha1::Digest;
    hex::encode(sha1::Sha1::digest(data))
}

#[cfg(test)]
mod tests {
    #[test]
    fn sha1_matches_the_standard_vectors() {
        assert_eq!(super::sha1_hex(b""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(super::sha1_hex(b"abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
        let long = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
        assert_eq!(super::sha1_hex(long), "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
    }
}
