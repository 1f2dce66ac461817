//! `rivetctl config validate` and `rivetctl config schema`.

use orchestrator::config::json_schema::json_schema;
use serde::Serialize;

use crate::cli::GlobalArgs;
use crate::exit::{ExitStatus, Reported};
use crate::printer::Printer;
use crate::project::{Files, print_diagnostics};

/// One diagnostic in `--output json` (documented in docs/output.md).
#[derive(Serialize)]
struct DiagnosticDocument<'a> {
    severity: &'static str,
    file: &'a str,
    line: Option<usize>,
    column: Option<usize>,
    message: &'a str,
    hint: Option<&'a str>,
}

#[derive(Serialize)]
struct ValidateDocument<'a> {
    valid: bool,
    target: Option<&'static str>,
    agents: usize,
    diagnostics: Vec<DiagnosticDocument<'a>>,
}

pub fn validate(printer: &Printer, global: &GlobalArgs) -> anyhow::Result<ExitStatus> {
    let files = Files::read(&global.config)?;
    let result = files.check();
    let (diagnostics, config) = match &result {
        Ok(loaded) => (loaded.warnings.as_slice(), Some(&loaded.config)),
        Err(all) => (all.as_slice(), None),
    };
    if printer.json() {
        let document = ValidateDocument {
            valid: config.is_some(),
            target: config.map(|c| c.raw.deployment.target.as_str()),
            agents: config.map_or(0, |c| c.raw.agents.len()),
            diagnostics: diagnostics
                .iter()
                .map(|d| DiagnosticDocument {
                    severity: if d.is_error() { "error" } else { "warning" },
                    file: &files.shown_path,
                    line: d.pos.map(|p| p.line),
                    column: d.pos.map(|p| p.col),
                    message: &d.message,
                    hint: d.hint.as_deref(),
                })
                .collect(),
        };
        printer.json_line(&document)?;
    } else {
        print_diagnostics(printer, &files.shown_path, &files.text, diagnostics);
    }
    match config {
        Some(config) => {
            if !printer.json() {
                let warnings = diagnostics.len();
                printer.info(&format!(
                    "{}: valid ({} target, {} agent{}{})",
                    files.shown_path,
                    config.raw.deployment.target.as_str(),
                    config.raw.agents.len(),
                    if config.raw.agents.len() == 1 { "" } else { "s" },
                    if warnings > 0 {
                        format!(", {warnings} warning{}", if warnings == 1 { "" } else { "s" })
                    } else {
                        String::new()
                    }
                ));
            }
            Ok(ExitStatus::Success)
        }
        None => {
            if !printer.json() {
                let errors = diagnostics.iter().filter(|d| d.is_error()).count();
                printer.error(&format!(
                    "{}: {errors} error{} found",
                    files.shown_path,
                    if errors == 1 { "" } else { "s" }
                ));
            }
            Err(Reported.into())
        }
    }
}

pub fn schema(printer: &Printer) -> anyhow::Result<ExitStatus> {
    let text = serde_json::to_string_pretty(&json_schema()).expect("schema serialises");
    printer.data(&format!("{text}\n"))?;
    Ok(ExitStatus::Success)
}
