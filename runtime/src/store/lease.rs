//! The deployment lock as a lease in the state store: taken with a compare-and-swap, renewed
//! by the work's own progress (the caller renews after each executor step and each journal
//! write), released at the end. There is no background timer: a run that hangs stops
//! renewing, and once its time to live has passed the next run takes the lock over; a run
//! that lost its lock learns it at its next renewal and stops before its next step.
//!
//! A holder on this host whose process is gone is taken over at once; one elsewhere only
//! after its TTL, or with `lock release --force`.

use std::collections::BTreeMap;
use std::time::Duration;

use orchestrator::port::{Document, StateError, StateStore};
use orchestrator::state::lock::{self, Decision, LockRecord, RecordError, TakeOver};

/// How long a lock stays valid without a renewal, unless configured.
pub const DEFAULT_TTL: Duration = Duration::from_secs(15 * 60);

/// Who is asking, and how it sees the world: this host, this process, a clock and whether a
/// process on this host is alive. Tests pass their own.
pub struct Runner {
    pub host: String,
    pub pid: u32,
    /// Now, in ms since the Unix epoch.
    pub clock: Box<dyn Fn() -> u64>,
    /// Whether process `pid` on this host exists.
    pub alive: Box<dyn Fn(u32) -> bool>,
}

impl Runner {
    /// This process on this host, with the system clock.
    pub fn this_process() -> Runner {
        Runner { host: hostname(), pid: std::process::id(), clock: Box::new(now_ms), alive: Box::new(process_exists) }
    }

    fn now(&self) -> u64 {
        (self.clock)()
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The host name, as the lock names its holder.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// Whether a process exists (`kill(pid, 0)`; one of another user answers EPERM and exists).
/// Pid 0 and pids beyond `pid_t` are never a process of ours: treated as alive, so the
/// lock is not taken over on a doubt.
pub fn process_exists(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return true };
    if pid <= 0 {
        return true;
    }
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let result = unsafe { libc::kill(pid, 0) };
    result == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// `2m 3s`, `45s`, `1h 5m`.
pub fn age(ms: u64) -> String {
    let secs = ms / 1000;
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m {}s", secs / 60, secs % 60),
        _ => format!("{}h {}m", secs / 3600, secs % 3600 / 60),
    }
}

/// The lock is held by a run that may still be working.
#[derive(Debug, thiserror::Error)]
#[error(
    "deployment \"{deployment}\" is locked by `{}` on {} (pid {}), held for {}",
    holder.command,
    holder.host,
    holder.pid,
    age(*age_ms)
)]
pub struct Held {
    pub deployment: String,
    pub holder: LockRecord,
    pub age_ms: u64,
}

/// Why the lock could not be taken, kept or given back.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(transparent)]
    Held(Box<Held>),
    /// Another run took the lock (after this one's TTL passed, or with `--force`): this run
    /// must stop before its next step.
    #[error("this run lost the lock of deployment \"{deployment}\"{}", taken_by(taker.as_ref()))]
    LostLock { deployment: String, taker: Option<LockRecord> },
    #[error("the lock of deployment \"{deployment}\" in {location} is unreadable")]
    Unreadable {
        deployment: String,
        location: String,
        #[source]
        source: RecordError,
    },
    #[error("cannot read or write the lock of deployment \"{deployment}\" in {location}")]
    Store {
        deployment: String,
        location: String,
        #[source]
        source: StateError,
    },
    #[error("the lock of deployment \"{deployment}\" keeps changing hands; try again")]
    Contended { deployment: String },
}

fn taken_by(taker: Option<&LockRecord>) -> String {
    match taker {
        Some(t) => format!(": `{}` on {} (pid {}) holds it now", t.command, t.host, t.pid),
        None => ": it was released by someone else".into(),
    }
}

