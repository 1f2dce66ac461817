//! What `rivetctl doctor` checks of a Docker fleet's nodes: each node's connection on its
//! own (one node that does not answer does not hide the others), its engine's address and
//! version, and the base images the build needs there.

use std::path::Path;

use orchestrator::config::rules::Endpoint;
use orchestrator::fleet::Fleet;

use crate::build::dockerfile;
use crate::docker::build;
use crate::factory::Check;

use super::nodes;

/// The checks of every node of `fleet`; `source_root` is the checkout the images build
/// from (`None`: the source did not resolve, so base images are not checked).
/// `base_image_hint(image, node)` says how to get a missing base image there.
pub async fn checks(
    fleet: &Fleet,
    config_dir: &Path,
    source_root: Option<&Path>,
    base_image_hint: &dyn Fn(&str, &str) -> String,
) -> Vec<Check> {
    let mut checks = Vec::new();
    let ssh = nodes::ssh_options(fleet, config_dir);
    for node in fleet.target_settings.docker_engines() {
        let name = format!("engine {}", node.name);
        let link = match nodes::connect(node, &ssh, config_dir).await {
            Ok(link) => link,
            Err(err) => {
                checks.push(Check::failed(name, err.message, err.hint));
                continue;
            }
        };
        let engine = link.engine;
        if matches!(node.endpoint, Endpoint::Ssh { .. }) {
            checks.push(Check::ok(
                format!("ssh {}", node.name),
                format!("{} (host key known, login by key)", node.endpoint),
            ));
        }
        let detail = match engine.call().version().await {
            Ok(v) => format!(
                "{} (Docker {}, API {})",
                engine.address,
                v.version.unwrap_or_default(),
                v.api_version.unwrap_or_default()
            ),
            Err(_) => engine.address.clone(),
        };
        checks.push(Check::ok(name, detail));
        let Some(root) = source_root else { continue };
        for image in fleet.images.iter().filter_map(|i| i.build.as_ref()) {
            let text = std::fs::read_to_string(root.join(&image.dockerfile)).unwrap_or_default();
            for base in dockerfile::base_images(&text, &image.build_args) {
                let check = format!("base image {base}");
                if build::has_image(&engine, &base).await {
                    checks.push(Check::ok(check, format!("present on {}", node.name)));
                } else {
                    checks.push(Check::failed(
                        check,
                        format!("{} needs {base}, which is not on node {}", image.dockerfile, node.name),
                        Some(format!(
                            "{}; builds pull it only when a registry is reachable",
                            base_image_hint(&base, &node.name)
                        )),
                    ));
                }
            }
        }
    }
    checks
}
