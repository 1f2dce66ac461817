//! The `rivetctl` binary: parses the command line, runs the command, maps the outcome to an
//! exit code. The work lives in the orchestrator and targets crates.

mod artifacts;
mod cli;
mod commands;
mod confirm;
mod execute;
mod exit;
mod fleet;
mod git;
mod images;
mod interrupt;
mod printer;
mod progress;
mod project;
mod session;
mod source;
mod state;
mod store;
mod update;

use clap::{CommandFactory, Parser};

use cli::{Cli, Command, ConfigCommand, InfraCommand};
use exit::{ExitStatus, Hinted, Interrupted, Reported};
use printer::{Printer, StdoutError};

async fn run(cli: &Cli, printer: &Printer) -> anyhow::Result<ExitStatus> {
    match &cli.command {
        Command::Infra(InfraCommand::Preview(args)) => commands::preview::run(printer, &cli.global, args).await,
        Command::Infra(InfraCommand::Up(args)) => commands::up::run(printer, &cli.global, args).await,
        Command::Infra(InfraCommand::Destroy(args)) => commands::destroy::run(printer, &cli.global, args).await,
        Command::Build => commands::build::run(printer, &cli.global).await,
        Command::Update(args) => update::run(printer, &cli.global, args).await,
        Command::Rollback(args) => update::rollback(printer, &cli.global, args).await,
        Command::Status => commands::status::run(printer, &cli.global).await,
        Command::Doctor => commands::doctor::run(printer, &cli.global).await,
        Command::Lock(command) => commands::lock::run(printer, &cli.global, command).await,
        Command::Config(ConfigCommand::Validate) => commands::config::validate(printer, &cli.global),
        Command::Config(ConfigCommand::Schema) => commands::config::schema(printer),
        Command::Completions { shell } => {
            let mut command = Cli::command();
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut command, "rivetctl", &mut script);
            printer.data(&String::from_utf8_lossy(&script))?;
            Ok(ExitStatus::Success)
        }
    }
}

fn main() {
    let cli = Cli::parse();
    let printer = Printer::new(&cli.global);
    if let Err(err) = interrupt::install(&printer) {
        printer.error(&format!("cannot handle Ctrl-C: {err}"));
        std::process::exit(1);
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let result = runtime.block_on(run(&cli, &printer));
    let code = match result {
        Ok(status) => status.code(),
        Err(err) if err.chain().any(|e| matches!(e.downcast_ref(), Some(StdoutError::BrokenPipe))) => 0,
        Err(err) if err.is::<Reported>() => 1,
        Err(err) if err.chain().any(|e| e.is::<Interrupted>()) => {
            printer.error(&format!("{err:#}"));
            interrupt::EXIT_CODE
        }
        Err(err) => {
            printer.error(&format!("{err:#}"));
            if let Some(hinted) = err.chain().find_map(|e| e.downcast_ref::<Hinted>()) {
                printer.hint(&hinted.hint);
            }
            1
        }
    };
    // Background tasks (engine connections) must not keep the process alive.
    runtime.shutdown_background();
    std::process::exit(code);
}
