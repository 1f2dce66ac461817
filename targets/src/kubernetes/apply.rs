//! Applying one plan step with server-side apply (field manager `rivetctl`): the object as
//! lowered, plus its ownership record and spec hash as annotations and its images pinned by
//! digest once pushed. Conflicts with other field managers are refused with a table unless
//! `--force-conflicts`. A replace deletes the object, waits until it is gone, and applies it
//! again (a Job's spec, a claim's storage class cannot change in place); a delete waits
//! until the object is gone, so a following create never meets it terminating.

use std::time::Duration;

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PropagationPolicy};
use orchestrator::fleet::Fleet;
use orchestrator::plan::{Action, Step};
use orchestrator::port::{Readiness, Target, TargetError};
use orchestrator::resource::{Component, FieldValue, ObservedResource, Resource, ResourceKey, encode_record};
use serde_json::Value;

use super::kinds::{self, KINDS};
use super::{FIELD_MANAGER, KubernetesTarget, RECORD, SPEC_HASH, classify, conflicts, is_not_found, wait};
use crate::render::kubernetes as manifests;

/// The containers of a pod template (or a pod) in an object, mutably.
fn containers_mut(object: &mut Value) -> Vec<&mut Value> {
    match object.pointer_mut("/spec/template/spec/containers").and_then(Value::as_array_mut) {
        Some(containers) => containers.iter_mut().collect(),
        None => Vec::new(),
    }
}

impl KubernetesTarget<'_> {
    /// Secret digests as the lowering makes them (HMAC with the deployment's key).
    pub(super) fn digest(&self) -> impl Fn(&str, &str) -> FieldValue + use<> {
        let key = self.render.digest_key.clone();
        let name = self.fleet.name.clone();
        move |field: &str, text: &str| match &key {
            Some(key) => FieldValue::keyed_secret(key, field, text),
            None => FieldValue::secret(&name, field, text),
        }
    }

    /// The API of a resource's kind and the body applying it sends.
    pub(super) fn api_and_body(&self, resource: &Resource<Value>) -> (Api<DynamicObject>, Value) {
        let mut body = resource.payload.clone();
        let annotations = &mut body["metadata"]["annotations"];
        if !annotations.is_object() {
            *annotations = Value::Object(serde_json::Map::new());
        }
        annotations[RECORD] = Value::String(encode_record(&resource.fields));
        annotations[SPEC_HASH] = Value::String(resource.spec_hash());
        for container in containers_mut(&mut body) {
            if let Some(pinned) = container["image"].as_str().and_then(|image| self.pinned(image)) {
                container["image"] = Value::String(pinned);
            }
        }
        (self.api_for(&resource.key, body["apiVersion"].as_str().unwrap_or("v1")), body)
    }

    /// The API of the object `key` names, at `api_version`.
    pub(super) fn api_for(&self, key: &ResourceKey, api_version: &str) -> Api<DynamicObject> {
        let kind = kinds::kind(&key.kind).unwrap_or(&KINDS[0]);
        kinds::api(&self.cluster, kind, api_version, self.namespace())
    }

    /// The API version objects of `kind` are read and deleted with here.
    fn version_of(&self, kind: &str) -> String {
        kinds::kind(kind).and_then(|k| self.listed_version(k)).unwrap_or_else(|| "v1".to_string())
    }

    /// Brings the ApplySet parent up to date before the first member is applied (and the
    /// namespace, when the deployment owns it, before that).
    async fn ensure_parent(&self) -> Result<(), TargetError> {
        self.parent_ready
            .get_or_try_init(|| async {
                if self.settings.create_namespace
                    && let Some(namespace) = self.desired().iter().find(|r| r.key.kind == "Namespace")
                {
                    self.server_side_apply(namespace).await?;
                }
                let mut group_kinds: Vec<String> =
                    self.desired().iter().filter_map(|r| kinds::kind(&r.key.kind)).map(kinds::group_kind).collect();
                group_kinds.sort();
                group_kinds.dedup();
                let key = self.render.digest_key.clone().unwrap_or_default();
                self.store.ensure_parent(&key, &group_kinds.join(",")).await?;
                if let (Some(name), Some(config)) = (&self.render.pull_secret, &self.pull_config) {
                    self.store.ensure_pull_secret(name, config).await?;
                }
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// Server-side apply of `resource`: conflicts refused with their table unless forced.
    pub(super) async fn server_side_apply(&self, resource: &Resource<Value>) -> Result<(), TargetError> {
        let (api, body) = self.api_and_body(resource);
        let mut params = PatchParams::apply(FIELD_MANAGER);
        params.force = self.options.force_conflicts;
        let patch = Patch::Apply(&body);
        match super::retried(|| api.patch(&resource.key.name, &params, &patch)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                let live = match api.get_opt(&resource.key.name).await {
                    Ok(Some(live)) => serde_json::to_value(live).unwrap_or(Value::Null),
                    _ => Value::Null,
                };
                Err(super::observe::refused(&resource.key, &conflicts::from_status(&status, &live)))
            }
            Err(err) => Err(classify(&format!("cannot apply {}", resource.key), &err)),
        }
    }

    /// Deletes the object `key` names (its pods and other dependents in the background)
    /// and waits until it is gone, within `deadline`.
    pub(super) async fn delete_and_wait(
        &self,
        key: &ResourceKey,
        grace_ms: u64,
        deadline: Duration,
    ) -> Result<(), TargetError> {
        let api = self.api_for(key, &self.version_of(&key.kind));
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            grace_period_seconds: Some(u32::try_from(grace_ms.div_ceil(1000)).unwrap_or(u32::MAX)),
            ..DeleteParams::default()
        };
        let uid = match api.delete(&key.name, &params).await {
            Ok(either) => either.left().and_then(|object| object.metadata.uid),
            Err(err) if is_not_found(&err) => return Ok(()),
            Err(err) => return Err(classify(&format!("cannot delete {key}"), &err)),
        };
        // Deleted at once (a Status came back), or watched until its uid is gone.
        let Some(uid) = uid else { return Ok(()) };
        let gone = async {
            match kube::runtime::wait::await_condition(
                api.clone(),
                &key.name,
                kube::runtime::conditions::is_deleted(&uid),
            )
            .await
            {
                Ok(_) => Ok(()),
                Err(err) => Err(TargetError::unreachable(format!("cannot watch {key} go: {err}"))),
            }
        };
        match tokio::time::timeout(deadline, gone).await {
            Ok(result) => result,
            Err(_) => Err(TargetError::failed(format!(
                "{key} was deleted but is still there after {} s (finalizers or pods still terminating)",
                deadline.as_secs()
            ))
            .with_hint(format!(
                "`kubectl -n {} describe {} {}` shows what holds it",
                self.namespace(),
                key.kind.to_lowercase(),
                key.name
            ))),
        }
    }
}

