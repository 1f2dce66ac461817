use super::*;

fn vars() -> Variables {
    let mut vars = Variables::default();
    vars.dotenv.insert("POSTGRES_PASSWORD".into(), "pw".into());
    vars.dotenv.insert("PVE_TOKEN_SECRET".into(), "s3cret".into());
    vars.environment.insert("PG_PORT".into(), "6543".into());
    vars
}

/// Loads `source` and returns each diagnostic as `line:col severity: message`.
fn diagnostics(source: &str) -> Vec<String> {
    let list = match load(source, &vars()) {
        Ok(loaded) => loaded.warnings,
        Err(all) => all,
    };
    list.iter()
        .map(|d| {
            let pos = d.pos.map_or("-".to_string(), |p| format!("{}:{}", p.line, p.col));
            let sev = if d.is_error() { "error" } else { "warning" };
            format!("{pos} {sev}: {}", d.message)
        })
        .collect()
}

fn check(source: &str, expect: &[&str]) {
    assert_eq!(diagnostics(source), expect, "source:\n{source}");
}

const UPSTREAM: &str = r#"
deployment:
  target: docker
  datahub:
    postgres: true
    postgres_version: 16
  image:
    build_from_source: false
  docker:
    network: rivetos-net
    postgres_port: ${PG_PORT}
agents:
  opus: { provider: anthropic, model: claude-opus-4 }
  grok: { provider: xai, default_thinking: high, tools: [shell, web] }
mesh:
  enabled: true
  advertise_host: 10.0.0.5
  discovery: { mode: seed, seed_host: 10.0.0.1 }
runtime:
  log_level: info
providers:
  anthropic: { api_key: "${ANTHROPIC_API_KEY}" }
"#;

#[test]
fn upstream_config_loads_unchanged_with_defaults() {
    let loaded = load(UPSTREAM, &vars()).expect("valid");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let d = &loaded.config.raw.deployment;
    assert_eq!(d.target, Target::Docker);
    assert_eq!(d.datahub.postgres_version, "16");
    assert_eq!(d.datahub.shared_mount_path, "/rivet-shared");
    assert_eq!(d.docker.postgres_port, 6543);
    assert_eq!(d.docker.project_name, "rivetos");
    assert_eq!(d.image.registry, "ghcr.io/philbert440");
    assert_eq!(d.kubernetes.namespace, "rivetos");
    assert_eq!(d.health.port, 3100);
    assert_eq!(d.update.stop_grace_period, 30_000);
    assert_eq!(loaded.config.name, "rivetos");
    let mesh = loaded.config.raw.mesh.as_ref().unwrap();
    assert_eq!(mesh.agent_channel_port, 3000);
    assert_eq!(mesh.discovery.seed_port, 3100);
    assert_eq!(loaded.config.raw.agents.len(), 2);
}

#[test]
fn runtime_sections_are_kept_and_hashed() {
    let a = load(UPSTREAM, &vars()).unwrap();
    let b = load(&UPSTREAM.replace("log_level: info", "log_level: debug"), &vars()).unwrap();
    let c = load(&UPSTREAM.replace("network: rivetos-net", "network: other-net"), &vars()).unwrap();
    let d = load(&UPSTREAM.replace("provider: xai", "provider: openai"), &vars()).unwrap();
    assert_ne!(a.config.shared_digest, b.config.shared_digest, "runtime changes reach agents");
    assert_eq!(a.config.shared_digest, c.config.shared_digest, "deployment changes are not runtime changes");
    assert_eq!(a.config.agent_digests, c.config.agent_digests);
    assert_eq!(a.config.shared_digest, d.config.shared_digest, "an agent's entry is its own");
    assert_eq!(a.config.agent_digests["opus"], d.config.agent_digests["opus"]);
    assert_ne!(a.config.agent_digests["grok"], d.config.agent_digests["grok"]);
}

#[test]
fn upstream_messages_keep_their_wording() {
    check(
        "deployment: {}\n",
        &[
            "1:13 error: Missing required field \"deployment.target\" — must be one of: docker, proxmox, kubernetes, manual",
        ],
    );
    check(
        "deployment:\n  target: nomad\n",
        &["2:11 error: Invalid deployment target \"nomad\" — must be one of: docker, proxmox, kubernetes, manual"],
    );
    check(
        "deployment:\n  target: docker\n  datahub: yes\n",
        &["3:12 error: \"deployment.datahub\" must be an object (found a string)"],
    );
    check(
        "deployment:\n  target: docker\n  image: {build_from_source: \"true\"}\n",
        &["3:30 error: \"build_from_source\" must be a boolean"],
    );
    check(
        "deployment:\n  target: docker\n  docker: {postgres_port: 70000}\n",
        &["3:27 error: \"postgres_port\" must be a number between 0 and 65535 (found \"70000\")"],
    );
    check(
        "deployment:\n  target: proxmox\n  proxmox:\n    api_url: https://pve:8006/api2/json\n    nodes: [{role: both}, {name: b, role: master}]\n",
        &["5:13 error: Node requires a string \"name\"", "5:43 error: Node role must be one of: datahub, agents, both"],
    );
}

