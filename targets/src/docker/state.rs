//! The deployment's state documents (lock, rollout journal, revision history) on the
//! primary node's engine, as labelled volumes written through the engine API, so every
//! runner that reaches the fleet sees the same lock and can resume the same rollout.
//!
//! Format (read by the docker CLI in the end-to-end tests; version [`FORMAT`]):
//! - one volume per document generation, named
//!   `rivetctl-state-<deployment>-<document>-<generation>`;
//! - labels [`labels::MANAGED_BY`]` = rivetctl`, [`labels::STATE_OF`]` = <deployment>`,
//!   [`labels::DOCUMENT`], [`labels::GENERATION`], [`labels::WRITER`] (a random token of
//!   the write), [`labels::FORMAT`], and [`labels::BODY`] (the document's text) or, for a
//!   removed document, [`labels::REMOVED`]` = true` (a tombstone: generations never go
//!   backwards);
//! - never `io.rivetctl.deployment`, so observing the deployment's objects, and
//!   `infra destroy` without `--volumes`, leave them alone.
//!
//! Compare-and-swap: `POST /volumes/create` with a name that exists returns the existing
//! volume unchanged, so a write creates generation `expected + 1` and has won that name when
//! the volume it gets back carries its own writer token. Names of old generations are freed
//! by cleanup, so a writer that is several generations behind could win a freed name: each
//! write therefore lists the document's generations afterwards and keeps its volume only if
//! no higher generation exists and the generation it expected is still there (the current
//! one is removed only after a successful write above it). Then it removes the older
//! generations. A label holds any size the engine accepts (4 MB tested on API 1.41), so the
//! body is one label.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bollard::models::VolumeCreateRequest;
use bollard::query_parameters::{ListVolumesOptions, RemoveVolumeOptionsBuilder};
use orchestrator::port::{Document, StateError, StateStore, TargetError};
use sha2::{Digest, Sha256};

use super::Engine;

/// Version of the volumes' format; a volume of another version is an error, never rewritten.
pub const FORMAT: &str = "1";

/// The labels of a state volume.
pub mod labels {
    pub const MANAGED_BY: &str = "io.rivetctl.managed-by";
    pub const STATE_OF: &str = "io.rivetctl.state-of";
    pub const DOCUMENT: &str = "io.rivetctl.state.document";
    pub const GENERATION: &str = "io.rivetctl.state.generation";
    pub const WRITER: &str = "io.rivetctl.state.writer";
    pub const FORMAT: &str = "io.rivetctl.state.format";
    pub const BODY: &str = "io.rivetctl.state.body";
    pub const REMOVED: &str = "io.rivetctl.state.removed";
    /// The generation the write replaced, or `none` for a create of an absent document.
    pub const EXPECTED: &str = "io.rivetctl.state.expected";
}

/// A deployment's documents on one engine (the primary node's).
pub struct DockerStore {
    engine: Engine,
    deployment: String,
    /// The highest generation seen of each document, tombstones included, since the last
    /// load (`None`: never loaded); where a create starts.
    seen: Mutex<Option<BTreeMap<String, u64>>>,
}

/// One state volume, read back.
#[derive(Debug, Clone)]
struct Generation {
    volume: String,
    document: String,
    generation: u64,
    /// `None`: a tombstone.
    body: Option<String>,
    /// Written by a create that expected the document absent (label `state.expected` =
    /// `none`); volumes written before that label existed count as not.
    created_absent: bool,
}

impl DockerStore {
    /// The store of `deployment` on `engine`, which must be the primary node's: the node
    /// holding the datahub (role datahub or both), else the first node.
    pub fn new(engine: Engine, deployment: impl Into<String>) -> Self {
        DockerStore { engine, deployment: deployment.into(), seen: Mutex::new(None) }
    }

    /// The engine it writes to (API calls are counted there).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The name of one generation's volume.
    pub fn volume_name(&self, document: &str, generation: u64) -> String {
        format!("rivetctl-state-{}-{}-{generation}", volume_part(&self.deployment), volume_part(document))
    }

    fn failed(&self, what: &str, err: bollard::errors::Error) -> StateError {
        let message = format!("node {}: cannot {what} at {}: {err}", self.engine.node, self.engine.address);
        match err {
            bollard::errors::Error::DockerResponseServerError { .. } => TargetError::failed(message).into(),
            _ => TargetError::unreachable(message).into(),
        }
    }

