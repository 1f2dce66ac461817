//! A throw-away copy of the quickstart fleet per test: its own directory, its own deployment
//! name, removed from the Docker Engine when the test ends (pass or fail), rivetctl's state
//! volumes for it included.
//!
//! Assertions read the engine through the `docker` CLI, not through rivetctl's own code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{describe, repo, rivetctl, run};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Runs `docker` and returns stdout; panics (loudly) when Docker is not usable.
pub fn docker(args: &[&str]) -> String {
    let output = Command::new("docker").args(args).output().unwrap_or_else(|err| {
        panic!("cannot run `docker {}`: {err}. These tests need the Docker CLI and a running engine.", args.join(" "))
    });
    assert!(output.status.success(), "`docker {}` failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Like [`docker`], but a failure is returned, not a panic.
pub fn docker_status(args: &[&str]) -> Output {
    Command::new("docker").args(args).output().expect("docker CLI")
}

pub fn copy_tree(from: &Path, to: &Path) {
    for entry in walk(from) {
        let relative = entry.strip_prefix(from).unwrap();
        if relative.starts_with(".rivetctl") {
            continue;
        }
        let target = to.join(relative);
        if entry.is_dir() {
            std::fs::create_dir_all(&target).unwrap();
        } else {
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::copy(&entry, &target).unwrap();
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        out.push(path.clone());
        if path.is_dir() {
            out.extend(walk(&path));
        }
    }
    out
}

/// One container as `docker inspect` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub id: String,
    pub state: String,
    pub health: String,
    pub image: String,
}

/// A quickstart fleet in a temporary directory with a unique deployment name.
pub struct TestFleet {
    pub dir: tempfile::TempDir,
    pub name: String,
}

impl TestFleet {
    /// Copies examples/quickstart and renames its deployment to `rt-<test>-<pid>-<n>`.
    pub fn new(test: &str) -> TestFleet {
        docker(&["version", "--format", "{{.Server.Version}}"]);
        super::base_image::ensure_base_image();
        let dir = tempfile::Builder::new().prefix("rivetctl-e2e-").tempdir().unwrap();
        copy_tree(&repo().join("examples/quickstart"), dir.path());
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("rt-{test}-{}-{n}", std::process::id());
        let fleet = TestFleet { dir, name };
        fleet.edit(|text| {
            text.replace("project_name: rivet-quickstart", &format!("project_name: {}", fleet.name))
                .replace("network: rivet-quickstart-net", &format!("network: {}-net", fleet.name))
        });
        fleet
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("rivet.config.yaml")
    }

    /// Rewrites the config.
    pub fn edit(&self, change: impl FnOnce(String) -> String) {
        let text = std::fs::read_to_string(self.config()).unwrap();
        let changed = change(text.clone());
        assert_ne!(text, changed, "the edit changed nothing");
        std::fs::write(self.config(), changed).unwrap();
    }

    /// A rivetctl command on this fleet's config.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = rivetctl(self.dir.path());
        command.arg("-c").arg(self.config()).args(args);
        command
    }

    /// Runs rivetctl on this fleet.
    pub fn rivetctl(&self, args: &[&str]) -> Output {
        run(&mut self.command(args))
    }

    /// Runs rivetctl and asserts the exit code.
    pub fn expect(&self, args: &[&str], code: i32) -> Output {
        let output = self.rivetctl(args);
        assert_eq!(output.status.code(), Some(code), "rivetctl {}:\n{}", args.join(" "), describe(&output));
        output
    }

    /// The deployment's containers by name.
    pub fn containers(&self) -> BTreeMap<String, Container> {
        let filter = format!("label=io.rivetctl.deployment={}", self.name);
        let ids = docker(&["ps", "-aq", "--filter", &filter]);
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if ids.is_empty() {
            return BTreeMap::new();
        }
        let mut args = vec![
            "inspect",
            "--format",
            "{{.Name}} {{.Id}} {{.State.Status}} {{with index .State \"Health\"}}{{.Status}}{{else}}none{{end}} {{.Config.Image}}",
        ];
        args.extend(ids);
        docker(&args)
            .lines()
            .map(|line| {
                let parts: Vec<&str> = line.split_whitespace().collect();
                (
                    parts[0].trim_start_matches('/').to_string(),
                    Container {
                        id: parts[1].into(),
                        state: parts[2].into(),
                        health: parts[3].into(),
                        image: parts[4].into(),
                    },
                )
            })
            .collect()
    }

    /// Container name of an agent.
    pub fn agent(&self, id: &str) -> String {
        format!("{}-agent-{id}", self.name)
    }

    /// Names (ids) of the deployment's objects of a kind: `volume` or `network`. The
    /// volumes that hold rivetctl's own state (`super::state`) are not the deployment's data
    /// and are not listed.
    pub fn list(&self, kind: &str) -> Vec<String> {
        let filter = format!("label=io.rivetctl.deployment={}", self.name);
        let output = docker_status(&[kind, "ls", "-q", "--filter", &filter]);
        let state = if kind == "volume" { super::state::volume_names_or_none(&self.name) } else { Vec::new() };
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|n| !state.iter().any(|s| s == n))
            .map(str::to_string)
            .collect()
    }

    /// Asserts every long-running container is running and healthy, and migrate exited 0.
    pub fn assert_healthy(&self, agents: &[&str]) {
        let containers = self.containers();
        for id in agents {
            let c = containers.get(&self.agent(id)).unwrap_or_else(|| panic!("agent {id} missing: {containers:#?}"));
            assert_eq!((c.state.as_str(), c.health.as_str()), ("running", "healthy"), "agent {id}");
        }
        let hub = &containers[&format!("{}-datahub", self.name)];
        assert_eq!((hub.state.as_str(), hub.health.as_str()), ("running", "healthy"));
        let migrate = docker(&["inspect", "--format", "{{.State.ExitCode}}", &format!("{}-migrate", self.name)]);
        assert_eq!(migrate.trim(), "0");
    }
}

impl Drop for TestFleet {
    fn drop(&mut self) {
        let filter = format!("label=io.rivetctl.deployment={}", self.name);
        let ids = docker_status(&["ps", "-aq", "--filter", &filter]);
        let ids: Vec<String> = String::from_utf8_lossy(&ids.stdout).split_whitespace().map(str::to_string).collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(ids.iter().map(String::as_str));
            docker_status(&args);
        }
        for kind in ["network", "volume"] {
            for item in self.list(kind) {
                docker_status(&[kind, "rm", &item]);
            }
        }
        super::state::remove_all(&self.name);
    }
}
