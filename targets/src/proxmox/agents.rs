//! The agents inside the containers, over SSH: one service resource per agent
//! (`orchestrator::lower::proxmox::services`), observed from what rivetctl recorded beside
//! it in the container (its fields and spec hash), the release its link points at and
//! whether its service runs; applied by installing the release (built once on this
//! machine, [`super::release`]), the agent's environment, link, service and record
//! ([`super::provision`]); held to the health gate through the SSH connection.
//!
//! SSH: as root, to the container's address from its `net0`, on
//! `deployment.proxmox.ssh_port`, with `deployment.ssh.identity_file` (or the agent), the
//! host keys pinned in the container's description (from its create task's log, read over
//! the pinned API); no known_hosts file is read and no other key is accepted. One
//! connection per container for the whole run.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use orchestrator::gate::{ProbeReport, Rules};
use orchestrator::lower::proxmox::services::{self, KIND as SERVICE};
use orchestrator::port::{Readiness, TargetError};
use orchestrator::resource::{Component, FieldValue, Fields, ObservedResource, ObservedState, Resource, ResourceKey};
use serde_json::{Value, json};

use super::containers::{self, pinned_host_keys, tag_safe};
use super::provision::{self, Found, ProvisionError, ReleaseMeta, ServiceManager};
use super::target::{ProxmoxTarget, address_of, target_error};
use crate::ssh::{Session, SshError, SshOptions, connect};

/// How long a container's sshd may take to answer after it started.
const SSH_READY: Duration = Duration::from_secs(30);
/// Log lines shown when an agent fails its gate.
const LOG_TAIL: usize = 20;

/// A release made on this machine: its tarball and what it records.
pub(crate) struct Built {
    pub tarball: Arc<Vec<u8>>,
    pub meta: ReleaseMeta,
}

/// The service manager of the config.
pub(crate) fn manager_of(setting: orchestrator::config::model::ServiceManager) -> ServiceManager {
    match setting {
        orchestrator::config::model::ServiceManager::Systemd => ServiceManager::Systemd,
        orchestrator::config::model::ServiceManager::Runit => ServiceManager::Runit,
    }
}

/// A [`TargetError`] from a provisioning error: SSH that does not connect is the target not
/// answering (a resumable interruption), anything else a failure.
pub(crate) fn provision_error(container: &str, err: ProvisionError) -> TargetError {
    let message = format!("container {container}: {}", crate::with_causes(&err));
    match &err {
        ProvisionError::Ssh(ssh) if ssh.is_unreachable() => TargetError::unreachable(message).with_hint(ssh.hint()),
        ProvisionError::Ssh(ssh) => TargetError::failed(message).with_hint(ssh.hint()),
        _ => TargetError::failed(message),
    }
}

/// A resource's fields as a record holds them: `{name: [text, sensitive]}`.
pub(crate) fn recorded_fields(resource: &Resource<Value>) -> Value {
    resource
        .fields
        .iter()
        .map(|(name, value)| (name.to_string(), json!([value.text.as_ref(), value.sensitive])))
        .collect::<serde_json::Map<String, Value>>()
        .into()
}

/// What a service's record holds (written at apply, read back by observe).
fn record_of(resource: &Resource<Value>) -> String {
    let fields = recorded_fields(resource);
    json!({
        "spec_hash": resource.spec_hash(),
        "image": resource.payload["image"],
        "revision": resource.payload["revision"],
        "port": resource.payload["port"],
        "fields": fields,
    })
    .to_string()
}

/// The recorded fields of a record.
pub(crate) fn fields_of_record(record: &Value) -> Fields {
    let mut fields = Fields::new();
    if let Some(map) = record["fields"].as_object() {
        for (name, value) in map {
            let text = value[0].as_str().unwrap_or_default();
            let sensitive = value[1].as_bool().unwrap_or(false);
            fields.insert(name.as_str().into(), FieldValue { text: text.into(), sensitive });
        }
    }
    fields
}

/// Says that `what` could not be read over SSH (observation goes on without it).
pub(crate) fn warn_unread(what: &str, err: TargetError) {
    let hint = err.hint.map(|h| format!("\nhint: {h}")).unwrap_or_default();
    eprintln!("warning: cannot read {what}: {}{hint}", err.message);
}

/// A payload's text member.
fn text<'v>(payload: &'v Value, name: &str) -> &'v str {
    payload[name].as_str().unwrap_or_default()
}