    fn unreadable(&self, volume: &str, why: &str) -> StateError {
        TargetError::failed(format!("node {}: the state volume {volume} is unreadable: {why}", self.engine.node))
            .with_hint(format!(
                "it was written by another version of rivetctl, or changed by hand; `docker volume rm {volume}` drops it (and what it held)"
            ))
            .into()
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Option<BTreeMap<String, u64>>> {
        self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every state volume of the deployment, or of one document of it.
    async fn list(&self, document: Option<&str>) -> Result<Vec<Generation>, StateError> {
        let mut filter = vec![format!("{}={}", labels::STATE_OF, self.deployment)];
        if let Some(document) = document {
            filter.push(format!("{}={document}", labels::DOCUMENT));
        }
        let options = ListVolumesOptions { filters: Some(HashMap::from([("label".to_string(), filter)])) };
        let listed = self
            .engine
            .call()
            .list_volumes(Some(options))
            .await
            .map_err(|e| self.failed("list the state volumes", e))?;
        let mut out = Vec::new();
        for volume in listed.volumes.unwrap_or_default() {
            out.push(self.parse(&volume.name, &volume.labels)?);
        }
        Ok(out)
    }

    fn parse(&self, volume: &str, labels_: &HashMap<String, String>) -> Result<Generation, StateError> {
        let get =
            |key: &str| labels_.get(key).ok_or_else(|| self.unreadable(volume, &format!("it has no label {key}")));
        let format = get(labels::FORMAT)?;
        if format != FORMAT {
            return Err(
                self.unreadable(volume, &format!("it has format version {format}, this rivetctl knows {FORMAT}"))
            );
        }
        let generation = get(labels::GENERATION)?
            .parse::<u64>()
            .map_err(|_| self.unreadable(volume, "its generation is not a number"))?;
        let removed = labels_.get(labels::REMOVED).is_some_and(|v| v == "true");
        let body = if removed { None } else { Some(get(labels::BODY)?.clone()) };
        let created_absent = labels_.get(labels::EXPECTED).is_some_and(|v| v == "none");
        Ok(Generation {
            volume: volume.to_string(),
            document: get(labels::DOCUMENT)?.clone(),
            generation,
            body,
            created_absent,
        })
    }

    /// Removes a volume; one that is gone already is fine, and so is a failure: an old
    /// generation left behind is removed by the next write or by `destroy`.
    async fn remove_volume(&self, volume: &str) {
        let options = RemoveVolumeOptionsBuilder::default().force(false).build();
        let _ = self.engine.call().remove_volume(volume, Some(options)).await;
    }

    /// Where a create of `document` starts when it is expected absent: above the highest
    /// generation seen, tombstones included (listing the document when nothing was loaded).
    async fn next_of_absent(&self, document: &str) -> Result<u64, StateError> {
        if let Some(seen) = self.seen().as_ref() {
            return Ok(seen.get(document).copied().unwrap_or(0) + 1);
        }
        let listed = self.list(Some(document)).await?;
        Ok(listed.iter().map(|g| g.generation).max().unwrap_or(0) + 1)
    }

    fn note(&self, document: &str, generation: u64) {
        if let Some(seen) = self.seen().as_mut() {
            let entry = seen.entry(document.to_string()).or_insert(0);
            *entry = (*entry).max(generation);
        }
    }

    /// Writes `body` (a tombstone for `None`) as `document` if it is at `expected`.
    async fn write(&self, document: &str, expected: Option<u64>, body: Option<&str>) -> Result<u64, StateError> {
        let mut generation = match expected {
            Some(g) => g + 1,
            None => self.next_of_absent(document).await?,
        };
        // A create expected absent may meet tombstones written since it looked: it goes
        // above them. Anything else that moved is a conflict.
        for _ in 0..8 {
            match self.attempt(document, expected, body, generation).await? {
                Attempt::Won => {
                    self.note(document, generation);
                    return Ok(generation);
                }
                Attempt::Lost { found } => return Err(conflict(document, expected, found)),
                Attempt::AbsentAbove(highest) => generation = highest + 1,
            }
        }
        Err(conflict(document, expected, None))
    }

    async fn attempt(
        &self,
        document: &str,
        expected: Option<u64>,
        body: Option<&str>,
        generation: u64,
    ) -> Result<Attempt, StateError> {
        let volume = self.volume_name(document, generation);
        let writer = token();
        let mut labels_ = HashMap::from([
            (labels::MANAGED_BY.to_string(), "rivetctl".to_string()),
            (labels::STATE_OF.to_string(), self.deployment.clone()),
            (labels::DOCUMENT.to_string(), document.to_string()),
            (labels::GENERATION.to_string(), generation.to_string()),
            (labels::WRITER.to_string(), writer.clone()),
            (labels::FORMAT.to_string(), FORMAT.to_string()),
            (labels::EXPECTED.to_string(), expected.map_or_else(|| "none".to_string(), |g| g.to_string())),
        ]);
        match body {
            Some(body) => labels_.insert(labels::BODY.to_string(), body.to_string()),
            None => labels_.insert(labels::REMOVED.to_string(), "true".to_string()),
        };
        let request = VolumeCreateRequest {
            name: Some(volume.clone()),
            driver: Some("local".into()),
            labels: Some(labels_),
            ..Default::default()
        };
        let created =
            self.engine.call().create_volume(request).await.map_err(|e| self.failed("write a state volume", e))?;
        let theirs = created.labels.get(labels::WRITER).map(String::as_str) != Some(writer.as_str());
        if created.labels.get(labels::STATE_OF) != Some(&self.deployment) {
            return Err(
                self.unreadable(&volume, "it belongs to another deployment whose name reads the same in volume names")
            );
        }
        let listed = self.list(Some(document)).await?;
        // Creates of an absent document that started from different views may each see the
        // other above or below: the lowest generation wins, so one of them does. One above
        // this create that also expected the document absent is a rival that backs off.
        let rival = |g: &Generation| expected.is_none() && g.created_absent && g.generation > generation;
        let others: Vec<&Generation> = listed.iter().filter(|g| theirs || (g.volume != volume && !rival(g))).collect();
        let highest = others.iter().max_by_key(|g| g.generation);
        let found = highest.filter(|g| g.body.is_some()).map(|g| g.generation);
        if theirs {
            // Someone else wrote this generation first.
            return Ok(Attempt::Lost { found });
        }
        let above = highest.filter(|g| g.generation > generation);
        let based = match expected {
            // What it replaces is still the current generation …
            Some(g) => above.is_none() && others.iter().any(|o| o.generation == g && o.body.is_some()),
            // … or nothing is current.
            None => found.is_none(),
        };
        if !based {
            self.remove_volume(&volume).await;
            return Ok(match (expected, above) {
                (None, Some(above)) if above.body.is_none() => Attempt::AbsentAbove(above.generation.max(generation)),
                _ => Attempt::Lost { found },
            });
        }
        for old in others.iter().filter(|g| g.generation < generation) {
            self.remove_volume(&old.volume).await;
        }
        Ok(Attempt::Won)
    }
}

/// How one create of a generation ended.
enum Attempt {
    Won,
    Lost {
        found: Option<u64>,
    },
    /// Expected absent, and it is, but a tombstone sits at or above this generation.
    AbsentAbove(u64),
}

fn conflict(document: &str, expected: Option<u64>, found: Option<u64>) -> StateError {
    StateError::Conflict { name: document.to_string(), expected, found }
}

/// `text` in Docker's volume-name characters (`[a-zA-Z0-9_.-]`); a name that had to be
/// changed gets a hash of the original, so two deployments never share volumes.
fn volume_part(text: &str) -> String {
    let clean: String =
        text.chars().map(|c| if c.is_ascii_alphanumeric() || "_.-".contains(c) { c } else { '-' }).collect();
    if clean == text && !clean.is_empty() {
        return clean;
    }
    let hash = hex::encode(Sha256::digest(text.as_bytes()));
    format!("{clean}-{}", &hash[..8])
}

/// A token no other write shares: the process's random hasher keys, the pid, the time and
/// a counter, hashed.
fn token() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let seed = format!("{}-{}-{nanos}-{}", hasher.finish(), std::process::id(), COUNTER.load(Ordering::Relaxed));
    hex::encode(&Sha256::digest(seed.as_bytes())[..12])
}

impl StateStore for DockerStore {
    fn location(&self) -> String {
        format!("volumes rivetctl-state-{}-* on node {}", volume_part(&self.deployment), self.engine.node)
    }

