//! Property tests of the planner over generated configs and perturbed observed states:
//! applying a plan reaches the desired state, data is never deleted unasked, and planning
//! is deterministic.

mod support;

#[path = "support/generate.rs"]
mod generate;

use generate::{Shape, render, shape};
use orchestrator::docker;
use orchestrator::memory;
use orchestrator::plan::{self, Action, PlanOptions, RenderOptions, render_text};
use orchestrator::resource::{FieldValue, ObservedResource, ObservedState};
use proptest::prelude::*;
use support::fleet_with;

fn resources(shape: &Shape) -> Vec<docker::DockerResource> {
    let mut yaml = render(shape);
    if !shape.postgres {
        // Without a datahub, agents need a database URL from .env; the support .env has none,
        // so keep the datahub and vary everything else.
        yaml = yaml.replace("postgres: false", "postgres: true");
    }
    let hash = format!("{}", shape.hash).repeat(64);
    docker::resources(&fleet_with(&yaml, &hash))
}

/// Perturbs an observed state the way people and crashes do.
#[derive(Debug, Clone)]
enum Perturbation {
    Remove(usize),
    Stop(usize),
    EditField(usize),
    DropRecord(usize),
}

fn perturbation() -> impl Strategy<Value = Perturbation> {
    prop_oneof![
        any::<usize>().prop_map(Perturbation::Remove),
        any::<usize>().prop_map(Perturbation::Stop),
        any::<usize>().prop_map(Perturbation::EditField),
        any::<usize>().prop_map(Perturbation::DropRecord),
    ]
}

fn perturb(mut observed: Vec<ObservedResource>, changes: &[Perturbation]) -> Vec<ObservedResource> {
    for change in changes {
        if observed.is_empty() {
            break;
        }
        let len = observed.len();
        match change {
            Perturbation::Remove(i) => {
                observed.remove(i % len);
            }
            Perturbation::Stop(i) => observed[i % len].state = ObservedState::Stopped(Some(1)),
            Perturbation::EditField(i) => {
                if let Some(fields) = observed[i % len].fields.as_mut() {
                    fields.insert("image".into(), FieldValue::plain("edited:by-hand"));
                }
            }
            Perturbation::DropRecord(i) => observed[i % len].fields = None,
        }
    }
    observed
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn applying_a_plan_converges(
        before in shape(),
        after in shape(),
        changes in proptest::collection::vec(perturbation(), 0..4),
    ) {
        let old = resources(&before);
        let deployed = memory::apply(&plan::plan("d", "docker", old, &[], PlanOptions::default()), &[]);
        let observed = perturb(deployed, &changes);
        let desired = resources(&after);
        let options = PlanOptions { prune: true, delete_data: true, ..PlanOptions::default() };
        let first = plan::plan("d", "docker", desired.clone(), &observed, options);
        let reached = memory::apply(&first, &observed);
        let second = plan::plan("d", "docker", desired, &reached, options);
        prop_assert!(second.is_empty(), "not converged:\n{}", render_text(&second, RenderOptions::default()));
    }

    #[test]
    fn data_is_never_deleted_unless_asked(before in shape(), after in shape()) {
        let old = resources(&before);
        let deployed = memory::apply(&plan::plan("d", "docker", old, &[], PlanOptions::default()), &[]);
        let plan = plan::plan("d", "docker", resources(&after), &deployed, PlanOptions::default());
        for step in &plan.steps {
            prop_assert!(!(step.stateful && step.action == Action::Delete), "{} deleted", step.key);
        }
    }

    #[test]
    fn planning_is_deterministic(before in shape(), after in shape()) {
        let old = resources(&before);
        let deployed = memory::apply(&plan::plan("d", "docker", old, &[], PlanOptions::default()), &[]);
        let a = plan::plan("d", "docker", resources(&after), &deployed, PlanOptions::default());
        let b = plan::plan("d", "docker", resources(&after), &deployed, PlanOptions::default());
        prop_assert_eq!(render_text(&a, RenderOptions::default()), render_text(&b, RenderOptions::default()));
    }
}
