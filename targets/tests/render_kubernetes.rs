//! The Kubernetes manifests: golden files, typed round-trips through k8s-openapi, offline
//! schema validation (kubernetes-validate), determinism, no secret outside the Secret, and
//! the resources the planner gets from them.

mod support;

use base64::Engine as _;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use orchestrator::resource::{Component, RunState};
use rivet_targets::render::{self, kubernetes};
use serde_json::Value;
use support::{fleet, fleet_prebuilt, golden, golden_path, run_tool, secret_values};

const CONFIG: &str = r#"
deployment:
  target: kubernetes
  kubernetes:
    namespace: rivet-prod
    create_namespace: true
    storage_class: fast-ssd
    storage_size: 20Gi
    shared_storage_class: nfs-rwx
  env: { LOG_LEVEL: info }
  agents:
    opus:
      env: { MODEL_HINT: large }
  update:
    stop_grace_period: 45s
agents:
  opus: { provider: anthropic, model: claude-opus-4 }
  grok_2: { provider: xai }
"#;

fn manifests(source: &str) -> (String, String) {
    let artifacts = kubernetes::artifacts(&fleet_prebuilt(source)).expect("renders");
    assert_eq!(artifacts.len(), 2);
    assert_eq!((artifacts[0].path.as_str(), artifacts[0].secret), (kubernetes::MANIFESTS_PATH, false));
    assert_eq!((artifacts[1].path.as_str(), artifacts[1].secret), (kubernetes::SECRET_PATH, true));
    (artifacts[0].contents.clone(), artifacts[1].contents.clone())
}

#[test]
fn two_agent_fleet_matches_golden_files() {
    let (manifests, secret) = manifests(CONFIG);
    golden("kubernetes/manifests.yaml", &manifests);
    golden("kubernetes/secret.yaml", &secret);
}

#[test]
fn datahub_built_from_source_runs_as_the_default_uid() {
    let (manifests, _) = {
        let artifacts = kubernetes::artifacts(&fleet(CONFIG)).unwrap();
        (artifacts[0].contents.clone(), artifacts[1].contents.clone())
    };
    let hub =
        kubernetes::parse_documents(&manifests).unwrap().into_iter().find(|d| d["kind"] == "StatefulSet").unwrap();
    let security = &hub["spec"]["template"]["spec"]["securityContext"];
    assert_eq!(security["runAsUser"], kubernetes::DEFAULT_UID);
    assert_eq!(security["fsGroup"], kubernetes::DEFAULT_UID);
}

#[test]
fn rendering_is_deterministic() {
    assert_eq!(manifests(CONFIG), manifests(CONFIG));
}

#[test]
fn no_secret_value_outside_the_secret() {
    let (manifests, secret) = manifests(CONFIG);
    for value in secret_values() {
        assert!(!manifests.contains(&value), "manifests.yaml holds the secret {value:?}");
        let encoded = base64::engine::general_purpose::STANDARD.encode(&value);
        assert!(secret.contains(&encoded), "secret.yaml lacks {value:?} (as base64 data)");
    }
    let resources = kubernetes::resources(&fleet_prebuilt(CONFIG)).unwrap();
    for resource in &resources {
        for (field, value) in &resource.fields {
            for secret in secret_values() {
                assert!(!value.text.contains(&secret), "{} field {field} holds a secret", resource.key);
            }
        }
    }
}

/// Removes nulls, empty maps and empty lists, which serializers may or may not write.
fn prune(value: &Value) -> Option<Value> {
    match value {
        Value::Null => None,
        Value::Object(map) => {
            let pruned: serde_json::Map<String, Value> =
                map.iter().filter_map(|(k, v)| Some((k.clone(), prune(v)?))).collect();
            (!pruned.is_empty()).then_some(Value::Object(pruned))
        }
        Value::Array(items) => {
            let pruned: Vec<Value> = items.iter().filter_map(prune).collect();
            (!pruned.is_empty()).then_some(Value::Array(pruned))
        }
        other => Some(other.clone()),
    }
}

fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(document: &Value) -> Value {
    let typed: T = serde_json::from_value(document.clone())
        .unwrap_or_else(|err| panic!("{} does not fit its type: {err}", document["kind"]));
    serde_json::to_value(&typed).unwrap()
}

/// A document through the typed struct of its kind and back.
fn typed_round_trip(document: &Value) -> Value {
    match document["kind"].as_str().expect("kind") {
        "Namespace" => round_trip::<Namespace>(document),
        "ConfigMap" => round_trip::<ConfigMap>(document),
        "Secret" => round_trip::<Secret>(document),
        "Service" => round_trip::<Service>(document),
        "PersistentVolumeClaim" => round_trip::<PersistentVolumeClaim>(document),
        "StatefulSet" => round_trip::<StatefulSet>(document),
        "Deployment" => round_trip::<Deployment>(document),
        "Job" => round_trip::<Job>(document),
        "PodDisruptionBudget" => round_trip::<PodDisruptionBudget>(document),
        "NetworkPolicy" => round_trip::<NetworkPolicy>(document),
        other => panic!("no typed check for kind {other}"),
    }
}

/// `kubernetes-validate --strict` for 1.33 accepts `files`.
fn assert_valid(files: &[std::path::PathBuf]) {
    let mut args = vec!["--strict", "--kubernetes-version", "1.33.0", "--quiet"];
    let paths: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    args.extend(paths.iter().map(String::as_str));
    let output = run_tool("kubernetes-validate", &args, None, "install it with `pip install kubernetes-validate`");
    assert!(
        output.status.success(),
        "kubernetes-validate rejected the manifests:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A field the typed struct does not know is dropped by the round trip: a typo in the
/// template (`imagePullPolicey`) shows up here as a difference.
#[test]
fn every_document_round_trips_through_its_typed_struct() {
    let (manifests, secret) = manifests(CONFIG);
    let mut documents = kubernetes::parse_documents(&manifests).unwrap();
    documents.extend(kubernetes::parse_documents(&secret).unwrap());
    let mut kinds = Vec::new();
    for document in &documents {
        let kind = document["kind"].as_str().expect("kind").to_string();
        let typed = typed_round_trip(document);
        assert_eq!(prune(&typed), prune(document), "{kind} {} changed in the round trip", document["metadata"]["name"]);
        kinds.push(kind);
    }
    kinds.sort();
    kinds.dedup();
    assert_eq!(kinds.len(), 10, "every kind is rendered: {kinds:?}");
}

/// Offline validation against the Kubernetes 1.33 JSON schemas, rejecting unknown fields.
/// Needs `pip install kubernetes-validate` (fails, never skips, without it).
/// The round trip can fail: a misspelt field is dropped by the typed struct.
#[test]
fn the_round_trip_catches_a_misspelt_field() {
    let (manifests, _) = manifests(CONFIG);
    let documents = kubernetes::parse_documents(&manifests.replace("imagePullPolicy", "imagePullPolicey")).unwrap();
    let agent = documents.iter().find(|d| d["kind"] == "Deployment").unwrap();
    assert_ne!(prune(&round_trip::<Deployment>(agent)), prune(agent));
}

#[test]
fn an_agents_own_secret_gets_its_own_key() {
    let source = CONFIG
        .replace("env: { MODEL_HINT: large }", "env: { MODEL_HINT: large, TOKEN: \"${DISCORD_BOT_TOKEN}\" }")
        .replace("  update:\n", "    grok_2:\n      env: { TOKEN: \"${ANTHROPIC_API_KEY}\" }\n  update:\n");
    let artifacts = kubernetes::artifacts(&fleet_prebuilt(&source)).unwrap();
    let secret = &kubernetes::parse_documents(&artifacts[1].contents).unwrap()[0];
    let decoded = |key: &str| {
        let text = secret["data"][key].as_str().unwrap_or_else(|| panic!("no data key {key}: {secret:#}"));
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(text).unwrap()).unwrap()
    };
    assert!(secret.get("stringData").is_none(), "data only: stringData makes every re-apply a change");
    assert_eq!(decoded("TOKEN.opus"), "discord-token-test");
    assert_eq!(decoded("TOKEN.grok-2"), "sk-ant-test");
    assert!(secret["data"].get("TOKEN").is_none());
    assert!(!artifacts[0].contents.contains("discord-token-test"));
    assert!(artifacts[0].contents.contains("key: \"TOKEN.grok-2\""));
}

/// The manifests `infra preview --out` renders for examples/kubernetes (golden files of
/// tests/examples.rs): every document round-trips through its typed struct and the files
/// pass `kubernetes-validate --strict` for 1.33.
#[test]
fn the_examples_manifests_round_trip_and_validate() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/examples/kubernetes/kubernetes");
    let files = [dir.join("manifests.yaml"), dir.join("secret.yaml")];
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for document in kubernetes::parse_documents(&text).unwrap() {
            let typed = typed_round_trip(&document);
            assert_eq!(prune(&typed), prune(&document), "{} changed in the round trip", document["kind"]);
        }
    }
    assert_valid(&files);
}

