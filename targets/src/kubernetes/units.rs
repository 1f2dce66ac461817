//! The rollout operations on one agent: its Deployment (one replica, `strategy: Recreate`),
//! so `update` and `infra up` replace agents through the same rollout engine as on the
//! other targets (canary, `max_parallel` Deployments at once, the health gate, rollback).
//!
//! - `stop_old` keeps the live Deployment as it is (without the server's fields) in the
//!   ConfigMap `<prefix>-state-previous`, then scales it to 0 and waits until its pods are
//!   gone (SIGTERM and the grace period, as the kubelet does);
//! - `start_new` applies the new revision's Deployment (one replica);
//! - `start_previous` applies exactly the kept Deployment again (or, when none was kept,
//!   the desired one on the previous image);
//! - `probe` reads the pod's container state and asks `/health/live` and `/health` through
//!   the API server's pod proxy (`pods/proxy`: the sensitive permission docs/kubernetes.md
//!   names);
//! - `settle` drops the kept Deployment once the rollout is done.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use orchestrator::gate::{EngineHealth, EngineReport, Exit, ProbeReport};
use orchestrator::port::{Current, Rollouts, TargetError, Unit};
use orchestrator::resource::{FieldValue, Resource};
use serde_json::{Value, json};

use super::wait::{pod_failure, selector_of};
use super::{FIELD_MANAGER, KubernetesTarget, SPEC_HASH, STATE_OF, classify, diff};

/// How long past the grace period the old pods may take to go.
const STOP_MARGIN: Duration = Duration::from_secs(30);

fn unit_name(unit: &Unit<Value>) -> &str {
    &unit.desired.key.name
}

