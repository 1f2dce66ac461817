//! Holding one instance to the health gate (`orchestrator::gate`) in time, for every target:
//! probe, record, wait the probe interval, until the gate passes or fails. How a target
//! probes (the Docker Engine and the container's address, the API server's pod proxy) is
//! the closure's.

use std::future::Future;
use std::time::{Duration, Instant};

use orchestrator::gate::{Failure, Gate, ProbeReport, Rules, Verdict};

/// How a held gate ended: passed, or failed with why and the last probe's report.
pub enum Held {
    Passed,
    Failed { failure: Failure, report: ProbeReport },
}

/// Probes with `probe` every `interval` until the gate of `rules` passes or fails; `version`
/// is what `GET /health` must report. A probe's error ends the wait with it.
pub async fn hold<E, F, Fut>(version: Option<&str>, rules: Rules, interval: Duration, mut probe: F) -> Result<Held, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<ProbeReport, E>>,
{
    let clock = Instant::now();
    let mut gate = Gate::default();
    loop {
        let report = probe().await?;
        let now = u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX);
        let verdict = match gate.record(now, &report, version, rules) {
            Verdict::Pending => gate.check(now, rules),
            decided => decided,
        };
        match verdict {
            Verdict::Passed => return Ok(Held::Passed),
            Verdict::Failed(failure) => return Ok(Held::Failed { failure, report }),
            Verdict::Pending => tokio::time::sleep(interval).await,
        }
    }
}
