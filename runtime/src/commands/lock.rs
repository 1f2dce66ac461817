//! `rivetctl lock status|release` over the target's state store, and the message when a
//! lock is held.

use orchestrator::port::{Port, StateStore};
use targets::factory::Visit;

use crate::cli::{GlobalArgs, LockCommand};
use crate::exit::{ExitStatus, hinted};
use crate::printer::Printer;
use crate::session;
use crate::store::lease::{self as lease, LockStatus, Runner};

/// Turns a held lock into an error that names the holder, where the lock is (`location`,
/// the store's), and says what to do.
pub fn explain(err: anyhow::Error, location: &str) -> anyhow::Error {
    match err.downcast::<lease::LeaseError>() {
        Ok(lease::LeaseError::Held(held)) => {
            let lapses = timestamp(held.holder.expires);
            hinted(
                format!("{held}; another run is changing this deployment (the lock: {location})"),
                format!(
                    "wait for it to finish; if it is gone, `rivetctl lock release --force` (the lock lapses by itself at {lapses}; on the same host a dead holder's lock is taken over at once)"
                ),
            )
        }
        Ok(other) => anyhow::Error::new(other),
        Err(other) => other,
    }
}

/// An RFC 3339 time of a lock record's milliseconds.
fn timestamp(ms: u64) -> String {
    jiff::Timestamp::from_millisecond(i64::try_from(ms).unwrap_or(i64::MAX))
        .map(|t| t.to_string())
        .unwrap_or_else(|_| format!("{ms} ms after the epoch"))
}

/// `lock status` as text.
fn status_text(deployment: &str, status: Option<&LockStatus>, now: u64) -> String {
    let Some(status) = status else {
        return format!("Deployment \"{deployment}\" is not locked.\n");
    };
    let h = &status.holder;
    let holder = format!("`{}` on {} (pid {}), held for {}", h.command, h.host, h.pid, lease::age(status.age_ms));
    if status.live() {
        let left = lease::age(h.expires.saturating_sub(now));
        format!("Deployment \"{deployment}\" is locked by {holder}; it lapses in {left} unless renewed.\n")
    } else {
        let why = if status.expired { "it was not renewed in time" } else { "its process is gone" };
        format!("Deployment \"{deployment}\" has a stale lock from {holder} ({why}); the next run takes it over.\n")
    }
}

/// `lock status` as JSON: as for the local lock, plus `age_seconds`, `expired` and `alive`
/// (`null` when the holder is on another host).
fn status_json(status: Option<&LockStatus>) -> serde_json::Value {
    let Some(status) = status else { return serde_json::json!({"locked": false}) };
    let h = &status.holder;
    serde_json::json!({
        "locked": status.live(),
        "holder": {
            "host": h.host,
            "pid": h.pid,
            "command": h.command,
            "since": timestamp(h.since),
            "expires": timestamp(h.expires),
        },
        "age_seconds": status.age_ms / 1000,
        "expired": status.expired,
        "alive": status.alive,
    })
}

/// `rivetctl lock status` over the target's state store.
pub async fn status_on(printer: &Printer, deployment: &str, store: &impl StateStore) -> anyhow::Result<ExitStatus> {
    let runner = Runner::this_process();
    let status = lease::status(store, deployment, &runner).await?;
    if printer.json() {
        printer.json_line(&status_json(status.as_ref()))?;
    } else {
        printer.data(&status_text(deployment, status.as_ref(), (runner.clock)()))?;
    }
    Ok(ExitStatus::Success)
}

/// `rivetctl lock release [--force]` over the target's state store.
pub async fn release_on(
    printer: &Printer,
    deployment: &str,
    store: &impl StateStore,
    force: bool,
) -> anyhow::Result<ExitStatus> {
    match lease::release(store, deployment, force, &Runner::this_process()).await? {
        None => printer.info(&format!("Deployment \"{deployment}\" was not locked.")),
        Some(h) => printer.info(&format!("Released the lock held by `{}` on {} (pid {}).", h.command, h.host, h.pid)),
    }
    Ok(ExitStatus::Success)
}

