//! What every command that reaches a target shares: the loaded project, its resolved source
//! and fleet ([`Context`]), the connected target through `targets`' factory ([`connect`]),
//! and the deployment's lock on the target ([`hold`]).
//!
//! The runtime names no adapter type: [`connect`] hands a [`Visit`]or whichever adapter the
//! fleet's target needs, and the port's errors ([`TargetError`]) become the runtime's hinted
//! errors here, in one place.

use std::cell::RefCell;
use std::collections::BTreeMap;

use orchestrator::config::Target;
use orchestrator::fleet::Fleet;
use orchestrator::port::{Document, ErrorKind, StateError, StateStore, TargetError};
use orchestrator::state::lock::TakeOver;
use targets::factory::{self, KubernetesOptions, OpenOptions, Visit};

use crate::cli::GlobalArgs;
use crate::exit::{hinted, interrupted};
use crate::printer::Printer;
use crate::project::{self, Project};
use crate::source::{self, Resolved};
use crate::store::lease::{self, Lease, LeaseError};
use crate::store::migrate;
use crate::{fleet, state};

/// A loaded project with its resolved source and its fleet.
pub struct Context {
    pub project: Project,
    pub resolved: Resolved,
    pub fleet: Fleet,
    /// How a Kubernetes cluster is reached and applied to (`--context` and the command's flags).
    pub kubernetes: KubernetesOptions,
}

impl Context {
    /// How plans of this deployment are made: steps wait up to `deployment.health.deadline`.
    pub fn plan_options(&self) -> orchestrator::plan::PlanOptions {
        orchestrator::plan::PlanOptions {
            wait_deadline_ms: self.fleet.health.deadline,
            ..orchestrator::plan::PlanOptions::default()
        }
    }

    /// How plans run here: at most `deployment.apply.max_parallel` steps at once.
    pub fn execute_options(&self) -> crate::execute::ExecuteOptions {
        crate::execute::ExecuteOptions {
            max_parallel: (self.fleet.config.raw.deployment.apply.max_parallel as usize).max(1),
        }
    }
}

/// Refuses targets whose apply is not built yet, saying what works instead.
pub fn require_applied(project: &Project, command: &str) -> anyhow::Result<()> {
    match project.config.raw.deployment.target {
        Target::Docker | Target::Kubernetes | Target::Proxmox => Ok(()),
        Target::Manual => {
            Err(hinted(format!("`{command}` does not apply to target \"manual\""), crate::commands::preview::MANUAL))
        }
    }
}

/// Loads the project (refusing targets that do not apply yet), resolves its source and
/// builds its fleet. `command` names the command in messages (`infra up`).
pub async fn load(printer: &Printer, global: &GlobalArgs, command: &str) -> anyhow::Result<Context> {
    let project = project::load(printer, &global.config)?;
    require_applied(&project, command)?;
    let resolved = source::resolve(&project).await?;
    let fleet = fleet::build(&project, &resolved)?;
    let kubernetes = KubernetesOptions { context: global.context.clone(), ..KubernetesOptions::default() };
    Ok(Context { project, resolved, fleet, kubernetes })
}

/// Connects to the fleet's target (every node, or only `nodes` and the primary) and runs
/// `visitor` with it.
pub async fn connect<V: Visit>(ctx: &Context, nodes: Option<&[String]>, visitor: V) -> anyhow::Result<V::Output> {
    let options = OpenOptions { config_dir: &ctx.project.dir, nodes, kubernetes: &ctx.kubernetes };
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

/// The deployment's lock on the target, held while a command changes it: renewed by the
/// work's own progress ([`Held::renew`] after each executor step and each journal write),
/// given back by [`Held::release`] on every path the command returns by.
pub struct Held<'s, S: StateStore> {
    store: &'s S,
    /// `None` while a renewal is under way (another caller then has nothing to do).
    lease: RefCell<Option<Lease>>,
    /// The documents the acquiring load read (after moving `.rivetctl/`'s state over).
    documents: BTreeMap<String, Document>,
}