#[test]
fn golden_manifests_pass_kubernetes_validate() {
    assert_valid(&[golden_path("kubernetes/manifests.yaml"), golden_path("kubernetes/secret.yaml")]);
}

#[test]
fn resources_carry_components_and_replacement_rules() {
    let resources = kubernetes::resources(&fleet_prebuilt(CONFIG)).unwrap();
    let find = |kind: &str, name: &str| {
        resources
            .iter()
            .find(|r| r.key.kind == kind && r.key.name == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    };
    let namespace = find("Namespace", "rivet-prod");
    assert!(namespace.stateful, "destroy keeps the namespace: deleting it deletes the claims");
    assert_eq!((namespace.key.node.as_str(), &namespace.component), (kubernetes::CLUSTER, &Component::Foundation));

    let hub = find("StatefulSet", "rivetos-datahub");
    assert_eq!(hub.key.node, "rivet-prod");
    assert_eq!((&hub.component, hub.run_state), (&Component::Datahub, Some(RunState::Running)));
    assert!(hub.forces_replacement("metadata.annotations.rivetctl.io/postgres-version"));
    assert!(hub.forces_replacement("spec.volumeClaimTemplates[0].spec.resources.requests.storage"));
    assert!(!hub.forces_replacement("spec.template.spec.containers[0].image"));
    assert_eq!(&*hub.fields["metadata.annotations.rivetctl.io/postgres-version"].text, "16");

    let shared = find("PersistentVolumeClaim", "rivetos-shared");
    assert!(shared.stateful && shared.component == Component::Storage);
    assert!(shared.forces_replacement("spec.storageClassName"));

    let job = find("Job", "rivetos-migrate");
    assert_eq!((&job.component, job.run_state), (&Component::Migrate, Some(RunState::Completed)));
    assert!(job.forces_replacement("spec.template.spec.containers[0].image"));

    let agent = find("Deployment", "rivetos-agent-grok-2");
    assert_eq!((&agent.component, agent.run_state), (&Component::Agent("grok_2".into()), Some(RunState::Running)));
    assert!(agent.forces_replacement("spec.selector.matchLabels.rivetctl.io/agent"));
    assert_eq!(find("Service", "rivetos-agent-grok-2").component, Component::Agent("grok_2".into()));
    assert_eq!(find("PodDisruptionBudget", "rivetos-agent-opus").component, Component::Agent("opus".into()));
    let hub_service = find("Service", "datahub");
    assert_eq!(hub_service.component, Component::Datahub);
    assert!(hub_service.forces_replacement("spec.clusterIP"));

    let secret = find("Secret", "rivetos-secrets");
    let password = &secret.fields["data.POSTGRES_PASSWORD"];
    assert!(password.sensitive && password.text.starts_with("sensitive:"));
    assert!(!secret.fields["metadata.name"].sensitive);

    let mut keys: Vec<_> = resources.iter().map(|r| &r.key).collect();
    let count = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), count, "keys are unique");
}

