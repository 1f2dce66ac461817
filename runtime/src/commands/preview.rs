//! `rivetctl infra preview`: observe, plan, print; optionally write the artifacts.
//!
//! A live preview observes the target through the port; `--offline` (and the targets whose
//! observing is not built yet) plans what the factory lowers without connecting
//! ([`factory::lower_unconnected`]); `--out` writes what the factory renders
//! ([`factory::write_artifacts`]). Nothing here names a target's types.

use orchestrator::config::Target;
use orchestrator::fleet::Fleet;
use orchestrator::plan::{self, Plan, PlanOptions, RenderOptions, plan_document, render_text};
use orchestrator::port::Port;
use orchestrator::resource::Resource;
use targets::factory::{self, Unconnected, Visit};

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

/// Writes the target's artifacts under `dir`. Returns how many files were written and how
/// many of them hold secrets.
fn write_artifacts(project: &Project, fleet: &Fleet, dir: &std::path::Path) -> anyhow::Result<(usize, usize)> {
    let mut files = artifacts::Directory::new(dir);
    factory::write_artifacts(fleet, &config_name(project), &project.text, &mut files)?;
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

/// Plans the fleet's objects against an empty target: `--offline`, and the targets whose
/// observing is not built yet (the output says which).
struct Offline<'a> {
    printer: &'a Printer,
    fleet: &'a Fleet,
}

impl Unconnected for Offline<'_> {
    type Output = anyhow::Result<bool>;

    fn lowered<P>(self, target: &'static str, desired: Vec<Resource<P>>) -> Self::Output {
        let note = match self.fleet.target() {
            Target::Docker => "Observed: nothing (--offline); planning against an empty engine.".to_string(),
            Target::Kubernetes => "Observed: nothing — reading a live kubernetes cluster is not implemented yet, so this plan is against an empty one.".to_string(),
            other => format!("Observed: nothing — reading a live {} cluster's containers is not implemented yet, so this plan is against an empty one.", other.as_str()),
        };
        self.printer.info(&note);
        let plan = plan::plan::<P>(&self.fleet.name, target, desired, &[], PlanOptions::default());
        show(self.printer, &plan, "offline")?;
        Ok(!plan.is_empty())
    }
}

fn offline(printer: &Printer, fleet: &Fleet) -> anyhow::Result<bool> {
    let planned = factory::lower_unconnected(fleet, Offline { printer, fleet })?;
    Ok(planned.transpose()?.unwrap_or(false))
}

pub async fn run(printer: &Printer, global: &GlobalArgs, args: &PreviewArgs) -> anyhow::Result<ExitStatus> {
    let project = project::load(printer, &global.config)?;
    let resolved = source::resolve(&project).await?;
    let fleet = fleet::build(&project, &resolved)?;
    // Artifacts are rendered first, and their resources dropped before planning.
    let written = match &args.out {
        Some(dir) => Some((write_artifacts(&project, &fleet, dir)?, dir)),
        None => None,
    };
    let changed = match fleet.target() {
        Target::Manual => {
            printer.info(MANUAL);
            false
        }
        Target::Docker if args.offline => offline(printer, &fleet)?,
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
        _ => offline(printer, &fleet)?,
    };
    if let Some(((count, secret), dir)) = written {
        printer.info(&format!("Wrote {count} file(s) to {} ({secret} holding secrets, mode 0600).", dir.display()));
    }
    Ok(if args.detailed_exitcode && changed { ExitStatus::Changes } else { ExitStatus::Success })
}
