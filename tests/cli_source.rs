//! Sources from git, end to end: values git would read as options are refused before git
//! runs, and a repository that never answers is given up on at `source.git_timeout`.

mod support;

use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::{describe, rivetctl, run};

/// A project directory whose config has this `source:` section (and a cache of its own).
fn project(dir: &Path, source: &str) {
    let config =
        format!("deployment:\n  target: docker\n  source:\n{source}agents:\n  opus: {{provider: anthropic}}\n");
    std::fs::write(dir.join("rivet.config.yaml"), config).unwrap();
    std::fs::write(dir.join(".env"), "POSTGRES_PASSWORD=test-only\n").unwrap();
}

#[test]
fn a_url_or_ref_starting_with_a_dash_is_refused_before_git_runs() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("upload-pack-ran");
    project(dir.path(), &format!("    git: \"--upload-pack=touch {}\"\n    ref: -h\n", marker.display()));
    let output = run(rivetctl(dir.path()).env("XDG_CACHE_HOME", dir.path().join("cache")).args([
        "infra",
        "preview",
        "--offline",
    ]));
    let text = describe(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("\"git\" must be a git URL or path that does not start with `-`"), "{text}");
    assert!(stderr.contains("\"ref\" must be a branch, tag or commit that does not start with `-`"), "{text}");
    assert!(stderr.contains("--> rivet.config.yaml:4:10"), "{text}");
    assert!(!marker.exists(), "git ran the upload-pack command");
    assert!(!dir.path().join("cache").exists(), "git never ran: {text}");
}

#[test]
fn a_git_server_that_never_answers_is_given_up_on_at_the_timeout() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    project(dir.path(), &format!("    git: git://127.0.0.1:{port}/rivetos.git\n    git_timeout: 2s\n"));
    let started = Instant::now();
    let mut child = rivetctl(dir.path())
        .env("XDG_CACHE_HOME", dir.path().join("cache"))
        .args(["infra", "preview", "--offline"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("rivetctl still waited for git after 60s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let elapsed = started.elapsed();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}: {stderr}");
    assert!(
        stderr.contains("git clone did not finish within 2s and was stopped (it was to clone the source)"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "hint: check that the repository is reachable from this machine, or raise deployment.source.git_timeout"
        ),
        "{stderr}"
    );
    let mirror = std::fs::read_dir(dir.path().join("cache/rivetctl/git")).unwrap().next().unwrap().unwrap().path();
    assert!(!mirror.join("mirror.git").exists(), "no half-cloned mirror is left to fetch into");
}
