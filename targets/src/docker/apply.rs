//! The container operations every Docker step and rollout operation is made of: create (and
//! start) a container with its files and networks, stop and remove one. Each is idempotent
//! with respect to its end state: an absent container is already removed.
//!
//! The plan's waves are executed by the runtime's one executor through the port
//! ([`super::port`]); what a step does on Docker is in `port/steps.rs`, what a rollout does
//! to one agent in `port/units.rs`.

use bollard::models::{EndpointSettings, NetworkConnectRequest};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
    UploadToContainerOptionsBuilder,
};
use orchestrator::docker::{ContainerSpec, DockerResource};
use orchestrator::resource::ResourceKey;

use super::Engine;
use super::container::container_request;

/// Suffix of the container that replaces a running agent until it is healthy.
pub const NEXT_SUFFIX: &str = "-rivetctl-next";

/// The engine's message of an API error (without bollard's wrapping).
pub fn engine_reason(err: &bollard::errors::Error) -> String {
    match err {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// Engine API failures (not health failures: those are [`StepFailure`]s).
#[derive(Debug, thiserror::Error)]
#[error("{what} {name} on node {node}")]
pub struct ApplyError {
    pub what: &'static str,
    pub name: String,
    pub node: String,
    #[source]
    pub source: bollard::errors::Error,
}

fn is_not_found(err: &bollard::errors::Error) -> bool {
    matches!(err, bollard::errors::Error::DockerResponseServerError { status_code: 404, .. })
}

fn api<'a>(what: &'static str, key: &'a ResourceKey) -> impl FnOnce(bollard::errors::Error) -> ApplyError + 'a {
    move |source| ApplyError { what, name: key.name.clone(), node: key.node.clone(), source }
}

/// Stops (SIGTERM, then SIGKILL after the grace period) and removes a container; absent is fine.
pub async fn remove_container(engine: &Engine, name: &str, grace_secs: u64) -> Result<(), bollard::errors::Error> {
    let stop = StopContainerOptionsBuilder::default().t(grace_secs as i32).build();
    match engine.call().stop_container(name, Some(stop)).await {
        Ok(()) => {}
        Err(e) if is_not_found(&e) => return Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 304, .. }) => {}
        Err(e) => return Err(e),
    }
    let remove = RemoveContainerOptionsBuilder::default().force(true).build();
    match engine.call().remove_container(name, Some(remove)).await {
        Ok(()) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

/// A tar of files (and their parent directories) to unpack at `/`.
fn files_tar(files: &[orchestrator::docker::FileCopy]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut dirs = std::collections::BTreeSet::new();
    for file in files {
        let path = file.path.trim_start_matches('/');
        let mut parent = std::path::Path::new(path).parent();
        let mut chain = Vec::new();
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            chain.push(dir.to_path_buf());
            parent = dir.parent();
        }
        for dir in chain.into_iter().rev() {
            if dirs.insert(dir.clone()) {
                let mut header = tar::Header::new_gnu();
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                let _ = builder.append_data(&mut header, &dir, std::io::empty());
            }
        }
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_size(file.contents.len() as u64);
        let _ = builder.append_data(&mut header, path, file.contents.as_bytes());
    }
    builder.into_inner().unwrap_or_default()
}

/// Creates a container under `name`, copies its files in, joins its networks, starts it.
pub async fn create_and_start(
    engine: &Engine,
    name: &str,
    spec: &ContainerSpec,
    resource: &DockerResource,
) -> Result<(), ApplyError> {
    create(engine, name, spec, resource).await?;
    engine.call().start_container(name, None).await.map_err(api("cannot start container", &resource.key))?;
    Ok(())
}

/// Creates a container under `name`, copies its files in and joins its networks, without
/// starting it (so it can be prepared while its predecessor still runs).
pub async fn create(
    engine: &Engine,
    name: &str,
    spec: &ContainerSpec,
    resource: &DockerResource,
) -> Result<(), ApplyError> {
    let key = &resource.key;
    let options = CreateContainerOptionsBuilder::default().name(name).build();
    engine
        .call()
        .create_container(Some(options), container_request(spec, &resource.fields))
        .await
        .map_err(api("cannot create container", key))?;
    if !spec.files.is_empty() {
        let upload = UploadToContainerOptionsBuilder::default().path("/").build();
        let body = bollard::body_full(files_tar(&spec.files).into());
        engine
            .call()
            .upload_to_container(name, Some(upload), body)
            .await
            .map_err(api("cannot copy files into container", key))?;
    }
    for (network, aliases) in spec.networks.iter().skip(1) {
        let request = NetworkConnectRequest {
            container: name.to_string(),
            endpoint_config: Some(EndpointSettings { aliases: Some(aliases.clone()), ..Default::default() }),
        };
        engine.call().connect_network(network, request).await.map_err(api("cannot connect to network", key))?;
    }
    Ok(())
}
