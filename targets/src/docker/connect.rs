//! Reaching a node's Docker Engine: the local socket, `DOCKER_HOST`, a configured
//! `unix://` or `tcp://` address. The API version is negotiated, so engines as old as API
//! 1.41 (Docker 20.10) work.

use std::path::PathBuf;
use std::sync::Arc;

use bollard::{API_DEFAULT_VERSION, Docker};
use orchestrator::config::rules::{Endpoint, TcpSecurity};

use super::Engine;
use super::tls::{TlsConnector, TlsError, TlsFiles};

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
    #[error(
        "refusing plain HTTP to the Docker Engine at {address}: anyone on the path could run containers as root there"
    )]
    PlainTcp {
        address: String,
        /// The address came from `DOCKER_HOST`.
        from_env: bool,
    },
    #[error("{address} is not a host:port address")]
    BadAddress { address: String },
    #[error("cannot speak TLS to the Docker Engine at {address}")]
    Tls {
        address: String,
        #[source]
        source: TlsError,
    },
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
            ConnectError::PlainTcp { from_env: true, .. } => "run the engine with --tlsverify and set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH (a directory with ca.pem, cert.pem, key.pem; default ~/.docker) as for the Docker CLI, or add `tls: {ca, cert, key}` to deployment.docker; `insecure: true` there accepts plain HTTP".into(),
            ConnectError::PlainTcp { from_env: false, .. } => "run the engine with --tlsverify and add `tls: {ca: ca.pem, cert: cert.pem, key: key.pem}` to the node; `insecure: true` accepts plain HTTP".into(),
            ConnectError::BadAddress { .. } => "write tcp://host:port".into(),
            ConnectError::Tls { source, .. } => source.hint(),
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

/// The TLS files for a `tcp://` address: configured ones; for an address from `DOCKER_HOST`,
/// `DOCKER_CERT_PATH` (default `~/.docker`) when `DOCKER_TLS_VERIFY` is set (to anything, as
/// the Docker CLI reads it).
fn tls_files(security: &TcpSecurity, from_env: bool) -> Option<TlsFiles> {
    if let TcpSecurity::Tls { ca, cert, key } = security {
        return Some(TlsFiles { ca: ca.into(), cert: cert.into(), key: key.into() });
    }
    let verify = std::env::var_os("DOCKER_TLS_VERIFY").is_some_and(|v| !v.is_empty());
    if !(from_env && verify) {
        return None;
    }
    let dir = std::env::var_os("DOCKER_CERT_PATH")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".docker"));
    Some(TlsFiles::in_dir(&dir))
}

/// Connects to an engine and negotiates the API version. A `tcp://` engine is spoken to
/// over TLS (`security`, or the Docker CLI's variables for `DOCKER_HOST`), or in plain HTTP
/// only with [`TcpSecurity::Insecure`] (the engine is then marked [`Engine::plain_tcp`]).
pub async fn connect(node: &str, endpoint: &Endpoint, security: &TcpSecurity) -> Result<Engine, ConnectError> {
    let (address, from_env) = match endpoint {
        Endpoint::Local => (local_address(), true),
        Endpoint::Unix(path) => (format!("unix://{path}"), false),
        Endpoint::Tcp { host, port } => (format!("tcp://{host}:{port}"), false),
        Endpoint::Ssh { .. } => {
            return Err(ConnectError::NeedsSsh { node: node.to_string() });
        }
    };
    let unreachable = |source| ConnectError::Unreachable { address: address.clone(), source };
    let mut plain_tcp = false;
    let docker = if let Some(path) = address.strip_prefix("unix://") {
        Docker::connect_with_unix(path, TIMEOUT_SECS, API_DEFAULT_VERSION).map_err(unreachable)?
    } else if let Some(rest) = address.strip_prefix("tcp://") {
        if let Some(files) = tls_files(security, from_env) {
            let (host, port) = rest
                .rsplit_once(':')
                .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)))
                .ok_or_else(|| ConnectError::BadAddress { address: address.clone() })?;
            let tls = |source| ConnectError::Tls { address: address.clone(), source };
            let connector = TlsConnector::new(&files, host, port).map_err(tls)?;
            connector.check().await.map_err(tls)?;
            super::tls::docker(Arc::new(connector)).map_err(unreachable)?
        } else if *security == TcpSecurity::Insecure {
            plain_tcp = true;
            Docker::connect_with_http(&format!("http://{rest}"), TIMEOUT_SECS, API_DEFAULT_VERSION)
                .map_err(unreachable)?
        } else {
            return Err(ConnectError::PlainTcp { address, from_env });
        }
    } else {
        Docker::connect_with_host(&address).map_err(unreachable)?
    };
    let docker = docker.negotiate_version().await.map_err(unreachable)?;
    let mut engine = Engine::new(docker, node, address);
    engine.plain_tcp = plain_tcp;
    Ok(engine)
}
