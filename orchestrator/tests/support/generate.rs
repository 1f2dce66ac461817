//! Generated `rivet.config.yaml` files for property tests (shared with the targets crate's
//! rendering properties through `#[path]`).

#![allow(dead_code)]

use proptest::prelude::*;

/// The parameters of a generated config.
#[derive(Debug, Clone)]
pub struct Shape {
    pub agents: Vec<String>,
    pub nodes: usize,
    pub postgres: bool,
    pub shared: bool,
    pub port: u16,
    pub version: u8,
    pub env: Vec<(String, String)>,
    pub memory_mb: u32,
    pub hash: u8,
}

pub fn shape() -> impl Strategy<Value = Shape> {
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
        .prop_map(|(agents, nodes, postgres, shared, port, version, env, memory_mb, hash)| Shape {
            agents: agents.into_iter().collect(),
            nodes,
            postgres,
            shared,
            port: if nodes > 1 && port == 0 { 5432 } else { port },
            version,
            env: env.into_iter().collect(),
            memory_mb,
            hash,
        })
}

pub fn render(shape: &Shape) -> String {
    let mut yaml = String::from("deployment:\n  target: docker\n");
    yaml.push_str(&format!(
        "  datahub: {{postgres: {}, shared_storage: {}, postgres_version: \"{}\"}}\n",
        shape.postgres, shape.shared, shape.version
    ));
    // Several nodes: agents elsewhere reach the datahub on n0's address, so it is published there.
    let bind = if shape.nodes > 1 { ", postgres_bind: 10.0.0.0" } else { "" };
    yaml.push_str(&format!("  docker: {{postgres_port: {}{bind}}}\n", shape.port));
    yaml.push_str(&format!("  resources: {{agent: {{memory: {}m}}}}\n", shape.memory_mb));
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