#[test]
fn a_project_name_alone_is_not_docker_settings() {
    // `docker.project_name` names the objects of every target (docs/kubernetes.md).
    check("deployment:\n  target: kubernetes\n  docker: {project_name: prod}\n", &[]);
}

#[test]
fn upstream_warnings_keep_their_wording() {
    check(
        "deployment:\n  target: kubernetes\n  docker: {network: n}\n  colour: red\n",
        &[
            "3:3 warning: \"deployment.docker\" is configured but target is \"kubernetes\" — Docker settings will be ignored",
            "4:3 warning: Unknown deployment key \"colour\"",
        ],
    );
    check(
        "deployment:\n  target: proxmox\n  proxmox:\n    api_url: https://pve:8006/api2/json\n    nodes: [{name: a, role: agents}]\n",
        &["5:12 warning: No node has role \"datahub\" or \"both\" — at least one node should run the datahub"],
    );
}

#[test]
fn every_error_of_a_file_is_reported_at_once() {
    let source = "deployment:\n  target: docker\n  docker:\n    postgres_port: -1\n    project_name: \"a b\"\n  update:\n    max_parallel: 0\n    stop_grace_period: 30\n";
    let got = diagnostics(source);
    assert_eq!(got.len(), 4, "{got:#?}");
    assert!(got.iter().all(|line| line.contains("error")), "{got:#?}");
}

#[test]
fn unknown_keys_suggest_the_closest() {
    let loaded = load("deployment:\n  target: docker\n  docker: {postgres_prot: 1}\n", &vars()).unwrap();
    assert_eq!(loaded.warnings.len(), 1);
    assert_eq!(loaded.warnings[0].hint.as_deref(), Some("did you mean \"postgres_port\"?"));
    let loaded = load("deploymnt:\n  target: docker\ndeployment: {target: docker}\n", &vars()).unwrap();
    assert_eq!(loaded.warnings[0].hint.as_deref(), Some("did you mean \"deployment\"?"));
}

#[test]
fn missing_variables_name_the_variable_and_the_field() {
    let list = load("deployment:\n  target: docker\n  proxmox: {token_secret: \"${NOPE}\"}\n", &vars()).unwrap_err();
    assert_eq!(
        list[0].message,
        "environment variable \"NOPE\" is not set (used in \"deployment.proxmox.token_secret\")"
    );
    assert_eq!(list[0].pos, Some(Pos::new(3, 27)));
    assert!(list[0].hint.as_deref().unwrap().contains("${NOPE:-value}"));
}

#[test]
fn secrets_from_dotenv_are_marked_sensitive() {
    let loaded = load(
        "deployment:\n  target: proxmox\n  proxmox:\n    api_url: https://pve:8006/api2/json\n    token_secret: ${PVE_TOKEN_SECRET}\n    nodes: [{name: a, role: both}]\n",
        &vars(),
    )
    .unwrap();
    assert!(loaded.config.sensitive.contains("deployment.proxmox.token_secret"));
    assert_eq!(loaded.config.raw.deployment.proxmox.token_secret.as_deref(), Some("s3cret"));
}

#[test]
fn advertise_host_refuses_shell_metacharacters() {
    let got = diagnostics("deployment: {target: docker}\nmesh:\n  advertise_host: \"10.0.0.1; rm -rf /\"\n");
    assert_eq!(got.len(), 1);
    assert!(
        got[0].starts_with("3:19 error: \"advertise_host\" must be a host name or address without whitespace"),
        "{got:?}"
    );
}

#[test]
fn nodes_must_place_every_agent_once() {
    let source = "deployment:\n  target: docker\n  nodes:\n    - {name: a, role: both, agents: [opus, gork]}\n    - {name: b, role: agents, agents: [opus]}\nagents: {opus: {}, grok: {}}\n";
    let got = diagnostics(source);
    assert!(got.iter().any(|l| l.contains("unknown agent \"gork\"")), "{got:#?}");
    assert!(got.iter().any(|l| l.contains("agent \"opus\" is placed on two nodes")), "{got:#?}");
    assert!(got.iter().any(|l| l.contains("agents not placed on any node: grok")), "{got:#?}");
}

