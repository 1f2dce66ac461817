//! Observing the deployment: every object of the lowering's kinds in the namespace that
//! carries the deployment's label, read back as the planner sees objects (the record of the
//! fields applied, from the [`super::RECORD`] annotation), then checked against the live
//! cluster: each unchanged object is applied as a server-side dry run and compared with the
//! live object ([`super::diff`]), so a field changed by hand (or taken over by another field
//! manager) is drift the plan shows and `up` puts right.

use futures_util::StreamExt;
use kube::api::{DynamicObject, ListParams, Patch, PatchParams};
use orchestrator::port::TargetError;
use orchestrator::resource::{FieldValue, ObservedResource, ObservedState, Resource, ResourceKey, decode_record};
use serde_json::Value;

use super::conflicts::{self, Conflict};
use super::kinds::{self, KINDS, Kind};
use super::{DEPLOYMENT, FIELD_MANAGER, KubernetesTarget, RECORD, SPEC_HASH, classify, diff};
use crate::render::kubernetes::{CLUSTER, classify as component_of};

/// How many dry runs are in flight at once.
const DRY_RUNS_AT_ONCE: usize = 16;
/// The pseudo-field a conflict with another field manager shows as in the plan.
pub const CONFLICT_FIELD: &str = "(field managers)";

fn text<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

/// What the object's status says of its run state.
fn state_of(kind: &str, object: &Value) -> ObservedState {
    let number = |pointer: &str| object.pointer(pointer).and_then(Value::as_i64).unwrap_or(0);
    match kind {
        "Job" if number("/status/succeeded") > 0 => ObservedState::Stopped(Some(0)),
        "Job"
            if object
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .is_some_and(|c| c.iter().any(|c| c["type"] == "Failed" && c["status"] == "True")) =>
        {
            ObservedState::Stopped(Some(1))
        }
        "Job" | "Deployment" | "StatefulSet" => ObservedState::Running,
        _ => ObservedState::Present,
    }
}

/// The fields found changed on a live object, with their live values.
type Drifted = Vec<(String, Option<FieldValue>)>;

/// What the dry run of one live object found.
enum Checked {
    /// Fields that differ from the record (with their live values; `None`: absent).
    Drifted(Drifted),
    /// Fields the server refuses to change in place.
    Immutable(Vec<String>),
}

/// The error of an object whose fields other managers hold, with their table.
pub fn refused(key: &ResourceKey, found: &[Conflict]) -> TargetError {
    TargetError::failed(format!(
        "{key} is managed in part by another field manager; nothing was changed:\n{}",
        conflicts::table(found).trim_end()
    ))
    .with_hint("run again with --force-conflicts to take these fields over (the other manager's values are replaced)")
}

