//! From a loaded project and its resolved images to the fleet.

use std::path::{Path, PathBuf};

use orchestrator::config::rules::TcpSecurity;
use orchestrator::fleet::{Fleet, FleetInputs, TargetSettings};

use crate::exit::hinted;
use crate::project::Project;
use crate::source::Resolved;

/// Builds the desired state; configuration problems become errors with hints.
pub fn build(project: &Project, resolved: &Resolved) -> anyhow::Result<Fleet> {
    let inputs = FleetInputs {
        dotenv: project.dotenv.clone(),
        images: resolved.images.clone(),
        config_file: project.config_path.to_string_lossy().into_owned(),
        config_text: project.text.clone(),
    };
    let mut fleet = Fleet::build(&project.config, &inputs).map_err(|err| {
        let hint = err.hint().to_string();
        hinted(format!("{}: {err}", project.shown_path), hint)
    })?;
    if let TargetSettings::Docker(docker) = &mut fleet.target_settings {
        for engine in &mut docker.engines {
            engine.tcp = resolve_security(&engine.tcp, &project.dir);
        }
    }
    Ok(fleet)
}

/// TLS file paths as the config writes them, made usable from anywhere: relative to the
/// config's directory, `~/` under `HOME`.
pub fn resolve_security(security: &TcpSecurity, config_dir: &Path) -> TcpSecurity {
    let resolve = |path: &str| -> String {
        let path = match path.strip_prefix("~/") {
            Some(rest) => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(rest),
            None => config_dir.join(path),
        };
        path.to_string_lossy().into_owned()
    };
    match security {
        TcpSecurity::Tls { ca, cert, key } => {
            TcpSecurity::Tls { ca: resolve(ca), cert: resolve(cert), key: resolve(key) }
        }
        other => other.clone(),
    }
}