/// Takes the deployment's lock on `store` for `command` (`infra up`), moves state an earlier
/// rivetctl kept in `.rivetctl/` to the target, or says who holds the lock and what to do.
pub async fn hold<'s, S: StateStore>(
    printer: &Printer,
    ctx: &Context,
    store: &'s S,
    command: &str,
) -> anyhow::Result<Held<'s, S>> {
    let deployment = &ctx.fleet.name;
    let mut lease = Lease::acquire(store, deployment, &format!("rivetctl {command}"), lease::DEFAULT_TTL)
        .await
        .map_err(|e| crate::commands::lock::explain(anyhow::Error::new(e), &store.location()))?;
    if let Some((holder, why)) = lease.took_over() {
        let why = match why {
            TakeOver::Dead => "its process is gone",
            TakeOver::Expired => "it was not renewed within its time to live",
        };
        printer.info(&format!(
            "Took over the lock of `{}` on {} (pid {}): {why}.",
            holder.command, holder.host, holder.pid
        ));
    }
    let mut documents = lease.take_documents();
    let state_dir = state::dir(&ctx.project);
    match migrate::migrate(store, &mut documents, &state_dir, deployment).await {
        Ok(migration) => {
            if let Some(message) = migration.message(&state_dir, &store.location()) {
                printer.info(&message);
            }
        }
        Err(err) => {
            let _ = lease.release(store).await;
            return Err(err);
        }
    }
    Ok(Held { store, lease: RefCell::new(Some(lease)), documents })
}

/// Runs `work` under the deployment's lock for `command` ([`hold`]), giving the lock back
/// on every path `work` returns by ([`Held::release`]).
pub async fn locked<S: StateStore, R>(
    printer: &Printer,
    ctx: &Context,
    store: &S,
    command: &str,
    work: impl AsyncFnOnce(&Held<'_, S>) -> anyhow::Result<R>,
) -> anyhow::Result<R> {
    let held = hold(printer, ctx, store, command).await?;
    let result = work(&held).await;
    held.release(printer, result).await
}

impl<'s, S: StateStore> Held<'s, S> {
    /// The store the lock is in.
    pub fn store(&self) -> &'s S {
        self.store
    }

    /// The documents as they were when the lock was taken (journal, history).
    pub fn documents(&self) -> &BTreeMap<String, Document> {
        &self.documents
    }

    /// Extends the lock (a write only when a tenth of its TTL passed since the last one); an
    /// error when another run took it: stop before the next step.
    pub async fn renew(&self) -> anyhow::Result<()> {
        let Some(mut lease) = self.lease.borrow_mut().take() else { return Ok(()) };
        let result = lease.renew(self.store).await;
        *self.lease.borrow_mut() = Some(lease);
        result.map_err(|err| match err {
            LeaseError::LostLock { .. } => hinted(
                err.to_string(),
                "this run stopped before its next step; `rivetctl lock status` names the run that holds it now",
            ),
            other => anyhow::Error::new(other),
        })
    }

    /// [`Held::renew`] as a port error, for the plan executor.
    pub async fn renew_step(&self) -> Result<(), TargetError> {
        self.renew().await.map_err(|err| match err.downcast_ref::<crate::exit::Hinted>() {
            Some(h) => TargetError::failed(h.message.clone()).with_hint(h.hint.clone()),
            None => TargetError::failed(format!("{err:#}")),
        })
    }

    /// Removes every document of the deployment from the store, the lock with them
    /// (`destroy --volumes`): nothing is left to release.
    pub async fn destroy_state(&self) -> Result<(), StateError> {
        let lease = self.lease.borrow_mut().take();
        let result = self.store.destroy().await;
        if result.is_err() {
            *self.lease.borrow_mut() = lease;
        }
        result
    }

    /// Gives the lock back and returns `result`: a failure to release is reported as a
    /// warning when the command itself failed, as the error otherwise.
    pub async fn release<R>(self, printer: &Printer, result: anyhow::Result<R>) -> anyhow::Result<R> {
        let Some(lease) = self.lease.into_inner() else { return result };
        match (lease.release(self.store).await, result) {
            (Ok(()), result) => result,
            (Err(err), Ok(_)) => {
                Err(anyhow::Error::new(err).context("the command finished, but its lock was not released"))
            }
            (Err(err), Err(failed)) => {
                printer.diagnostic(&format!(
                    "warning: the lock was not released: {err}\nhint: `rivetctl lock status` shows it; it lapses by itself\n"
                ));
                Err(failed)
            }
        }
    }
}
