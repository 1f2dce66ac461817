//! The Proxmox VE target behind the port's [`Target`] half: open (the API client, the
//! cluster's nodes, the deployment's containers by their tags, vmids for new ones), lower
//! (with the identities found), observe (from each container's live config), apply a step
//! as the API requests of [`requests`], wait until a container runs.
//!
//! What a step sends is decided once, by [`requests`]: `infra preview --output json` lists
//! exactly those requests, and `apply` sends them in order (each task awaited), with the
//! config digest read just before so that a concurrent edit is not overwritten.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use orchestrator::fleet::{Fleet, ProxmoxSettings, TargetSettings};
use orchestrator::lower::proxmox::services;
use orchestrator::lower::proxmox::{self as lowering, DATAHUB, Identity};
use orchestrator::plan::{Action, Step, Wait};
use orchestrator::port::{Readiness, Target, TargetError};
use orchestrator::resource::{Component, ObservedResource, ObservedState, Resource, ResourceKey};
use serde_json::Value;

use super::api::{self, Method, NodeInfo, Request, VersionInfo};
use super::client::{ApiError, Client, Deadlines};
use super::containers::{self, Found};
use super::store::{self, ProxmoxStore};
use super::task::Token;
use super::tls::{self, Trust};
use crate::render::proxmox::create_params;

/// How long a container's clean shutdown may take before it is stopped hard.
const SHUTDOWN_S: u32 = 60;

/// A container of the deployment as found on open or observe: where it is, its live config.
#[derive(Debug, Clone)]
pub(crate) struct Live {
    pub found: Found,
    pub config: BTreeMap<String, String>,
}

/// The connected Proxmox VE target.
pub struct ProxmoxTarget<'f> {
    pub(crate) fleet: &'f Fleet,
    pub(crate) settings: &'f ProxmoxSettings,
    pub(crate) client: Arc<Client>,
    /// The deployment's containers on open, by identity (`datahub`, `agents-pve1`).
    pub(crate) live: BTreeMap<String, Live>,
    /// The lowering, with the identities found and assigned on open.
    pub(crate) desired: Vec<Resource<Value>>,
    pub(crate) version: String,
    /// The deployment's documents, in its first container's description.
    pub(crate) store: ProxmoxStore,
    pub(crate) config_dir: std::path::PathBuf,
    /// How containers are reached over SSH (the pins are each container's).
    pub(crate) ssh: crate::ssh::SshOptions,
    /// One SSH connection per container, by identity.
    pub(crate) sessions: tokio::sync::Mutex<BTreeMap<String, Arc<crate::ssh::Session>>>,
    /// The agents found in each running agents container on open, by container identity.
    pub(crate) agents: BTreeMap<String, Vec<super::provision::Found>>,
    /// The datahub's service on open: whether it runs, its record.
    pub(crate) database: Option<(bool, String)>,
    /// Releases made in this run, by name.
    pub(crate) releases: tokio::sync::Mutex<BTreeMap<String, Arc<super::agents::Built>>>,
    /// This machine's Docker Engine (releases are built there), once needed.
    pub(crate) engine: tokio::sync::OnceCell<crate::docker::Engine>,
    /// One SSH connection being made at a time.
    pub(crate) connecting: tokio::sync::Mutex<()>,
    /// One release installation at a time per container, by identity.
    pub(crate) installing: std::sync::Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// A [`TargetError`] from an API error, with its hint.
pub(crate) fn target_error(err: ApiError) -> TargetError {
    let hint = err.hint();
    let error = match &err {
        ApiError::Unreachable { .. } => TargetError::unreachable(err.to_string()),
        _ => TargetError::failed(err.to_string()),
    };
    match hint {
        Some(hint) => error.with_hint(hint),
        None => error,
    }
}

fn state_error(err: orchestrator::port::StateError) -> TargetError {
    match err {
        orchestrator::port::StateError::Target(err) => err,
        other => TargetError::failed(other.to_string()),
    }
}

