//! `rivetctl infra preview`: observe, plan, print; optionally write the artifacts.
//!
//! A live preview observes the target through the port. Two paths still lower the Docker
//! resources themselves (`orchestrator::docker`), because no target is connected there:
//! `--offline`, and `--out`'s compose file (the renderer prints Docker resources). They
//! go when the factory offers an unconnected lowering (see the lead's notes, issue 8).

use orchestrator::config::Target;
use orchestrator::docker::{self, DockerResource};
use orchestrator::fleet::Fleet;
use orchestrator::plan::{self, Plan, PlanOptions, RenderOptions, plan_document, render_text};
use orchestrator::port::Port;
use targets::factory::Visit;
use targets::render::compose::Sink as _;
use targets::render::{self, Artifact};

use crate::cli::{GlobalArgs, PreviewArgs};
use crate::exit::ExitStatus;
use crate::printer::Printer;
use crate::project::{self, Project};
use crate::session::{self, Context, target_error};
use crate::{artifacts, fleet, source};

/// What `target: manual` means for infra commands.
pub const MANUAL: &str = "target \"manual\": rivetctl does not create infrastructure for this deployment. \
Run RivetOS on each node yourself (for example with the systemd unit that `rivetctl infra preview --out DIR` writes), \
keep checking the config with `rivetctl config validate`, and set deployment.target to docker, proxmox or kubernetes \
to have rivetctl create and update the fleet.";

/// The artifacts of a fleet for its target.
/// `docker` holds the fleet's Docker resources when the target is Docker.
pub fn artifacts_of(project: &Project, fleet: &Fleet, docker: &[DockerResource]) -> anyhow::Result<Vec<Artifact>> {
    let name = config_name(project);
    Ok(match fleet.target() {
        Target::Docker => render::compose::artifacts(fleet, docker, &name, &project.text)?,
        Target::Kubernetes => render::kubernetes::artifacts(fleet)?,
        Target::Proxmox => {
            let mut all = render::proxmox::artifacts(fleet)?;
            all.extend(render::systemd::artifacts(fleet)?);
            all
        }
        Target::Manual => render::systemd::artifacts(fleet)?,
    })
}

/// Writes the artifacts under `dir`; the compose file as it is rendered. Returns how many
/// files were written and how many of them hold secrets.
fn write_artifacts(
    project: &Project,
    fleet: &Fleet,
    docker: &[DockerResource],
    dir: &std::path::Path,
) -> anyhow::Result<(usize, usize)> {
    let mut files = artifacts::Directory::new(dir);
    if fleet.target() == Target::Docker {
        let name = config_name(project);
        render::compose::write(fleet, docker, &name, &project.text, &mut files)?;
    } else {
        for artifact in artifacts_of(project, fleet, docker)? {
            files.start(&artifact.path, artifact.secret)?;
            files.write(&artifact.contents)?;
        }
    }
    let counts = (files.written, files.secret);
    files.finish()?;
    Ok(counts)
}

fn config_name(project: &Project) -> String {
    project.config_path.file_name().map_or("rivet.config.yaml".into(), |n| n.to_string_lossy().into_owned())
}

fn show<P>(printer: &Printer, plan: &Plan<P>, observed: &str) -> anyhow::Result<()> {
    if printer.json() {
        printer.json_line(&plan_document(plan, observed))?;
    } else {
        printer.data(&render_text(plan, RenderOptions { color: printer.color_out }))?;
    }
    Ok(())
}

/// Plans the fleet against what its target holds, through the port: the visitor of a live
/// `infra preview`.
struct Live<'a> {
    printer: &'a Printer,
    fleet: &'a Fleet,
}

impl Visit for Live<'_> {
    type Output = anyhow::Result<bool>;

    async fn visit<T: Port>(self, target: &T) -> Self::Output {
        plan_live(self.printer, self.fleet, target).await
    }
}

