//! `rivetctl config validate` and `infra preview` on broken configs: every one exits 1 with
//! `file:line:col`, a hint, and no panic; the output is golden-tested.

mod support;

use support::{describe, golden, repo, rivetctl, run};

fn broken_files() -> Vec<String> {
    let dir = repo().join("tests/config/broken");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("tests/config/broken")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    names.sort();
    names
}

#[test]
fn every_broken_config_fails_with_a_position_and_a_hint() {
    let dir = repo().join("tests/config/broken");
    let names = broken_files();
    assert!(names.len() >= 15, "only {} broken configs", names.len());
    for name in &names {
        let output = run(rivetctl(&dir).args(["-c", name, "config", "validate"]));
        let text = describe(&output);
        assert_eq!(output.status.code(), Some(1), "{name}:\n{text}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("panicked"), "{name} panicked:\n{text}");
        let position = regex_like_position(&stderr, name);
        assert!(position, "{name}: no {name}:line:col in\n{text}");
        assert!(stderr.contains("\nhint: "), "{name}: no hint in\n{text}");
        golden(&format!("tests/config/broken/{}.stderr", name.trim_end_matches(".yaml")), &stderr);
    }
}

/// True when `stderr` holds `--> <name>:<line>:<col>`.
fn regex_like_position(stderr: &str, name: &str) -> bool {
    stderr.lines().any(|line| {
        line.trim_start().strip_prefix(&format!("--> {name}:")).is_some_and(|rest| {
            let mut parts = rest.split(':');
            let line_ok = parts.next().is_some_and(|p| p.parse::<u32>().is_ok());
            let col_ok = parts.next().is_some_and(|p| p.parse::<u32>().is_ok());
            line_ok && col_ok
        })
    })
}

#[test]
fn preview_refuses_broken_configs_before_touching_anything() {
    let dir = repo().join("tests/config/broken");
    let output = run(rivetctl(&dir).args(["-c", "04-port-out-of-range.yaml", "infra", "preview"]));
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(output.stdout.is_empty(), "no plan is printed: {}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("nothing was changed"));
}

#[test]
fn json_diagnostics() {
    let dir = repo().join("tests/config/broken");
    let output = run(rivetctl(&dir).args(["-c", "25-many-errors.yaml", "--output", "json", "config", "validate"]));
    assert_eq!(output.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON document");
    assert_eq!(doc["valid"], false);
    let diagnostics = doc["diagnostics"].as_array().unwrap();
    assert!(diagnostics.len() >= 5, "{doc:#}");
    assert!(diagnostics.iter().all(|d| d["line"].is_u64() && d["column"].is_u64()));
}

#[test]
fn a_missing_config_file_says_how_to_point_at_one() {
    let dir = repo().join("tests/config");
    let output = run(rivetctl(&dir).args(["-c", "nope.yaml", "config", "validate"]));
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("config file nope.yaml not found"), "{stderr}");
    assert!(stderr.contains("hint: pass -c PATH"), "{stderr}");
}

#[test]
fn examples_are_valid() {
    let example = "examples/quickstart/rivet.config.yaml";
    let output = run(rivetctl(&repo()).args(["-c", example, "config", "validate"]));
    assert_eq!(output.status.code(), Some(0), "{example}: {}", describe(&output));
}

/// Every field path of the JSON Schema, as `deployment.docker.postgres_port`.
fn schema_paths(schema: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
    let object = schema.get("anyOf").and_then(|a| a.get(0)).unwrap_or(schema);
    if let Some(properties) = object.get("properties").and_then(|p| p.as_object()) {
        for (name, child) in properties {
            let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
            out.push(path.clone());
            schema_paths(child, &path, out);
        }
    }
    if let Some(items) = object.get("items") {
        schema_paths(items, &format!("{prefix}[]"), out);
    }
    if let Some(values) = object.get("additionalProperties").filter(|v| v.is_object()) {
        schema_paths(values, &format!("{prefix}.<id>"), out);
    }
}

#[test]
fn the_configuration_reference_documents_every_field() {
    let output = run(rivetctl(&repo()).args(["config", "schema"]));
    assert_eq!(output.status.code(), Some(0));
    let schema: serde_json::Value = serde_json::from_slice(&output.stdout).expect("the schema is JSON");
    let docs = std::fs::read_to_string(repo().join("docs/configuration.md")).unwrap();
    let mut paths = Vec::new();
    schema_paths(&schema["properties"]["deployment"], "deployment", &mut paths);
    schema_paths(&schema["properties"]["mesh"], "mesh", &mut paths);
    let missing: Vec<&String> = paths.iter().filter(|p| !docs.contains(&format!("`{p}`"))).collect();
    assert!(missing.is_empty(), "docs/configuration.md does not document: {missing:#?}");
}

#[test]
fn a_full_stdout_is_an_error_and_a_closed_one_is_not() {
    let dir = repo();
    // ENOSPC on every write: the output is lost, so the command must fail and say so.
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").expect("/dev/full");
    let output = run(rivetctl(&dir).args(["config", "schema"]).stdout(full));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        stderr.contains("error: cannot write the output to stdout") && stderr.contains("No space left"),
        "{stderr}"
    );

    // A reader that went away (`| head`) ends the command quietly with 0.
    let mut child = rivetctl(&dir)
        .args(["config", "schema"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn rivetctl");
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    assert!(output.stderr.is_empty(), "{}", describe(&output));
}