/// How the API's certificate is trusted, from `deployment.proxmox`: the pinned fingerprint,
/// the CA file (relative to the config), `insecure: true` (warned about), else the system roots.
fn trust(fleet: &Fleet, config_dir: &Path) -> Result<Trust, TargetError> {
    let proxmox = &fleet.config.raw.deployment.proxmox;
    if proxmox.insecure {
        eprintln!(
            "warning: deployment.proxmox.insecure is true: the API's TLS certificate is not checked, so anyone on the path can read the API token\nhint: pin it instead: `fingerprint:` from `pvenode cert info` (docs/proxmox.md)"
        );
        return Ok(Trust::Insecure);
    }
    if let Some(text) = proxmox.fingerprint.as_deref().filter(|f| !f.trim().is_empty()) {
        return tls::parse_fingerprint(text)
            .map(Trust::Fingerprint)
            .map_err(|err| TargetError::failed(err.to_string()));
    }
    if let Some(file) = proxmox.ca_file.as_deref().filter(|f| !f.trim().is_empty()) {
        return Ok(Trust::CaFile(config_dir.join(file)));
    }
    Ok(Trust::SystemRoots)
}

/// A step's container identity (`datahub`, `agents-pve1`), from its desired payload.
fn container_of(step: &Step<Value>) -> &str {
    step.desired.as_ref().and_then(|d| d.payload["container"].as_str()).unwrap_or_default()
}

/// The address in a config's `net0` (`ip=10.4.0.10/24`).
pub(crate) fn address_of(config: &BTreeMap<String, String>) -> Option<std::net::Ipv4Addr> {
    let net0 = config.get("net0")?;
    let ip = net0.split(',').find_map(|p| p.strip_prefix("ip="))?;
    ip.split('/').next()?.parse().ok()
}

/// The template a container was made from: its description's `template:` line (PVE keeps
/// no `ostemplate` in the config).
fn template_of(config: &BTreeMap<String, String>) -> Option<String> {
    let description = config.get("description")?;
    description.lines().find_map(|l| l.strip_prefix("template: ")).map(|t| t.trim().to_string())
}

