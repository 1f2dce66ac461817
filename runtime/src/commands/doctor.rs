//! `rivetctl doctor`: checks the config, the source, every node's engine and what the build
//! needs, and says for each problem how to fix it.
//!
//! The target's checks (each node's connection on its own, the engine's version, the base
//! images there) come from `targets`' factory ([`factory::checks`]); the lock is read from
//! the target's state store.

use std::os::unix::fs::PermissionsExt;

use orchestrator::config::Target;
use orchestrator::port::Port;
use serde::Serialize;
use targets::factory::{self, KubernetesOptions, OpenOptions, Visit};

use crate::cli::GlobalArgs;
use crate::exit::{ExitStatus, Hinted, Reported};
use crate::printer::Printer;
use crate::store::lease::{self, Runner};
use crate::{fleet, project, source};

#[derive(Debug, Serialize)]
struct Check {
    name: String,
    ok: bool,
    detail: String,
    fix: Option<String>,
}

fn hint_of(err: &anyhow::Error) -> Option<String> {
    err.chain().find_map(|e| e.downcast_ref::<Hinted>()).map(|h| h.hint.clone())
}

pub async fn run(printer: &Printer, global: &GlobalArgs) -> anyhow::Result<ExitStatus> {
    let mut checks = Vec::new();
    let mut add = |name: &str, result: Result<String, (String, Option<String>)>| {
        let (ok, detail, fix) = match result {
            Ok(detail) => (true, detail, None),
            Err((detail, fix)) => (false, detail, fix),
        };
        checks.push(Check { name: name.to_string(), ok, detail, fix });
    };
    let project = match project::load(printer, &global.config) {
        Ok(project) => project,
        Err(err) if err.is::<Reported>() => {
            add(
                "config",
                Err(("the config has errors (above)".into(), Some("fix them, then run doctor again".into()))),
            );
            return finish(printer, &checks);
        }
        Err(err) => {
            add("config", Err((format!("{err:#}"), hint_of(&err))));
            return finish(printer, &checks);
        }
    };
    let raw = &project.config.raw;
    add(
        "config",
        Ok(format!(
            "{} is valid ({} target, {} agents)",
            project.shown_path,
            raw.deployment.target.as_str(),
            raw.agents.len()
        )),
    );
    let env_path = project.dir.join(".env");
    match std::fs::metadata(&env_path) {
        Ok(meta) if meta.permissions().mode() & 0o077 != 0 => add(
            ".env",
            Err((
                format!(
                    "{} is readable by other users (mode {:o})",
                    env_path.display(),
                    meta.permissions().mode() & 0o777
                ),
                Some(format!("chmod 600 {}", env_path.display())),
            )),
        ),
        Ok(_) => add(".env", Ok(format!("{} ({} values, private)", env_path.display(), project.dotenv.len()))),
        Err(_) => add(".env", Ok("none beside the config".into())),
    }
    let resolved = match source::resolve(&project).await {
        Ok(resolved) => {
            let images: Vec<&str> = std::iter::once(resolved.images.agent.reference.as_str())
                .chain(resolved.images.datahub.as_ref().map(|d| d.reference.as_str()))
                .collect();
            add("source", Ok(format!("images {}", images.join(", "))));
            Some(resolved)
        }
        Err(err) => {
            add("source", Err((format!("{err:#}"), hint_of(&err))));
            None
        }
    };
    let Some(resolved) = &resolved else { return finish(printer, &checks) };
    let fleet = match fleet::build(&project, resolved) {
        Ok(fleet) => fleet,
        Err(err) => {
            add("fleet", Err((format!("{err:#}"), hint_of(&err))));
            return finish(printer, &checks);
        }
    };
    let kubernetes = KubernetesOptions { context: global.context.clone(), ..KubernetesOptions::default() };
    let options = OpenOptions { config_dir: &project.dir, nodes: None, kubernetes: &kubernetes };
    let root = resolved.source.as_ref().map(|s| s.root.as_path());
    for check in factory::checks(&fleet, &options, root, &crate::images::base_image_hint).await {
        add(&check.name, check.result);
    }
    if matches!(raw.deployment.target, Target::Docker | Target::Kubernetes | Target::Proxmox) {
        let lock = factory::open(&fleet, &OpenOptions { nodes: Some(&[]), ..options }, LockCheck(&fleet.name)).await;
        match lock {
            Ok(Ok(detail)) => add("lock", Ok(detail)),
            Ok(Err(err)) => add("lock", Err((format!("{err:#}"), hint_of(&err)))),
            Err(err) => add("lock", Err((err.message, err.hint))),
        }
    }
    finish(printer, &checks)
}

fn finish(printer: &Printer, checks: &[Check]) -> anyhow::Result<ExitStatus> {
    if printer.json() {
        for check in checks {
            printer.json_line(check)?;
        }
    } else {
        let mut out = String::new();
        for check in checks {
            let mark = if check.ok { "ok  " } else { "FAIL" };
            out.push_str(&format!("{mark} {:<24} {}\n", check.name, check.detail));
            if let Some(fix) = &check.fix {
                out.push_str(&format!("     {:<24} fix: {fix}\n", ""));
            }
        }
        printer.data(&out)?;
    }
    if checks.iter().all(|c| c.ok) { Ok(ExitStatus::Success) } else { Err(Reported.into()) }
}

/// Reads the deployment's lock on the connected target.
struct LockCheck<'a>(&'a str);

impl Visit for LockCheck<'_> {
    type Output = anyhow::Result<String>;

    async fn visit<T: Port>(self, target: &T) -> Self::Output {
        let runner = Runner::this_process();
        let deployment = self.0;
        Ok(match lease::status(target.store(), deployment, &runner).await? {
            None => "free".into(),
            Some(status) => {
                let h = &status.holder;
                let holder =
                    format!("`{}` on {} (pid {}), for {}", h.command, h.host, h.pid, lease::age(status.age_ms));
                if status.live() {
                    format!("held by {holder}")
                } else {
                    format!("stale lock from {holder} (taken over by the next run)")
                }
            }
        })
    }
}
