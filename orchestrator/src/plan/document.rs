//! The plan as JSON (`--output json`): a documented, stable format (docs/output.md).
//!
//! These types exist only to be serialised; the planner's own types stay private so that
//! changing them never changes the format by accident.

use serde::Serialize;

use super::{Action, Plan, Strategy, Wait};
use crate::resource::{Component, FieldValue, RunState};

/// `format_version` changes only when the format changes incompatibly.
pub const FORMAT_VERSION: &str = "1";

#[derive(Debug, Serialize)]
pub struct PlanDocument {
    pub format_version: &'static str,
    pub deployment: String,
    pub target: String,
    /// `live` when the target was read, `offline` when it was assumed empty.
    pub observed: String,
    pub changes: Vec<ChangeDocument>,
    pub kept: Vec<ObjectDocument>,
    pub summary: SummaryDocument,
}

#[derive(Debug, Serialize)]
pub struct ObjectDocument {
    pub kind: String,
    pub name: String,
    pub node: String,
}

#[derive(Debug, Serialize)]
pub struct ChangeDocument {
    pub action: &'static str,
    pub kind: String,
    pub name: String,
    pub node: String,
    /// `network`, `storage`, `datahub`, `migrate`, `host` or `agent`.
    pub component: &'static str,
    /// The agent id, for agent objects.
    pub agent: Option<String>,
    pub wave: u32,
    pub strategy: &'static str,
    pub wait: &'static str,
    pub stateful: bool,
    pub destructive: bool,
    pub forced_by: Vec<String>,
    pub drift: Option<DriftDocument>,
    pub fields: Vec<FieldDocument>,
    /// The API requests applying it makes, where the target lists them (Proxmox VE):
    /// `{"method", "path", "params"}`, secrets redacted. Absent for other targets.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub requests: Vec<serde_json::Value>,
}

#[derive(Debug, Serialize)]
pub struct DriftDocument {
    pub observed: String,
    pub desired: &'static str,
}

#[derive(Debug, Serialize)]
pub struct FieldDocument {
    pub field: String,
    /// `null` when absent; `"(sensitive)"` for secrets.
    pub before: Option<String>,
    pub after: Option<String>,
    pub sensitive: bool,
    pub forces_replacement: bool,
}

#[derive(Debug, Serialize)]
pub struct SummaryDocument {
    pub create: usize,
    pub update: usize,
    pub replace: usize,
    pub delete: usize,
    pub unchanged: usize,
    pub changed: bool,
}

fn shown(value: &Option<FieldValue>) -> Option<String> {
    value.as_ref().map(|v| if v.sensitive { "(sensitive)".to_string() } else { v.text.to_string() })
}

/// Builds the JSON document of a plan.
pub fn plan_document<P>(plan: &Plan<P>, observed: &str) -> PlanDocument {
    let summary = plan.summary();
    let count = |a| summary.get(&a).copied().unwrap_or(0);
    PlanDocument {
        format_version: FORMAT_VERSION,
        deployment: plan.deployment.clone(),
        target: plan.target.clone(),
        observed: observed.to_string(),
        changes: plan
            .steps
            .iter()
            .map(|step| ChangeDocument {
                action: step.action.as_str(),
                kind: step.key.kind.clone(),
                name: step.key.name.clone(),
                node: step.key.node.clone(),
                component: match step.component {
                    Component::Foundation => "network",
                    Component::Storage => "storage",
                    Component::Datahub => "datahub",
                    Component::Migrate => "migrate",
                    Component::Host => "host",
                    Component::Database => "database",
                    Component::Agent(_) => "agent",
                },
                agent: match &step.component {
                    Component::Agent(id) => Some(id.clone()),
                    _ => None,
                },
                wave: step.wave,
                strategy: match step.strategy {
                    Strategy::CreateBeforeDestroy => "create_before_destroy",
                    Strategy::DestroyBeforeCreate => "destroy_before_create",
                },
                wait: match step.wait {
                    Wait::Nothing => "nothing",
                    Wait::Healthy => "healthy",
                    Wait::Completed => "completed",
                    Wait::Gate => "health_gate",
                },
                stateful: step.stateful,
                destructive: step.is_destructive(),
                forced_by: step.forced_by.clone(),
                drift: step.drift.as_ref().map(|d| DriftDocument {
                    observed: d.observed.clone(),
                    desired: match d.desired {
                        RunState::Running => "running",
                        RunState::Completed => "completed",
                    },
                }),
                fields: step
                    .shown_changes()
                    .iter()
                    .map(|c| FieldDocument {
                        field: c.field.clone(),
                        before: shown(&c.before),
                        after: shown(&c.after),
                        sensitive: c.before.as_ref().or(c.after.as_ref()).is_some_and(|v| v.sensitive),
                        forces_replacement: c.forces_replacement,
                    })
                    .collect(),
                requests: Vec::new(),
            })
            .collect(),
        kept: plan
            .kept
            .iter()
            .map(|k| ObjectDocument { kind: k.key.kind.clone(), name: k.key.name.clone(), node: k.key.node.clone() })
            .collect(),
        summary: SummaryDocument {
            create: count(Action::Create),
            update: count(Action::Update),
            replace: count(Action::Replace),
            delete: count(Action::Delete),
            unchanged: plan.unchanged,
            changed: !plan.is_empty(),
        },
    }
}
