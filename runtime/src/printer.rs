//! Where output goes: data to stdout, everything else to stderr; colour when asked for or
//! when stderr is a terminal and `NO_COLOR` is unset; progress only on a terminal.

use std::io::{IsTerminal, Write};

use serde::Serialize;

use crate::cli::{ColorChoice, GlobalArgs, OutputFormat};

/// Decides what is printed where.
#[derive(Debug, Clone)]
pub struct Printer {
    pub format: OutputFormat,
    /// Colour on stdout.
    pub color_out: bool,
    /// Colour on stderr.
    pub color_err: bool,
    pub quiet: bool,
    pub verbose: u8,
    /// stderr is a terminal: progress bars may be drawn.
    pub interactive: bool,
}

fn wants_color(choice: ColorChoice, is_tty: bool) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            is_tty
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                && std::env::var("TERM").map_or(true, |t| t != "dumb")
        }
    }
}

/// A write to stdout failed.
#[derive(Debug, thiserror::Error)]
pub enum StdoutError {
    /// The reader went away (`rivetctl ... | head`): the command ends quietly with 0.
    #[error("stdout closed")]
    BrokenPipe,
    /// Any other failure (a full disk, an I/O error): the output is incomplete, so the
    /// command fails.
    #[error("cannot write the output to stdout")]
    Write(#[source] std::io::Error),
}

impl From<std::io::Error> for StdoutError {
    fn from(err: std::io::Error) -> Self {
        if err.kind() == std::io::ErrorKind::BrokenPipe { StdoutError::BrokenPipe } else { StdoutError::Write(err) }
    }
}

impl Printer {
    pub fn new(args: &GlobalArgs) -> Self {
        let err_tty = std::io::stderr().is_terminal();
        Printer {
            format: args.output,
            color_out: wants_color(args.color, std::io::stdout().is_terminal()),
            color_err: wants_color(args.color, err_tty),
            quiet: args.quiet,
            verbose: args.verbose,
            interactive: err_tty && !args.quiet && std::env::var("TERM").map_or(true, |t| t != "dumb"),
        }
    }

    pub fn json(&self) -> bool {
        self.format == OutputFormat::Json
    }

    /// Data: always printed, to stdout.
    pub fn data(&self, text: &str) -> Result<(), StdoutError> {
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(StdoutError::from)
    }

    /// One JSON value as a line on stdout.
    pub fn json_line<T: Serialize>(&self, value: &T) -> Result<(), StdoutError> {
        let line = serde_json::to_string(value).expect("output types serialise");
        self.data(&format!("{line}\n"))
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color_err { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_string() }
    }

    /// A progress or status line on stderr (hidden with -q).
    pub fn info(&self, text: &str) {
        if !self.quiet {
            eprintln!("{text}");
        }
    }

    pub fn error(&self, text: &str) {
        eprintln!("{} {text}", self.paint("31;1", "error:"));
    }

    /// A warning on stderr (shown with -q too).
    pub fn warn(&self, text: &str) {
        eprintln!("{} {text}", self.paint("33;1", "warning:"));
    }

    pub fn hint(&self, text: &str) {
        eprintln!("{} {text}", self.paint("36;1", "hint:"));
    }

    /// Pre-rendered diagnostic text (already labelled), coloured by its first word.
    pub fn diagnostic(&self, rendered: &str) {
        let painted = if let Some(rest) = rendered.strip_prefix("error:") {
            format!("{}{rest}", self.paint("31;1", "error:"))
        } else if let Some(rest) = rendered.strip_prefix("warning:") {
            if self.quiet {
                return;
            }
            format!("{}{rest}", self.paint("33;1", "warning:"))
        } else {
            rendered.to_string()
        };
        let painted = painted.replace("\nhint:", &format!("\n{}", self.paint("36;1", "hint:")));
        eprint!("{painted}");
    }
}
