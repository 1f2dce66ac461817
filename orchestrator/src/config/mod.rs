//! `rivet.config.yaml`: from text to a checked, typed [`Config`].
//!
//! The layers, in order: [`yaml`] parses text into a tree with positions; [`check`] walks it
//! against [`schema`], interpolating `${VAR}`s, filling defaults and collecting every error;
//! [`model`] is the typed result; [`semantic`] adds the checks that span fields. Nothing here
//! reads files or the environment: the caller passes the text and the [`Variables`].

pub mod check;
pub mod diagnostics;
pub mod interpolate;
pub mod json_schema;
pub mod model;
pub mod rules;
pub mod schema;
pub mod semantic;
pub mod yaml;

use std::collections::BTreeSet;

use check::raw_value;
pub use diagnostics::{Diagnostic, Pos, Severity};
pub use interpolate::{Variable, Variables};
pub use model::{RawConfig, Role, Target};

use crate::digest::canonical_digest;

/// A config that passed every check.
#[derive(Debug, Clone)]
pub struct Config {
    /// The typed sections rivetctl reads.
    pub raw: RawConfig,
    /// The deployment's identity: `deployment.name`, else `docker.project_name`.
    pub name: String,
    /// Paths of values that came from sensitive variables (never printed).
    pub sensitive: BTreeSet<String>,
    /// Digest of what every process of the runtime reads from the file (all sections but
    /// `deployment:` and `agents:`): when it changes, every agent restarts.
    pub shared_digest: String,
    /// Per agent id: the shared digest combined with the agent's own `agents:` entry, so
    /// editing one agent restarts only that agent.
    pub agent_digests: std::collections::BTreeMap<String, String>,
}

/// A loaded config and the warnings found on the way.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Diagnostic>,
}

/// Parses and checks a config. On failure returns every diagnostic (errors and warnings),
/// sorted by position.
pub fn load(source: &str, vars: &Variables) -> Result<Loaded, Vec<Diagnostic>> {
    let root = yaml::parse(source)?;
    let mut checked = check::check(&root, vars);
    if checked.diagnostics.iter().any(Diagnostic::is_error) {
        return Err(sorted(checked.diagnostics));
    }
    let raw: RawConfig = match serde_json::from_value(std::mem::take(&mut checked.value)) {
        Ok(raw) => raw,
        Err(err) => {
            checked.diagnostics.push(
                Diagnostic::error(format!("internal error: the checked config does not fit the model: {err}"), None)
                    .with_hint("please report this with the config file"),
            );
            return Err(sorted(checked.diagnostics));
        }
    };
    let written: BTreeSet<String> = deployment_keys(&root);
    let mut semantic = semantic::Semantic {
        config: &raw,
        locations: &checked.locations,
        written: &written,
        dotenv: &vars.dotenv,
        diagnostics: Vec::new(),
    };
    semantic.run();
    let mut diagnostics = checked.diagnostics;
    diagnostics.extend(semantic.diagnostics);
    if diagnostics.iter().any(Diagnostic::is_error) {
        return Err(sorted(diagnostics));
    }
    let mut runtime = raw_value(&root);
    let mut agents = serde_json::Map::new();
    if let Some(map) = runtime.as_object_mut() {
        map.remove("deployment");
        if let Some(serde_json::Value::Object(entries)) = map.remove("agents") {
            agents = entries;
        }
    }
    let shared_digest = canonical_digest(&runtime);
    let agent_digests = raw
        .agents
        .keys()
        .map(|id| {
            let own = agents.get(id).cloned().unwrap_or(serde_json::Value::Null);
            (id.clone(), canonical_digest(&serde_json::json!([shared_digest, own])))
        })
        .collect();
    let name = raw.deployment.name.clone().unwrap_or_else(|| raw.deployment.docker.project_name.clone());
    Ok(Loaded {
        config: Config { raw, name, sensitive: checked.sensitive, shared_digest, agent_digests },
        warnings: sorted(diagnostics),
    })
}

fn deployment_keys(root: &yaml::Yaml) -> BTreeSet<String> {
    let yaml::YamlKind::Map(entries) = &root.kind else {
        return BTreeSet::new();
    };
    let Some((_, deployment)) = entries.iter().find(|(k, _)| k.as_scalar() == Some("deployment")) else {
        return BTreeSet::new();
    };
    let yaml::YamlKind::Map(entries) = &deployment.kind else {
        return BTreeSet::new();
    };
    entries
        .iter()
        .filter_map(|(k, v)| {
            let key = k.as_scalar()?;
            // `docker.project_name` alone names the objects of every target: not Docker's own.
            let names_only = matches!(&v.kind, yaml::YamlKind::Map(inner)
                if !inner.is_empty() && inner.iter().all(|(k, _)| k.as_scalar() == Some("project_name")));
            Some(if key == "docker" && names_only { "docker.project_name".to_string() } else { key.to_string() })
        })
        .collect()
}

fn sorted(mut diagnostics: Vec<Diagnostic>) -> Vec<Diagnostic> {
    diagnostics.sort_by_key(|d| (d.pos.map_or((usize::MAX, 0), |p| (p.line, p.col)), d.severity));
    diagnostics
}

#[cfg(test)]
mod tests;
