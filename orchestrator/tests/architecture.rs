//! Architecture invariant (docs/ARCHITECTURE.md): the orchestrator depends on no I/O crate,
//! directly or through another crate.

use std::process::Command;

const FORBIDDEN: &[&str] =
    &["bollard", "kube", "kube-client", "russh", "proxmox-api", "hyper", "tokio", "reqwest", "mio"];

/// The crate names `cargo tree` lists for `scope` (e.g. `-p rivet-orchestrator -e normal`),
/// and the whole output for messages.
fn cargo_tree(scope: &[&str]) -> (Vec<String>, String) {
    let output = Command::new(env!("CARGO"))
        .args(["tree", "--offline"])
        .args(scope)
        .args(["--prefix", "none", "--format", "{p}"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(output.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&output.stderr));
    let tree = String::from_utf8_lossy(&output.stdout).into_owned();
    let crates = tree.lines().filter_map(|line| line.split_whitespace().next()).map(str::to_string).collect();
    (crates, tree)
}

#[test]
fn orchestrator_depends_on_no_io_crate() {
    let (crates, tree) = cargo_tree(&["-p", "rivet-orchestrator", "-e", "normal"]);
    assert!(crates.iter().any(|c| c == "saphyr-parser"), "unexpected cargo tree output:\n{tree}");
    let bad: Vec<&String> = crates.iter().filter(|c| FORBIDDEN.contains(&c.as_str())).collect();
    assert!(bad.is_empty(), "the orchestrator depends on I/O crates {bad:?}:\n{tree}");
}

/// One crypto backend for the workspace: ring (russh, and rustls for `tcp://` engines). A
/// default feature somewhere must not bring in aws-lc-rs and its C/CMake build.
#[test]
fn the_workspace_uses_ring_only() {
    let (crates, tree) = cargo_tree(&["--workspace", "-e", "normal,build"]);
    let has = |name: &str| crates.iter().any(|c| c == name);
    assert!(has("ring") && has("rustls"), "unexpected cargo tree output:\n{tree}");
    let bad: Vec<&String> = crates.iter().filter(|c| c.starts_with("aws-lc")).collect();
    assert!(bad.is_empty(), "a second crypto backend is in the tree: {bad:?}");
}
