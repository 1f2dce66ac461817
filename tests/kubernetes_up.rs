//! `infra up`, `preview`, prune, conflicts and `destroy` of a fleet on a real kube-apiserver
//! (v1.20 with its controller manager) and the test kubelet, through the `rivetctl` binary;
//! assertions read the cluster with kubectl.

mod support;

use std::collections::BTreeSet;

use support::kube::KubeFleet;

const UP: &[&str] = &["infra", "up", "--yes", "--no-push"];

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The objects whose resourceVersion differs between two readings, without rivetctl's own
/// state (the Lease and the state ConfigMap change with every run that takes the lock).
fn changed(k: &KubeFleet, before: &std::collections::BTreeMap<String, String>) -> BTreeSet<String> {
    changed_in(k, before, k.versions())
}

/// [`changed`] by generation where objects have one (their spec), else resourceVersion.
fn changed_spec(k: &KubeFleet, before: &std::collections::BTreeMap<String, String>) -> BTreeSet<String> {
    changed_in(k, before, k.generations())
}

fn changed_in(
    k: &KubeFleet,
    before: &std::collections::BTreeMap<String, String>,
    after: std::collections::BTreeMap<String, String>,
) -> BTreeSet<String> {
    let state = [
        format!("Lease/{}-lock", k.fleet.name),
        format!("ConfigMap/{}-state", k.fleet.name),
        format!("ConfigMap/{}-state-previous", k.fleet.name),
    ];
    after
        .iter()
        .filter(|(key, version)| before.get(*key) != Some(*version) && !state.contains(key))
        .map(|(key, _)| key.clone())
        .chain(before.keys().filter(|key| !after.contains_key(*key)).cloned())
        .collect()
}

