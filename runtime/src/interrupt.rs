//! Ctrl-C (SIGINT) and SIGTERM (how CI cancels a job).
//!
//! While work that changes something is under way (a [`Graceful`] region: applying a plan,
//! building, shipping images, driving a rollout), the first signal is a request to stop: it
//! cancels the process-wide [`token`], no new step, build or ship starts, the ones in flight
//! run to their end state, and the command says what was done and what was not, then exits
//! with [`EXIT_CODE`]. A second signal aborts at once. Outside such regions (loading the
//! config, planning, asking for confirmation) nothing is half-done, so the first signal ends
//! the command at once.
//!
//! The signals are received on a thread of their own, so they are honoured even while the
//! command's thread blocks (reading a confirmation from the terminal).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use targets::cancel::CancellationToken;

use crate::printer::Printer;

/// The exit code of a command stopped by a signal (the shell's 128 + SIGINT).
pub const EXIT_CODE: i32 = 130;

/// What the first signal prints inside a graceful region.
pub const STOPPING: &str = "stopping after the steps in flight (Ctrl-C again to abort)";

static TOKEN: OnceLock<CancellationToken> = OnceLock::new();
static GRACEFUL: AtomicUsize = AtomicUsize::new(0);

/// The process-wide request to stop (never cancelled when no handler is installed).
pub fn token() -> CancellationToken {
    TOKEN.get_or_init(CancellationToken::new).clone()
}

/// Marks work that stops gracefully on the first signal; regions nest.
#[must_use = "the region ends when the guard is dropped"]
pub struct Graceful(());

/// Enters a graceful region until the guard is dropped.
pub fn graceful() -> Graceful {
    GRACEFUL.fetch_add(1, Ordering::SeqCst);
    Graceful(())
}

impl Drop for Graceful {
    fn drop(&mut self) {
        GRACEFUL.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn next(interrupt: &mut tokio::signal::unix::Signal, terminate: &mut tokio::signal::unix::Signal) {
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
}

/// Installs the handler for SIGINT and SIGTERM (once, at start).
pub fn install(printer: &Printer) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // Registered here, before the command runs, so that no signal is missed.
    let (mut interrupt, mut terminate) = runtime.block_on(async {
        Ok::<_, std::io::Error>((signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?))
    })?;
    let printer = printer.clone();
    let token = token();
    std::thread::Builder::new().name("rivetctl-signals".into()).spawn(move || {
        runtime.block_on(async move {
            next(&mut interrupt, &mut terminate).await;
            if GRACEFUL.load(Ordering::SeqCst) == 0 {
                printer.error("interrupted; nothing was in flight");
                std::process::exit(EXIT_CODE);
            }
            printer.info(STOPPING);
            token.cancel();
            next(&mut interrupt, &mut terminate).await;
            printer.error("aborted: steps in flight were cut short");
            printer.hint("the deployment may be half-applied: run `rivetctl infra up` to converge it");
            std::process::exit(EXIT_CODE);
        })
    })?;
    Ok(())
}
