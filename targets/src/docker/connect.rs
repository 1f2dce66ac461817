//! Reaching a node's Docker Engine: the local socket, `DOCKER_HOST`, a configured
//! `unix://` or `tcp://` address. The API version is negotiated, so engines as old as API
//! 1.41 (Docker 20.10) work.

use bollard::{API_DEFAULT_VERSION, Docker};
use orchestrator::config::rules::Endpoint;

use super::Engine;

/// Seconds a single API request may take (image builds stream, so this bounds silence).
const TIMEOUT_SECS: u64 = 600;

/// Why an engine could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot reach the Docker Engine at {address}")]
    Unreachable {
        address: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("node {node}: ssh:// endpoints are reached through SSH, not directly")]
    NeedsSsh { node: String },
}

impl ConnectError {
    /// What to do about it.
    pub fn hint(&self) -> String {
        match self {
            ConnectError::Unreachable { address, .. } if address.starts_with("unix://") => format!(
                "is the Docker daemon running, and may this user use {}? (`docker version` shows the same problem; add the user to the `docker` group or set DOCKER_HOST)",
                address.trim_start_matches("unix://")
            ),
            ConnectError::Unreachable { address, .. } => {
                format!(
                    "check that the engine at {address} is up and reachable from here (`DOCKER_HOST={address} docker version`)"
                )
            }
            ConnectError::NeedsSsh { .. } => "use `rivetctl update`, which connects over SSH".into(),
        }
    }
}

/// The address `local` means: `DOCKER_HOST`, else the default socket.
pub fn local_address() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unix:///var/run/docker.sock".to_string())
}

/// Connects to an engine and negotiates the API version.
pub async fn connect(node: &str, endpoint: &Endpoint) -> Result<Engine, ConnectError> {
    let address = match endpoint {
        Endpoint::Local => local_address(),
        Endpoint::Unix(path) => format!("unix://{path}"),
        Endpoint::Tcp { host, port } => format!("tcp://{host}:{port}"),
        Endpoint::Ssh { .. } => {
            return Err(ConnectError::NeedsSsh { node: node.to_string() });
        }
    };
    let unreachable = |source| ConnectError::Unreachable { address: address.clone(), source };
    let docker = if let Some(path) = address.strip_prefix("unix://") {
        Docker::connect_with_unix(path, TIMEOUT_SECS, API_DEFAULT_VERSION).map_err(unreachable)?
    } else if let Some(rest) = address.strip_prefix("tcp://") {
        Docker::connect_with_http(&format!("http://{rest}"), TIMEOUT_SECS, API_DEFAULT_VERSION).map_err(unreachable)?
    } else {
        Docker::connect_with_host(&address).map_err(unreachable)?
    };
    let docker = docker.negotiate_version().await.map_err(unreachable)?;
    Ok(Engine::new(docker, node, address))
}
