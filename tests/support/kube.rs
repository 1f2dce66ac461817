//! A quickstart fleet on a real Kubernetes API server of its own: kube-apiserver,
//! kube-controller-manager and etcd (v1.20, `testkit::apiserver`), and the test kubelet
//! (`testkit::kubelet`), which runs the pods as containers on the local Docker Engine, so
//! readiness, the pod proxy and the health gate reach real agents. Everything stops and is
//! removed when the fleet is dropped, on every path.
//!
//! Assertions read the cluster through `kubectl`, not through rivetctl's own code.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};

use testkit::apiserver::{ApiServer, ApiServerOptions};
use testkit::kubelet::{Kubelet, KubeletOptions};

use super::docker::TestFleet;
use super::{describe, run};

/// The kinds rivetctl deploys, for `kubectl get`.
pub const KINDS: &str = "namespaces,networkpolicies,secrets,configmaps,persistentvolumeclaims,statefulsets,services,jobs,deployments,poddisruptionbudgets,leases";

/// A fleet on its own API server with a test kubelet.
pub struct KubeFleet {
    /// Dropped first: the kubelet removes its containers while the server still answers.
    kubelet: Option<Kubelet>,
    runtime: tokio::runtime::Runtime,
    pub server: ApiServer,
    pub fleet: TestFleet,
    pub namespace: String,
}

impl KubeFleet {
    /// The quickstart fleet on Kubernetes, with `agents` (ids) only, in its own namespace
    /// (owned by the deployment: `create_namespace: true`).
    pub fn new(test: &str, agents: &[&str]) -> KubeFleet {
        let fleet = TestFleet::new(test);
        let namespace = format!("ns-{}", fleet.name);
        let agent_lines: String =
            agents.iter().map(|id| format!("  {id}: {{ provider: anthropic, model: claude-opus-4 }}\n")).collect();
        fleet.edit(|text| {
            let text = text.replace(
                "  target: docker\n",
                &format!(
                    "  target: kubernetes\n  kubernetes:\n    namespace: {namespace}\n    create_namespace: true\n    storage_size: 1Gi\n"
                ),
            );
            // Docker's own settings have no place here (the project name names the objects).
            let text: String = text
                .lines()
                .filter(|l| !l.starts_with("    network: ") && !l.starts_with("    postgres_port: "))
                .map(|l| format!("{l}\n"))
                .collect();
            // The quickstart's per-agent override names `opus`.
            let text = if agents.contains(&"opus") {
                text
            } else {
                text.replace("  agents:\n    opus:\n      env: { LOG_LEVEL: info }\n", "")
            };
            let start = text.find("\nagents:\n").expect("the quickstart has agents") + "\nagents:\n".len();
            let end = start + text[start..].find("\n\n").expect("a blank line after the agents");
            format!("{}{}{}", &text[..start], agent_lines.trim_end_matches('\n'), &text[end..])
        });
        let server = ApiServer::start(ApiServerOptions { controller_manager: true });
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let kubelet = runtime.block_on(async {
            let client = server.client().await;
            let options = KubeletOptions { node_name: format!("node-{}", fleet.name), ..KubeletOptions::default() };
            Kubelet::start(client, options).await.expect("the test kubelet starts")
        });
        KubeFleet { kubelet: Some(kubelet), runtime, server, fleet, namespace }
    }

    /// A rivetctl command on this fleet, with the server's kubeconfig.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = self.fleet.command(args);
        command.env("KUBECONFIG", self.server.kubeconfig());
        command
    }

    /// Runs rivetctl and asserts the exit code.
    pub fn expect(&self, args: &[&str], code: i32) -> Output {
        let output = run(&mut self.command(args));
        assert_eq!(output.status.code(), Some(code), "rivetctl {}:\n{}", args.join(" "), describe(&output));
        output
    }

    /// Runs `kubectl` against the server; panics (with its output) when it fails.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let output = self.kubectl_status(args);
        assert!(output.status.success(), "kubectl {}:\n{}", args.join(" "), describe(&output));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs `kubectl` against the server and returns what happened.
    pub fn kubectl_status(&self, args: &[&str]) -> Output {
        let config: PathBuf = self.server.kubeconfig();
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(config)
            .args(args)
            .output()
            .unwrap_or_else(|err| panic!("cannot run kubectl: {err}. These tests need kubectl on the PATH."))
    }

    /// `kind/name → resourceVersion` of every object of [`KINDS`] in the namespace (and the
    /// namespace itself).
    pub fn versions(&self) -> BTreeMap<String, String> {
        self.read_versions(false)
    }

    /// `kind/name → generation` (the spec's version) where the object has one, else its
    /// resourceVersion: what changed by an apply, not by a controller writing status (a
    /// PodDisruptionBudget's status follows its pods).
    pub fn generations(&self) -> BTreeMap<String, String> {
        self.read_versions(true)
    }

    fn read_versions(&self, generation: bool) -> BTreeMap<String, String> {
        let text = self.kubectl(&["get", KINDS, "-n", &self.namespace, "-o", "json"]);
        let list: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut out = BTreeMap::new();
        for item in list["items"].as_array().into_iter().flatten() {
            let key = format!("{}/{}", item["kind"].as_str().unwrap(), item["metadata"]["name"].as_str().unwrap());
            let version = match item["metadata"]["generation"].as_i64() {
                Some(number) if generation => format!("generation {number}"),
                _ => item["metadata"]["resourceVersion"].as_str().unwrap_or_default().to_string(),
            };
            out.insert(key, version);
        }
        let namespace =
            self.kubectl(&["get", "namespace", &self.namespace, "-o", "jsonpath={.metadata.resourceVersion}"]);
        out.insert(format!("Namespace/{}", self.namespace), namespace);
        out
    }

    /// One object as JSON.
    pub fn get(&self, kind: &str, name: &str) -> serde_json::Value {
        serde_json::from_str(&self.kubectl(&["get", kind, name, "-n", &self.namespace, "-o", "json"])).unwrap()
    }

    /// The names of the objects of `kind` in the namespace.
    pub fn names(&self, kind: &str) -> Vec<String> {
        let text = self.kubectl(&["get", kind, "-n", &self.namespace, "-o", "jsonpath={.items[*].metadata.name}"]);
        text.split_whitespace().map(str::to_string).collect()
    }

    /// The Deployment name of an agent.
    pub fn agent(&self, id: &str) -> String {
        format!("{}-agent-{id}", self.fleet.name)
    }

    /// Spawns a task on the fleet's runtime (a watch running while rivetctl does).
    pub fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.runtime.spawn(future)
    }

    /// Runs a future on the fleet's runtime (for kube clients in assertions).
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }
}

impl Drop for KubeFleet {
    fn drop(&mut self) {
        if let Some(kubelet) = self.kubelet.take() {
            self.runtime.block_on(kubelet.shutdown());
        }
    }
}