#[test]
fn agents_reference_secrets_and_keep_plain_values_inline() {
    let (manifests, _) = manifests(CONFIG);
    let documents = kubernetes::parse_documents(&manifests).unwrap();
    let opus =
        documents.iter().find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "rivetos-agent-opus").unwrap();
    let env = opus["spec"]["template"]["spec"]["containers"][0]["env"].as_array().unwrap();
    let entry = |name: &str| env.iter().find(|e| e["name"] == name).unwrap_or_else(|| panic!("no {name}"));
    assert_eq!(entry("MODEL_HINT")["value"], "large");
    assert_eq!(entry("RIVETOS_PG_URL")["valueFrom"]["secretKeyRef"]["key"], "RIVETOS_PG_URL");
    assert_eq!(entry("RIVETOS_PG_URL")["valueFrom"]["secretKeyRef"]["name"], "rivetos-secrets");
    let resources = &opus["spec"]["template"]["spec"]["containers"][0]["resources"];
    // Canonical quantities (the server stores `1`, not `1000m`): a re-apply is a no-op.
    assert_eq!(resources["limits"]["cpu"], "1");
    assert_eq!(resources["requests"]["memory"], "1Gi");
}

#[test]
fn kubernetes_resources_override_the_fleet_limits() {
    let source = CONFIG.replace("    shared_storage_class: nfs-rwx\n", "    resources: { cpu: 250m, memory: 512Mi }\n");
    let artifacts = kubernetes::artifacts(&fleet_prebuilt(&source)).unwrap();
    let documents = kubernetes::parse_documents(&artifacts[0].contents).unwrap();
    for agent in documents.iter().filter(|d| d["kind"] == "Deployment") {
        let limits = &agent["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"];
        assert_eq!((limits["cpu"].as_str(), limits["memory"].as_str()), (Some("250m"), Some("512Mi")));
    }
    let shared = documents.iter().find(|d| d["kind"] == "PersistentVolumeClaim").unwrap();
    assert!(shared["spec"].get("storageClassName").is_none(), "no class: the cluster default");
}

#[test]
fn without_shared_storage_there_is_no_claim_or_mount() {
    let source = CONFIG.replace("deployment:\n", "deployment:\n  datahub: { shared_storage: false }\n");
    let artifacts = kubernetes::artifacts(&fleet_prebuilt(&source)).unwrap();
    let documents = kubernetes::parse_documents(&artifacts[0].contents).unwrap();
    assert!(documents.iter().all(|d| d["kind"] != "PersistentVolumeClaim"));
    assert!(!artifacts[0].contents.contains("\"shared\""), "no volume or mount named shared");
}

#[test]
fn quantities() {
    assert_eq!(kubernetes::cpu_quantity(1.5), "1500m");
    assert_eq!(kubernetes::cpu_quantity(0.01), "10m");
    assert_eq!(kubernetes::cpu_quantity(2.0), "2");
    assert_eq!(kubernetes::memory_quantity(1024 * 1024 * 1024), "1Gi");
    assert_eq!(kubernetes::memory_quantity(512 * 1024 * 1024), "512Mi");
    assert_eq!(kubernetes::memory_quantity(1024 * 1024 + 1), "2Mi");
}

