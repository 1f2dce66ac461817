//! Shared pieces of the benchmarks: a generated fleet in a temporary directory, running the
//! release binary with wall time and peak RSS, medians.

#![allow(dead_code)]

#[path = "../../../tests/support/base_image.rs"]
mod base_image;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The release binary cargo built for this bench.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_rivetctl")
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Copies examples/quickstart's source tree into `dir` (without any state of its own).
pub fn copy_quickstart(dir: &std::path::Path) {
    let status = Command::new("cp").arg("-a").arg(repo().join("examples/quickstart/.")).arg(dir).status().unwrap();
    assert!(status.success());
    let _ = std::fs::remove_dir_all(dir.join(".rivetctl"));
}

/// A copy of the quickstart source with a config of `agents` agents named `name`.
pub struct BenchFleet {
    pub dir: tempfile::TempDir,
    pub name: String,
}

impl BenchFleet {
    pub fn new(name: &str, agents: usize, memory: &str) -> BenchFleet {
        let dir = tempfile::Builder::new().prefix("rivetctl-bench-").tempdir().unwrap();
        copy_quickstart(dir.path());
        let mut config = format!(
            "deployment:\n  target: docker\n  docker: {{project_name: {name}, network: {name}-net, postgres_port: 0}}\n  resources:\n    agent: {{memory: {memory}, cpus: 0.1, pids: 64}}\n    datahub: {{memory: 64m, cpus: 0.5}}\n  health: {{interval: 1s, timeout: 2s, start_period: 5s, deadline: 120s}}\nagents:\n"
        );
        for i in 0..agents {
            config.push_str(&format!("  agent{i:04}: {{provider: anthropic, model: claude-opus-4}}\n"));
        }
        std::fs::write(dir.path().join("rivet.config.yaml"), config).unwrap();
        BenchFleet { dir, name: name.to_string() }
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("rivet.config.yaml")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(binary());
        command.arg("-c").arg(self.config()).args(args).env("NO_COLOR", "1");
        command
    }

    /// Removes everything the deployment owns from the engine.
    pub fn cleanup(&self) {
        let _ = self
            .command(&["infra", "destroy", "--volumes", "--yes", "-q"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for BenchFleet {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// One timed run: wall time, peak resident set size (KiB), exit code, stdout.
pub struct Run {
    pub wall: Duration,
    pub max_rss_kib: i64,
    pub code: i32,
    pub stdout: String,
}

/// Runs a command, measuring wall time and peak RSS with wait4(2).
pub fn timed(command: &mut Command) -> Run {
    let start = Instant::now();
    let child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let pid = child.id() as libc::pid_t;
    let output_thread = std::thread::spawn(move || {
        let mut child = child;
        let mut stdout = String::new();
        let mut stderr = String::new();
        use std::io::Read;
        child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
        child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
        (stdout, stderr, child)
    });
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own child's pid with valid pointers.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = start.elapsed();
    assert_eq!(waited, pid, "wait4 failed");
    let (stdout, stderr, child) = output_thread.join().unwrap();
    std::mem::forget(child);
    let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { -1 };
    assert!(code == 0 || code == 2, "command failed ({code}): {stderr}");
    Run { wall, max_rss_kib: usage.ru_maxrss, code, stdout }
}

pub fn median<T: Copy + Ord>(values: &mut [T]) -> T {
    values.sort();
    values[values.len() / 2]
}

pub fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Fails loudly if the engine is not usable; creates the base image when it is missing.
pub fn require_docker() {
    let output =
        Command::new("docker").args(["version", "--format", "{{.Server.Version}}"]).output().expect("docker CLI");
    assert!(output.status.success(), "docker is not usable: {}", String::from_utf8_lossy(&output.stderr));
    base_image::ensure_base_image();
}

pub fn dir_of(fleet: &BenchFleet) -> &Path {
    fleet.dir.path()
}
