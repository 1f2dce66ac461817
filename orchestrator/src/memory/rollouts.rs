//! The in-memory target's [`Rollouts`] half: the rollout operations on one unit, carried
//! out on the unit's instances (serving, kept previous, prepared next) the way a real
//! target does, with every mistake a driver could make left visible (a start next to a
//! running instance leaves both running, and the figures show it).

use std::time::Duration;

use super::apply::observed_as_desired;
use super::state::{Instance, Op, Role, State, UnitState, image_of};
use super::target::{MemoryTarget, broken_exit, broken_logs, exit_broken};
use crate::gate::{EngineReport, ProbeReport};
use crate::port::{Current, Rollouts, TargetError, Unit};
use crate::resource::{FieldValue, ObservedResource, ObservedState, Resource};

/// The image the unit's desired object runs.
fn desired_image<P>(unit: &Unit<P>) -> String {
    image_of(&unit.desired.fields)
}

/// An instance of `resource` (stopped), optionally on another image.
fn instance_of<P>(resource: &Resource<P>, role: Role, image: Option<&str>) -> Instance {
    let mut record = observed_as_desired(resource);
    if let (Some(image), Some(fields)) = (image, record.fields.as_mut()) {
        fields.insert("image".into(), FieldValue::plain(image));
        record.spec_hash = Some(crate::resource::spec_hash(fields));
    }
    let image = image.map_or_else(|| image_of(&resource.fields), str::to_string);
    Instance { role, image, running: false, record }
}

/// The unit's state, created (with no instance) when the target has none yet. The unit
/// says which agents it serves (an applied object only names one).
fn unit_state<'a, P>(state: &'a mut State, unit: &Unit<P>) -> &'a mut UnitState {
    let found = state
        .units
        .entry(unit.desired.key.clone())
        .or_insert_with(|| UnitState { agents: Vec::new(), instances: Vec::new() });
    found.agents.clone_from(&unit.agents);
    found
}

/// Makes the serving instance give way to a new one: a running one stays running as a
/// stray (two instances run: the figures show it), a stopped one becomes the kept previous
/// one if there is none, else is removed.
fn displace_serving(unit: &mut UnitState) {
    let kept = unit.find(Role::Kept).is_some();
    let Some(index) = unit.find(Role::Serving) else { return };
    if unit.instances[index].running {
        unit.instances[index].role = Role::Stray;
    } else if !kept {
        unit.instances[index].role = Role::Kept;
    } else {
        unit.instances.remove(index);
    }
}

/// Records `instance` as the unit's object, in `state`.
fn show(state: &mut State, instance: &Instance, observed: ObservedState) {
    let record = ObservedResource { state: observed, ..instance.record.clone() };
    state.objects.insert(record.key.clone(), record);
}

impl<P: Clone> Rollouts for MemoryTarget<P> {
    fn units(&self, desired: &[std::sync::Arc<Resource<P>>]) -> Vec<Unit<P>> {
        desired
            .iter()
            .filter_map(|resource| match &resource.component {
                crate::resource::Component::Agent(id) => Some(Unit {
                    node: resource.key.node.clone(),
                    agents: vec![id.clone()],
                    desired: std::sync::Arc::clone(resource),
                }),
                _ => None,
            })
            .collect()
    }

    fn with_image(&self, resource: &Resource<P>, image: &str) -> Resource<P> {
        // The in-memory target reads an object's image from its `image` field.
        let mut copy = resource.clone();
        copy.fields.insert("image".into(), FieldValue::plain(image));
        copy
    }

    async fn current(&self, unit: &Unit<P>) -> Result<Option<Current>, TargetError> {
        let mut state = self.lock();
        state.reach(&unit.node)?;
        let Some(found) = state.units.get(&unit.desired.key) else { return Ok(None) };
        let instance = found.get(Role::Serving).or_else(|| found.get(Role::Kept));
        Ok(instance.map(|i| Current {
            image: i.image.clone(),
            spec_hash: i.record.spec_hash.clone(),
            revision: i.record.fields.as_ref().and_then(|f| f.get("revision")).map(|v| v.text.to_string()),
            running: i.running,
        }))
    }

    async fn version(&self, _node: &str, image: &str) -> Option<String> {
        self.lock().versions.get(image).cloned()
    }

    async fn stop_old(&self, unit: &Unit<P>, grace: Duration) -> Result<(), TargetError> {
        let mut state = self.lock();
        state.reach(&unit.node)?;
        state.record(&unit.desired.key, Op::StopOld { grace_ms: grace.as_millis() as u64 });
        let new_image = desired_image(unit);
        let found = unit_state(&mut state, unit);
        let kept = found.find(Role::Kept).is_some();
        if let Some(index) = found.find(Role::Serving) {
            found.instances[index].running = false;
            if !kept {
                found.instances[index].role = Role::Kept;
            } else if found.instances[index].image == new_image {
                // A leftover new instance of an interrupted rollout: the kept one is the old.
                found.instances.remove(index);
            } else {
                found.take(Role::Kept);
                let serving = found.find(Role::Serving).expect("the serving instance is still there");
                found.instances[serving].role = Role::Kept;
            }
        }
        if found.find(Role::Prepared).is_none() {
            found.instances.push(instance_of(&unit.desired, Role::Prepared, None));
        }
        if let Some(kept) = found.get(Role::Kept).cloned() {
            show(&mut state, &kept, ObservedState::Stopped(Some(0)));
        }
        state.measure();
        Ok(())
    }

