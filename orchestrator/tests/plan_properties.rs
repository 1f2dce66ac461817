//! Property tests of the planner over generated configs and perturbed observed states:
//! applying a plan reaches the desired state, data is never deleted unasked, and planning
//! is deterministic.

mod support;

use orchestrator::docker;
use orchestrator::memory;
use orchestrator::plan::{self, Action, PlanOptions, RenderOptions, render_text};
use orchestrator::resource::{FieldValue, ObservedResource, ObservedState};
use proptest::prelude::*;
use support::fleet_with;

/// The parameters of a generated config.
#[derive(Debug, Clone)]
struct Shape {
    agents: Vec<String>,
    nodes: usize,
    postgres: bool,
    shared: bool,
    port: u16,
    version: u8,
    env: Vec<(String, String)>,
    memory_mb: u32,
    hash: u8,
}

fn shape() -> impl Strategy<Value = Shape> {
    (
        proptest::collection::btree_set("[a-z]{1,6}", 0..6),
        1usize..4,
        any::<bool>(),
        any::<bool>(),
        prop_oneof![Just(0u16), 1024u16..65535],
        15u8..18,
        proptest::collection::btree_map("[A-Z]{1,4}", "[a-z0-9]{0,5}", 0..3),
        prop_oneof![Just(512u32), Just(1024), Just(2048)],
        0u8..3,
    )
        .prop_map(
            |(agents, nodes, postgres, shared, port, version, env, memory_mb, hash)| Shape {
                agents: agents.into_iter().collect(),
                nodes,
                postgres,
                shared,
                port: if nodes > 1 && port == 0 { 5432 } else { port },
                version,
                env: env.into_iter().collect(),
                memory_mb,
                hash,
            },
        )
}

fn render(shape: &Shape) -> String {
    let mut yaml = String::from("deployment:\n  target: docker\n");
    yaml.push_str(&format!(
        "  datahub: {{postgres: {}, shared_storage: {}, postgres_version: \"{}\"}}\n",
        shape.postgres, shape.shared, shape.version
    ));
    yaml.push_str(&format!("  docker: {{postgres_port: {}}}\n", shape.port));
    yaml.push_str(&format!(
        "  resources: {{agent: {{memory: {}m}}}}\n",
        shape.memory_mb
    ));
    if !shape.env.is_empty() {
        yaml.push_str("  env:\n");
        for (k, v) in &shape.env {
            yaml.push_str(&format!("    {k}: \"{v}\"\n"));
        }
    }
    if shape.nodes > 1 {
        yaml.push_str("  nodes:\n");
        for n in 0..shape.nodes {
            let role = if n == 0 { "both" } else { "agents" };
            let mine: Vec<&str> = shape
                .agents
                .iter()
                .enumerate()
                .filter(|(i, _)| i % shape.nodes == n)
                .map(|(_, a)| a.as_str())
                .collect();
            yaml.push_str(&format!(
                "    - {{name: n{n}, role: {role}, host: \"ssh://u@10.0.0.{n}:22\", agents: [{}]}}\n",
                mine.join(", ")
            ));
        }
    }
    yaml.push_str("agents:\n");
    if shape.agents.is_empty() {
        yaml.push_str("  {}\n");
    }
    for agent in &shape.agents {
        yaml.push_str(&format!("  {agent}: {{provider: anthropic}}\n"));
    }
    yaml
}

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
        let deployed = memory::apply(&plan::plan("d", "docker", &old, &[], PlanOptions::default()), &[]);
        let observed = perturb(deployed, &changes);
        let desired = resources(&after);
        let options = PlanOptions { prune: true, delete_data: true };
        let first = plan::plan("d", "docker", &desired, &observed, options);
        let reached = memory::apply(&first, &observed);
        let second = plan::plan("d", "docker", &desired, &reached, options);
        prop_assert!(second.is_empty(), "not converged:\n{}", render_text(&second, RenderOptions::default()));
    }

    #[test]
    fn data_is_never_deleted_unless_asked(before in shape(), after in shape()) {
        let old = resources(&before);
        let deployed = memory::apply(&plan::plan("d", "docker", &old, &[], PlanOptions::default()), &[]);
        let plan = plan::plan("d", "docker", &resources(&after), &deployed, PlanOptions::default());
        for step in &plan.steps {
            prop_assert!(!(step.stateful && step.action == Action::Delete), "{} deleted", step.key);
        }
    }

    #[test]
    fn planning_is_deterministic(before in shape(), after in shape()) {
        let old = resources(&before);
        let deployed = memory::apply(&plan::plan("d", "docker", &old, &[], PlanOptions::default()), &[]);
        let a = plan::plan("d", "docker", &resources(&after), &deployed, PlanOptions::default());
        let b = plan::plan("d", "docker", &resources(&after), &deployed, PlanOptions::default());
        prop_assert_eq!(render_text(&a, RenderOptions::default()), render_text(&b, RenderOptions::default()));
    }
}