impl KubernetesTarget<'_> {
    fn previous_map(&self) -> String {
        format!("{}-state-previous", crate::render::kubernetes::object_prefix(self.settings))
    }

    fn config_maps(&self) -> Api<ConfigMap> {
        Api::namespaced(self.cluster.call(), self.namespace())
    }

    /// The kept previous Deployment of `name`, if any.
    pub(super) async fn kept(&self, name: &str) -> Result<Option<Value>, TargetError> {
        match self.config_maps().get_opt(&self.previous_map()).await {
            Ok(map) => Ok(map
                .and_then(|m| m.data)
                .and_then(|d| d.get(name).cloned())
                .and_then(|t| serde_json::from_str(&t).ok())),
            Err(err) => Err(classify("cannot read the kept Deployments", &err)),
        }
    }

    /// Keeps (`Some`) or drops (`None`) the previous Deployment of `name`.
    pub(super) async fn keep(&self, name: &str, object: Option<&Value>) -> Result<(), TargetError> {
        for _ in 0..8 {
            let found = self
                .config_maps()
                .get_opt(&self.previous_map())
                .await
                .map_err(|e| classify("cannot read the kept Deployments", &e))?;
            let mut map = found.clone().unwrap_or_else(|| ConfigMap {
                metadata: kube::api::ObjectMeta {
                    name: Some(self.previous_map()),
                    labels: Some(BTreeMap::from([(STATE_OF.to_string(), self.fleet.name.clone())])),
                    ..Default::default()
                },
                ..ConfigMap::default()
            });
            let data = map.data.get_or_insert_default();
            match object {
                Some(object) => data.insert(name.to_string(), object.to_string()),
                None if found.is_none() => return Ok(()),
                None => data.remove(name),
            };
            let result = match found {
                None => self.config_maps().create(&PostParams::default(), &map).await.map(|_| ()),
                Some(_) => {
                    self.config_maps().replace(&self.previous_map(), &PostParams::default(), &map).await.map(|_| ())
                }
            };
            match result {
                Ok(()) => return Ok(()),
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(err) => return Err(classify("cannot keep the previous Deployment", &err)),
            }
        }
        Err(TargetError::failed("cannot keep the previous Deployment: the ConfigMap kept changing"))
    }

    /// The live Deployment of a unit, as JSON.
    async fn live(&self, unit: &Unit<Value>) -> Result<Option<Value>, TargetError> {
        let api = self.api_for(&unit.desired.key, "apps/v1");
        match super::retried(|| api.get_opt(unit_name(unit))).await {
            Ok(found) => Ok(found.map(|d| serde_json::to_value(d).unwrap_or(Value::Null))),
            Err(err) => Err(classify(&format!("cannot read {}", unit.desired.key), &err)),
        }
    }

    /// Applies `object` (a Deployment as JSON) with `replicas`; `force`: take fields other
    /// managers hold (a revision rivetctl applied before, put back), else only with
    /// `--force-conflicts` (observing refused conflicts already).
    async fn apply_object(
        &self,
        unit: &Unit<Value>,
        mut object: Value,
        replicas: i64,
        force: bool,
    ) -> Result<(), TargetError> {
        object["spec"]["replicas"] = json!(replicas);
        let api = self.api_for(&unit.desired.key, "apps/v1");
        let mut params = PatchParams::apply(FIELD_MANAGER);
        params.force = force || self.options.force_conflicts;
        let patch = Patch::Apply(&object);
        match super::retried(|| api.patch(unit_name(unit), &params, &patch)).await {
            Ok(_) => Ok(()),
            Err(err) => Err(classify(&format!("cannot apply {}", unit.desired.key), &err)),
        }
    }

    /// Waits until no pod of the unit is left, within `deadline`.
    async fn pods_gone(&self, unit: &Unit<Value>, deadline: Duration) -> Result<(), TargetError> {
        let pods: Api<Pod> = Api::namespaced(self.cluster.call(), self.namespace());
        let selector = selector_of(&unit.desired.payload);
        let gone = async {
            use futures_util::StreamExt;
            let config = kube::runtime::watcher::Config::default().labels(&selector);
            let mut events = kube::runtime::watcher(pods.clone(), config).boxed();
            let mut present: BTreeMap<String, ()> = BTreeMap::new();
            let mut listed = false;
            while let Some(event) = events.next().await {
                use kube::runtime::watcher::Event;
                match event {
                    Ok(Event::Init) => {
                        present.clear();
                        listed = false;
                    }
                    Ok(Event::InitApply(pod)) | Ok(Event::Apply(pod)) => {
                        present.insert(pod.metadata.name.unwrap_or_default(), ());
                    }
                    Ok(Event::Delete(pod)) => {
                        present.remove(&pod.metadata.name.unwrap_or_default());
                    }
                    Ok(Event::InitDone) => listed = true,
                    Err(_) => continue,
                }
                if listed && present.is_empty() {
                    return Ok(());
                }
            }
            Err(TargetError::unreachable("the watch of the agent's pods ended"))
        };
        match tokio::time::timeout(deadline, gone).await {
            Ok(result) => result,
            Err(_) => Err(TargetError::failed(format!(
                "the pods of {} did not stop within {} s",
                unit.desired.key,
                deadline.as_secs()
            ))),
        }
    }

    /// One probe of an agent's pod: its container state, then `/health/live` and
    /// `/health` through the pod proxy.
    pub(super) async fn probe_agent(&self, agent: &str) -> Result<ProbeReport, TargetError> {
        let pods: Api<Pod> = Api::namespaced(self.cluster.call(), self.namespace());
        let selector = format!("rivetctl.io/agent={agent},{}={}", super::DEPLOYMENT, self.fleet.name);
        let params = ListParams::default().labels(&selector);
        let listed =
            super::retried(|| pods.list(&params)).await.map_err(|e| classify("cannot list the agent's pods", &e))?;
        let Some(pod) = listed
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .max_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0))
        else {
            return Ok(ProbeReport::default());
        };
        let name = pod.metadata.name.clone().unwrap_or_default();
        let container =
            pod.status.as_ref().and_then(|s| s.container_statuses.as_ref()).and_then(|c| c.first().cloned());
        let mut report = ProbeReport::default();
        if let Some(container) = &container {
            report.running = container.state.as_ref().is_some_and(|s| s.running.is_some());
            report.engine = EngineReport {
                restarts: u32::try_from(container.restart_count).unwrap_or(0),
                restarting: false,
                exit: container.state.as_ref().and_then(|s| s.terminated.as_ref()).map(|t| Exit {
                    code: i64::from(t.exit_code),
                    oom_killed: t.reason.as_deref() == Some("OOMKilled"),
                }),
                health: pod_failure(&pod, true).map(|output| EngineHealth::Unhealthy { output }),
            };
        }
        if report.engine.health.is_some() || report.engine.exit.is_some() {
            report.logs = self.pod_logs(&name).await;
            return Ok(report);
        }
        if !report.running {
            return Ok(report);
        }
        let port = self.fleet.health.port;
        let timeout = Duration::from_millis(self.fleet.update.probe_timeout);
        let get = |path: &str| {
            let uri = format!("/api/v1/namespaces/{}/pods/{name}:{port}/proxy{path}", self.namespace());
            let request = http::Request::get(uri).body(Vec::new()).expect("a valid request");
            let client = self.cluster.call();
            async move { tokio::time::timeout(timeout, client.request_text(request)).await }
        };
        report.live = matches!(get(&self.fleet.health.live_path).await, Ok(Ok(_)));
        if let Ok(Ok(text)) = get(&self.fleet.health.path).await
            && let Ok(health) = serde_json::from_str::<Value>(&text)
        {
            report.status = health["status"].as_str().map(str::to_string);
            report.version = health["version"].as_str().map(str::to_string);
        }
        Ok(report)
    }
}