/// A held lock. Give it back with [`Lease::release`]; a lease that is dropped instead
/// lapses after its TTL (at once for the next run on this host, once this process is gone).
pub struct Lease {
    deployment: String,
    record: LockRecord,
    generation: u64,
    ttl: Duration,
    last_renewal: u64,
    runner: Runner,
    took_over: Option<(LockRecord, TakeOver)>,
    documents: BTreeMap<String, Document>,
}

fn store_error<S: StateStore>(store: &S, deployment: &str, source: StateError) -> LeaseError {
    LeaseError::Store { deployment: deployment.to_string(), location: store.location(), source }
}

/// The stored lock record and its generation, if there is one.
fn read_record<S: StateStore>(
    store: &S,
    deployment: &str,
    documents: &BTreeMap<String, Document>,
) -> Result<Option<(LockRecord, u64)>, LeaseError> {
    let Some(document) = documents.get(lock::DOCUMENT) else { return Ok(None) };
    let record = LockRecord::parse(&document.body).map_err(|source| LeaseError::Unreadable {
        deployment: deployment.to_string(),
        location: store.location(),
        source,
    })?;
    Ok(Some((record, document.generation)))
}

fn token() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u64(now_ms());
    format!("{:016x}", hasher.finish())
}

fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)
}

impl Lease {
    /// Takes the lock of `deployment` for `command` (`rivetctl update`) as this process.
    pub async fn acquire<S: StateStore>(
        store: &S,
        deployment: &str,
        command: &str,
        ttl: Duration,
    ) -> Result<Lease, LeaseError> {
        Lease::acquire_as(store, deployment, command, ttl, Runner::this_process()).await
    }

    /// Takes the lock as `runner`: one load and one write when it is free or may be taken
    /// over; [`Held`] naming the holder otherwise.
    pub async fn acquire_as<S: StateStore>(
        store: &S,
        deployment: &str,
        command: &str,
        ttl: Duration,
        runner: Runner,
    ) -> Result<Lease, LeaseError> {
        for _ in 0..3 {
            let mut documents = store.load().await.map_err(|e| store_error(store, deployment, e))?;
            let stored = read_record(store, deployment, &documents)?;
            let now = runner.now();
            let decision = lock::decide(stored.as_ref().map(|(r, _)| r), now, &runner.host, &runner.alive);
            let (expected, took_over) = match decision {
                Decision::Free => (None, None),
                Decision::Held { holder, age_ms } => {
                    return Err(LeaseError::Held(Box::new(Held {
                        deployment: deployment.to_string(),
                        holder,
                        age_ms,
                    })));
                }
                Decision::TakeOver { holder, why } => (stored.map(|(_, g)| g), Some((holder, why))),
            };
            let record = LockRecord {
                v: lock::VERSION,
                token: token(),
                host: runner.host.clone(),
                pid: runner.pid,
                command: command.to_string(),
                since: now,
                expires: now.saturating_add(ttl_ms(ttl)),
            };
            match store.store(lock::DOCUMENT, expected, &record.to_body()).await {
                Ok(generation) => {
                    documents.remove(lock::DOCUMENT);
                    return Ok(Lease {
                        deployment: deployment.to_string(),
                        record,
                        generation,
                        ttl,
                        last_renewal: now,
                        runner,
                        took_over,
                        documents,
                    });
                }
                // Another run wrote the lock between the load and the write: look again.
                Err(StateError::Conflict { .. }) => continue,
                Err(e) => return Err(store_error(store, deployment, e)),
            }
        }
        Err(LeaseError::Contended { deployment: deployment.to_string() })
    }

    /// The lock it holds.
    #[cfg(test)]
    pub fn record(&self) -> &LockRecord {
        &self.record
    }

    /// The holder it took the lock over from, and why that was allowed (for an info line).
    pub fn took_over(&self) -> Option<&(LockRecord, TakeOver)> {
        self.took_over.as_ref()
    }

    /// Takes the documents out: the journal and history as the acquiring load read them
    /// (the caller reads them from there instead of loading again).
    pub fn take_documents(&mut self) -> BTreeMap<String, Document> {
        std::mem::take(&mut self.documents)
    }

