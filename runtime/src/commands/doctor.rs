//! `rivetctl doctor`: checks the config, the source, every node's engine and what the build
//! needs, and says for each problem how to fix it.

use std::os::unix::fs::PermissionsExt;

use orchestrator::config::Target;
use orchestrator::config::rules::Endpoint;
use serde::Serialize;
use targets::build::dockerfile;
use targets::docker::build;

use crate::cli::GlobalArgs;
use crate::exit::{ExitStatus, Hinted, Reported};
use crate::printer::Printer;
use crate::{fleet, lock, project, source, state};

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
    let lock_dir = state::dir(&project).join("locks");
    match lock::status(&lock_dir, &project.config.name) {
        Ok(Some((holder, true))) => add("lock", Ok(format!("held by {holder}"))),
        Ok(Some((holder, false))) => add("lock", Ok(format!("stale lock from {holder} (taken over by the next run)"))),
        Ok(None) => add("lock", Ok("free".into())),
        Err(err) => add("lock", Err((format!("{err:#}"), None))),
    }
    if raw.deployment.target == Target::Docker
        && let Some(resolved) = &resolved
    {
        let fleet = match fleet::build(&project, resolved) {
            Ok(fleet) => fleet,
            Err(err) => {
                add("fleet", Err((format!("{err:#}"), hint_of(&err))));
                return finish(printer, &checks);
            }
        };
        let ssh = crate::engines::ssh_options(&fleet, &project.dir);
        for node in crate::engines::docker_engines(&fleet) {
            let name = format!("engine {}", node.name);
            match crate::engines::connect(node, &ssh).await {
                Err(err) => add(&name, Err((format!("{err:#}"), hint_of(&err)))),
                Ok(link) => {
                    let engine = link.engine;
                    if matches!(node.endpoint, Endpoint::Ssh { .. }) {
                        add(
                            &format!("ssh {}", node.name),
                            Ok(format!("{} (host key known, login by key)", node.endpoint)),
                        );
                    }
                    let version = engine.call().version().await.ok();
                    let detail = version
                        .map(|v| {
                            format!(
                                "{} (Docker {}, API {})",
                                engine.address,
                                v.version.unwrap_or_default(),
                                v.api_version.unwrap_or_default()
                            )
                        })
                        .unwrap_or_else(|| engine.address.clone());
                    add(&name, Ok(detail));
                    if let Some(src) = &resolved.source {
                        for image in fleet.images.iter().filter_map(|i| i.build.as_ref()) {
                            let text = std::fs::read_to_string(src.root.join(&image.dockerfile)).unwrap_or_default();
                            for base in dockerfile::base_images(&text, &image.build_args) {
                                if build::has_image(&engine, &base).await {
                                    add(&format!("base image {base}"), Ok(format!("present on {}", node.name)));
                                } else {
                                    add(
                                        &format!("base image {base}"),
                                        Err((
                                            format!(
                                                "{} needs {base}, which is not on node {}",
                                                image.dockerfile, node.name
                                            ),
                                            Some(format!(
                                                "{}; builds pull it only when a registry is reachable",
                                                crate::images::base_image_hint(&base, &node.name)
                                            )),
                                        )),
                                    );
                                }
                            }
                        }
                    }
                }
            }
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