/// Observes the target, plans the fleet against it and shows the plan; whether it changes
/// anything.
pub async fn plan_live<T: Port>(printer: &Printer, fleet: &Fleet, target: &T) -> anyhow::Result<bool> {
    let found = target.observe().await.map_err(target_error)?;
    let nodes: Vec<&str> = fleet.nodes.iter().map(|n| n.name.as_str()).collect();
    let nodes = if nodes.len() == 1 { format!("node {}", nodes[0]) } else { format!("nodes {}", nodes.join(", ")) };
    printer.info(&format!("Observed: {} object(s) of \"{}\" on {nodes}.", found.len(), fleet.name));
    let desired = target.lower(fleet);
    let plan = plan::plan(&fleet.name, target.kind(), desired, &found, PlanOptions::default());
    show(printer, &plan, "live")?;
    Ok(!plan.is_empty())
}

/// Plans the Docker resources against an empty engine (`--offline`: nothing is connected).
fn plan_offline_docker(printer: &Printer, fleet: &Fleet) -> anyhow::Result<bool> {
    printer.info("Observed: nothing (--offline); planning against an empty engine.");
    let plan = plan::plan(&fleet.name, "docker", docker::resources(fleet), &[], PlanOptions::default());
    show(printer, &plan, "offline")?;
    Ok(!plan.is_empty())
}

/// Plans Kubernetes or Proxmox resources against an empty target (observing them is not
/// implemented yet, and the output says so).
fn plan_offline_target(printer: &Printer, fleet: &Fleet) -> anyhow::Result<bool> {
    let target = fleet.target().as_str();
    let desired = match fleet.target() {
        Target::Kubernetes => render::kubernetes::resources(fleet)?,
        _ => render::proxmox::resources(fleet)?,
    };
    printer.info(&format!(
        "Observed: nothing — reading a live {target} {} is not implemented yet, so this plan is against an empty one.",
        if fleet.target() == Target::Kubernetes { "cluster" } else { "cluster's containers" }
    ));
    let plan = plan::plan::<serde_json::Value>(&fleet.name, target, desired, &[], PlanOptions::default());
    show(printer, &plan, "offline")?;
    Ok(!plan.is_empty())
}

pub async fn run(printer: &Printer, global: &GlobalArgs, args: &PreviewArgs) -> anyhow::Result<ExitStatus> {
    let project = project::load(printer, &global.config)?;
    let resolved = source::resolve(&project).await?;
    let fleet = fleet::build(&project, &resolved)?;
    // Artifacts are rendered first, and their resources dropped before planning.
    let written = match &args.out {
        Some(dir) => {
            let docker = if fleet.target() == Target::Docker { docker::resources(&fleet) } else { Vec::new() };
            Some((write_artifacts(&project, &fleet, &docker, dir)?, dir))
        }
        None => None,
    };
    let changed = match fleet.target() {
        Target::Manual => {
            printer.info(MANUAL);
            false
        }
        Target::Docker if args.offline => plan_offline_docker(printer, &fleet)?,
        Target::Docker => {
            let ctx = Context { project, resolved, fleet };
            let changed = session::connect(&ctx, None, Live { printer, fleet: &ctx.fleet }).await??;
            if let Some(((count, secret), dir)) = written {
                printer.info(&format!(
                    "Wrote {count} file(s) to {} ({secret} holding secrets, mode 0600).",
                    dir.display()
                ));
            }
            return Ok(if args.detailed_exitcode && changed { ExitStatus::Changes } else { ExitStatus::Success });
        }
        _ => plan_offline_target(printer, &fleet)?,
    };
    if let Some(((count, secret), dir)) = written {
        printer.info(&format!("Wrote {count} file(s) to {} ({secret} holding secrets, mode 0600).", dir.display()));
    }
    Ok(if args.detailed_exitcode && changed { ExitStatus::Changes } else { ExitStatus::Success })
}
