//! A deployment's own documents (lock, rollout journal, revision history) as the Docker
//! target keeps them on the primary node, read and written through the `docker` CLI, not
//! through rivetctl's code: the tests check the format, not only rivetctl's view of it.
//!
//! The format (issue 8): one volume per document generation, labelled
//! `io.rivetctl.state-of=<deployment>`, `io.rivetctl.state.document=<lock|journal|history>`,
//! `io.rivetctl.state.generation=<n>`; the body in the label `io.rivetctl.state.body`, or in
//! chunks `io.rivetctl.state.body.0`, `.1`, … when it is too long for one label; a removal is
//! a generation labelled `io.rivetctl.state.removed=true` (a tombstone). A document's current
//! version is its highest generation; a tombstone there means the document is absent.

use std::collections::BTreeMap;

use super::docker::{docker, docker_status};

/// The label that says whose state a volume holds.
pub const STATE_OF: &str = "io.rivetctl.state-of";
const DOCUMENT: &str = "io.rivetctl.state.document";
const GENERATION: &str = "io.rivetctl.state.generation";
const BODY: &str = "io.rivetctl.state.body";
const REMOVED: &str = "io.rivetctl.state.removed";

/// One generation of one document: a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    pub volume: String,
    pub document: String,
    pub generation: u64,
    /// A tombstone: the document was removed at this generation.
    pub removed: bool,
    pub body: String,
}

/// The names of the deployment's state volumes (every generation, tombstones included).
pub fn volume_names(deployment: &str) -> Vec<String> {
    let filter = format!("label={STATE_OF}={deployment}");
    docker(&["volume", "ls", "-q", "--filter", &filter]).lines().map(str::to_string).collect()
}

/// Like [`volume_names`], but empty instead of a panic when the CLI fails (for cleanup).
pub fn volume_names_or_none(deployment: &str) -> Vec<String> {
    let filter = format!("label={STATE_OF}={deployment}");
    let output = docker_status(&["volume", "ls", "-q", "--filter", &filter]);
    String::from_utf8_lossy(&output.stdout).lines().map(str::to_string).collect()
}

/// The body held by a volume's labels: `body`, or the chunks `body.0..n` in order.
fn body_of(labels: &serde_json::Map<String, serde_json::Value>, volume: &str) -> String {
    if let Some(body) = labels.get(BODY) {
        return body.as_str().unwrap_or_else(|| panic!("{volume}: {BODY} is not a string")).to_string();
    }
    let mut body = String::new();
    for index in 0.. {
        let Some(chunk) = labels.get(&format!("{BODY}.{index}")) else { break };
        body.push_str(chunk.as_str().unwrap_or_else(|| panic!("{volume}: {BODY}.{index} is not a string")));
    }
    body
}

/// Every generation of every document of the deployment, oldest first per document. A
/// volume removed between the listing and the inspection (an old generation pruned by a
/// running rivetctl) is left out.
pub fn generations(deployment: &str) -> Vec<Generation> {
    let names = volume_names(deployment);
    if names.is_empty() {
        return Vec::new();
    }
    let mut args = vec!["volume", "inspect", "--format", "{{.Name}} {{json .Labels}}"];
    args.extend(names.iter().map(String::as_str));
    let output = docker_status(&args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() || stderr.lines().all(|l| l.to_lowercase().contains("no such volume")),
        "docker volume inspect failed: {stderr}"
    );
    let mut all: Vec<Generation> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let (volume, labels) = line.split_once(' ').unwrap_or_else(|| panic!("unexpected inspect line {line:?}"));
            let labels: serde_json::Map<String, serde_json::Value> = serde_json::from_str(labels)
                .unwrap_or_else(|err| panic!("{volume}: labels are not a JSON object ({err}): {labels}"));
            let label = |key: &str| labels.get(key).and_then(|v| v.as_str()).map(str::to_string);
            let document = label(DOCUMENT).unwrap_or_else(|| panic!("{volume} has no {DOCUMENT} label: {labels:?}"));
            let generation = label(GENERATION)
                .and_then(|g| g.parse().ok())
                .unwrap_or_else(|| panic!("{volume} has no numeric {GENERATION} label: {labels:?}"));
            Generation {
                volume: volume.to_string(),
                document,
                generation,
                removed: label(REMOVED).as_deref() == Some("true"),
                body: body_of(&labels, volume),
            }
        })
        .collect();
    all.sort_by(|a, b| (&a.document, a.generation).cmp(&(&b.document, b.generation)));
    all
}

/// The current version of each document that exists (not removed), by name.
pub fn documents(deployment: &str) -> BTreeMap<String, Generation> {
    let mut current: BTreeMap<String, Generation> = BTreeMap::new();
    for generation in generations(deployment) {
        // Sorted by generation: the last one of a document wins.
        current.insert(generation.document.clone(), generation);
    }
    current.retain(|_, g| !g.removed);
    current
}

/// The current body of `document` (`lock`, `journal`, `history`), if it exists.
pub fn document(deployment: &str, document: &str) -> Option<String> {
    documents(deployment).remove(document).map(|g| g.body)
}

/// The current body of `document` parsed as JSON; panics if it is not JSON (a test reading
/// the journal or history wants to know the format broke, not see `None`).
pub fn json(deployment: &str, name: &str) -> Option<serde_json::Value> {
    document(deployment, name).map(|body| {
        serde_json::from_str(&body)
            .unwrap_or_else(|err| panic!("state document {name} of {deployment} is not JSON ({err}): {body}"))
    })
}

/// Writes `body` as a new generation of `document` (one above the highest there is), as
/// another runner would; for tests that corrupt or forge a document. Returns the volume.
pub fn write(deployment: &str, document: &str, body: &str) -> String {
    let generation =
        generations(deployment).iter().filter(|g| g.document == document).map(|g| g.generation).max().unwrap_or(0) + 1;
    let volume = format!("{deployment}-test-state-{document}-{generation}");
    let labels = [
        format!("{STATE_OF}={deployment}"),
        format!("{DOCUMENT}={document}"),
        format!("{GENERATION}={generation}"),
        format!("{BODY}={body}"),
    ];
    let mut args = vec!["volume", "create"];
    for label in &labels {
        args.extend(["--label", label.as_str()]);
    }
    args.push(&volume);
    docker(&args);
    volume
}

/// Removes every state volume of the deployment (test cleanup; never panics).
pub fn remove_all(deployment: &str) {
    let names = volume_names_or_none(deployment);
    if !names.is_empty() {
        let mut args = vec!["volume", "rm", "-f"];
        args.extend(names.iter().map(String::as_str));
        docker_status(&args);
    }
}