/// The environment file's lines of a service's payload.
fn env_of(payload: &Value) -> Vec<(String, String)> {
    payload["env"]
        .as_object()
        .map(|env| env.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
        .unwrap_or_default()
}

impl ProxmoxTarget<'_> {
    /// The service manager of the containers.
    pub(crate) fn manager(&self) -> ServiceManager {
        manager_of(self.settings.service_manager)
    }

    /// The SSH connection to `container` (`agents-pve1`), made once: its address and pinned
    /// host keys read from the API now (a container created in this run has them only now).
    pub(crate) async fn session(&self, container: &str) -> Result<Arc<Session>, TargetError> {
        self.session_within(container, SSH_READY).await
    }

    /// [`Self::session`], trying to connect for up to `patience` while sshd does not answer.
    pub(crate) async fn session_within(
        &self,
        container: &str,
        patience: Duration,
    ) -> Result<Arc<Session>, TargetError> {
        if let Some(session) = self.sessions.lock().await.get(container).filter(|s| !s.is_closed()) {
            return Ok(Arc::clone(session));
        }
        // One connection per container, even when many of its agents are applied at once
        // (sshd also drops connections that arrive together beyond its `MaxStartups`).
        let _connecting = self.connecting.lock().await;
        if let Some(session) = self.sessions.lock().await.get(container).filter(|s| !s.is_closed()) {
            return Ok(Arc::clone(session));
        }
        let (found, _) = containers::find(&self.client, &self.fleet.name).await.map_err(target_error)?;
        let Some(found) = found.get(&tag_safe(container)) else {
            return Err(TargetError::failed(format!("container {container} of the deployment is not in the cluster")));
        };
        let config = containers::config(&self.client, &found.node, found.vmid).await.map_err(target_error)?;
        let Some(address) = address_of(&config) else {
            return Err(TargetError::failed(format!(
                "container {container} ({}) has no static address in net0: rivetctl reaches it over SSH there",
                found.vmid
            ))
            .with_hint("set deployment.proxmox.network.subnet so containers get static addresses"));
        };
        let pins = pinned_host_keys(config.get("description").map_or("", String::as_str));
        let options = SshOptions { pinned: Some(pins), ..self.ssh.clone() };
        let started = Instant::now();
        let session = loop {
            match connect(&address.to_string(), self.settings.ssh_port, "root", &options).await {
                Ok(session) => break session,
                // sshd may still be starting in a container that just started.
                Err(SshError::Connect { .. } | SshError::ConnectTimeout { .. }) if started.elapsed() < patience => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(err) => return Err(provision_error(container, ProvisionError::Ssh(err))),
            }
        };
        let session = Arc::new(session);
        self.sessions.lock().await.insert(container.to_string(), Arc::clone(&session));
        Ok(session)
    }

    /// Reads the agents of every running agents container (on open). A container that
    /// cannot be read is warned about and its agents count as not deployed: applying them
    /// is idempotent, and says why SSH fails.
    pub(crate) async fn read_agents(&self) -> BTreeMap<String, Vec<Found>> {
        let mut out = BTreeMap::new();
        for container in lowering_containers(self) {
            let Some(live) = self.live.get(&tag_safe(&container)) else { continue };
            if !live.found.running {
                continue;
            }
            let read = async {
                // Observing does not wait for an sshd that does not answer.
                let session = self.session_within(&container, Duration::ZERO).await?;
                provision::found(&session, self.manager()).await.map_err(|e| provision_error(&container, e))
            };
            match read.await {
                Ok(found) => {
                    out.insert(container, found);
                }
                Err(err) => warn_unread(&format!("the agents in {container}"), err),
            }
        }
        out
    }

    /// The agents' services as observed resources, from what [`Self::read_agents`] found.
    pub(crate) fn observed_agents(&self) -> Vec<ObservedResource> {
        let mut out = Vec::new();
        for (container, found) in &self.agents {
            let Some(live) = self.live.get(&tag_safe(container)) else { continue };
            for agent in found {
                let record: Value = serde_json::from_str(&agent.record).unwrap_or(Value::Null);
                let mut fields = fields_of_record(&record);
                // The link is the truth: a release switched by hand is drift.
                if let Some(release) = &agent.release {
                    fields.insert("release".into(), FieldValue::plain(release.as_str()));
                }
                out.push(ObservedResource {
                    key: ResourceKey {
                        node: live.found.node.clone(),
                        kind: SERVICE.into(),
                        name: services::service_name(&agent.agent),
                    },
                    component: Component::Agent(agent.agent.clone()),
                    fields: Some(fields),
                    spec_hash: record["spec_hash"].as_str().map(str::to_string),
                    state: if agent.running { ObservedState::Running } else { ObservedState::Stopped(None) },
                    id: format!("{container}/{}", agent.agent),
                    stateful: false,
                    immutable: Vec::new(),
                });
            }
        }
        out
    }

    /// Every agent's health port found in the container it is desired in (kept), and every
    /// port in use at all (not given to a new agent).
    pub(crate) fn found_ports(&self) -> (BTreeMap<String, u16>, std::collections::BTreeSet<u16>) {
        let desired_in: BTreeMap<String, String> = self
            .fleet
            .agents
            .iter()
            .map(|a| (a.id.clone(), orchestrator::lower::proxmox::agents_container(&a.node)))
            .collect();
        let mut kept = BTreeMap::new();
        let mut busy = std::collections::BTreeSet::new();
        for (container, found) in &self.agents {
            for agent in found {
                let record: Value = serde_json::from_str(&agent.record).unwrap_or(Value::Null);
                let Some(port) = record["port"].as_u64().and_then(|p| u16::try_from(p).ok()) else { continue };
                busy.insert(port);
                if desired_in.get(&agent.agent) == Some(container) {
                    kept.insert(agent.agent.clone(), port);
                }
            }
        }
        (kept, busy)
    }

    /// The release `name` of `image` as a tarball, made once per run from the image on
    /// this machine's engine.
    pub(crate) async fn built(&self, name: &str, image: &str) -> Result<Arc<Built>, TargetError> {
        let mut made = self.releases.lock().await;
        if let Some(built) = made.get(name) {
            return Ok(Arc::clone(built));
        }
        let engine = self.engine().await?;
        let facts = crate::docker::port::images::facts_on(engine, image).await.ok_or_else(|| {
            TargetError::failed(format!("image {image} is not on this machine's Docker Engine"))
                .with_hint("run `rivetctl build` (or `infra up` without --no-build) to build it from source")
        })?;
        let tarball = super::release::from_image(engine, image)
            .await
            .map_err(|e| TargetError::failed(format!("cannot make release {name}: {e}")))?;
        let meta =
            ReleaseMeta { reference: image.to_string(), revision: facts.revision, version: facts.version, created: 0 };
        let built = Arc::new(Built { tarball: Arc::new(tarball), meta });
        made.insert(name.to_string(), Arc::clone(&built));
        Ok(built)
    }

    /// This machine's Docker Engine, where releases are built.
    pub(crate) async fn engine(&self) -> Result<&crate::docker::Engine, TargetError> {
        self.engine.get_or_try_init(|| crate::docker::port::nodes::control_host(self.fleet, &self.config_dir)).await
    }

    /// Installs `release` of `image` in the container behind `session` unless it is there;
    /// whether it was installed now.
    pub(crate) async fn ensure_release(
        &self,
        container: &str,
        session: &Session,
        release: &str,
        image: &str,
    ) -> Result<bool, TargetError> {
        let failed = |e| provision_error(container, e);
        // Agents of one container are applied in parallel: one installs, the others wait.
        let lock = Arc::clone(self.installing.lock().expect("install locks").entry(container.to_string()).or_default());
        let _installing = lock.lock().await;
        if provision::has_release(session, release).await.map_err(failed)? {
            return Ok(false);
        }
        let built = self.built(release, image).await?;
        provision::install_release(session, release, &built.tarball, &built.meta).await.map_err(failed)
    }

    /// Installs the agent of `desired` (a service resource) in its container: the user,
    /// its release, environment, link, service definition and record. Does not start it.
    pub(crate) async fn install_agent(&self, desired: &Resource<Value>) -> Result<Arc<Session>, TargetError> {
        let payload = &desired.payload;
        let (container, agent) = (text(payload, "container"), text(payload, "agent"));
        let failed = |e| provision_error(container, e);
        let session = self.session(container).await?;
        provision::ensure_user(&session).await.map_err(failed)?;
        self.ensure_release(container, &session, text(payload, "release"), text(payload, "image")).await?;
        provision::write_config(&session, services::CONFIG_FILE, &self.fleet.config_text).await.map_err(failed)?;
        provision::write_env(&session, agent, &env_of(payload)).await.map_err(failed)?;
        provision::switch(&session, agent, text(payload, "release")).await.map_err(failed)?;
        provision::install_service(&session, self.manager(), agent).await.map_err(failed)?;
        provision::write_record(&session, agent, &record_of(desired)).await.map_err(failed)?;
        Ok(session)
    }

    /// Applies a service step: installs and (re)starts the agent, or stops and removes it
    /// (before its container goes, if it does: the plan removes hosts after their agents).
    pub(crate) async fn apply_agent(&self, step: &orchestrator::plan::Step<Value>) -> Result<(), TargetError> {
        if step.component == Component::Database {
            return self.apply_database(step).await;
        }
        let Component::Agent(agent) = &step.component else { return Ok(()) };
        match &step.desired {
            Some(desired) if step.action != orchestrator::plan::Action::Delete => {
                let container = text(&desired.payload, "container");
                let session = self.install_agent(desired).await?;
                provision::control(&session, self.manager(), agent, "restart")
                    .await
                    .map_err(|e| provision_error(container, e))
            }
            _ => {
                let observed_id = step.observed.as_ref().map(|o| o.id.clone()).unwrap_or_default();
                let container = observed_id.split('/').next().unwrap_or_default().to_string();
                let session = self.session(&container).await?;
                provision::remove_agent(&session, self.manager(), agent)
                    .await
                    .map_err(|e| provision_error(&container, e))
            }
        }
    }

    /// One probe of the agent of `resource` (a service resource): its service's state and
    /// its health endpoints on its port, read through the container's connection.
    pub(crate) async fn probe_agent(&self, resource: &Resource<Value>) -> Result<ProbeReport, TargetError> {
        let payload = &resource.payload;
        let (container, agent) = (text(payload, "container"), text(payload, "agent"));
        let port = payload["port"].as_u64().and_then(|p| u16::try_from(p).ok()).unwrap_or(self.fleet.health.port);
        let session = self.session(container).await?;
        let running =
            provision::running(&session, self.manager(), agent).await.map_err(|e| provision_error(container, e))?;
        if !running {
            return Ok(ProbeReport::default());
        }
        let health =
            provision::read_health(&session, port, &self.fleet.health.live_path, &self.fleet.health.path).await;
        Ok(ProbeReport {
            running,
            live: health.live,
            status: health.status,
            version: health.version,
            ..ProbeReport::default()
        })
    }

    /// The version an agent of `image` should report: the image's label on this machine,
    /// else what the release in a container of `node` recorded.
    pub(crate) async fn image_version(&self, node: &str, image: &str) -> Option<String> {
        if let Ok(engine) = self.engine().await
            && let Some(facts) = crate::docker::port::images::facts_on(engine, image).await
        {
            return facts.version;
        }
        let releases = self.releases_on(node).await.ok()?;
        let name = services::release_of(image);
        releases.into_iter().find(|(rev, _, _)| *rev == name).and_then(|(_, meta, _)| meta.version)
    }

    /// Holds the agent of a service step to the health gate within `deadline`.
    pub(crate) async fn wait_agent(
        &self,
        resource: &Resource<Value>,
        deadline: Duration,
    ) -> Result<Readiness, TargetError> {
        let image = text(&resource.payload, "image");
        let version = self.image_version(&resource.key.node, image).await;
        let rules = Rules {
            min_healthy_time_ms: self.fleet.update.min_healthy_time,
            deadline_ms: u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX),
            engine_check: false,
        };
        let interval = Duration::from_millis(self.fleet.update.probe_interval);
        match crate::gate::hold(version.as_deref(), rules, interval, || self.probe_agent(resource)).await? {
            crate::gate::Held::Passed => Ok(Readiness::Ready),
            crate::gate::Held::Failed { failure, .. } => {
                let payload = &resource.payload;
                let logs = match self.session(text(payload, "container")).await {
                    Ok(session) => provision::logs(&session, self.manager(), text(payload, "agent"), LOG_TAIL).await,
                    Err(_) => Vec::new(),
                };
                Ok(Readiness::Failed { reason: failure.to_string(), logs })
            }
        }
    }
}

/// The agents containers of the layout (`agents-<node>`).
fn lowering_containers(target: &ProxmoxTarget<'_>) -> Vec<String> {
    let mut out: Vec<String> = orchestrator::lower::proxmox::layout(target.fleet, target.settings)
        .into_iter()
        .filter(|c| !c.agents.is_empty())
        .map(|c| c.id)
        .collect();
    // Containers of the deployment no longer in the layout still hold agents to remove.
    for (id, live) in &target.live {
        if id.starts_with("agents-") && !out.contains(id) && live.found.running {
            out.push(id.clone());
        }
    }
    out
}