impl<'f> ProxmoxTarget<'f> {
    /// Connects to the API: checks the token and the configured nodes, finds the
    /// deployment's containers, assigns vmids to new ones and lowers the fleet.
    pub async fn open(fleet: &'f Fleet, config_dir: &Path) -> Result<ProxmoxTarget<'f>, TargetError> {
        let TargetSettings::Proxmox(settings) = &fleet.target_settings else {
            return Err(TargetError::failed("not a Proxmox VE fleet"));
        };
        let raw = &fleet.config.raw.deployment.proxmox;
        let url = settings.api_url.as_deref().ok_or_else(|| {
            TargetError::failed("deployment.proxmox.api_url is not set").with_hint("set it to https://<node>:8006")
        })?;
        let token =
            Token::new(raw.token_id.as_deref().unwrap_or_default(), raw.token_secret.as_deref().unwrap_or_default())
                .map_err(|err| TargetError::failed(err.to_string()))?;
        let client = Client::new(url, &trust(fleet, config_dir)?, token, Deadlines::default()).map_err(target_error)?;
        let version: VersionInfo = client.call(&api::version()).await.map_err(target_error)?;
        let nodes: Vec<NodeInfo> = client.call(&api::nodes()).await.map_err(target_error)?;
        for node in &settings.nodes {
            match nodes.iter().find(|n| n.node == node.name) {
                None => {
                    let known: Vec<&str> = nodes.iter().map(|n| n.node.as_str()).collect();
                    return Err(TargetError::failed(format!(
                        "node {} of deployment.proxmox.nodes is not in the cluster (its nodes: {})",
                        node.name,
                        known.join(", ")
                    )));
                }
                Some(found) if found.status.as_deref().is_some_and(|s| s != "online") => {
                    return Err(TargetError::unreachable(format!(
                        "node {} is {}",
                        node.name,
                        found.status.as_deref().unwrap_or_default()
                    )));
                }
                Some(_) => {}
            }
        }
        let client = Arc::new(client);
        let ssh = crate::docker::port::nodes::ssh_options(fleet, config_dir);
        let mut target = ProxmoxTarget {
            fleet,
            settings,
            client: Arc::clone(&client),
            live: BTreeMap::new(),
            desired: Vec::new(),
            version: version.version,
            store: ProxmoxStore::new(client, None, Some((ssh.clone(), settings.ssh_port))),
            config_dir: config_dir.to_path_buf(),
            ssh,
            sessions: tokio::sync::Mutex::new(BTreeMap::new()),
            agents: BTreeMap::new(),
            database: None,
            releases: tokio::sync::Mutex::new(BTreeMap::new()),
            engine: tokio::sync::OnceCell::new(),
            connecting: tokio::sync::Mutex::new(()),
            installing: std::sync::Mutex::new(BTreeMap::new()),
        };
        let guests = target.refresh().await?;
        target.agents = target.read_agents().await;
        target.database = target.read_database().await;
        target.desired = target.lower_with(&guests).await?;
        let home = target.home_container().and_then(|id| target.live.get(&containers::tag_safe(&id)));
        if let Some(live) = home {
            let name = live.config.get("hostname").cloned().unwrap_or_default();
            let ssh = Some((target.ssh.clone(), settings.ssh_port));
            target.store = ProxmoxStore::new(
                Arc::clone(&target.client),
                Some((live.found.node.clone(), live.found.vmid, name)),
                ssh,
            );
        }
        Ok(target)
    }

    /// Reads the deployment's containers and their configs again.
    async fn refresh(&mut self) -> Result<Vec<api::Guest>, TargetError> {
        let (found, guests) = containers::find(&self.client, &self.fleet.name).await.map_err(target_error)?;
        let mut live = BTreeMap::new();
        for (id, found) in found {
            let config = containers::config(&self.client, &found.node, found.vmid).await.map_err(target_error)?;
            live.insert(id, Live { found, config });
        }
        self.live = live;
        Ok(guests)
    }

    /// The lowering with what the cluster holds: the containers found keep their vmids and
    /// addresses, new ones get free vmids (`/cluster/nextid` asked only when a new container
    /// has no `ctid_start`).
    async fn lower_with(&self, guests: &[api::Guest]) -> Result<Vec<Resource<Value>>, TargetError> {
        // The lowering names containers by their ids, their tags by the tag-safe form.
        let identities: BTreeMap<String, Identity> = lowering::layout(self.fleet, self.settings)
            .into_iter()
            .filter_map(|c| {
                let live = self.live.get(&containers::tag_safe(&c.id))?;
                Some((c.id, Identity { vmid: Some(live.found.vmid), address: address_of(&live.config) }))
            })
            .collect();
        let next_id = if lowering::needs_next_id(self.fleet, self.settings, &identities) {
            let text: String = self.client.call(&api::next_id(None)).await.map_err(target_error)?;
            Some(text.trim().parse().map_err(|_| TargetError::failed(format!("/cluster/nextid said {text:?}")))?)
        } else {
            None
        };
        let (ports, busy_ports) = self.found_ports();
        let cluster = lowering::Cluster {
            identities,
            taken: guests.iter().map(|g| g.vmid).collect(),
            next_id,
            ports,
            busy_ports,
        };
        lowering::lower(self.fleet, self.settings, &cluster).map_err(|err| TargetError::failed(err.to_string()))
    }

    /// The container holding the deployment's documents: the datahub's, else the first.
    fn home_container(&self) -> Option<String> {
        self.desired.first().and_then(|r| r.payload["container"].as_str()).map(str::to_string)
    }

    /// The live container behind a step's key, by its hostname.
    fn live_of(&self, key: &ResourceKey) -> Option<&Live> {
        self.live
            .values()
            .find(|l| l.config.get("hostname").is_some_and(|h| *h == key.name) && l.found.node == key.node)
    }

    /// The API version the cluster runs (`8.2.4`).
    pub fn version(&self) -> &str {
        &self.version
    }
}

/// The API requests that take one step's container to its end state, in order (none for an
/// agent's service); `live` is the
/// live container's vmid and config (updates, replaces, deletes: its digest guards the
/// update, its description's state lines are kept).
pub fn requests(deployment: &str, step: &Step<Value>, live: Option<(u32, &BTreeMap<String, String>)>) -> Vec<Request> {
    if step.key.kind != lowering::KIND {
        // An agent's service is installed over SSH, not through the API.
        return Vec::new();
    }
    let node = step.key.node.as_str();
    let create = |resource: &Resource<Value>| api::create(node, &create_params(deployment, resource));
    let take_down = |vmid: u32| vec![api::shutdown(node, vmid, SHUTDOWN_S), api::destroy(node, vmid)];
    match (step.action, &step.desired, live) {
        (Action::Create, Some(desired), _) => vec![create(desired)],
        (Action::Replace, Some(desired), Some((vmid, _))) => {
            let mut out = take_down(vmid);
            out.push(create(desired));
            out
        }
        (Action::Delete, _, Some((vmid, _))) => take_down(vmid),
        (Action::Update, Some(desired), Some((vmid, config))) => {
            update_requests(deployment, step, desired, vmid, config)
        }
        _ => Vec::new(),
    }
}

/// An update: the changed parameters (and the new spec hash in `tags`) in one config PUT
/// guarded by the digest, a resize for a bigger root disk, a start when it does not run.
fn update_requests(
    deployment: &str,
    step: &Step<Value>,
    desired: &Resource<Value>,
    vmid: u32,
    config: &BTreeMap<String, String>,
) -> Vec<Request> {
    let node = step.key.node.as_str();
    let params = create_params(deployment, desired);
    let mut set = BTreeMap::new();
    let mut out = Vec::new();
    for change in &step.changes {
        match change.field.as_str() {
            "rootfs.size" => {
                let gib = params.get("rootfs").and_then(|r| r.rsplit_once(':')).and_then(|(_, n)| n.parse().ok());
                if let Some(gib) = gib {
                    out.push(api::resize(node, vmid, "rootfs", gib));
                }
            }
            // The hosted agents are listed in the description, beside the state documents.
            "agents" => {
                let live = config.get("description").map_or("", String::as_str);
                set.insert("description".into(), store::with_documents(&params["description"], live));
            }
            field => {
                if let Some(value) = params.get(field) {
                    set.insert(field.to_string(), value.clone());
                }
            }
        }
    }
    set.insert("tags".into(), params["tags"].clone());
    out.insert(0, api::set_config(node, vmid, &set, &[], config.get("digest").map(String::as_str)));
    if step.drift.is_some() {
        out.push(api::start(node, vmid));
    }
    out
}

impl Target for ProxmoxTarget<'_> {
    type Payload = Value;