impl KubernetesTarget<'_> {
    /// The API version to list `kind` with on this server (`None`: not served).
    pub(super) fn listed_version(&self, kind: &Kind) -> Option<String> {
        match kind.kind {
            "PodDisruptionBudget" => self.profile().pdb_api.clone(),
            _ if kind.group.is_empty() => Some(kind.version.to_string()),
            _ => Some(format!("{}/{}", kind.group, kind.version)),
        }
    }

    /// Every owned object, as JSON, with its kind.
    pub(super) async fn list_owned(&self) -> Result<Vec<(&'static Kind, Value)>, TargetError> {
        let selector = format!("{DEPLOYMENT}={}", self.fleet.name);
        let mut found = Vec::new();
        for kind in KINDS {
            if kind.kind == "Namespace" && !self.settings.create_namespace {
                continue;
            }
            let Some(version) = self.listed_version(kind) else { continue };
            let api = kinds::api(&self.cluster, kind, &version, self.namespace());
            let listed = api
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(|e| classify(&format!("cannot list {} in namespace {}", kind.plural, self.namespace()), &e))?;
            for object in listed.items {
                let mut value = serde_json::to_value(&object).unwrap_or(Value::Null);
                value["kind"] = Value::String(kind.kind.to_string());
                value["apiVersion"] = Value::String(version.clone());
                found.push((kind, value));
            }
        }
        Ok(found)
    }

    /// The observed resource of a live object.
    fn observed_of(&self, kind: &Kind, object: &Value) -> ObservedResource {
        let name = text(object, "/metadata/name").to_string();
        let agent = text(object, "/metadata/labels/rivetctl.io~1agent");
        let (component, stateful, _) = component_of(kind.kind, agent);
        let annotations = |key: &str| object["metadata"]["annotations"][key].as_str().map(str::to_string);
        let node = if kind.namespaced { self.namespace().to_string() } else { CLUSTER.to_string() };
        ObservedResource {
            key: ResourceKey { node, kind: kind.kind.to_string(), name },
            component,
            fields: annotations(RECORD).as_deref().and_then(decode_record),
            spec_hash: annotations(SPEC_HASH),
            state: state_of(kind.kind, object),
            id: text(object, "/metadata/uid").to_string(),
            stateful,
            immutable: Vec::new(),
        }
    }

    /// The server-side dry run of applying `resource`: what the object would become.
    async fn dry_run(&self, resource: &Resource<Value>) -> Result<Value, kube::Error> {
        let (api, body) = self.api_and_body(resource);
        let mut params = PatchParams::apply(FIELD_MANAGER).dry_run();
        params.force = self.options.force_conflicts;
        let patch = Patch::Apply(&body);
        let applied: DynamicObject = super::retried(|| api.patch(&resource.key.name, &params, &patch)).await?;
        Ok(serde_json::to_value(applied).unwrap_or(Value::Null))
    }

    /// Everything the deployment owns, with drift against the live objects folded into
    /// the recorded fields.
    pub(super) async fn observe_owned(&self) -> Result<Vec<ObservedResource>, TargetError> {
        self.refuse_unserved()?;
        let owned = self.list_owned().await?;
        let desired = self.desired();
        let by_key: std::collections::BTreeMap<&ResourceKey, &Resource<Value>> =
            desired.iter().map(|r| (&r.key, r)).collect();
        let mut observed: Vec<(ObservedResource, Option<Value>)> = Vec::new();
        for (kind, object) in owned {
            let mut found = self.observed_of(kind, &object);
            // A claim made from the datahub's claim template has no record of its own.
            if by_key
                .get(&found.key)
                .is_some_and(|r| r.payload.get(crate::render::kubernetes::MADE_BY_STATEFULSET).is_some())
            {
                found.fields = Some(Default::default());
            }
            observed.push((found, Some(object)));
        }
        // Every object that is desired and live is dry-run. One the plan would leave alone
        // (its record unchanged) shows its drift and conflicts from it; a changed one (an
        // update, which applies the whole object) is checked for fields the server refuses to
        // change in place (a Job's template, a ConfigMap made `immutable`): those make it a
        // replace, named by the server's field.
        let checks = observed.iter().enumerate().filter_map(|(i, (found, live))| {
            let resource = by_key.get(&found.key)?;
            let made_by_controller = resource.payload.get(crate::render::kubernetes::MADE_BY_STATEFULSET).is_some();
            let changed = found.fields.as_ref() != Some(&resource.fields);
            (!made_by_controller).then_some((i, *resource, live.as_ref()?, changed))
        });
        let digest = self.digest();
        let results: Vec<(usize, Result<Checked, TargetError>)> = futures_util::stream::iter(checks)
            .map(|(i, resource, live, changed)| {
                let digest = &digest;
                async move {
                    let result = match self.dry_run(resource).await {
                        Ok(_) if changed => Ok(Checked::Drifted(Vec::new())),
                        Ok(dry_run) => Ok(Checked::Drifted(diff::drifted(&resource.fields, &dry_run, live, digest))),
                        Err(kube::Error::Api(status)) if status.code == 422 && !diff::immutable(&status).is_empty() => {
                            Ok(Checked::Immutable(diff::immutable(&status)))
                        }
                        // A changed object's conflicts are met when it is applied.
                        Err(kube::Error::Api(status)) if status.code == 409 && changed => {
                            Ok(Checked::Drifted(Vec::new()))
                        }
                        Err(kube::Error::Api(status)) if status.code == 409 => {
                            let found = conflicts::from_status(&status, live);
                            if self.options.refuse_conflicts {
                                return (i, Err(refused(&resource.key, &found)));
                            }
                            Ok(Checked::Drifted(vec![(
                                CONFLICT_FIELD.to_string(),
                                Some(FieldValue::plain(Conflict::managers(&found))),
                            )]))
                        }
                        Err(err) => Err(classify(&format!("cannot dry-run {}", resource.key), &err)),
                    };
                    (i, result)
                }
            })
            .buffer_unordered(DRY_RUNS_AT_ONCE)
            .collect()
            .await;
        for (i, result) in results {
            let drifted = match result? {
                Checked::Immutable(fields) => {
                    observed[i].0.immutable = fields;
                    continue;
                }
                Checked::Drifted(drifted) => drifted,
            };
            if drifted.is_empty() {
                continue;
            }
            let fields = observed[i].0.fields.get_or_insert_default();
            for (field, live) in drifted {
                match live {
                    Some(value) => fields.insert(field.into(), value),
                    None => fields.remove(field.as_str()),
                };
            }
        }
        let mut observed: Vec<ObservedResource> = observed.into_iter().map(|(o, _)| o).collect();
        observed.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(observed)
    }

    /// Fails when the server serves no API version for an object the fleet needs, unless
    /// `--skip-unserved` left those objects out (then it warns).
    pub(super) fn refuse_unserved(&self) -> Result<(), TargetError> {
        let unserved = self.unserved();
        if unserved.is_empty() {
            return Ok(());
        }
        let names = unserved.join(", ");
        if self.options.skip_unserved {
            eprintln!(
                "warning: the server (v{}) serves no API version for {names}: left out (--skip-unserved)",
                self.served.git_version.trim_start_matches('v')
            );
            return Ok(());
        }
        Err(TargetError::failed(format!(
            "the server ({}) serves no API version for {names}; nothing was changed",
            self.served.git_version
        ))
        .with_hint("upgrade the cluster, or run with --skip-unserved to deploy without them"))
    }

    /// The kinds the fleet needs that no served version holds (`PodDisruptionBudget (policy/v1, policy/v1beta1)`).
    pub fn unserved(&self) -> Vec<String> {
        let mut unserved = Vec::new();
        if self.profile().pdb_api.is_none() && !self.fleet.agents.is_empty() {
            unserved.push(format!("{} PodDisruptionBudgets (policy/v1, policy/v1beta1)", self.fleet.agents.len()));
        }
        unserved
    }
}
