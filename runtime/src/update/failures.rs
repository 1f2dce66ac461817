//! What a failed rollout says about each failed agent: why (the gate's signal, or what
//! else failed) and the container's last log lines, so a broken revision can be diagnosed
//! from the output alone. Text on stderr; a `failure` line per agent with `--output json`.

use orchestrator::rollout::{InstanceState, Rollout};
use serde::Serialize;

use crate::printer::{Printer, StdoutError};

#[derive(Serialize)]
struct FailureDocument<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    node: &'a str,
    agent: &'a str,
    state: &'static str,
    error: Option<&'a str>,
    logs: &'a [String],
}

/// Prints every agent that failed on the new revision or could not be returned to the old one.
pub fn print(printer: &Printer, machine: &Rollout) -> Result<(), StdoutError> {
    for instance in machine.instances() {
        if !instance.failed && instance.state != InstanceState::RevertFailed {
            continue;
        }
        let (node, agent) = (&instance.spec.node, &instance.spec.agent);
        if printer.json() {
            printer.json_line(&FailureDocument {
                kind: "failure",
                node,
                agent,
                state: instance.state.as_str(),
                error: instance.last_error.as_deref(),
                logs: &instance.logs,
            })?;
            continue;
        }
        let error = instance.last_error.as_deref().unwrap_or("failed");
        printer.error(&format!("{node}/{agent} ({}): {error}", instance.state.as_str()));
        if !instance.logs.is_empty() {
            printer.info(&format!("  last {} log lines of the failed container:", instance.logs.len()));
            for line in &instance.logs {
                printer.info(&format!("    {line}"));
            }
        }
    }
    Ok(())
}