impl Rollouts for KubernetesTarget<'_> {
    fn units(&self, desired: &[Arc<Resource<Value>>]) -> Vec<Unit<Value>> {
        Unit::per_agent(desired, |r| r.key.kind == "Deployment")
    }

    fn with_image(&self, resource: &Resource<Value>, image: &str) -> Resource<Value> {
        let mut copy = resource.clone();
        copy.payload["spec"]["template"]["spec"]["containers"][0]["image"] = Value::String(image.to_string());
        let field = "spec.template.spec.containers[0].image";
        copy.fields.insert(field.into(), FieldValue::plain(image));
        copy.fields.insert("image".into(), FieldValue::plain(image));
        copy
    }

    async fn current(&self, unit: &Unit<Value>) -> Result<Option<Current>, TargetError> {
        let Some(live) = self.live(unit).await? else { return Ok(None) };
        let image = live.pointer("/spec/template/spec/containers/0/image").and_then(Value::as_str).unwrap_or_default();
        // A pinned reference names the local image it was pushed from: `repo:tag@sha256:…`.
        let image = self.local_of(image);
        let annotations = &live["metadata"]["annotations"];
        Ok(Some(Current {
            image,
            spec_hash: annotations[SPEC_HASH].as_str().map(str::to_string),
            revision: annotations["rivetctl.io/revision"].as_str().map(str::to_string),
            running: live.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1) > 0
                && live.pointer("/status/availableReplicas").and_then(Value::as_i64).unwrap_or(0) > 0,
        }))
    }

    async fn version(&self, _node: &str, image: &str) -> Option<String> {
        crate::docker::gate::image_version(self.engine().await.ok()?, image).await
    }

    async fn stop_old(&self, unit: &Unit<Value>, grace: Duration) -> Result<(), TargetError> {
        if let Some(live) = self.live(unit).await? {
            // Kept once: a repeated stop (a resumed rollout) must not keep the scaled-down copy.
            let kept = match self.kept(unit_name(unit)).await? {
                Some(kept) => kept,
                None => {
                    // What rivetctl applied of it, not the fields controllers or others set.
                    let mut applied = diff::extract_applied(&live, FIELD_MANAGER).unwrap_or(live);
                    diff::strip(&mut applied);
                    self.keep(unit_name(unit), Some(&applied)).await?;
                    applied
                }
            };
            self.apply_object(unit, kept, 0, true).await?;
        }
        self.pods_gone(unit, grace + STOP_MARGIN).await
    }

    async fn stop_new(&self, unit: &Unit<Value>, grace: Duration) -> Result<(), TargetError> {
        let (_, body) = self.api_and_body(&unit.desired);
        self.apply_object(unit, body, 0, true).await?;
        self.pods_gone(unit, grace + STOP_MARGIN).await
    }

    async fn start_new(&self, unit: &Unit<Value>) -> Result<(), TargetError> {
        let (_, body) = self.api_and_body(&unit.desired);
        self.apply_object(unit, body, 1, false).await
    }

    async fn start_previous(&self, unit: &Unit<Value>, image: &str) -> Result<(), TargetError> {
        let object = match self.kept(unit_name(unit)).await? {
            Some(kept) => kept,
            None => self.api_and_body(&self.with_image(&unit.desired, image)).1,
        };
        self.apply_object(unit, object, 1, true).await
    }

    async fn probe(&self, unit: &Unit<Value>) -> Result<ProbeReport, TargetError> {
        let agent = unit.agents.first().map(String::as_str).unwrap_or_default();
        match self.probe_agent(agent).await {
            Ok(report) => Ok(report),
            Err(error) if error.is_unreachable() => Err(error),
            Err(_) => Ok(ProbeReport::default()),
        }
    }

    async fn settle(&self, unit: &Unit<Value>, done: bool) -> Result<(), TargetError> {
        if done {
            self.keep(unit_name(unit), None).await?;
        }
        Ok(())
    }
}