    fn kind(&self) -> &'static str {
        "proxmox"
    }

    fn lower(&self, _fleet: &Fleet) -> Vec<Resource<Value>> {
        self.desired.clone()
    }

    async fn observe(&self) -> Result<Vec<ObservedResource>, TargetError> {
        let mut out = Vec::new();
        for (id, live) in &self.live {
            let mut config = live.config.clone();
            if let Some(template) = template_of(&config) {
                config.insert("ostemplate".into(), template);
            }
            config.insert("vmid".into(), live.found.vmid.to_string());
            let component = if id == DATAHUB { Component::Datahub } else { Component::Host };
            out.push(ObservedResource {
                key: ResourceKey {
                    node: live.found.node.clone(),
                    kind: lowering::KIND.into(),
                    name: config.get("hostname").cloned().unwrap_or_else(|| format!("CT {}", live.found.vmid)),
                },
                component,
                fields: Some(lowering::with_agents(
                    lowering::fields_of(&config),
                    &lowering::agents_in(config.get("description").map_or("", String::as_str)),
                )),
                spec_hash: live.found.hash.clone(),
                state: if live.found.running { ObservedState::Running } else { ObservedState::Stopped(None) },
                id: live.found.vmid.to_string(),
                stateful: id == DATAHUB,
                immutable: Vec::new(),
            });
        }
        out.extend(self.observed_database());
        out.extend(self.observed_agents());
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn apply(&self, step: &Step<Value>) -> Result<(), TargetError> {
        if step.key.kind == services::KIND {
            return self.apply_agent(step).await;
        }
        // The digest and vmid just before: another run or the GUI may have changed it.
        let live = match self.live_of(&step.key) {
            Some(live) => {
                let config =
                    containers::config(&self.client, &live.found.node, live.found.vmid).await.map_err(target_error)?;
                Some((live.found.vmid, config))
            }
            None => None,
        };
        let live = live.as_ref().map(|(vmid, config)| (*vmid, config));
        let container = container_of(step);
        // The container holding the documents goes: they stay with this run until it ends.
        if step.action != Action::Update
            && let Some((vmid, _)) = live
            && self.store.holds(vmid)
        {
            self.store.detach().await.map_err(state_error)?;
        }
        let requests = requests(&self.fleet.name, step, live);
        if requests.is_empty() {
            // An update, replace or delete of a container that is gone since it was observed.
            return Err(TargetError::failed(format!(
                "{} on {} is no longer there (removed since it was read?)",
                step.key.name, step.key.node
            ))
            .with_hint("run the command again: it plans from what the cluster holds now"));
        }
        for request in requests {
            let what = format!("{} {}", request.describe(), step.key.name);
            match (request.method, request.path.ends_with("/lxc")) {
                (Method::Post, true) => {
                    let created =
                        containers::create(&self.client, &self.fleet.name, container, &step.key.node, &request.params)
                            .await
                            .map_err(target_error)?;
                    let vmid = request.params.get("vmid").and_then(|v| v.parse().ok()).unwrap_or_default();
                    match created {
                        containers::Created::Done { host_keys, .. } if !host_keys.is_empty() => {
                            containers::pin_host_keys(&self.client, &step.key.node, vmid, &host_keys)
                                .await
                                .map_err(target_error)?;
                        }
                        containers::Created::Done { .. } => eprintln!(
                            "warning: the create task of {} printed no SSH host key fingerprints: SSH to it will be refused until they are pinned",
                            step.key.name
                        ),
                        containers::Created::FoundAgain { .. } => eprintln!(
                            "warning: {} was found again after its create's answer was lost, without its task log: its SSH host keys are not pinned",
                            step.key.name
                        ),
                    }
                    if self.home_container().as_deref() == Some(container) {
                        self.store.attach(&step.key.node, vmid, &step.key.name).await.map_err(state_error)?;
                    }
                }
                (Method::Put, _) if request.path.ends_with("/config") => {
                    let _: Value = self.client.call(&request).await.map_err(target_error)?;
                }
                (Method::Post, false) if request.path.ends_with("/shutdown") => {
                    let vmid = live.map(|(v, _)| v).unwrap_or_default();
                    containers::ensure_stopped(&self.client, &step.key.node, vmid, &step.key.name, SHUTDOWN_S)
                        .await
                        .map_err(target_error)?;
                }
                (Method::Post, false) if request.path.ends_with("/start") => {
                    let vmid = live.map(|(v, _)| v).unwrap_or_default();
                    containers::ensure_running(&self.client, &step.key.node, vmid, &step.key.name)
                        .await
                        .map_err(target_error)?;
                }
                _ => {
                    self.client.run_task(&request, &what).await.map_err(target_error)?;
                }
            }
        }
        Ok(())
    }

    async fn wait(&self, step: &Step<Value>, deadline: Duration) -> Result<Readiness, TargetError> {
        if step.action == Action::Delete || step.wait == Wait::Nothing {
            return Ok(Readiness::Ready);
        }
        if step.key.kind == services::KIND {
            let Some(desired) = &step.desired else { return Ok(Readiness::Ready) };
            if step.component == Component::Database {
                return self.wait_database(desired, deadline).await;
            }
            return self.wait_agent(desired, deadline).await;
        }
        let started = std::time::Instant::now();
        loop {
            let (found, _) = containers::find(&self.client, &self.fleet.name).await.map_err(target_error)?;
            let container = container_of(step);
            if let Some(found) = found.get(&containers::tag_safe(container))
                && found.running
            {
                return Ok(Readiness::Ready);
            }
            if started.elapsed() > deadline {
                return Ok(Readiness::Failed {
                    reason: format!("{} is not running after {deadline:?}", step.key.name),
                    logs: Vec::new(),
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn discard(&self, step: &Step<Value>) -> Result<(), TargetError> {
        if step.key.kind == services::KIND {
            // The service is stopped: a failed agent does not keep restarting.
            if step.component == Component::Database {
                let session = self.session(lowering::DATAHUB).await?;
                return super::datahub::stop(&session, self.manager(), Duration::from_secs(60))
                    .await
                    .map_err(|e| super::agents::provision_error(lowering::DATAHUB, e));
            }
            let (Some(desired), Component::Agent(agent)) = (&step.desired, &step.component) else { return Ok(()) };
            let container = desired.payload["container"].as_str().unwrap_or_default();
            let session = self.session(container).await?;
            let grace = Duration::from_millis(desired.stop_grace_ms.unwrap_or(30_000));
            return super::provision::stop(&session, self.manager(), agent, grace)
                .await
                .map_err(|e| super::agents::provision_error(container, e));
        }
        let container = container_of(step);
        let (found, _) = containers::find(&self.client, &self.fleet.name).await.map_err(target_error)?;
        if let Some(found) = found.get(&containers::tag_safe(container)) {
            containers::destroy(&self.client, &found.node, found.vmid, &step.key.name, SHUTDOWN_S)
                .await
                .map_err(target_error)?;
        }
        Ok(())
    }

    async fn keep(&self, kept: &[ObservedResource]) -> Result<Vec<String>, TargetError> {
        let mut done = Vec::new();
        for observed in kept.iter().filter(|k| k.key.kind == lowering::KIND) {
            let Some(live) = self.live_of(&observed.key) else { continue };
            let (node, vmid) = (&live.found.node, live.found.vmid);
            let stopped = containers::ensure_stopped(&self.client, node, vmid, &observed.key.name, SHUTDOWN_S)
                .await
                .map_err(target_error)?;
            if stopped {
                done.push(format!("Stopped lxc {} ({vmid} on {node}): its disk holds the data.", observed.key.name));
            }
        }
        Ok(done)
    }

    fn requests(&self, step: &Step<Value>) -> Vec<Value> {
        let live = self.live_of(&step.key).map(|l| (l.found.vmid, &l.config));
        requests(&self.fleet.name, step, live).iter().map(Request::redacted).collect()
    }

    fn calls(&self) -> usize {
        self.client.counts().0
    }
}

impl ProxmoxTarget<'_> {
    /// The files `infra preview --out` writes: each container's parameters as they would be
    /// sent (vmids and addresses as found or assigned), and the service units.
    pub fn artifacts(&self) -> Result<Vec<crate::render::Artifact>, crate::render::RenderError> {
        let mut all: Vec<crate::render::Artifact> = self
            .desired
            .iter()
            .filter(|resource| resource.key.kind == lowering::KIND)
            .map(|resource| crate::render::proxmox::artifact(&self.fleet.name, resource))
            .collect::<Result<_, _>>()?;
        all.extend(crate::render::proxmox::unit_artifacts(self.fleet));
        Ok(all)
    }
}
