//! `rivetctl lock status|release`, and the message when a lock is held.

use crate::cli::{GlobalArgs, LockCommand};
use crate::exit::{ExitStatus, hinted};
use crate::lock::{self, Held};
use crate::printer::Printer;
use crate::{project, state};

/// Turns a held lock into an error that names the holder and says what to do.
pub fn explain(err: anyhow::Error) -> anyhow::Error {
    match err.downcast::<Held>() {
        Ok(held) => hinted(
            format!("{held}; another run is changing this deployment"),
            format!(
                "wait for it to finish; if it is gone, `rivetctl lock release` (the lock expires by itself at {})",
                held.holder.expires
            ),
        ),
        Err(other) => other,
    }
}

pub fn run(printer: &Printer, global: &GlobalArgs, command: &LockCommand) -> anyhow::Result<ExitStatus> {
    let project = project::load(printer, &global.config)?;
    let dir = state::dir(&project).join("locks");
    let deployment = &project.config.name;
    match command {
        LockCommand::Status => {
            let status = lock::status(&dir, deployment)?;
            if printer.json() {
                let value = match &status {
                    None => serde_json::json!({"locked": false}),
                    Some((holder, alive)) => serde_json::json!({"locked": alive, "holder": holder}),
                };
                printer.json_line(&value)?;
            } else {
                let text = match status {
                    None => format!("Deployment \"{deployment}\" is not locked.\n"),
                    Some((holder, true)) => {
                        format!("Deployment \"{deployment}\" is locked by {holder} (expires {}).\n", holder.expires)
                    }
                    Some((holder, false)) => {
                        format!(
                            "Deployment \"{deployment}\" has a stale lock from {holder}; the next run takes it over.\n"
                        )
                    }
                };
                printer.data(&text)?;
            }
            Ok(ExitStatus::Success)
        }
        LockCommand::Release { force } => {
            match lock::release(&dir, deployment, *force)? {
                None => printer.info(&format!("Deployment \"{deployment}\" was not locked.")),
                Some(holder) => printer.info(&format!("Released the lock held by {holder}.")),
            }
            Ok(ExitStatus::Success)
        }
    }
}
