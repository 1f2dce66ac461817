//! What the Docker commands share: the loaded project, its images and fleet, and a
//! connection to every node's engine.

use std::collections::HashMap;

use orchestrator::config::Target;
use orchestrator::docker::{self, DockerObject};
use orchestrator::fleet::Fleet;
use orchestrator::resource::{ObservedResource, Resource};
use targets::docker::Engine;
use targets::docker::gate::GateOptions;
use targets::probe::Reach;

use crate::cli::GlobalArgs;
use crate::exit::hinted;
use crate::printer::Printer;
use crate::project::{self, Project};
use crate::source::{self, Resolved};
use crate::{engines, fleet, lock, state};

/// A project with its fleet and engines.
pub struct Session {
    pub project: Project,
    pub resolved: Resolved,
    pub fleet: Fleet,
    pub engines: HashMap<String, Engine>,
    /// How each node's containers are reached for health probes, by node name.
    pub reaches: HashMap<String, Reach>,
    /// Held for the session's life by commands that change the deployment.
    _lock: Option<lock::Lock>,
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

impl Session {
    /// Loads the project (checking its target) and connects to its engines.
    pub async fn open(printer: &Printer, global: &GlobalArgs, command: &str) -> anyhow::Result<Session> {
        Session::open_inner(printer, global, command, false).await
    }

    /// Like [`Session::open`] for commands that change the deployment: takes its lock and
    /// refuses while a rollout is unfinished, before connecting to anything.
    pub async fn open_to_change(printer: &Printer, global: &GlobalArgs, command: &str) -> anyhow::Result<Session> {
        Session::open_inner(printer, global, command, true).await
    }

    async fn open_inner(
        printer: &Printer,
        global: &GlobalArgs,
        command: &str,
        change: bool,
    ) -> anyhow::Result<Session> {
        let project = project::load(printer, &global.config)?;
        require_docker(&project, command)?;
        let lock = if change {
            let dir = state::dir(&project);
            let lock = lock::acquire(&dir.join("locks"), &project.config.name, &format!("rivetctl {command}"))
                .map_err(crate::commands::lock::explain)?;
            crate::update::refuse_while_rolling_out(&dir)?;
            Some(lock)
        } else {
            None
        };
        let resolved = source::resolve(&project).await?;
        let fleet = fleet::build(&project, &resolved)?;
        let connected = engines::connect_all(&fleet, &project.dir).await?;
        let reaches = connected.iter().map(|link| (link.name.clone(), link.reach.clone())).collect();
        let engines = connected.into_iter().map(|link| (link.name.clone(), link.engine)).collect();
        Ok(Session { project, resolved, fleet, engines, reaches, _lock: lock })
    }

    /// The desired Docker resources.
    pub fn desired(&self) -> Vec<Resource<DockerObject>> {
        docker::resources(&self.fleet)
    }

    /// What the deployment owns on every engine.
    pub async fn observe(&self) -> anyhow::Result<Vec<ObservedResource>> {
        let mut engines: Vec<Engine> = self.engines.values().cloned().collect();
        engines.sort_by(|a, b| a.node.cmp(&b.node));
        engines::observe_all(&engines, &self.fleet.name).await
    }

    /// How agent containers pass their health gate on this session's nodes.
    pub fn gate_options(&self) -> GateOptions {
        gate_options(&self.fleet, self.reaches.clone())
    }

    /// Engine API calls made so far.
    pub fn api_calls(&self) -> usize {
        self.engines.values().map(Engine::calls).sum()
    }
}

/// The health gate's settings from the config (`deployment.health` for the endpoints,
/// `deployment.update` for the timing), with how each node is reached.
pub fn gate_options(fleet: &Fleet, reaches: HashMap<String, Reach>) -> GateOptions {
    use std::time::Duration;
    GateOptions {
        port: fleet.health.port,
        live_path: fleet.health.live_path.clone(),
        health_path: fleet.health.path.clone(),
        min_healthy_time: Duration::from_millis(fleet.update.min_healthy_time),
        probe_interval: Duration::from_millis(fleet.update.probe_interval),
        probe_timeout: Duration::from_millis(fleet.update.probe_timeout),
        reaches,
    }
}
