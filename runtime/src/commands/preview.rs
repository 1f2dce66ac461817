//! `rivetctl infra preview`: observe, plan, print; optionally write the artifacts.

use orchestrator::config::Target;
use orchestrator::docker;
use orchestrator::fleet::Fleet;
use orchestrator::plan::{self, Plan, PlanOptions, RenderOptions, plan_document, render_text};
use orchestrator::resource::ObservedResource;
use targets::render::{self, Artifact};

use crate::cli::{GlobalArgs, PreviewArgs};
use crate::exit::ExitStatus;
use crate::printer::Printer;
use crate::project::{self, Project};
use crate::{artifacts, engines, fleet, source};

/// What `target: manual` means for infra commands.
pub const MANUAL: &str = "target \"manual\": rivetctl does not create infrastructure for this deployment. \
Run RivetOS on each node yourself (for example with the systemd unit that `rivetctl infra preview --out DIR` writes), \
keep checking the config with `rivetctl config validate`, and set deployment.target to docker, proxmox or kubernetes \
to have rivetctl create and update the fleet.";

/// The artifacts of a fleet for its target.
pub fn artifacts_of(project: &Project, fleet: &Fleet) -> anyhow::Result<Vec<Artifact>> {
    let name = project.config_path.file_name().map_or("rivet.config.yaml".into(), |n| n.to_string_lossy().into_owned());
    Ok(match fleet.target {
        Target::Docker => render::compose::artifacts(fleet, &name, &project.text)?,
        Target::Kubernetes => render::kubernetes::artifacts(fleet)?,
        Target::Proxmox => {
            let mut all = render::proxmox::artifacts(fleet)?;
            all.extend(render::systemd::artifacts(fleet)?);
            all
        }
        Target::Manual => render::systemd::artifacts(fleet)?,
    })
}

fn show<P>(printer: &Printer, plan: &Plan<P>, observed: &str) -> anyhow::Result<()> {
    if printer.json() {
        printer.json_line(&plan_document(plan, observed))?;
    } else {
        printer.data(&render_text(plan, RenderOptions { color: printer.color_out }))?;
    }
    Ok(())
}

/// Plans a fleet against what its target holds; returns whether anything would change.
async fn plan_and_show(printer: &Printer, fleet: &Fleet, offline: bool) -> anyhow::Result<bool> {
    let deployment = fleet.name.as_str();
    let target = fleet.target.as_str();
    match fleet.target {
        Target::Docker => {
            let desired = docker::resources(fleet);
            let (observed, mode): (Vec<ObservedResource>, &str) = if offline {
                printer.info("Observed: nothing (--offline); planning against an empty engine.");
                (Vec::new(), "offline")
            } else {
                let engines = engines::connect_all(fleet).await?;
                let found = engines::observe_all(&engines, deployment).await?;
                let addresses: Vec<String> = engines.iter().map(|e| format!("{} ({})", e.node, e.address)).collect();
                printer.info(&format!(
                    "Observed: {} object(s) of \"{deployment}\" on {}.",
                    found.len(),
                    addresses.join(", ")
                ));
                (found, "live")
            };
            let plan = plan::plan(deployment, target, &desired, &observed, PlanOptions::default());
            show(printer, &plan, mode)?;
            Ok(!plan.is_empty())
        }
        Target::Kubernetes | Target::Proxmox => {
            let desired = match fleet.target {
                Target::Kubernetes => render::kubernetes::resources(fleet)?,
                _ => render::proxmox::resources(fleet)?,
            };
            printer.info(&format!(
                "Observed: nothing — reading a live {target} {} is not implemented yet, so this plan is against an empty one.",
                if fleet.target == Target::Kubernetes { "cluster" } else { "cluster's containers" }
            ));
            let plan = plan::plan::<serde_json::Value>(deployment, target, &desired, &[], PlanOptions::default());
            show(printer, &plan, "offline")?;
            Ok(!plan.is_empty())
        }
        Target::Manual => Ok(false),
    }
}

pub async fn run(printer: &Printer, global: &GlobalArgs, args: &PreviewArgs) -> anyhow::Result<ExitStatus> {
    let project = project::load(printer, &global.config)?;
    let resolved = source::resolve(&project)?;
    let fleet = fleet::build(&project, &resolved)?;
    let changed = if fleet.target == Target::Manual {
        printer.info(MANUAL);
        false
    } else {
        plan_and_show(printer, &fleet, args.offline).await?
    };
    if let Some(dir) = &args.out {
        let files = artifacts_of(&project, &fleet)?;
        artifacts::write(dir, &files)?;
        let secret = files.iter().filter(|f| f.secret).count();
        printer.info(&format!(
            "Wrote {} file(s) to {} ({secret} holding secrets, mode 0600).",
            files.len(),
            dir.display()
        ));
    }
    Ok(if args.detailed_exitcode && changed { ExitStatus::Changes } else { ExitStatus::Success })
}