    async fn load(&self) -> Result<BTreeMap<String, Document>, StateError> {
        let listed = self.list(None).await?;
        let mut highest: BTreeMap<String, Generation> = BTreeMap::new();
        for generation in listed {
            match highest.get(&generation.document) {
                Some(known) if known.generation >= generation.generation => {}
                _ => {
                    highest.insert(generation.document.clone(), generation);
                }
            }
        }
        *self.seen() = Some(highest.iter().map(|(name, g)| (name.clone(), g.generation)).collect());
        Ok(highest
            .into_iter()
            .filter_map(|(name, g)| Some((name, Document { generation: g.generation, body: g.body? })))
            .collect())
    }

    async fn store(&self, name: &str, expected: Option<u64>, body: &str) -> Result<u64, StateError> {
        self.write(name, expected, Some(body)).await
    }

    async fn remove(&self, name: &str, expected: u64) -> Result<(), StateError> {
        self.write(name, Some(expected), None).await.map(|_| ())
    }

    async fn destroy(&self) -> Result<(), StateError> {
        for generation in self.list(None).await? {
            let options = RemoveVolumeOptionsBuilder::default().force(false).build();
            match self.engine.call().remove_volume(&generation.volume, Some(options)).await {
                Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) | Ok(()) => {}
                Err(e) => return Err(self.failed(&format!("remove the state volume {}", generation.volume), e)),
            }
        }
        *self.seen() = Some(BTreeMap::new());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_to_dockers_charset_and_stay_apart() {
        assert_eq!(volume_part("prod-eu.1_a"), "prod-eu.1_a");
        let spaced = volume_part("prod eu");
        assert!(spaced.starts_with("prod-eu-") && spaced.len() == "prod-eu-".len() + 8, "{spaced}");
        assert_ne!(volume_part("prod eu"), volume_part("prod/eu"));
        assert_ne!(volume_part("prod eu"), "prod-eu");
        assert!(volume_part("").starts_with('-'));
    }

    #[test]
    fn tokens_differ() {
        assert_ne!(token(), token());
    }
}
