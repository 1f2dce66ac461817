//! One run at a time per deployment: an exclusive lock file that names its holder.
//!
//! The holder keeps an OS lock (`flock`) on the file while it runs, so a holder that dies
//! releases it at once. A holder that hangs stops refreshing `expires`; once that time has
//! passed the lock is stale and the next run takes it over.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// How long a lock stays valid without a refresh.
pub const TTL: Duration = Duration::from_secs(15 * 60);
/// How often a holder refreshes it.
const REFRESH: Duration = Duration::from_secs(60);

/// Who holds a lock, as written in the lock file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Holder {
    pub host: String,
    pub pid: u32,
    pub command: String,
    pub since: String,
    pub expires: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` on {} (pid {}) since {}", self.command, self.host, self.pid, self.since)
    }
}

/// The lock is held by someone else.
#[derive(Debug, thiserror::Error)]
#[error("deployment \"{deployment}\" is locked by {holder}")]
pub struct Held {
    pub deployment: String,
    pub holder: Holder,
    pub path: PathBuf,
}

/// A held lock; released when dropped.
#[derive(Debug)]
pub struct Lock {
    path: PathBuf,
    file: File,
    stop: Arc<AtomicBool>,
}

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "localhost".into())
}

fn path_of(dir: &Path, deployment: &str) -> PathBuf {
    dir.join(format!("{deployment}.lock"))
}

fn read_holder(file: &mut File) -> Option<Holder> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

fn write_holder(file: &mut File, holder: &Holder) -> std::io::Result<()> {
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(serde_json::to_string_pretty(holder).expect("holder serialises").as_bytes())?;
    file.sync_all()
}

fn expiry() -> String {
    (Timestamp::now() + jiff::SignedDuration::try_from(TTL).expect("ttl fits")).to_string()
}

fn expired(holder: &Holder) -> bool {
    holder.expires.parse::<Timestamp>().is_ok_and(|t| t < Timestamp::now())
}

/// Takes the lock of `deployment` in `dir`, or fails at once naming the holder.
pub fn acquire(dir: &Path, deployment: &str, command: &str) -> anyhow::Result<Lock> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = path_of(dir, deployment);
    for _ in 0..3 {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open the lock file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {
                // The file may have been removed and replaced between open and lock.
                let same = fs::metadata(&path).is_ok_and(|m| m.ino() == file.metadata().map(|f| f.ino()).unwrap_or(0));
                if !same {
                    continue;
                }
                let holder = Holder {
                    host: hostname(),
                    pid: std::process::id(),
                    command: command.to_string(),
                    since: Timestamp::now().to_string(),
                    expires: expiry(),
                };
                write_holder(&mut file, &holder).with_context(|| format!("cannot write {}", path.display()))?;
                let stop = Arc::new(AtomicBool::new(false));
                refresh_in_background(file.try_clone()?, holder, stop.clone());
                return Ok(Lock { path, file, stop });
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = read_holder(&mut file);
                match holder {
                    Some(holder) if expired(&holder) => {
                        // Hung holder: replace the file; it keeps its lock on the old one.
                        let _ = fs::remove_file(&path);
                        continue;
                    }
                    Some(holder) => {
                        return Err(Held { deployment: deployment.to_string(), holder, path }.into());
                    }
                    None => {
                        // Being written right now by a new holder.
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                }
            }
            Err(std::fs::TryLockError::Error(err)) => {
                return Err(anyhow::Error::new(err).context(format!("cannot lock {}", path.display())));
            }
        }
    }
    anyhow::bail!("cannot take the lock {} (it keeps changing hands)", path.display())
}

fn refresh_in_background(mut file: File, mut holder: Holder, stop: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            std::thread::park_timeout(REFRESH);
            if stop.load(Ordering::Relaxed) {
                break;
            }
            holder.expires = expiry();
            let _ = write_holder(&mut file, &holder);
        }
    });
}

impl Drop for Lock {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

/// The current holder, if any, and whether it is alive (holds the OS lock).
pub fn status(dir: &Path, deployment: &str) -> anyhow::Result<Option<(Holder, bool)>> {
    let path = path_of(dir, deployment);
    let mut file = match OpenOptions::new().read(true).write(true).open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!("cannot read {}", path.display())));
        }
    };
    let Some(holder) = read_holder(&mut file) else {
        return Ok(None);
    };
    let alive = match file.try_lock() {
        Ok(()) => {
            let _ = file.unlock();
            false
        }
        Err(_) => !expired(&holder),
    };
    Ok(Some((holder, alive)))
}

/// Removes a lock whose holder is gone; with `force`, also a live one.
pub fn release(dir: &Path, deployment: &str, force: bool) -> anyhow::Result<Option<Holder>> {
    match status(dir, deployment)? {
        None => Ok(None),
        Some((holder, true)) if !force => Err(crate::exit::hinted(
            format!("the lock is held by {holder}, which is still running"),
            "wait for it to finish, or pass --force if you are sure it is gone",
        )),
        Some((holder, _)) => {
            fs::remove_file(path_of(dir, deployment)).context("cannot remove the lock file")?;
            Ok(Some(holder))
        }
    }
}
