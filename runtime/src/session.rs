//! What every command that reaches a target shares: the loaded project, its resolved source
//! and fleet ([`Context`]), the connected target through `targets`' factory ([`connect`]),
//! and the deployment's lock ([`lock`]).
//!
//! The runtime names no adapter type: [`connect`] hands a [`Visit`]or whichever adapter the
//! fleet's target needs, and the port's errors ([`TargetError`]) become the runtime's hinted
//! errors here, in one place.

use orchestrator::config::Target;
use orchestrator::fleet::Fleet;
use orchestrator::port::{ErrorKind, StateError, TargetError};
use targets::factory::{self, OpenOptions, Visit};

use crate::cli::GlobalArgs;
use crate::exit::{hinted, interrupted};
use crate::printer::Printer;
use crate::project::{self, Project};
use crate::source::{self, Resolved};
use crate::{fleet, lock, state};

/// A loaded project with its resolved source and its fleet.
pub struct Context {
    pub project: Project,
    pub resolved: Resolved,
    pub fleet: Fleet,
}

/// Refuses targets whose apply is not built yet, saying what works instead.
pub fn require_docker(project: &Project, command: &str) -> anyhow::Result<()> {
    match project.config.raw.deployment.target {
        Target::Docker => Ok(()),
        Target::Manual => {
            Err(hinted(format!("`{command}` does not apply to target \"manual\""), crate::commands::preview::MANUAL))
        }
        other => Err(hinted(
            format!("`{command}` is not implemented for the {} target yet", other.as_str()),
            "`rivetctl infra preview --out DIR` renders its manifests/parameters for you to apply",
        )),
    }
}

/// Loads the project (refusing targets that do not apply yet), resolves its source and
/// builds its fleet. `command` names the command in messages (`infra up`).
pub async fn load(printer: &Printer, global: &GlobalArgs, command: &str) -> anyhow::Result<Context> {
    let project = project::load(printer, &global.config)?;
    require_docker(&project, command)?;
    let resolved = source::resolve(&project).await?;
    let fleet = fleet::build(&project, &resolved)?;
    Ok(Context { project, resolved, fleet })
}

/// Connects to the fleet's target (every node, or only `nodes` and the primary) and runs
/// `visitor` with it.
pub async fn connect<V: Visit>(ctx: &Context, nodes: Option<&[String]>, visitor: V) -> anyhow::Result<V::Output> {
    let options = OpenOptions { config_dir: &ctx.project.dir, nodes };
    factory::open(&ctx.fleet, &options, visitor).await.map_err(target_error)
}

/// A port error as the runtime reports it: with its hint when the adapter gave one, and an
/// interruption as one (exit 130).
pub fn target_error(err: TargetError) -> anyhow::Error {
    match (err.kind, err.hint) {
        (ErrorKind::Interrupted, _) => interrupted(err.message),
        (_, Some(hint)) => hinted(err.message, hint),
        (_, None) => anyhow::Error::msg(err.message),
    }
}

/// A state store error as the runtime reports it.
pub fn state_error(err: StateError) -> anyhow::Error {
    match err {
        StateError::Target(err) => target_error(err),
        conflict => anyhow::Error::new(conflict),
    }
}

/// Takes the deployment's lock for `command` (`infra up`), or says who holds it and what to
/// do. Held until the returned value is dropped.
///
/// The one place commands take the lock: today a file under the state directory; the lock on
/// the target (issue 8, section 5) replaces it here.
pub fn lock(project: &Project, command: &str) -> anyhow::Result<lock::Lock> {
    let dir = state::dir(project).join("locks");
    lock::acquire(&dir, &project.config.name, &format!("rivetctl {command}")).map_err(crate::commands::lock::explain)
}