    /// Extends the lock by its TTL from now: a compare-and-swap of the lock record, made only
    /// when a tenth of the TTL passed since the last one (so calling it after every step
    /// costs nothing most of the time). [`LeaseError::LostLock`] when another run holds it:
    /// stop before the next step.
    pub async fn renew<S: StateStore>(&mut self, store: &S) -> Result<(), LeaseError> {
        let now = self.runner.now();
        if now.saturating_sub(self.last_renewal) < ttl_ms(self.ttl) / 10 {
            return Ok(());
        }
        let record = LockRecord { expires: now.saturating_add(ttl_ms(self.ttl)), ..self.record.clone() };
        match store.store(lock::DOCUMENT, Some(self.generation), &record.to_body()).await {
            Ok(generation) => {
                self.record = record;
                self.generation = generation;
                self.last_renewal = now;
                Ok(())
            }
            Err(StateError::Conflict { .. }) => Err(self.lost(store).await),
            Err(e) => Err(store_error(store, &self.deployment, e)),
        }
    }

    /// Gives the lock back.
    pub async fn release<S: StateStore>(self, store: &S) -> Result<(), LeaseError> {
        match store.remove(lock::DOCUMENT, self.generation).await {
            Ok(()) => Ok(()),
            Err(StateError::Conflict { .. }) => Err(self.lost(store).await),
            Err(e) => Err(store_error(store, &self.deployment, e)),
        }
    }

    async fn lost<S: StateStore>(&self, store: &S) -> LeaseError {
        let taker = match store.load().await {
            Ok(documents) => read_record(store, &self.deployment, &documents).ok().flatten().map(|(r, _)| r),
            Err(_) => None,
        };
        LeaseError::LostLock { deployment: self.deployment.clone(), taker }
    }
}

/// The lock as `lock status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockStatus {
    pub holder: LockRecord,
    pub age_ms: u64,
    /// Its TTL passed without a renewal.
    pub expired: bool,
    /// Whether its process exists, when it is on this host.
    pub alive: Option<bool>,
    generation: u64,
}

impl LockStatus {
    /// Whether a run may still be working under it (not lapsed, and not provably gone).
    pub fn live(&self) -> bool {
        !self.expired && self.alive != Some(false)
    }
}

/// The current holder of the lock, if any, as `runner` sees it.
pub async fn status<S: StateStore>(
    store: &S,
    deployment: &str,
    runner: &Runner,
) -> Result<Option<LockStatus>, LeaseError> {
    let documents = store.load().await.map_err(|e| store_error(store, deployment, e))?;
    let Some((holder, generation)) = read_record(store, deployment, &documents)? else { return Ok(None) };
    let now = runner.now();
    let alive = (holder.host == runner.host).then(|| (runner.alive)(holder.pid));
    Ok(Some(LockStatus { age_ms: holder.age_ms(now), expired: holder.expired(now), alive, holder, generation }))
}

/// Removes the lock when its holder is gone (lapsed, or its process on this host is gone);
/// with `force`, also a live one. Returns the holder it removed.
pub async fn release<S: StateStore>(
    store: &S,
    deployment: &str,
    force: bool,
    runner: &Runner,
) -> anyhow::Result<Option<LockRecord>> {
    let Some(status) = status(store, deployment, runner).await? else { return Ok(None) };
    if status.live() && !force {
        let held = Held { deployment: deployment.to_string(), holder: status.holder, age_ms: status.age_ms };
        return Err(crate::exit::hinted(
            format!("{held}, which may still be running"),
            "wait for it to finish, or pass --force if you are sure it is gone (it then stops at its next step)",
        ));
    }
    match store.remove(lock::DOCUMENT, status.generation).await {
        Ok(()) => Ok(Some(status.holder)),
        Err(StateError::Conflict { .. }) => {
            anyhow::bail!(
                "the lock of deployment \"{deployment}\" changed hands meanwhile; run `rivetctl lock status` again"
            )
        }
        Err(e) => Err(store_error(store, deployment, e).into()),
    }
}
