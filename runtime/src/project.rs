//! The config file, its `.env`, and the checked config, loaded once per command.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use orchestrator::config::{self, Config, Diagnostic, Variables};

use crate::exit::{Reported, hinted};
use crate::printer::Printer;

/// A loaded, checked config with everything around it.
#[derive(Debug)]
pub struct Project {
    /// Absolute path of the config file.
    pub config_path: PathBuf,
    /// The directory holding it (relative paths in the config start here).
    pub dir: PathBuf,
    /// The path as the user gave it (for messages).
    pub shown_path: String,
    pub text: String,
    pub config: Config,
    /// Values of the `.env` beside the config.
    pub dotenv: BTreeMap<String, String>,
}

/// Reads the `.env` beside the config; a missing file is an empty one.
fn read_dotenv(dir: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let path = dir.join(".env");
    if !path.exists() {
        return Ok(BTreeMap::new());
    }
    let iter = dotenvy::from_path_iter(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut values = BTreeMap::new();
    for item in iter {
        match item {
            Ok((key, value)) => {
                values.insert(key, value);
            }
            Err(dotenvy::Error::LineParse(line, index)) => {
                return Err(hinted(
                    format!("{}: cannot parse the line `{line}` (at character {index})", path.display()),
                    "each line is KEY=value; quote values with spaces or `#`: KEY=\"a b\"",
                ));
            }
            Err(err) => {
                return Err(anyhow::Error::new(err).context(format!("cannot read {}", path.display())));
            }
        }
    }
    Ok(values)
}

/// Prints diagnostics the way compilers do.
pub fn print_diagnostics(printer: &Printer, shown_path: &str, text: &str, diagnostics: &[Diagnostic]) {
    for diagnostic in diagnostics {
        printer.diagnostic(&diagnostic.render(shown_path, text));
    }
}

/// The config file and its `.env`, read but not yet checked.
pub struct Files {
    pub config_path: PathBuf,
    pub dir: PathBuf,
    pub shown_path: String,
    pub text: String,
    pub dotenv: BTreeMap<String, String>,
}

impl Files {
    /// Reads the config at `path` and the `.env` beside it.
    pub fn read(path: &Path) -> anyhow::Result<Files> {
        let shown_path = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(hinted(
                    format!("config file {shown_path} not found"),
                    "pass -c PATH, set RIVET_CONFIG, or run rivetctl in the directory holding rivet.config.yaml",
                ));
            }
            Err(err) => {
                return Err(anyhow::Error::new(err).context(format!("cannot read {shown_path}")));
            }
        };
        let config_path = std::path::absolute(path).with_context(|| format!("cannot resolve {shown_path}"))?;
        let dir = config_path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"));
        let dotenv = read_dotenv(&dir)?;
        Ok(Files { config_path, dir, shown_path, text, dotenv })
    }

    /// Checks the config; returns it with its warnings, or every diagnostic.
    pub fn check(&self) -> Result<config::Loaded, Vec<Diagnostic>> {
        let vars = Variables { dotenv: self.dotenv.clone(), environment: std::env::vars().collect() };
        config::load(&self.text, &vars)
    }
}

/// Loads and checks the config at `path`; prints warnings; on errors prints them all and
/// fails with [`Reported`].
pub fn load(printer: &Printer, path: &Path) -> anyhow::Result<Project> {
    let files = Files::read(path)?;
    match files.check() {
        Ok(loaded) => {
            print_diagnostics(printer, &files.shown_path, &files.text, &loaded.warnings);
            let Files { config_path, dir, shown_path, text, dotenv } = files;
            Ok(Project { config_path, dir, shown_path, text, config: loaded.config, dotenv })
        }
        Err(diagnostics) => {
            print_diagnostics(printer, &files.shown_path, &files.text, &diagnostics);
            let errors = diagnostics.iter().filter(|d| d.is_error()).count();
            printer.error(&format!(
                "{}: {errors} error{} found; nothing was changed",
                files.shown_path,
                if errors == 1 { "" } else { "s" }
            ));
            Err(Reported.into())
        }
    }
}