/// `rivetctl lock status|release`: reaches the primary node (where the state is) only.
pub async fn run(printer: &Printer, global: &GlobalArgs, command: &LockCommand) -> anyhow::Result<ExitStatus> {
    let ctx = session::load(printer, global, "lock").await?;
    session::connect(&ctx, Some(&[]), Lock { printer, deployment: &ctx.fleet.name, command }).await?
}

struct Lock<'a> {
    printer: &'a Printer,
    deployment: &'a str,
    command: &'a LockCommand,
}

impl Visit for Lock<'_> {
    type Output = anyhow::Result<ExitStatus>;

    async fn visit<T: Port>(self, target: &T) -> Self::Output {
        match self.command {
            LockCommand::Status => status_on(self.printer, self.deployment, target.store()).await,
            LockCommand::Release { force } => release_on(self.printer, self.deployment, target.store(), *force).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use orchestrator::state::MemoryStore;

    use super::*;
    use crate::store::lease::Lease;
    use crate::store::tests_support::{Clock, Processes, runner};

    const START: u64 = 1_700_000_000_000;

    #[tokio::test]
    async fn status_names_the_holder_host_command_and_age_in_text_and_json() {
        let (store, clock, processes) = (MemoryStore::new(), Clock::at(START), Processes::with(&[123]));
        let here = runner("ci-1", 1, &clock, &processes);
        assert_eq!(status_text("demo", None, START), "Deployment \"demo\" is not locked.\n");
        assert_eq!(status_json(None), serde_json::json!({"locked": false}));
        let ttl = std::time::Duration::from_secs(900);
        let _lease = Lease::acquire_as(&store, "demo", "rivetctl update", ttl, runner("ci-1", 123, &clock, &processes))
            .await
            .unwrap();
        clock.advance(123_000);
        let status = lease::status(&store, "demo", &here).await.unwrap();
        assert_eq!(
            status_text("demo", status.as_ref(), START + 123_000),
            "Deployment \"demo\" is locked by `rivetctl update` on ci-1 (pid 123), held for 2m 3s; it lapses in 12m 57s unless renewed.\n"
        );
        let json = status_json(status.as_ref());
        assert_eq!(json["locked"], true);
        assert_eq!(json["age_seconds"], 123);
        assert_eq!(json["alive"], true);
        assert_eq!(json["holder"]["host"], "ci-1");
        assert_eq!(json["holder"]["command"], "rivetctl update");
        assert_eq!(json["holder"]["since"], "2023-11-14T22:13:20Z");

        processes.kill(123);
        let status = lease::status(&store, "demo", &here).await.unwrap();
        assert!(
            status_text("demo", status.as_ref(), START)
                .ends_with("(its process is gone); the next run takes it over.\n")
        );
        assert_eq!(status_json(status.as_ref())["locked"], false);
    }

    #[tokio::test]
    async fn a_held_lease_is_explained_with_a_hint() {
        let (store, clock, processes) = (MemoryStore::new(), Clock::at(START), Processes::with(&[123]));
        let ttl = std::time::Duration::from_secs(900);
        let _first = Lease::acquire_as(&store, "demo", "rivetctl update", ttl, runner("ci-1", 123, &clock, &processes))
            .await
            .unwrap();
        let err = Lease::acquire_as(&store, "demo", "rivetctl rollback", ttl, runner("ci-2", 9, &clock, &processes))
            .await
            .err()
            .unwrap();
        let explained = explain(anyhow::Error::new(err), "volumes rivetctl-state-demo-* on node local");
        let hinted = explained.downcast_ref::<crate::exit::Hinted>().expect("hinted");
        assert_eq!(
            hinted.message,
            "deployment \"demo\" is locked by `rivetctl update` on ci-1 (pid 123), held for 0s; another run is changing this deployment (the lock: volumes rivetctl-state-demo-* on node local)"
        );
        assert!(hinted.hint.contains("lapses by itself at 2023-11-14T22:28:20Z"), "{}", hinted.hint);
    }
}
