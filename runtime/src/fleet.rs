//! From a loaded project and its resolved images to the fleet.

use orchestrator::fleet::{Fleet, FleetInputs};

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
    Fleet::build(&project.config, &inputs).map_err(|err| {
        let hint = err.hint().to_string();
        hinted(format!("{}: {err}", project.shown_path), hint)
    })
}