#[test]
fn a_non_object_document_is_an_error() {
    check("- a\n- b\n", &["1:1 error: the config must be an object (found a list)"]);
    check("", &["1:1 error: the config is empty: expected an object with a `deployment:` section"]);
}

#[test]
fn durations_and_sizes_are_normalised() {
    let loaded = load(
        "deployment:\n  target: docker\n  resources: {agent: {memory: 512m, cpus: 0.5}}\n  update: {max_parallel: 25%, min_healthy_time: 1m30s}\n",
        &vars(),
    )
    .unwrap();
    let d = &loaded.config.raw.deployment;
    assert_eq!(d.resources.agent.memory, Some(512 * 1024 * 1024));
    assert_eq!(d.resources.agent.cpus, Some(0.5));
    assert_eq!(d.update.max_parallel, "25%");
    assert_eq!(d.update.min_healthy_time, 90_000);
}

#[test]
fn health_paths_are_url_paths_without_shell_characters() {
    check(
        "deployment:\n  target: docker\n  health:\n    live_path: \"/health/live;reboot\"\n    path: /health?x=1\n",
        &[
            "4:16 error: \"live_path\" must be an absolute URL path such as `/health/live` (letters, digits, `-._~/:@!*+,=` and `%XX` escapes) (found \"/health/live;reboot\")",
            "5:11 error: \"path\" must be an absolute URL path such as `/health/live` (letters, digits, `-._~/:@!*+,=` and `%XX` escapes) (found \"/health?x=1\")",
        ],
    );
    check("deployment:\n  target: docker\n  health: {live_path: /v1/live%20x, path: /health}\n", &[]);
}

#[test]
fn git_urls_and_refs_that_git_would_take_for_options_are_refused() {
    check(
        "deployment:\n  target: docker\n  source:\n    git: \"--upload-pack=touch /tmp/x\"\n    ref: -h\n",
        &[
            "4:10 error: \"git\" must be a git URL or path that does not start with `-` (found \"--upload-pack=touch /tmp/x\")",
            "5:10 error: \"ref\" must be a branch, tag or commit that does not start with `-` (found \"-h\")",
        ],
    );
    let loaded =
        load("deployment:\n  target: docker\n  source: {git: \"https://h/r.git\", ref: v1.2}\n", &vars()).unwrap();
    assert_eq!(loaded.config.raw.deployment.source.git_ref, "v1.2");
    assert_eq!(loaded.config.raw.deployment.source.git_timeout, 600_000, "10m by default");
}

/// A hub with agents of its own and an edge node, datahub published as `docker` says.
fn two_nodes(docker: &str, hub: &str) -> String {
    format!(
        "deployment:\n  target: docker\n  docker: {{{docker}}}\n  nodes:\n    - {{name: hub, role: both, {hub}agents: [opus]}}\n    - {{name: edge, role: agents, host: \"ssh://d@10.0.0.11\", agents: [grok]}}\nagents: {{opus: {{}}, grok: {{}}}}\n"
    )
}

#[test]
fn agents_on_other_nodes_need_the_datahub_published_where_they_reach_it() {
    let loopback = "agents on node \"edge\" connect to the datahub at 10.0.0.10:5432, but its port is published on 127.0.0.1 only, which other machines cannot reach";
    // The default bind (127.0.0.1): the error points at the datahub's node.
    check(&two_nodes("", "address: 10.0.0.10, "), &[&format!("5:14 error: {loopback}")]);
    check(&two_nodes("postgres_port: 5432", "address: 10.0.0.10, "), &[&format!("3:27 error: {loopback}")]);
    check(&two_nodes("postgres_bind: 127.0.0.1", "address: 10.0.0.10, "), &[&format!("3:27 error: {loopback}")]);
    check(&two_nodes("postgres_bind: 10.0.0.10", "address: 10.0.0.10, "), &[]);
    check(
        &two_nodes("postgres_bind: 10.0.0.10", ""),
        &[
            "5:14 error: agents on node \"edge\" connect to the datahub at node \"hub\"'s address, but node \"hub\" has none (its host is local)",
        ],
    );
    check(
        &two_nodes("", "address: 127.0.0.1, "),
        &[
            "5:40 warning: agents on node \"edge\" connect to the datahub at 127.0.0.1:5432, but inside their containers 127.0.0.1 is the container itself",
        ],
    );
    check(
        &two_nodes("postgres_bind: 10.0.0.10", "host: \"ssh://d@127.0.0.1\", "),
        &[
            "5:37 warning: agents on node \"edge\" connect to the datahub at 127.0.0.1:5432, but inside their containers 127.0.0.1 is the container itself",
        ],
    );
    // Nobody on another node: loopback is right.
    check(
        "deployment:\n  target: docker\n  nodes: [{name: hub, role: both, agents: [opus]}]\nagents: {opus: {}}\n",
        &[],
    );
}

