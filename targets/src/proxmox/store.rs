//! The deployment's documents (lock, journal, history) on the Proxmox VE target: lines of
//! the datahub container's description (the first container's, without a datahub), one per
//! document, `rivetctl-state <name> <generation> <base64 body>`. Every write is a config PUT
//! guarded by the config's digest, so two runs never overwrite each other unseen (the
//! compare-and-swap the port asks for), and the rest of the description is kept as it is.
//!
//! Before that container exists (a first `infra up`) the documents are held by this run and
//! written to it as soon as it is created ([`ProxmoxStore::attach`]); two first runs at
//! once are kept apart by the container itself: the second create of the same vmid fails.
//!
//! Limits: a description holds at most 8 KiB (the schema's `maxLength`), enough for the
//! lock and the documents of `infra up`; a rollout journal of a large fleet would not fit,
//! and waits for the store over SSH in that container (docs/proxmox.md, Status).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use orchestrator::port::{Document, StateError, StateStore, TargetError};

use super::api;
use super::client::{ApiError, Client};
use super::containers;
use super::target::target_error;

/// The description's limit (`maxLength` of `description` in the API schema).
pub const DESCRIPTION_MAX: usize = 8192;
const PREFIX: &str = "rivetctl-state ";

/// Where the documents are, and those held until it exists.
pub struct ProxmoxStore {
    client: Arc<Client>,
    /// `(node, vmid, name)` of the container holding them.
    home: Mutex<Option<(String, u32, String)>>,
    pending: Mutex<BTreeMap<String, Document>>,
}

/// The documents in a description, and its other lines.
fn parse(description: &str) -> (Vec<String>, BTreeMap<String, Document>) {
    let mut other = Vec::new();
    let mut documents = BTreeMap::new();
    for line in description.lines() {
        let parsed = line.strip_prefix(PREFIX).and_then(|rest| {
            let mut parts = rest.splitn(3, ' ');
            let name = parts.next()?.to_string();
            let generation = parts.next()?.parse().ok()?;
            let body = base64::engine::general_purpose::STANDARD.decode(parts.next()?).ok()?;
            Some((name, Document { generation, body: String::from_utf8(body).ok()? }))
        });
        match parsed {
            Some((name, document)) => {
                documents.insert(name, document);
            }
            None => other.push(line.to_string()),
        }
    }
    (other, documents)
}

/// `human` (the lowering's description) followed by the state documents' lines of `live`
/// (the container's description now): what an update of the description writes.
pub fn with_documents(human: &str, live: &str) -> String {
    let (other, documents) = parse(live);
    let mut lines: Vec<String> = human.lines().map(str::to_string).collect();
    // The pinned host keys stay too: they came from the create task, once.
    lines.extend(other.into_iter().filter(|l| l.starts_with(containers::HOST_KEY_LINE)));
    compose(&lines, &documents)
}

/// A description with `other` lines and `documents`.
fn compose(other: &[String], documents: &BTreeMap<String, Document>) -> String {
    let mut text: String = other.iter().map(|l| format!("{l}\n")).collect();
    for (name, document) in documents {
        let body = base64::engine::general_purpose::STANDARD.encode(&document.body);
        text.push_str(&format!("{PREFIX}{name} {} {body}\n", document.generation));
    }
    text
}

fn conflict(name: &str, expected: Option<u64>, found: Option<u64>) -> StateError {
    StateError::Conflict { name: name.to_string(), expected, found }
}

impl ProxmoxStore {
    pub fn new(client: Arc<Client>, home: Option<(String, u32, String)>) -> ProxmoxStore {
        ProxmoxStore { client, home: Mutex::new(home), pending: Mutex::new(BTreeMap::new()) }
    }

    /// Whether the documents are in container `vmid`.
    pub fn holds(&self, vmid: u32) -> bool {
        self.home().is_some_and(|(_, home, _)| home == vmid)
    }

    fn home(&self) -> Option<(String, u32, String)> {
        self.home.lock().expect("store home").clone()
    }

    /// The container now exists: the documents held so far are written to it.
    pub async fn attach(&self, node: &str, vmid: u32, name: &str) -> Result<(), StateError> {
        *self.home.lock().expect("store home") = Some((node.to_string(), vmid, name.to_string()));
        let pending = std::mem::take(&mut *self.pending.lock().expect("pending documents"));
        for (name, document) in pending {
            self.change(&name, |documents| {
                documents.insert(name.clone(), document.clone());
                Ok(document.generation)
            })
            .await?;
        }
        Ok(())
    }

    /// The container is about to be destroyed (`infra destroy --volumes`): its documents are
    /// held by this run from now on, so that the lock can still be released.
    pub async fn detach(&self) -> Result<(), StateError> {
        let documents = self.load().await?;
        *self.home.lock().expect("store home") = None;
        *self.pending.lock().expect("pending documents") = documents;
        Ok(())
    }

