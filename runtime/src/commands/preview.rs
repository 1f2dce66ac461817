//! `rivetctl infra preview`: observe, plan, print; optionally write the artifacts.
//!
//! A live preview observes the target through the port and plans the objects the factory
//! lowered once, writing `--out`'s files from them ([`factory::open_lowered`]);
//! `--offline` (and a Kubernetes cluster or Proxmox API that cannot be reached) plans what the factory
//! lowers without connecting ([`factory::lower_unconnected`]), `--out` writing what it
//! renders ([`factory::write_artifacts`]). Nothing here names a target's types.

use orchestrator::config::Target;
use orchestrator::fleet::Fleet;
use orchestrator::plan::{self, Plan, PlanOptions, RenderOptions, plan_document, render_text};
use orchestrator::port::Port;
use orchestrator::resource::Resource;
use targets::factory::{self, Files, KubernetesOptions, OpenOptions, Unconnected, VisitLowered};

use crate::cli::{GlobalArgs, PreviewArgs};
use crate::exit::ExitStatus;
use crate::printer::Printer;
use crate::project::{self, Project};
use crate::session::{Context, target_error};
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

/// Shows the plan; `requests` gives each step's API requests for the JSON document (the
/// live target's, where it lists them).
fn show<P>(
    printer: &Printer,
    plan: &Plan<P>,
    observed: &str,
    requests: &dyn Fn(&orchestrator::plan::Step<P>) -> Vec<serde_json::Value>,
) -> anyhow::Result<()> {
    if printer.json() {
        let mut document = plan_document(plan, observed);
        for (change, step) in document.changes.iter_mut().zip(&plan.steps) {
            change.requests = requests(step);
        }
        printer.json_line(&document)?;
    } else {
        printer.data(&render_text(plan, RenderOptions { color: printer.color_out }))?;
    }
    Ok(())
}

/// Plans the fleet against what its target holds, through the port: the visitor of a live
/// `infra preview`, given the objects the factory lowered (and wrote the files from).
struct Live<'a> {
    printer: &'a Printer,
    fleet: &'a Fleet,
}

impl VisitLowered for Live<'_> {
    type Output = anyhow::Result<bool>;

    async fn visit<T: Port>(self, target: &T, desired: Vec<Resource<T::Payload>>) -> Self::Output {
        plan_live(self.printer, self.fleet, target, desired).await
    }
}

/// Observes the target, plans `desired` (the fleet's lowering) against it and shows the
/// plan; whether it changes anything.
pub async fn plan_live<T: Port>(
    printer: &Printer,
    fleet: &Fleet,
    target: &T,
    desired: Vec<Resource<T::Payload>>,
) -> anyhow::Result<bool> {
    let found = target.observe().await.map_err(target_error)?;
    let nodes: Vec<&str> = fleet.nodes.iter().map(|n| n.name.as_str()).collect();
    let nodes = if nodes.len() == 1 { format!("node {}", nodes[0]) } else { format!("nodes {}", nodes.join(", ")) };
    printer.info(&format!("Observed: {} object(s) of \"{}\" on {nodes}.", found.len(), fleet.name));
    let plan = plan::plan(&fleet.name, target.kind(), desired, &found, PlanOptions::default());
    show(printer, &plan, "live", &|step| target.requests(step))?;
    Ok(!plan.is_empty())
}

/// Plans the fleet's objects against an empty target: `--offline`, and a cluster or API that
/// cannot be reached (the output says so).
struct Offline<'a> {
    printer: &'a Printer,
    fleet: &'a Fleet,
}

impl Unconnected for Offline<'_> {
    type Output = anyhow::Result<bool>;

    fn lowered<P>(self, target: &'static str, desired: Vec<Resource<P>>) -> Self::Output {
        let note = match self.fleet.target() {
            Target::Docker => "Observed: nothing (--offline); planning against an empty engine.".to_string(),
            other => format!("Observed: nothing (offline); planning against an empty {} cluster.", other.as_str()),
        };
        self.printer.info(&note);
        let plan = plan::plan::<P>(&self.fleet.name, target, desired, &[], PlanOptions::default());
        show(self.printer, &plan, "offline", &|_| Vec::new())?;
        Ok(!plan.is_empty())
    }
}

/// Whether opening the cluster failed for want of one (none configured, or none answering),
/// not because it refused something.
fn unreachable_cluster(err: &orchestrator::port::TargetError) -> bool {
    err.is_unreachable() || err.message.starts_with("no Kubernetes cluster configured")
}

fn offline(printer: &Printer, fleet: &Fleet) -> anyhow::Result<bool> {
    let planned = factory::lower_unconnected(fleet, Offline { printer, fleet })?;
    Ok(planned.transpose()?.unwrap_or(false))
}

pub async fn run(printer: &Printer, global: &GlobalArgs, args: &PreviewArgs) -> anyhow::Result<ExitStatus> {
    let project = project::load(printer, &global.config)?;
    let resolved = source::resolve(&project).await?;
    let fleet = fleet::build(&project, &resolved)?;
    let live = matches!(fleet.target(), Target::Docker | Target::Kubernetes | Target::Proxmox) && !args.offline;
    // Without a live target the files are rendered first, and their objects dropped before
    // planning; a live preview writes them from the objects it plans.
    let written = match &args.out {
        Some(dir) if !live => Some((write_artifacts(&project, &fleet, dir)?, dir)),
        _ => None,
    };
    let changed = match fleet.target() {
        Target::Manual => {
            printer.info(MANUAL);
            false
        }
        _ if live => {
            let kubernetes = KubernetesOptions {
                context: global.context.clone(),
                force_conflicts: args.kubernetes.force_conflicts,
                skip_unserved: args.kubernetes.skip_unserved,
                no_push: args.kubernetes.no_push,
                refuse_conflicts: false,
            };
            let ctx = Context { project, resolved, fleet, kubernetes };
            let options = OpenOptions { config_dir: &ctx.project.dir, nodes: None, kubernetes: &ctx.kubernetes };
            let name = config_name(&ctx.project);
            let mut directory = args.out.as_deref().map(artifacts::Directory::new);
            let files =
                directory.as_mut().map(|sink| Files { sink, config_name: &name, config_text: &ctx.project.text });
            let planned = factory::open_lowered(&ctx.fleet, &options, files, Live { printer, fleet: &ctx.fleet }).await;
            // The last file is put in place whatever happened after it was written.
            let counts = match directory {
                Some(directory) => {
                    let counts = (directory.written, directory.secret);
                    directory.finish()?;
                    Some(counts)
                }
                None => None,
            };
            let changed = match planned? {
                Ok(changed) => changed?,
                // No cluster to read: the plan against an empty one, and said so.
                Err(err) if ctx.fleet.target() != Target::Docker && unreachable_cluster(&err) => {
                    let what =
                        if ctx.fleet.target() == Target::Kubernetes { "Kubernetes cluster" } else { "Proxmox VE API" };
                    printer.warn(&format!("no {what} reachable ({}): rendering offline", err.message));
                    if let Some(dir) = &args.out {
                        let (count, secret) = write_artifacts(&ctx.project, &ctx.fleet, dir)?;
                        printer.info(&format!(
                            "Wrote {count} file(s) to {} ({secret} holding secrets, mode 0600).",
                            dir.display()
                        ));
                    }
                    let changed = offline(printer, &ctx.fleet)?;
                    return Ok(if args.detailed_exitcode && changed {
                        ExitStatus::Changes
                    } else {
                        ExitStatus::Success
                    });
                }
                Err(err) => return Err(target_error(err)),
            };
            if let (Some((count, secret)), Some(dir)) = (counts, &args.out) {
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
