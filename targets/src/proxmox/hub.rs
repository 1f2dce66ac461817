//! The datahub's database service behind the port: observed from its record in the datahub
//! container, applied by [`super::datahub`] over SSH, waited for until PostgreSQL accepts
//! connections and pgvector is in the database.

use std::sync::Arc;
use std::time::{Duration, Instant};

use orchestrator::lower::proxmox::DATAHUB;
use orchestrator::lower::proxmox::services::{DATABASE, KIND as SERVICE};
use orchestrator::plan::{Action, Step};
use orchestrator::port::{Readiness, TargetError};
use orchestrator::resource::{Component, ObservedResource, ObservedState, Resource, ResourceKey};
use serde_json::{Value, json};

use super::agents::{fields_of_record, provision_error, recorded_fields, warn_unread};
use super::containers::tag_safe;
use super::datahub::{self, Database};
use super::provision;
use super::target::ProxmoxTarget;

/// The database of a desired resource's payload.
fn database_of(payload: &Value) -> Database {
    let text = |name: &str| payload[name].as_str().unwrap_or_default().to_string();
    Database {
        version: text("version"),
        user: text("user"),
        name: text("database"),
        password: text("password"),
        port: payload["port"].as_u64().and_then(|p| u16::try_from(p).ok()).unwrap_or(5432),
        listen: text("listen"),
        clients: text("clients"),
        shared: payload["shared"].as_str().map(str::to_string),
    }
}

fn record_of(resource: &Resource<Value>) -> String {
    json!({"spec_hash": resource.spec_hash(), "fields": recorded_fields(resource)}).to_string()
}

impl ProxmoxTarget<'_> {
    /// Reads the datahub's service in its container, when that runs (on open).
    pub(crate) async fn read_database(&self) -> Option<(bool, String)> {
        let live = self.live.get(&tag_safe(DATAHUB))?;
        if !live.found.running || self.fleet.datahub.is_none() {
            return None;
        }
        let read = async {
            let session = self.session_within(DATAHUB, Duration::ZERO).await?;
            datahub::found(&session, self.manager()).await.map_err(|e| provision_error(DATAHUB, e))
        };
        match read.await {
            Ok(found) => found,
            Err(err) => {
                warn_unread("the datahub's service in its container", err);
                None
            }
        }
    }

    /// The datahub's service as an observed resource.
    pub(crate) fn observed_database(&self) -> Option<ObservedResource> {
        let (running, record) = self.database.as_ref()?;
        let live = self.live.get(&tag_safe(DATAHUB))?;
        let record: Value = serde_json::from_str(record).unwrap_or(Value::Null);
        let fields = fields_of_record(&record);
        Some(ObservedResource {
            key: ResourceKey { node: live.found.node.clone(), kind: SERVICE.into(), name: DATABASE.into() },
            component: Component::Database,
            fields: Some(fields),
            spec_hash: record["spec_hash"].as_str().map(str::to_string),
            state: if *running { ObservedState::Running } else { ObservedState::Stopped(None) },
            id: format!("{DATAHUB}/{DATABASE}"),
            stateful: false,
            immutable: Vec::new(),
        })
    }

    /// Applies the datahub's service step: PostgreSQL with pgvector installed, its cluster,
    /// service, role, database and shared directory; or its service stopped (the data
    /// stays in the container).
    pub(crate) async fn apply_database(&self, step: &Step<Value>) -> Result<(), TargetError> {
        let failed = |e| provision_error(DATAHUB, e);
        let session: Arc<_> = self.session(DATAHUB).await?;
        let Some(desired) = step.desired.as_ref().filter(|_| step.action != Action::Delete) else {
            return datahub::stop(&session, self.manager(), Duration::from_secs(60)).await.map_err(failed);
        };
        let db = database_of(&desired.payload);
        provision::ensure_user(&session).await.map_err(failed)?;
        let pgbin = datahub::ensure_installed(&session, &db).await.map_err(failed)?;
        datahub::ensure_cluster(&session, &db).await.map_err(failed)?;
        datahub::start(&session, self.manager(), &pgbin, step.observed.is_some()).await.map_err(failed)?;
        datahub::ensure_database(&session, &pgbin, &db).await.map_err(failed)?;
        datahub::write_record(&session, &record_of(desired)).await.map_err(failed)
    }

    /// Waits until PostgreSQL accepts connections and pgvector is in the database.
    pub(crate) async fn wait_database(
        &self,
        desired: &Resource<Value>,
        deadline: Duration,
    ) -> Result<Readiness, TargetError> {
        let db = database_of(&desired.payload);
        let started = Instant::now();
        loop {
            let session = self.session(DATAHUB).await?;
            let (ready, vector) = datahub::health(&session, &db).await;
            if ready && vector.is_some() {
                return Ok(Readiness::Ready);
            }
            if started.elapsed() > deadline {
                let reason = if ready {
                    format!("pgvector is not in database {}", db.name)
                } else {
                    format!("PostgreSQL does not accept connections after {deadline:?}")
                };
                return Ok(Readiness::Failed { reason, logs: Vec::new() });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}