/// An update of the datahub's StatefulSet: what is kept before, and put back when it fails.
fn is_datahub_update(step: &Step<Value>) -> bool {
    step.action == Action::Update && step.key.kind == "StatefulSet" && step.component == Component::Datahub
}

impl Target for KubernetesTarget<'_> {
    type Payload = Value;

    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    fn lower(&self, fleet: &Fleet) -> Vec<Resource<Value>> {
        if std::ptr::eq(fleet, self.fleet) { self.desired().to_vec() } else { self.lowered(fleet) }
    }

    async fn observe(&self) -> Result<Vec<ObservedResource>, TargetError> {
        self.resolve_pins().await;
        self.observe_owned().await
    }

    async fn apply(&self, step: &Step<Value>) -> Result<(), TargetError> {
        let deadline = Duration::from_millis(step.deadline_ms);
        if step.action == Action::Delete {
            return self.delete_and_wait(&step.key, step.grace_ms, deadline).await;
        }
        self.refuse_unserved()?;
        let resource = step.desired.as_ref().expect("non-delete steps carry the desired resource");
        if resource.payload.get(manifests::MADE_BY_STATEFULSET).is_some() {
            // The StatefulSet's controller makes it from the claim template.
            return Ok(());
        }
        if resource.key.kind != "Namespace" {
            self.ensure_parent().await?;
        }
        if step.action == Action::Replace {
            self.delete_and_wait(&step.key, step.grace_ms, deadline).await?;
        }
        if is_datahub_update(step) {
            self.keep_before_update(&step.key).await?;
        }
        self.server_side_apply(resource).await
    }

    async fn wait(&self, step: &Step<Value>, deadline: Duration) -> Result<Readiness, TargetError> {
        let readiness = wait::wait_step(self, step, deadline).await?;
        if readiness == Readiness::Ready && is_datahub_update(step) {
            self.forget_before_update(&step.key).await?;
        }
        Ok(readiness)
    }

    async fn revert(&self, step: &Step<Value>) -> Result<Option<String>, TargetError> {
        if !is_datahub_update(step) {
            return Ok(None);
        }
        self.revert_statefulset(step, Duration::from_millis(step.deadline_ms)).await
    }

    async fn discard(&self, step: &Step<Value>) -> Result<(), TargetError> {
        self.delete_and_wait(&step.key, 0, Duration::from_millis(step.deadline_ms)).await
    }

    fn calls(&self) -> usize {
        self.cluster.calls()
    }
}
