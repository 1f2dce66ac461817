//! Every example validates, previews, and renders exactly the golden artifacts.

mod support;

use std::path::Path;

use support::{describe, golden, repo, rivetctl, run};

const EXAMPLES: &[&str] = &["quickstart", "kubernetes", "proxmox", "mesh"];

fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn examples_validate_and_render_golden_artifacts() {
    for example in EXAMPLES {
        let config = format!("examples/{example}/rivet.config.yaml");
        let validate = run(rivetctl(&repo()).args(["-c", &config, "config", "validate"]));
        assert_eq!(validate.status.code(), Some(0), "{example}: {}", describe(&validate));
        let out = tempfile::tempdir().unwrap();
        let preview =
            run(rivetctl(&repo()).args(["-c", &config, "infra", "preview", "--offline", "--out"]).arg(out.path()));
        assert_eq!(preview.status.code(), Some(0), "{example}: {}", describe(&preview));
        let rendered = files(out.path());
        assert!(!rendered.is_empty(), "{example} rendered nothing");
        for file in rendered {
            let text = std::fs::read_to_string(out.path().join(&file)).unwrap();
            golden(&format!("tests/golden/examples/{example}/{file}"), &text);
        }
    }
}

#[test]
fn rendering_twice_gives_identical_bytes() {
    for example in EXAMPLES {
        let config = format!("examples/{example}/rivet.config.yaml");
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        for dir in [&a, &b] {
            let output =
                run(rivetctl(&repo()).args(["-c", &config, "infra", "preview", "--offline", "--out"]).arg(dir.path()));
            assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
        }
        for file in files(a.path()) {
            assert_eq!(
                std::fs::read(a.path().join(&file)).unwrap(),
                std::fs::read(b.path().join(&file)).unwrap(),
                "{example}/{file}"
            );
        }
    }
}
