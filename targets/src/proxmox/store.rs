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
//! A description holds at most 8 KiB (the schema's `maxLength`): a body bigger than
//! [`INLINE_MAX`] (the rollout journal of a large fleet) is kept as a file in that container
//! instead, written over SSH before the description names it (`@<sha256>` in place of the
//! base64 body), content-addressed and checked on read. The compare-and-swap stays the
//! description's; files no document names any more are removed after a write.

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

/// Bodies up to this size are lines of the description; bigger ones are files.
pub const INLINE_MAX: usize = 1536;
/// Where bigger bodies are, in the container holding the documents.
pub const BLOB_DIR: &str = "/var/lib/rivetctl/state";

/// Where the documents are, and those held until it exists.
pub struct ProxmoxStore {
    client: Arc<Client>,
    /// How the container is reached for bodies kept as files (its pins are its own).
    ssh: Option<(crate::ssh::SshOptions, u16)>,
    session: tokio::sync::Mutex<Option<Arc<crate::ssh::Session>>>,
    /// `(node, vmid, name)` of the container holding them.
    home: Mutex<Option<(String, u32, String)>>,
    pending: Mutex<BTreeMap<String, Document>>,
}

/// The marker of a body kept as a file: `@<sha256 hex>`.
const BLOB: char = '@';

