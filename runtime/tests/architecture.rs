//! Architecture invariant (docs/ARCHITECTURE.md, issue 8): the runtime knows no target. Its
//! own `Cargo.toml` has no direct dependency on a target's crate (Docker's bollard,
//! Kubernetes' kube and k8s-openapi, SSH's russh, a Proxmox client, the HTTP and TLS
//! plumbing adapters use), and no file under `runtime/src` names one or an adapter module
//! of `targets` (`targets::docker`, `targets::ssh`, …): the runtime gets its targets from
//! the factory in `targets` and drives them through the orchestrator's port.
//!
//! Dev-dependencies are not checked: the end-to-end tests read the engines through their
//! CLIs, and nothing in them reaches the binary.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Whether a package is a target's crate (or the I/O plumbing of one).
fn is_target_crate(name: &str) -> bool {
    let prefixes = ["bollard", "kube", "k8s-openapi", "russh", "proxmox", "hyper", "tokio-rustls"];
    prefixes
        .iter()
        .any(|p| name == *p || name.starts_with(&format!("{p}-")) || (*p == "proxmox" && name.starts_with(p)))
}

/// The crates of targets as Rust names them (the first segment of a path): an identifier
/// that is one of these, or starts with one and `_` (`kube_client`, `russh_keys`), or any
/// `proxmox…` crate.
const TARGET_CRATES: &[&str] = &["bollard", "kube", "k8s_openapi", "russh", "proxmox", "hyper", "tokio_rustls"];

/// The adapter modules of `targets`, which the runtime may not name (in `targets::{…}` too).
const ADAPTER_MODULES: &[&str] = &["docker", "ssh", "kubernetes", "proxmox"];

fn runtime_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The runtime package's direct dependencies as cargo resolves its manifest: (the name the
/// manifest uses, the package name, the kind: `normal`, `build` or `dev`).
fn direct_dependencies() -> Vec<(String, String, String)> {
    let output = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(runtime_dir())
        .output()
        .expect("cargo metadata runs");
    assert!(output.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&output.stderr));
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    let manifest = runtime_dir().join("Cargo.toml");
    let package = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .find(|p| p["manifest_path"].as_str().is_some_and(|m| Path::new(m) == manifest))
        .unwrap_or_else(|| panic!("no package with manifest {} in cargo metadata", manifest.display()));
    package["dependencies"]
        .as_array()
        .expect("dependencies")
        .iter()
        .map(|d| {
            let name = d["name"].as_str().expect("a dependency name").to_string();
            let key = d["rename"].as_str().map(str::to_string).unwrap_or_else(|| name.clone());
            let kind = d["kind"].as_str().unwrap_or("normal").to_string();
            (key, name, kind)
        })
        .collect()
}

/// The manifest lines that declare dependency `key` (`key = …`, `key.workspace = true`,
/// `[dependencies.key]`), as `Cargo.toml:LINE: text`.
fn manifest_lines(manifest: &str, key: &str) -> Vec<String> {
    manifest
        .lines()
        .enumerate()
        .filter(|(_, line)| {
            let line = line.trim();
            let declares = line.strip_prefix(key).is_some_and(|rest| {
                let rest = rest.trim_start();
                rest.starts_with('=') || rest.starts_with(".workspace") || rest.starts_with('.')
            });
            declares || line.ends_with(&format!("dependencies.{key}]"))
        })
        .map(|(n, line)| format!("runtime/Cargo.toml:{}: {}", n + 1, line.trim()))
        .collect()
}

#[test]
fn runtime_has_no_direct_dependency_on_a_target_crate() {
    let dependencies = direct_dependencies();
    assert!(
        dependencies.iter().any(|(key, _, _)| key == "orchestrator"),
        "unexpected cargo metadata: {dependencies:?}"
    );
    let manifest = std::fs::read_to_string(runtime_dir().join("Cargo.toml")).unwrap();
    let offending: Vec<String> = dependencies
        .iter()
        .filter(|(_, name, kind)| kind != "dev" && is_target_crate(name))
        .flat_map(|(key, name, kind)| {
            let lines = manifest_lines(&manifest, key);
            if lines.is_empty() { vec![format!("runtime/Cargo.toml: {kind} dependency {name}")] } else { lines }
        })
        .collect();
    assert!(
        offending.is_empty(),
        "the runtime depends directly on target crates; build adapters through the factory in `targets` instead:\n{}",
        offending.join("\n")
    );
}

/// The code of a source file with `//` comments blanked (doc comments may mention crates).
fn code_of(text: &str) -> Vec<String> {
    text.lines().map(|line| line.find("//").map_or(line, |at| &line[..at]).to_string()).collect()
}

/// Whether identifier `ident` is the name of a target's crate.
fn is_target_crate_ident(ident: &str) -> bool {
    TARGET_CRATES
        .iter()
        .any(|c| ident == *c || ident.starts_with(&format!("{c}_")) || (*c == "proxmox" && ident.starts_with(c)))
}

/// The crate a line of code names, if any: an identifier that starts a path (not after
/// `::` or `.`) and is followed by `::`, or is imported (`use bollard;`, `extern crate`).
fn crate_named(line: &str) -> Option<String> {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let imports = line.trim_start().starts_with("use ") || line.trim_start().starts_with("extern crate ");
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let mut i = 0;
    while i < chars.len() {
        let (start, c) = chars[i];
        if !(c.is_alphabetic() || c == '_') || (i > 0 && ident(chars[i - 1].1)) {
            i += 1;
            continue;
        }
        let mut j = i;
        while j < chars.len() && ident(chars[j].1) {
            j += 1;
        }
        let end = chars.get(j).map_or(line.len(), |(at, _)| *at);
        let word = &line[start..end];
        let before = line[..start].trim_end();
        let first_segment = !before.ends_with("::") && !before.ends_with('.');
        let path = line[end..].starts_with("::");
        if is_target_crate_ident(word) && first_segment && (path || imports) {
            return Some(word.to_string());
        }
        i = j;
    }
    None
}