    async fn stop_new(&self, unit: &Unit<P>, grace: Duration) -> Result<(), TargetError> {
        let mut state = self.lock();
        state.reach(&unit.node)?;
        state.record(&unit.desired.key, Op::StopNew { grace_ms: grace.as_millis() as u64 });
        let new_image = desired_image(unit);
        let found = unit_state(&mut state, unit);
        found.instances.retain(|i| i.role != Role::Stray);
        let kept = found.find(Role::Kept).is_some();
        if let Some(index) = found.find(Role::Serving) {
            if kept || found.instances[index].image == new_image {
                found.instances.remove(index);
            } else {
                // The only copy of the previous revision: stopped and kept, never removed.
                found.instances[index].running = false;
                found.instances[index].role = Role::Kept;
            }
        }
        match found.get(Role::Kept).cloned() {
            Some(kept) => show(&mut state, &kept, ObservedState::Stopped(Some(0))),
            None => {
                state.objects.remove(&unit.desired.key);
            }
        }
        state.measure();
        Ok(())
    }

    async fn start_new(&self, unit: &Unit<P>) -> Result<(), TargetError> {
        let mut state = self.lock();
        state.reach(&unit.node)?;
        let new_image = desired_image(unit);
        state.record(&unit.desired.key, Op::StartNew { image: new_image.clone() });
        let found = unit_state(&mut state, unit);
        let serving = found.get(Role::Serving);
        if serving.is_some_and(|s| s.running && s.image == new_image) {
            return Ok(());
        }
        displace_serving(found);
        let mut next = found.take(Role::Prepared).unwrap_or_else(|| instance_of(&unit.desired, Role::Serving, None));
        next.role = Role::Serving;
        next.running = true;
        found.instances.push(next.clone());
        show(&mut state, &next, ObservedState::Running);
        state.measure();
        Ok(())
    }

    async fn start_previous(&self, unit: &Unit<P>, image: &str) -> Result<(), TargetError> {
        let mut state = self.lock();
        state.reach(&unit.node)?;
        state.record(&unit.desired.key, Op::StartPrevious { image: image.to_string() });
        let found = unit_state(&mut state, unit);
        if found.get(Role::Serving).is_some_and(|s| s.running && s.image == image) {
            return Ok(());
        }
        // The new instance should be gone; a stopped leftover of it is removed.
        if found.get(Role::Serving).is_some_and(|s| !s.running) {
            found.take(Role::Serving);
        }
        displace_serving(found);
        let mut previous = match found.take(Role::Kept) {
            Some(kept) if kept.image == image => kept,
            _ => instance_of(&unit.desired, Role::Serving, Some(image)),
        };
        previous.role = Role::Serving;
        previous.running = true;
        found.instances.push(previous.clone());
        show(&mut state, &previous, ObservedState::Running);
        state.measure();
        Ok(())
    }

    async fn probe(&self, unit: &Unit<P>) -> Result<ProbeReport, TargetError> {
        let mut state = self.lock();
        state.reach(&unit.node)?;
        let key = unit.desired.key.clone();
        let serving = state.units.get(&key).and_then(|u| u.get(Role::Serving)).cloned();
        let report = match serving {
            Some(instance) if instance.running && state.broken.contains(&instance.image) => {
                exit_broken(&mut state, &key);
                ProbeReport {
                    running: false,
                    engine: EngineReport { exit: Some(broken_exit()), ..EngineReport::default() },
                    logs: broken_logs(&instance.image),
                    ..ProbeReport::default()
                }
            }
            Some(instance) if instance.running => {
                ProbeReport::healthy(state.versions.get(&instance.image).map(String::as_str))
            }
            _ => ProbeReport::default(),
        };
        state.record(&key, Op::Probe { healthy: report.running });
        state.measure();
        Ok(report)
    }

    async fn settle(&self, unit: &Unit<P>, done: bool) -> Result<(), TargetError> {
        let mut state = self.lock();
        state.reach(&unit.node)?;
        state.record(&unit.desired.key, Op::Settle { done });
        if let Some(found) = state.units.get_mut(&unit.desired.key) {
            found.instances.retain(|i| match i.role {
                Role::Serving => true,
                Role::Kept => !done,
                Role::Prepared | Role::Stray => false,
            });
        }
        state.measure();
        Ok(())
    }
}