/// The documents in a description, and its other lines. A body kept as a file is
/// `@<sha256>` here ([`ProxmoxStore::resolve`] reads it).
fn parse(description: &str) -> (Vec<String>, BTreeMap<String, Document>) {
    let mut other = Vec::new();
    let mut documents = BTreeMap::new();
    for line in description.lines() {
        let parsed = line.strip_prefix(PREFIX).and_then(|rest| {
            let mut parts = rest.splitn(3, ' ');
            let name = parts.next()?.to_string();
            let generation = parts.next()?.parse().ok()?;
            let text = parts.next()?;
            if text.starts_with(BLOB) {
                return Some((name, Document { generation, body: text.to_string() }));
            }
            let body = base64::engine::general_purpose::STANDARD.decode(text).ok()?;
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
        let body = if is_blob(&document.body) {
            document.body.clone()
        } else {
            base64::engine::general_purpose::STANDARD.encode(&document.body)
        };
        text.push_str(&format!("{PREFIX}{name} {} {body}\n", document.generation));
    }
    text
}

/// Whether a parsed body names a file (`@` and 64 hex digits; a JSON body never starts so).
fn is_blob(body: &str) -> bool {
    body.strip_prefix(BLOB).is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn sha256_hex(body: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(body.as_bytes()))
}

fn conflict(name: &str, expected: Option<u64>, found: Option<u64>) -> StateError {
    StateError::Conflict { name: name.to_string(), expected, found }
}

impl ProxmoxStore {
    /// `ssh`: how the container holding the documents is reached (options and port), for
    /// bodies kept as files; without it, every body must fit the description.
    pub fn new(
        client: Arc<Client>,
        home: Option<(String, u32, String)>,
        ssh: Option<(crate::ssh::SshOptions, u16)>,
    ) -> ProxmoxStore {
        ProxmoxStore {
            client,
            ssh,
            session: tokio::sync::Mutex::new(None),
            home: Mutex::new(home),
            pending: Mutex::new(BTreeMap::new()),
        }
    }

    /// The SSH connection to the container holding the documents, made once, with the
    /// address and pinned host keys of its `config`.
    async fn session(&self, config: &BTreeMap<String, String>) -> Result<Arc<crate::ssh::Session>, StateError> {
        let mut held = self.session.lock().await;
        if let Some(session) = held.as_ref().filter(|s| !s.is_closed()) {
            return Ok(Arc::clone(session));
        }
        let unavailable =
            |why: String| StateError::Target(TargetError::failed(format!("the state documents' files: {why}")));
        let (options, port) = self.ssh.clone().ok_or_else(|| unavailable("no SSH settings".into()))?;
        let address = super::target::address_of(config)
            .ok_or_else(|| unavailable("the container has no static address to reach it over SSH".into()))?;
        let pins = containers::pinned_host_keys(config.get("description").map_or("", String::as_str));
        let options = crate::ssh::SshOptions { pinned: Some(pins), ..options };
        let session = crate::ssh::connect(&address.to_string(), port, "root", &options).await.map_err(|e| {
            StateError::Target(TargetError::unreachable(format!("the state documents' files: {e}")).with_hint(e.hint()))
        })?;
        let session = Arc::new(session);
        *held = Some(Arc::clone(&session));
        Ok(session)
    }

    /// Runs `script` in the container, its stdout; `input` on its stdin.
    async fn run(
        &self,
        config: &BTreeMap<String, String>,
        what: &str,
        script: &str,
        input: Option<&[u8]>,
    ) -> Result<String, StateError> {
        let session = self.session(config).await?;
        super::provision::script_with_input(&session, what, script, input).await.map_err(file_error)
    }

    /// `documents` with the bodies kept as files read (and checked against their digests).
    async fn resolve(
        &self,
        config: &BTreeMap<String, String>,
        mut documents: BTreeMap<String, Document>,
    ) -> Result<BTreeMap<String, Document>, StateError> {
        for (name, document) in documents.iter_mut() {
            if !is_blob(&document.body) {
                continue;
            }
            let digest = document.body[1..].to_ascii_lowercase();
            let body = self
                .run(config, &format!("reading state document {name}"), &format!("cat {BLOB_DIR}/{digest}"), None)
                .await?;
            if sha256_hex(&body) != digest {
                return Err(StateError::Target(TargetError::failed(format!(
                    "state document \"{name}\" in {BLOB_DIR}/{digest} does not match its digest (changed by hand?)"
                ))));
            }
            document.body = body;
        }
        Ok(documents)
    }

    /// Writes `body` as a file (content-addressed, so writing it twice is harmless) and
    /// returns what the description holds for it.
    async fn put_blob(&self, config: &BTreeMap<String, String>, name: &str, body: &str) -> Result<String, StateError> {
        let digest = sha256_hex(body);
        let session = self.session(config).await?;
        let path = format!("{BLOB_DIR}/{digest}");
        super::provision::write_private(&session, &format!("writing state document {name}"), &path, body.as_bytes())
            .await
            .map_err(file_error)?;
        Ok(format!("{BLOB}{digest}"))
    }

    /// Removes the files no document of `description` names (best effort).
    async fn collect(&self, config: &BTreeMap<String, String>, description: &str) {
        let keep: Vec<String> =
            parse(description).1.values().filter(|d| is_blob(&d.body)).map(|d| d.body[1..].to_string()).collect();
        let script = format!(
            "[ -d {BLOB_DIR} ] || exit 0; cd {BLOB_DIR} && for f in *; do case \" {} \" in *\" $f \"*) ;; *) rm -f -- \"$f\";; esac; done",
            keep.join(" ")
        );
        let _ = self.run(config, "removing old state documents", &script, None).await;
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
            let mut files = documents.values().any(|d| is_blob(&d.body));
            for (name, document) in documents.iter_mut() {
                if document.body.len() > INLINE_MAX && !is_blob(&document.body) {
                    document.body = self.put_blob(&config, name, &document.body).await?;
                    files = true;
                }
            }
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
                Ok(_) => {
                    if files {
                        self.collect(&config, &set["description"]).await;
                    }
                    return Ok(generation);
                }
                Err(ApiError::Refused { message, .. }) if message.contains("file changed by other user") => continue,
                Err(err) => return Err(failed(err)),
            }
        }
        Err(StateError::Target(TargetError::failed(format!(
            "the config of container {vmid} kept changing while state document \"{name}\" was written"
        ))))
    }
}

/// A failure reading or writing the documents' files in the container.
fn file_error(err: super::provision::ProvisionError) -> StateError {
    StateError::Target(TargetError::failed(format!("the state documents' files: {err}")))
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
        let documents = parse(config.get("description").map_or("", String::as_str)).1;
        self.resolve(&config, documents).await
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