fn anyhow_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Strict undefined: a template that names a value the context lacks fails.
#[test]
fn unknown_variables_fail_to_render() {
    let mut env = render::environment();
    env.add_template("typo.j2", "namespace: {{ namespcae }}\n").unwrap();
    let err = env.get_template("typo.j2").unwrap().render(minijinja::context! { namespace => "x" }).unwrap_err();
    assert_eq!(err.kind(), minijinja::ErrorKind::UndefinedError);

    // minijinja's own `tojson` writes an undefined value as `null`; the renderers' does not.
    let fleet = fleet_prebuilt(CONFIG);
    let orchestrator::fleet::TargetSettings::Kubernetes(settings) = &fleet.target_settings else {
        panic!("a kubernetes fleet")
    };
    let mut ctx = kubernetes::context(&fleet, settings, &kubernetes::Profile::for_version((1, 33)));
    assert!(render::render(kubernetes::TEMPLATE, &ctx).is_ok());
    ctx.as_object_mut().unwrap().remove("namespace_name");
    let err = render::render(kubernetes::TEMPLATE, &ctx).unwrap_err();
    assert!(anyhow_chain(&err).contains("undefined"), "{err:?}");
}

#[test]
fn older_servers_get_the_apis_and_fields_they_serve() {
    let fleet = fleet_prebuilt(CONFIG);
    let old = kubernetes::Options {
        profile: kubernetes::Profile::for_version((1, 20)),
        digest_key: None,
        pull_secret: Some("rivetos-registry".into()),
        schema: None,
    };
    let artifacts = kubernetes::artifacts_with(&fleet, &old).unwrap();
    let documents = kubernetes::parse_documents(&artifacts[0].contents).unwrap();
    let pdb = documents.iter().find(|d| d["kind"] == "PodDisruptionBudget").unwrap();
    assert_eq!(pdb["apiVersion"], "policy/v1beta1");
    assert!(pdb["spec"].get("unhealthyPodEvictionPolicy").is_none());
    let hub = documents.iter().find(|d| d["kind"] == "StatefulSet").unwrap();
    assert!(hub["spec"].get("persistentVolumeClaimRetentionPolicy").is_none());
    let agent = documents.iter().find(|d| d["kind"] == "Deployment").unwrap();
    assert_eq!(agent["spec"]["template"]["spec"]["imagePullSecrets"][0]["name"], "rivetos-registry");
    assert_eq!(agent["spec"]["strategy"]["type"], "Recreate");
    let unserved = kubernetes::Options { profile: kubernetes::Profile { pdb_api: None, ..old.profile.clone() }, ..old };
    let artifacts = kubernetes::artifacts_with(&fleet, &unserved).unwrap();
    assert!(!artifacts[0].contents.contains("kind: PodDisruptionBudget"));
}

#[test]
fn the_namespace_is_rendered_only_when_the_deployment_owns_it() {
    let fleet = fleet_prebuilt(&CONFIG.replace("    create_namespace: true\n", ""));
    let artifacts = kubernetes::artifacts(&fleet).unwrap();
    assert!(!artifacts[0].contents.contains("kind: Namespace"));
    let members = kubernetes::parse_documents(&artifacts[0].contents).unwrap();
    let id = kubernetes::applyset_id(match &fleet.target_settings {
        orchestrator::fleet::TargetSettings::Kubernetes(settings) => settings,
        _ => unreachable!(),
    });
    assert!(id.starts_with("applyset-") && id.ends_with("-v1"), "{id}");
    for member in members {
        assert_eq!(member["metadata"]["labels"][kubernetes::PART_OF], id.as_str(), "{}", member["kind"]);
    }
}

/// A large fleet renders whole: more than the YAML parser's default budget of 1,024
/// documents (a fleet of 1,000 agents once lowered to nothing).
#[test]
fn a_fleet_of_1100_agents_lowers_to_every_object() {
    let mut source = String::from("deployment:\n  target: kubernetes\nagents:\n");
    for i in 0..1100 {
        source.push_str(&format!("  a{i:04}: {{ provider: anthropic }}\n"));
    }
    let resources = kubernetes::resources(&fleet_prebuilt(&source)).unwrap();
    let deployments = resources.iter().filter(|r| r.key.kind == "Deployment").count();
    assert_eq!(deployments, 1100);
}
