//! Stopping long work at a safe point.
//!
//! A [`CancellationToken`] is the request to stop ("Ctrl-C was pressed"): loops check it
//! before they start the next unit of work (a plan wave, a build, an image ship) and let the
//! units in flight finish. [`uncut`] runs a sequence that must never stop half-way (remove
//! the old container, then rename its successor) in a task of its own, so that neither the
//! request nor dropping the caller's future leaves it cut in the middle.

use std::future::Future;

pub use tokio_util::sync::CancellationToken;

/// Runs `work` to its end in a task of its own and returns its output.
///
/// The task is not tied to the caller: if the caller's future is dropped, the task still
/// runs to completion on the runtime.
pub async fn uncut<T: Send + 'static>(work: impl Future<Output = T> + Send + 'static) -> T {
    match tokio::spawn(work).await {
        Ok(output) => output,
        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
        // Only a runtime shutting down cancels a spawned task, and then nobody awaits this.
        Err(err) => panic!("a critical task was cancelled: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn an_uncut_sequence_finishes_although_its_caller_is_dropped() {
        let finished = Arc::new(AtomicBool::new(false));
        let flag = finished.clone();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let caller = tokio::spawn(uncut(async move {
            let _ = started_tx.send(());
            tokio::time::sleep(Duration::from_millis(50)).await;
            flag.store(true, Ordering::SeqCst);
        }));
        started_rx.await.unwrap();
        caller.abort();
        assert!(caller.await.unwrap_err().is_cancelled(), "the caller was dropped");
        for _ in 0..100 {
            if finished.load(Ordering::SeqCst) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the sequence was cut with its caller");
    }
}