#[test]
fn up_noop_change_prune_conflict_and_destroy() {
    let k = KubeFleet::new("k8s", &["opus", "grok"]);
    let (opus, grok) = (k.agent("opus"), k.agent("grok"));

    // From empty: everything applied and ready.
    k.expect(UP, 0);
    for agent in [&opus, &grok] {
        let deployment = k.get("deployment", agent);
        assert_eq!(deployment["status"]["availableReplicas"], 1, "{agent}: {deployment:#}");
        assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate");
        assert_eq!(
            deployment["metadata"]["labels"]["applyset.kubernetes.io/part-of"]
                .as_str()
                .map(|s| s.starts_with("applyset-")),
            Some(true)
        );
    }
    let job = k.get("job", &format!("{}-migrate", k.fleet.name));
    assert_eq!(job["status"]["succeeded"], 1, "{job:#}");
    // The ApplySet parent lists the member kinds.
    let parent = k.get("secret", &format!("{}-applyset", k.fleet.name));
    let kinds =
        parent["metadata"]["annotations"]["applyset.kubernetes.io/contains-group-kinds"].as_str().unwrap().to_string();
    assert!(kinds.contains("Deployment.apps") && kinds.contains("StatefulSet.apps"), "{kinds}");
    // The policy guarding the datahub existed before the datahub's pods could.
    let policy = k.get("networkpolicy", &format!("{}-datahub-ingress", k.fleet.name));
    let hub = k.get("statefulset", &format!("{}-datahub", k.fleet.name));
    let version = |o: &serde_json::Value| o["metadata"]["creationTimestamp"].as_str().unwrap().to_string();
    assert!(version(&policy) <= version(&hub));
    // Secrets as data, never in the manifests' other objects.
    let secret = k.get("secret", &format!("{}-secrets", k.fleet.name));
    assert!(secret["data"].as_object().is_some_and(|d| !d.is_empty()));

    // status reads the workloads through the API.
    let status = k.expect(&["status"], 0);
    let shown = stdout(&status);
    assert!(shown.contains(&opus) && shown.contains("ready"), "{}", support::describe(&status));

    // A second up changes nothing.
    let before = k.versions();
    let output = k.expect(UP, 0);
    assert!(stdout(&output).contains("No changes"), "{}", stdout(&output));
    assert_eq!(changed(&k, &before), BTreeSet::new());
    k.expect(&["infra", "preview", "--detailed-exitcode"], 0);

    // One agent's environment changes: only its Deployment does (and the config's own
    // ConfigMap, which holds the changed file the agents read).
    k.fleet.edit(|text| text.replace("LOG_LEVEL: info", "LOG_LEVEL: debug"));
    let output = k.expect(&["infra", "preview", "--detailed-exitcode"], 2);
    let plan = stdout(&output);
    assert!(plan.contains(&format!("~ Deployment {opus}")), "{plan}");
    let shown = plan.replace(&k.namespace, "NAMESPACE").replace(&k.fleet.name, "FLEET");
    support::golden("tests/golden/kubernetes/live-preview-env-change.txt", &shown);
    assert!(plan.contains("Plan: 0 to create, 2 to update, 0 to replace, 0 to delete"), "{plan}");
    let before = k.generations();
    k.expect(UP, 0);
    let config = format!("ConfigMap/{}-config", k.fleet.name);
    assert_eq!(changed_spec(&k, &before), BTreeSet::from([format!("Deployment/{opus}"), config]));
    k.expect(&["infra", "preview", "--detailed-exitcode"], 0);

    // A field taken by another manager: refused with the table, then taken with --force-conflicts.
    k.kubectl(&[
        "patch",
        "deployment",
        &opus,
        "-n",
        &k.namespace,
        "--type=merge",
        "-p",
        r#"{"spec":{"revisionHistoryLimit":9}}"#,
    ]);
    let output = k.expect(UP, 1);
    let refused = stderr(&output);
    assert!(refused.contains(".spec.revisionHistoryLimit") && refused.contains("kubectl"), "{refused}");
    assert!(refused.contains("--force-conflicts"), "{refused}");
    assert_eq!(k.get("deployment", &opus)["spec"]["revisionHistoryLimit"], 9);
    k.expect(&["infra", "up", "--yes", "--no-push", "--force-conflicts"], 0);
    assert_ne!(k.get("deployment", &opus)["spec"]["revisionHistoryLimit"], 9);
    k.expect(&["infra", "preview", "--detailed-exitcode"], 0);

    // A field the server refuses to change in place (the config's ConfigMap made immutable
    // by hand): the dry run's 422 makes the change a replace named by the server's field.
    let config_map = format!("{}-config", k.fleet.name);
    k.kubectl(&["patch", "configmap", &config_map, "-n", &k.namespace, "--type=merge", "-p", r#"{"immutable":true}"#]);
    k.expect(&["infra", "preview", "--detailed-exitcode"], 0);
    k.fleet.edit(|text| text.replace("runtime:\n  log_level: info", "runtime:\n  log_level: warn"));
    let output = k.expect(&["infra", "preview", "--detailed-exitcode"], 2);
    let plan = stdout(&output);
    assert!(plan.contains(&format!("-/+ ConfigMap {config_map}")), "{plan}");
    assert!(plan.contains("(replace: data."), "{plan}");
    let uid = k.get("configmap", &config_map)["metadata"]["uid"].clone();
    k.expect(UP, 0);
    let replaced = k.get("configmap", &config_map);
    assert_ne!(replaced["metadata"]["uid"], uid, "{replaced:#}");
    assert!(replaced["immutable"].is_null(), "{replaced:#}");
    assert!(replaced["data"].to_string().contains("log_level: warn"), "{replaced:#}");
    k.expect(&["infra", "preview", "--detailed-exitcode"], 0);

    // An agent removed from the config is pruned, after confirmation.
    k.fleet.edit(|text| text.replace("  grok: { provider: anthropic, model: claude-opus-4 }\n", ""));
    let output = k.expect(&["infra", "up", "--no-push"], 1);
    assert!(stderr(&output).contains("--yes"), "{}", stderr(&output));
    assert!(k.names("deployments").contains(&grok));
    k.expect(UP, 0);
    assert!(!k.names("deployments").contains(&grok));
    assert!(!k.names("services").contains(&grok));
    assert!(!k.names("poddisruptionbudgets").contains(&grok));
    assert!(k.names("deployments").contains(&opus));

    // destroy keeps the data claims; --volumes removes them (and the namespace it owns).
    k.expect(&["infra", "destroy", "--yes"], 0);
    assert!(k.names("deployments").is_empty());
    let claims = k.names("persistentvolumeclaims");
    assert!(claims.iter().any(|c| c.starts_with("pgdata-")), "{claims:?}");
    k.expect(&["infra", "destroy", "--yes", "--volumes"], 0);
    let gone = k.kubectl_status(&["get", "namespace", &k.namespace, "-o", "jsonpath={.status.phase}"]);
    let phase = String::from_utf8_lossy(&gone.stdout).to_string();
    assert!(!gone.status.success() || phase == "Terminating", "namespace still {phase}");
}

/// Built images are pushed to `deployment.image.registry` (a real registry on loopback,
/// with a password), the manifests name them by digest, and the pods pull them with the
/// pull Secret rivetctl makes from the credentials.
#[test]
fn images_are_pushed_pinned_by_digest_and_pulled_with_a_pull_secret() {
    use testkit::registry::{Registry, RegistryOptions};
    let registry = Registry::start(RegistryOptions { user: Some(("deployer".into(), "s3cret-pass".into())) }).unwrap();
    let k = KubeFleet::new("k8sreg", &["opus"]);
    let prefix = format!("{}/rivet", registry.address());
    k.fleet.edit(|text| text.replace("  source:\n", &format!("  image: {{ registry: \"{prefix}\" }}\n  source:\n")));
    let mut up = k.command(&["infra", "up", "--yes"]);
    up.env("RIVET_REGISTRY_USERNAME", "deployer").env("RIVET_REGISTRY_PASSWORD", "s3cret-pass");
    let output = support::run(&mut up);
    assert_eq!(output.status.code(), Some(0), "{}", support::describe(&output));
    assert!(!support::describe(&output).contains("s3cret-pass"), "the password was printed");
    let deployment = k.get("deployment", &k.agent("opus"));
    let image = deployment["spec"]["template"]["spec"]["containers"][0]["image"].as_str().unwrap().to_string();
    assert!(image.starts_with(&format!("{prefix}/rivetos-agent:")) && image.contains("@sha256:"), "{image}");
    let (repository, digest) = image.split_once('@').unwrap();
    let (name, tag) = repository.trim_start_matches(&format!("{}/", registry.address())).rsplit_once(':').unwrap();
    assert_eq!(registry.manifest_digest(name, tag).unwrap().as_deref(), Some(digest), "the digest the registry holds");
    let secrets = &deployment["spec"]["template"]["spec"]["imagePullSecrets"];
    let secret = k.get("secret", secrets[0]["name"].as_str().unwrap());
    assert_eq!(secret["type"], "kubernetes.io/dockerconfigjson");
    assert_eq!(deployment["status"]["availableReplicas"], 1);
    // A second up pushes nothing and changes nothing.
    let mut again = k.command(&["infra", "up", "--yes"]);
    again.env("RIVET_REGISTRY_USERNAME", "deployer").env("RIVET_REGISTRY_PASSWORD", "s3cret-pass");
    let output = support::run(&mut again);
    assert_eq!(output.status.code(), Some(0), "{}", support::describe(&output));
    assert!(stdout(&output).contains("No changes"), "{}", support::describe(&output));
    assert!(stderr(&output).contains("in the registry already"), "{}", stderr(&output));
}

/// With no cluster to read, `infra preview` plans against an empty one and says so; `up`
/// fails with what it could not reach.
#[test]
fn preview_renders_offline_when_no_cluster_answers() {
    let fleet = support::docker::TestFleet::new("k8soff");
    fleet.edit(|text| {
        text.replace("  target: docker\n", "  target: kubernetes\n  kubernetes: { namespace: offline-ns }\n")
    });
    // A kubeconfig whose server does not answer (a port nothing listens on).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let kubeconfig = fleet.dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: \"https://127.0.0.1:{port}\", insecure-skip-tls-verify: false}}}}]\nusers: [{{name: u, user: {{token: t}}}}]\ncontexts: [{{name: x, context: {{cluster: c, user: u}}}}]\ncurrent-context: x\n"
        ),
    )
    .unwrap();
    let mut preview = fleet.command(&["infra", "preview", "--detailed-exitcode"]);
    preview.env("KUBECONFIG", &kubeconfig);
    let output = support::run(&mut preview);
    assert_eq!(output.status.code(), Some(2), "{}", support::describe(&output));
    assert!(stderr(&output).contains("no Kubernetes cluster reachable"), "{}", stderr(&output));
    assert!(stdout(&output).contains("to create"), "{}", stdout(&output));
    let mut up = fleet.command(&["infra", "up", "--yes", "--no-push"]);
    up.env("KUBECONFIG", &kubeconfig);
    let output = support::run(&mut up);
    assert_eq!(output.status.code(), Some(1), "{}", support::describe(&output));
    assert!(stderr(&output).contains(&format!("127.0.0.1:{port}")), "{}", stderr(&output));
}
