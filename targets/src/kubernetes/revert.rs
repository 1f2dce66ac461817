//! Putting back the datahub's StatefulSet after an update that never became ready.
//!
//! Before the update, what rivetctl applied of the StatefulSet is kept in the
//! `<prefix>-state-previous` ConfigMap (beside the agents' kept Deployments, so a resumed or
//! repeated run on another machine finds it). When the update fails its wait, the kept spec
//! is applied again; a StatefulSet does not heal by itself when its template is reverted
//! (a pod stuck on the broken revision is never replaced, the "forced rollback" of the
//! Kubernetes documentation), so every pod whose `controller-revision-hash` is not the
//! reverted revision is deleted, and the StatefulSet is waited for until it is ready again.

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use orchestrator::plan::Step;
use orchestrator::port::{Readiness, TargetError};
use orchestrator::resource::ResourceKey;
use serde_json::Value;

use super::{FIELD_MANAGER, KubernetesTarget, classify, diff, retried, wait};

/// The label the StatefulSet controller puts the revision of a pod in.
const REVISION: &str = "controller-revision-hash";

impl KubernetesTarget<'_> {
    fn statefulsets(&self) -> Api<StatefulSet> {
        Api::namespaced(self.cluster.call(), self.namespace())
    }

    /// Keeps what rivetctl applied of the StatefulSet `key` names before an update changes
    /// it, once: a repeated or resumed update keeps the spec from before the first.
    pub(super) async fn keep_before_update(&self, key: &ResourceKey) -> Result<(), TargetError> {
        if self.kept(&key.name).await?.is_some() {
            return Ok(());
        }
        let api = self.statefulsets();
        let live = retried(|| api.get_opt(&key.name)).await.map_err(|e| classify(&format!("cannot read {key}"), &e))?;
        let Some(live) = live.map(|set| serde_json::to_value(set).unwrap_or(Value::Null)) else { return Ok(()) };
        let Some(mut applied) = diff::extract_applied(&live, FIELD_MANAGER) else { return Ok(()) };
        diff::strip(&mut applied);
        self.keep(&key.name, Some(&applied)).await
    }

    /// The update of `key` is done (ready): the kept spec is not needed any more.
    pub(super) async fn forget_before_update(&self, key: &ResourceKey) -> Result<(), TargetError> {
        self.keep(&key.name, None).await
    }

    /// Applies the kept spec of the StatefulSet `step` updated, deletes its pods on any other
    /// revision, and waits until it is ready, within `deadline`. `None` when nothing was kept.
    pub(super) async fn revert_statefulset(
        &self,
        step: &Step<Value>,
        deadline: Duration,
    ) -> Result<Option<String>, TargetError> {
        let key = &step.key;
        let Some(previous) = self.kept(&key.name).await? else { return Ok(None) };
        // The kept spec is rivetctl's own: its fields are taken back even from a manager
        // that changed them since.
        let api = self.api_for(key, "apps/v1");
        let params = PatchParams { force: true, ..PatchParams::apply(FIELD_MANAGER) };
        let patch = Patch::Apply(&previous);
        retried(|| api.patch(&key.name, &params, &patch))
            .await
            .map_err(|e| classify(&format!("cannot put back the previous spec of {key}"), &e))?;
        let revision = tokio::time::timeout(deadline, self.reverted_revision(key)).await.map_err(|_| {
            TargetError::failed(format!("{key}: the controller did not take the previous spec in time"))
        })??;
        let deleted = self.delete_pods_off(key, &previous, &revision, step.grace_ms).await?;
        match wait::wait_step(self, step, deadline).await? {
            Readiness::Ready => {
                self.forget_before_update(key).await?;
                let pods = if deleted.is_empty() {
                    String::new()
                } else {
                    format!("; deleted {} stuck on the broken revision", deleted.join(", "))
                };
                Ok(Some(format!("{} is back on its previous spec{pods}", key.name)))
            }
            Readiness::Failed { reason, .. } => Err(TargetError::failed(format!(
                "{key} is back on its previous spec but did not become ready: {reason}"
            ))),
        }
    }

    /// The StatefulSet's update revision once its controller has seen the latest spec
    /// (watched, not polled).
    async fn reverted_revision(&self, key: &ResourceKey) -> Result<String, TargetError> {
        let seen = |set: Option<&StatefulSet>| {
            set.is_some_and(|set| {
                let generation = set.metadata.generation.unwrap_or(0);
                let status = set.status.as_ref();
                status.and_then(|s| s.observed_generation).unwrap_or(0) >= generation
                    && status.and_then(|s| s.update_revision.as_ref()).is_some()
            })
        };
        let set = kube::runtime::wait::await_condition(self.statefulsets(), &key.name, seen)
            .await
            .map_err(|err| TargetError::unreachable(format!("cannot watch {key}: {err}")))?;
        Ok(set.and_then(|s| s.status).and_then(|s| s.update_revision).unwrap_or_default())
    }

    /// Deletes the pods of the StatefulSet (`object`'s selector) whose revision is not
    /// `revision`; returns their names.
    async fn delete_pods_off(
        &self,
        key: &ResourceKey,
        object: &Value,
        revision: &str,
        grace_ms: u64,
    ) -> Result<Vec<String>, TargetError> {
        let pods: Api<Pod> = Api::namespaced(self.cluster.call(), self.namespace());
        let selector = wait::selector_of(object);
        let list = ListParams::default().labels(&selector);
        let listed =
            retried(|| pods.list(&list)).await.map_err(|e| classify(&format!("cannot list the pods of {key}"), &e))?;
        let params = DeleteParams {
            grace_period_seconds: Some(u32::try_from(grace_ms.div_ceil(1000)).unwrap_or(u32::MAX)),
            ..DeleteParams::default()
        };
        let mut deleted = Vec::new();
        for pod in listed {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let on = pod.metadata.labels.as_ref().and_then(|l| l.get(REVISION)).map(String::as_str);
            if on == Some(revision) {
                continue;
            }
            match pods.delete(&name, &params).await {
                Ok(_) => deleted.push(name),
                Err(err) if super::is_not_found(&err) => {}
                Err(err) => return Err(classify(&format!("cannot delete pod {name} of {key}"), &err)),
            }
        }
        Ok(deleted)
    }
}