/// Whether `line` names adapter module `targets::<module>` (not `targets::dockerish`).
fn names_adapter(line: &str) -> Option<&'static str> {
    ADAPTER_MODULES.iter().copied().find(|module| {
        let path = format!("targets::{module}");
        line.match_indices(&path).any(|(at, _)| {
            let before = line[..at].chars().next_back();
            let after = line[at + path.len()..].chars().next();
            before.is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
                && after.is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
        })
    })
}

/// The places in `text` (a file named `file`) that name a target's crate or an adapter
/// module of `targets`, as `file:LINE: text (why)`.
fn offending_lines(file: &str, text: &str) -> Vec<String> {
    let code = code_of(text);
    let original: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    for (n, line) in code.iter().enumerate() {
        if let Some(name) = crate_named(line) {
            found.push(format!("{file}:{}: {} (names the crate `{name}`)", n + 1, original[n].trim()));
        } else if let Some(module) = names_adapter(line) {
            found.push(format!("{file}:{}: {} (names `targets::{module}`)", n + 1, original[n].trim()));
        }
    }
    // `targets::{build, docker::Engine}`: the items of a grouped import, across lines.
    let joined = code.join("\n");
    let mut from = 0;
    while let Some(at) = joined[from..].find("targets::{") {
        let start = from + at;
        let open = start + "targets::{".len();
        let close = matching_brace(&joined, open).unwrap_or(joined.len());
        let line = joined[..start].matches('\n').count();
        for item in top_level_items(&joined[open..close]) {
            let first = item.split("::").next().unwrap_or("").trim();
            if ADAPTER_MODULES.contains(&first) {
                found.push(format!(
                    "{file}:{}: {} (names `targets::{first}` in a grouped import)",
                    line + 1,
                    original[line].trim()
                ));
            }
        }
        from = close;
    }
    found
}

/// The index of the `}` closing the group whose contents start at `open`.
fn matching_brace(text: &str, open: usize) -> Option<usize> {
    let mut depth = 1;
    for (i, c) in text[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(open + i);
                }
            }
            _ => {}
        }
    }
    None
}

/// The comma-separated items of a group, nested groups kept whole.
fn top_level_items(group: &str) -> Vec<String> {
    let (mut items, mut current, mut depth) = (Vec::new(), String::new(), 0);
    for c in group.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    items.push(current);
    items.into_iter().map(|i| i.trim().to_string()).filter(|i| !i.is_empty()).collect()
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|err| panic!("cannot read {}: {err}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

#[test]
fn runtime_src_names_no_target_crate_or_adapter_module() {
    let src = runtime_dir().join("src");
    let files = rust_files(&src);
    assert!(files.iter().any(|f| f.ends_with("main.rs")), "no main.rs under {}", src.display());
    let offending: Vec<String> = files
        .iter()
        .flat_map(|path| {
            let text = std::fs::read_to_string(path).unwrap();
            let name = path.strip_prefix(runtime_dir()).unwrap().display().to_string();
            offending_lines(&format!("runtime/{name}"), &text)
        })
        .collect();
    assert!(
        offending.is_empty(),
        "runtime/src names target crates or adapter modules ({} places); go through the port and the factory in `targets`:\n{}",
        offending.len(),
        offending.join("\n")
    );
}

/// The checks above find what they must and nothing else.
#[test]
fn the_checks_find_target_names_and_only_them() {
    let text = "//! Talks to bollard through the port.\n\
                use bollard::Docker;\n\
                use targets::{build, cancel::Token};\n\
                use targets::{\n    render,\n    docker::{self, Engine},\n};\n\
                let hyperlink = my_bollard_thing(); // bollard:: in a comment\n\
                let session = russh::client::connect();\n\
                let x = targets::ssh::Session::new();\n\
                let factory = targets::connect(&config);\n\
                let a = render::proxmox::artifacts(fleet)?; let t = \"proxmox\"; let kube_config = 1;\n";
    let found = offending_lines("f.rs", text);
    let lines: Vec<&str> = found.iter().map(|f| f.split(':').nth(1).unwrap()).collect();
    assert_eq!(lines, ["2", "9", "10", "4"], "{found:#?}");
    assert!(found[3].contains("targets::docker"), "{found:#?}");

    for (name, target) in [
        ("bollard", true),
        ("kube", true),
        ("kube-client", true),
        ("k8s-openapi", true),
        ("russh", true),
        ("proxmox-api", true),
        ("proxmoxer", true),
        ("hyper", true),
        ("hyper-util", true),
        ("tokio-rustls", true),
        ("tokio", false),
        ("rivet-targets", false),
        ("rivet-orchestrator", false),
        ("kubeconfig-free", false),
        ("clap", false),
    ] {
        assert_eq!(is_target_crate(name), target, "{name}");
    }
    let manifest = "[dependencies]\norchestrator.workspace = true\nbollard.workspace = true\nbollard_x = \"1\"\n[dependencies.russh]\nversion = \"1\"\n";
    assert_eq!(manifest_lines(manifest, "bollard"), ["runtime/Cargo.toml:3: bollard.workspace = true"]);
    assert_eq!(manifest_lines(manifest, "russh"), ["runtime/Cargo.toml:5: [dependencies.russh]"]);
}