    /// Reads the description, applies `edit` to its documents and writes it back if the
    /// config did not change meanwhile (else reads again).
    async fn change(
        &self,
        name: &str,
        edit: impl Fn(&mut BTreeMap<String, Document>) -> Result<u64, StateError>,
    ) -> Result<u64, StateError> {
        let (node, vmid, _) = self.home().expect("called with a home");
        for _ in 0..5 {
            let config = containers::config(&self.client, &node, vmid).await.map_err(failed)?;
            let (other, mut documents) = parse(config.get("description").map_or("", String::as_str));
            let generation = edit(&mut documents)?;
            let description = compose(&other, &documents);
            if description.len() > DESCRIPTION_MAX {
                return Err(StateError::Target(TargetError::failed(format!(
                    "state document \"{name}\" does not fit the description of container {vmid} ({} of {DESCRIPTION_MAX} bytes)",
                    description.len()
                ))));
            }
            let set = BTreeMap::from([("description".to_string(), description)]);
            let digest = config.get("digest").map(String::as_str);
            match self.client.call_value(&api::set_config(&node, vmid, &set, &[], digest)).await {
                Ok(_) => return Ok(generation),
                Err(ApiError::Refused { message, .. }) if message.contains("file changed by other user") => continue,
                Err(err) => return Err(failed(err)),
            }
        }
        Err(StateError::Target(TargetError::failed(format!(
            "the config of container {vmid} kept changing while state document \"{name}\" was written"
        ))))
    }
}

fn failed(err: ApiError) -> StateError {
    StateError::Target(target_error(err))
}

/// The compare-and-swap of one document: `expected` must be its generation now.
fn swap(
    documents: &mut BTreeMap<String, Document>,
    name: &str,
    expected: Option<u64>,
    body: Option<&str>,
) -> Result<u64, StateError> {
    let found = documents.get(name).map(|d| d.generation);
    if found != expected {
        return Err(conflict(name, expected, found));
    }
    let generation = found.map_or(1, |g| g + 1);
    match body {
        Some(body) => {
            documents.insert(name.to_string(), Document { generation, body: body.to_string() });
        }
        None => {
            documents.remove(name);
        }
    }
    Ok(generation)
}

impl StateStore for ProxmoxStore {
    fn location(&self) -> String {
        match self.home() {
            Some((node, vmid, name)) => format!("the description of container {name} ({vmid}) on {node}"),
            None => "this run, until the deployment's first container exists".to_string(),
        }
    }

    async fn load(&self) -> Result<BTreeMap<String, Document>, StateError> {
        let Some((node, vmid, _)) = self.home() else {
            return Ok(self.pending.lock().expect("pending documents").clone());
        };
        let config = containers::config(&self.client, &node, vmid).await.map_err(failed)?;
        Ok(parse(config.get("description").map_or("", String::as_str)).1)
    }

    async fn store(&self, name: &str, expected: Option<u64>, body: &str) -> Result<u64, StateError> {
        if self.home().is_none() {
            return swap(&mut self.pending.lock().expect("pending documents"), name, expected, Some(body));
        }
        self.change(name, |documents| swap(documents, name, expected, Some(body))).await
    }

    async fn remove(&self, name: &str, expected: u64) -> Result<(), StateError> {
        if self.home().is_none() {
            return swap(&mut self.pending.lock().expect("pending documents"), name, Some(expected), None).map(|_| ());
        }
        self.change(name, |documents| swap(documents, name, Some(expected), None)).await.map(|_| ())
    }

    async fn destroy(&self) -> Result<(), StateError> {
        self.pending.lock().expect("pending documents").clear();
        if self.home().is_none() {
            return Ok(());
        }
        self.change("*", |documents| {
            documents.clear();
            Ok(0)
        })
        .await
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_live_beside_the_other_lines_of_the_description() {
        let other = vec!["Managed by rivetctl; edits are overwritten.".to_string(), "template: local:x".to_string()];
        let mut documents = BTreeMap::new();
        swap(&mut documents, "lock", None, Some(r#"{"holder":"ci"}"#)).unwrap();
        let text = compose(&other, &documents);
        assert!(
            text.starts_with("Managed by rivetctl; edits are overwritten.\ntemplate: local:x\nrivetctl-state lock 1 ")
        );
        let (kept, read) = parse(&text);
        assert_eq!(kept, other);
        assert_eq!(read["lock"], Document { generation: 1, body: r#"{"holder":"ci"}"#.into() });
        assert!(matches!(swap(&mut documents, "lock", None, Some("x")), Err(StateError::Conflict { .. })));
        assert_eq!(swap(&mut documents, "lock", Some(1), Some("y")).unwrap(), 2);
        swap(&mut documents, "lock", Some(2), None).unwrap();
        assert!(documents.is_empty());
    }
}
