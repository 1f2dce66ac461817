//! `rivetctl status`: per node and service, the image and revision, state, health, uptime,
//! and whether it matches the configuration (drift).

use std::collections::BTreeMap;

use jiff::Timestamp;
use orchestrator::plan::{self, Action, PlanOptions};
use orchestrator::port::Port;
use orchestrator::resource::ObservedState;
use serde::Serialize;
use targets::factory::Visit;

use crate::cli::GlobalArgs;
use crate::exit::ExitStatus;
use crate::printer::Printer;
use crate::session::{self, Context, target_error};

/// One service in `status --output json` (docs/output.md).
#[derive(Debug, Serialize)]
struct ServiceDocument {
    node: String,
    name: String,
    component: String,
    image: String,
    revision: String,
    state: String,
    health: String,
    uptime_seconds: Option<i64>,
    /// `in sync`, `missing`, `stopped`, or the changed fields.
    drift: String,
}

fn uptime(started: &str) -> Option<i64> {
    let started: Timestamp = started.parse().ok()?;
    Some((Timestamp::now().as_second() - started.as_second()).max(0))
}

fn human(seconds: i64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

pub async fn run(printer: &Printer, global: &GlobalArgs) -> anyhow::Result<ExitStatus> {
    let ctx = session::load(printer, global, "status").await?;
    session::connect(&ctx, None, Status { printer, ctx: &ctx }).await?
}

struct Status<'a> {
    printer: &'a Printer,
    ctx: &'a Context,
}

impl Visit for Status<'_> {
    type Output = anyhow::Result<ExitStatus>;

    async fn visit<T: Port>(self, target: &T) -> Self::Output {
        status(self.printer, self.ctx, target).await
    }
}

/// `status` on a connected target: every object that runs (a container, a workload, an
/// LXC container: what has a run state), and every one that should and is missing.
pub async fn status<T: Port>(printer: &Printer, ctx: &Context, target: &T) -> anyhow::Result<ExitStatus> {
    let desired = target.lower(&ctx.fleet);
    let observed = target.observe().await.map_err(target_error)?;
    let plan = plan::plan(&ctx.fleet.name, target.kind(), desired, &observed, PlanOptions::default());
    let mut drift: BTreeMap<(String, String), String> = BTreeMap::new();
    for step in &plan.steps {
        let what = match (step.action, &step.drift) {
            (Action::Create, _) => "missing".to_string(),
            (Action::Delete, _) => "no longer in the config".to_string(),
            (_, Some(d)) if step.changes.is_empty() => d.observed.clone(),
            _ => {
                let fields: Vec<&str> = step.changes.iter().map(|c| c.field.as_str()).take(4).collect();
                format!("changed: {}", fields.join(", "))
            }
        };
        drift.insert((step.key.node.clone(), step.key.name.clone()), what);
    }
    let mut services = Vec::new();
    for found in observed.iter().filter(|o| o.state != ObservedState::Present) {
        let details = target.details(found).await.map_err(target_error)?;
        let running = found.state == ObservedState::Running;
        services.push(ServiceDocument {
            node: found.key.node.clone(),
            name: found.key.name.clone(),
            component: details.component,
            image: details.image,
            revision: details.revision,
            state: details.state,
            health: details.health,
            uptime_seconds: if running { details.started_at.as_deref().and_then(uptime) } else { None },
            drift: drift.remove(&(found.key.node.clone(), found.key.name.clone())).unwrap_or_else(|| "in sync".into()),
        });
    }
    for ((node, name), what) in drift {
        if what == "missing" && plan.resources.iter().any(|d| d.key.name == name && d.run_state.is_some()) {
            services.push(ServiceDocument {
                node,
                name,
                component: String::new(),
                image: String::new(),
                revision: String::new(),
                state: "missing".into(),
                health: "-".into(),
                uptime_seconds: None,
                drift: what,
            });
        }
    }
    if printer.json() {
        for service in &services {
            printer.json_line(service)?;
        }
        return Ok(ExitStatus::Success);
    }
    let mut out = format!(
        "{:<10} {:<36} {:<32} {:<14} {:<9} {:<10} {:>7}  {}\n",
        "NODE", "SERVICE", "IMAGE", "REVISION", "STATE", "HEALTH", "UPTIME", "DRIFT"
    );
    for s in &services {
        let revision: String = s.revision.chars().take(12).collect();
        out.push_str(&format!(
            "{:<10} {:<36} {:<32} {:<14} {:<9} {:<10} {:>7}  {}\n",
            s.node,
            s.name,
            s.image,
            revision,
            s.state,
            s.health,
            s.uptime_seconds.map_or("-".into(), human),
            s.drift
        ));
    }
    if services.is_empty() {
        out = format!("Deployment \"{}\" has no containers. Run `rivetctl infra up`.\n", ctx.fleet.name);
    }
    printer.data(&out)?;
    Ok(ExitStatus::Success)
}