#[test]
fn the_datahub_published_on_every_interface_is_a_warning() {
    let warning = "warning: PostgreSQL is published on every interface (0.0.0.0 port 5432), unencrypted: anyone who can reach this machine can try the datahub's password";
    check(&two_nodes("postgres_bind: 0.0.0.0", "address: 10.0.0.10, "), &[&format!("3:27 {warning}")]);
    check("deployment:\n  target: docker\n  docker: {postgres_bind: 0.0.0.0}\n", &[&format!("3:27 {warning}")]);
    check("deployment:\n  target: docker\n  docker: {postgres_bind: 0.0.0.0, postgres_port: 0}\n", &[]);
}

/// A docker deployment on nodes whose `- {...}` entries are given.
fn with_nodes(nodes: &[&str]) -> String {
    let mut text = String::from("deployment:\n  target: docker\n  nodes:\n");
    for node in nodes {
        text.push_str(&format!("    - {node}\n"));
    }
    text.push_str("agents: {}\n");
    text
}

#[test]
fn tcp_engines_need_tls_or_an_explicit_insecure() {
    check(
        &with_nodes(&["{name: a, role: both, host: \"tcp://10.0.0.2:2376\"}"]),
        &[
            "4:35 error: node \"a\" is reached at tcp://10.0.0.2:2376 without TLS: anyone on the path could run containers as root there",
        ],
    );
    check(&with_nodes(&["{name: a, role: both, host: \"tcp://10.0.0.2:2376\", insecure: true}"]), &[]);
    check(
        &with_nodes(&["{name: a, role: both, host: \"tcp://h:2376\", tls: {ca: ca.pem, cert: c.pem, key: k.pem}}"]),
        &[],
    );
    check(
        &with_nodes(&[
            "{name: a, role: both, host: \"tcp://h:2376\", insecure: true, tls: {ca: ca.pem, cert: c.pem, key: k.pem}}",
        ]),
        &["4:61 error: node \"a\" has both `tls` and `insecure: true`"],
    );
    check(
        &with_nodes(&["{name: a, role: both, host: \"tcp://h:2376\", tls: {ca: ca.pem, cert: c.pem}}"]),
        &["4:56 error: Missing required field \"deployment.nodes[0].tls.key\""],
    );
    check(
        &with_nodes(&["{name: a, role: both, host: \"ssh://h\", tls: {ca: ca.pem, cert: c.pem, key: k.pem}}"]),
        &["4:46 warning: node \"a\": `tls` applies to tcp:// engines; ssh://h:22 ignores it"],
    );
    // Without nodes, deployment.docker.host is the engine, with deployment.docker's settings.
    let single =
        "deployment:\n  target: docker\n  docker: {host: \"tcp://h:2375\"}\nagents:\n  opus: {provider: anthropic}\n";
    check(
        single,
        &[
            "3:18 error: the Docker engine is reached at tcp://h:2375 without TLS: anyone on the path could run containers as root there",
        ],
    );
    check(&single.replace("2375\"}", "2375\", insecure: true}"), &[]);
}

#[test]
fn tcp_security_reaches_the_fleet_nodes() {
    use crate::config::rules::TcpSecurity;
    let text = with_nodes(&[
        "{name: a, role: both, host: \"tcp://h:2376\", tls: {ca: certs/ca.pem, cert: certs/c.pem, key: certs/k.pem}}",
        "{name: b, role: agents, host: \"tcp://g:2375\", insecure: true}",
    ]);
    let loaded = load(&text, &vars()).expect("valid");
    let nodes = &loaded.config.raw.deployment.nodes;
    assert_eq!(
        TcpSecurity::of(&nodes[0].tls, nodes[0].insecure),
        TcpSecurity::Tls { ca: "certs/ca.pem".into(), cert: "certs/c.pem".into(), key: "certs/k.pem".into() }
    );
    assert_eq!(TcpSecurity::of(&nodes[1].tls, nodes[1].insecure), TcpSecurity::Insecure);
}
