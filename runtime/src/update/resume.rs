//! `rivetctl update --resume`: continues the rollout in the journal on the target (an
//! update's, a rollback's or an `infra up`'s), from this runner or another one with the
//! same config. Each instance is matched with its unit again, what runs for it is observed,
//! and the machine reconciles the instances that were in flight.

use std::sync::Arc;

use orchestrator::port::{Port, Rollouts, Unit};
use orchestrator::rollout::{Observed, Status};

use super::journal::{self, Stored};
use super::rollout::{self, Drive};
use super::{driver, prepare, report};
use crate::exit::{ExitStatus, hinted};
use crate::printer::Printer;
use crate::session::{Context, Held, target_error};

/// Continues the rollout in `existing` (the journal read from the target).
pub async fn run<T: Port>(
    printer: &Printer,
    ctx: &Context,
    target: &T,
    held: &Held<'_, T::Store>,
    existing: Option<Stored>,
    approve: bool,
) -> anyhow::Result<ExitStatus> {
    let Some(Stored { mut journal, generation }) = existing else {
        return Err(hinted("there is no rollout to resume", "start one with `rivetctl update`"));
    };
    let mut machine = journal.machine()?;
    if machine.status().is_final() {
        printer.info(&format!(
            "The {} of revision {} already {}.",
            journal.kind.as_str(),
            journal.revision,
            report::status_word(machine.status())
        ));
        return Ok(if machine.status() == Status::Succeeded { ExitStatus::Success } else { ExitStatus::RolloutFailed });
    }
    let fleet = &ctx.fleet;
    let candidates = prepare::agent_units(target, fleet, &journal.nodes);
    let mut units = Vec::new();
    let mut observed = Vec::new();
    for (i, instance) in machine.instances().iter().enumerate() {
        let spec = &instance.spec;
        let Some(unit) = candidates.iter().find(|u| u.node == spec.node && prepare::unit_name(u) == spec.agent) else {
            return Err(hinted(
                format!("agent {} on node {} is in the rollout but no longer in the config", spec.agent, spec.node),
                "restore the config, or `rivetctl update --abandon`",
            ));
        };
        let desired = &unit.desired;
        let resumed = target.with_image(desired, &spec.to_image);
        let unit = if resumed.spec_hash() == desired.spec_hash() {
            unit.clone()
        } else if journal.kind.follows_config() {
            return Err(hinted(
                format!(
                    "the config or source changed since this {} started: {} would now run {}",
                    journal.kind.as_str(),
                    spec.agent,
                    prepare::image_of(desired)
                ),
                "restore them to finish it, or `rivetctl update --abandon` and start a new update",
            ));
        } else {
            // A rollback's units run the image it chose.
            Unit { desired: Arc::new(resumed), ..unit.clone() }
        };
        observed.push(observe(target, i, &unit).await?);
        units.push(unit);
    }
    printer.info(&format!("Resuming the {} of revision {}.", journal.kind.as_str(), journal.revision));
    let commands = machine.resume(&observed, driver::now_ms());
    let mut writer = journal::Writer::renewing(held, Some(generation));
    let keep = journal.kind == journal::Kind::Update;
    let keep_images = keep.then_some(fleet.update.keep_images as usize);
    let drive = Drive { machine: &mut machine, commands, units: &units, approve };
    rollout::drive_and_report(printer, ctx, target, drive, &mut journal, &mut writer, keep_images).await
}

/// What runs for one instance's unit.
async fn observe<T: Rollouts>(target: &T, instance: usize, unit: &Unit<T::Payload>) -> anyhow::Result<Observed> {
    let current = target.current(unit).await.map_err(target_error)?;
    Ok(match current {
        Some(current) => Observed { instance, image: Some(current.image), running: current.running },
        None => Observed { instance, image: None, running: false },
    })
}
