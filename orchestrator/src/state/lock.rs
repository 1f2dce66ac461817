//! The deployment lock's record and the pure decision whether this run may take it.
//!
//! The record lives in the state store as document [`DOCUMENT`]; the runtime's lease takes,
//! renews and releases it with compare-and-swap writes. Time is passed in (milliseconds since
//! the Unix epoch), and so is whether a process on this host is alive: nothing here reads a
//! clock or the process table.

use serde::{Deserialize, Serialize};

/// The lock's document name.
pub const DOCUMENT: &str = "lock";

/// Version of the lock record's format.
pub const VERSION: u32 = 1;

/// Who holds the lock, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRecord {
    /// Format version ([`VERSION`]).
    pub v: u32,
    /// Random token of the run holding it: a run knows its own lock by it.
    pub token: String,
    /// Host name of the holder.
    pub host: String,
    /// Process id of the holder on `host`.
    pub pid: u32,
    /// The command it runs (`rivetctl update`).
    pub command: String,
    /// When it took the lock (ms since the Unix epoch).
    pub since: u64,
    /// When the lock lapses unless renewed (ms since the Unix epoch).
    pub expires: u64,
}

/// Why a lock record could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("the lock record is not JSON of the expected shape: {reason}")]
    Malformed { reason: String },
    #[error("the lock record has format version {found}, this rivetctl knows version {VERSION}")]
    UnknownVersion { found: u64 },
}

impl LockRecord {
    /// Parses a stored record; an unknown version is an error, never a free lock.
    pub fn parse(body: &str) -> Result<LockRecord, RecordError> {
        let value: serde_json::Value =
            serde_json::from_str(body).map_err(|e| RecordError::Malformed { reason: e.to_string() })?;
        match value.get("v").and_then(serde_json::Value::as_u64) {
            Some(v) if v == u64::from(VERSION) => {}
            Some(found) => return Err(RecordError::UnknownVersion { found }),
            None => return Err(RecordError::Malformed { reason: "no version field `v`".into() }),
        }
        serde_json::from_value(value).map_err(|e| RecordError::Malformed { reason: e.to_string() })
    }

    /// The stored text.
    pub fn to_body(&self) -> String {
        serde_json::to_string(self).expect("a lock record serialises")
    }

    /// How long it has been held at `now` (0 when the clocks disagree).
    pub fn age_ms(&self, now: u64) -> u64 {
        now.saturating_sub(self.since)
    }

    /// Whether it lapsed at `now`.
    pub fn expired(&self, now: u64) -> bool {
        now >= self.expires
    }
}

/// Why a held lock may be taken over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakeOver {
    /// The holder ran on this host and its process is gone.
    Dead,
    /// The holder did not renew it within its time to live (dead elsewhere, or hung).
    Expired,
}

/// What a run that wants the lock may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds it.
    Free,
    /// Someone holds it and may still be working.
    Held { holder: LockRecord, age_ms: u64 },
    /// Someone held it and provably is gone, or let it lapse.
    TakeOver { holder: LockRecord, why: TakeOver },
}

/// Decides, at `now` on host `this_host`, what a run may do with the stored `record`.
/// `alive(pid)` is asked only for a holder on this host. A holder elsewhere is only known
/// gone once its lock expired; a live holder here keeps it until then too (it may be hung,
/// and then it loses it at the TTL).
pub fn decide(record: Option<&LockRecord>, now: u64, this_host: &str, alive: impl FnOnce(u32) -> bool) -> Decision {
    let Some(record) = record else {
        return Decision::Free;
    };
    if record.expired(now) {
        return Decision::TakeOver { holder: record.clone(), why: TakeOver::Expired };
    }
    if record.host == this_host && !alive(record.pid) {
        return Decision::TakeOver { holder: record.clone(), why: TakeOver::Dead };
    }
    Decision::Held { holder: record.clone(), age_ms: record.age_ms(now) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(host: &str, since: u64, expires: u64) -> LockRecord {
        LockRecord {
            v: VERSION,
            token: "t1".into(),
            host: host.into(),
            pid: 42,
            command: "rivetctl update".into(),
            since,
            expires,
        }
    }

    /// `decide` for a record held by pid 42 on `host`, at `now`, with pid 42 `alive` or not.
    fn check(host: &str, now: u64, alive: bool, expect: &str) {
        let held = record(host, 1_000, 10_000);
        let asked = std::cell::Cell::new(false);
        let decision = decide(Some(&held), now, "here", |pid| {
            assert_eq!(pid, 42);
            asked.set(true);
            alive
        });
        let got = match decision {
            Decision::Free => "free".to_string(),
            Decision::Held { age_ms, .. } => format!("held {age_ms}"),
            Decision::TakeOver { why, .. } => format!("take over {why:?}"),
        };
        assert_eq!(got, expect, "host {host}, now {now}, alive {alive}");
        if host != "here" {
            assert!(!asked.get(), "liveness of a process on another host was asked");
        }
    }

    #[test]
    fn no_record_is_free() {
        assert_eq!(decide(None, 5, "here", |_| unreachable!()), Decision::Free);
    }

    #[test]
    fn a_holder_is_taken_over_when_provably_gone_or_lapsed_and_only_then() {
        check("here", 2_000, true, "held 1000");
        check("here", 2_000, false, "take over Dead");
        check("elsewhere", 2_000, false, "held 1000");
        check("elsewhere", 2_000, true, "held 1000");
        check("elsewhere", 10_000, true, "take over Expired");
        check("here", 10_001, true, "take over Expired");
        // Clocks that disagree give an age of 0, not an overflow.
        check("elsewhere", 500, true, "held 0");
    }

    #[test]
    fn records_round_trip_and_unknown_versions_are_errors() {
        let r = record("here", 1, 2);
        assert_eq!(LockRecord::parse(&r.to_body()), Ok(r));
        assert_eq!(LockRecord::parse(r#"{"v":2,"token":"x"}"#), Err(RecordError::UnknownVersion { found: 2 }));
        assert!(matches!(LockRecord::parse("{}"), Err(RecordError::Malformed { .. })));
        assert!(matches!(LockRecord::parse("not json"), Err(RecordError::Malformed { .. })));
        assert!(matches!(LockRecord::parse(r#"{"v":1}"#), Err(RecordError::Malformed { .. })));
    }
}
