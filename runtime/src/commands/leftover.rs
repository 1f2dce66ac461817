//! Objects a delete could not remove: what is left, the engine's reason, and what to do.
//!
//! `infra destroy` (and the delete steps of `infra up`) run every step they can; what the
//! engine refused is listed at the end with a remedy for its kind, and the command exits 1.

use orchestrator::docker::{KIND_CONTAINER, KIND_NETWORK};
use targets::docker::apply::Leftover;

use serde::Serialize;

use crate::printer::Printer;

/// A leftover in `--output json` (docs/output.md).
#[derive(Serialize)]
pub struct LeftDocument {
    pub kind: String,
    pub name: String,
    pub node: String,
    pub reason: String,
    pub remedy: String,
}

/// What to do about one object that is still there; `command` is what to run again.
pub fn remedy(left: &Leftover, command: &str) -> String {
    let name = &left.key.name;
    let reason = left.reason.to_lowercase();
    let again = format!("then `rivetctl {command}` again");
    match left.key.kind.as_str() {
        KIND_NETWORK if !left.attached.is_empty() => {
            let disconnect: Vec<String> =
                left.attached.iter().map(|c| format!("`docker network disconnect -f {name} {c}`")).collect();
            format!("containers rivetctl does not own are attached: {}, {again}", disconnect.join(", "))
        }
        KIND_NETWORK if reason.contains("active endpoints") => format!(
            "`docker network inspect {name}` shows the endpoints; `docker network disconnect -f {name} <endpoint>` for each, {again}"
        ),
        KIND_NETWORK => format!("`docker network inspect {name}` shows what holds it; {again}"),
        KIND_CONTAINER => format!("`docker inspect {name}` shows its state; `docker rm -f {name}`, {again}"),
        _ if reason.contains("in use") => {
            format!("`docker ps -a --filter volume={name}` shows the containers using it; remove them, {again}")
        }
        _ => format!("`docker volume inspect {name}`; fix the cause, {again}"),
    }
}

/// Prints every leftover as an error with its remedy (nothing when there is none).
pub fn print(printer: &Printer, left: &[Leftover], command: &str) {
    if left.is_empty() {
        return;
    }
    printer.error(&format!("{} object(s) could not be removed and are still there:", left.len()));
    for item in left {
        printer.info(&format!("  {} {} on node {}: {}", item.key.kind, item.key.name, item.key.node, item.reason));
        printer.hint(&remedy(item, command));
    }
}

/// The JSON form of a leftover.
pub fn document(left: &Leftover, command: &str) -> LeftDocument {
    LeftDocument {
        kind: left.key.kind.clone(),
        name: left.key.name.clone(),
        node: left.key.node.clone(),
        reason: left.reason.clone(),
        remedy: remedy(left, command),
    }
}

#[cfg(test)]
mod tests {
    use orchestrator::resource::ResourceKey;

    use super::*;

    fn left(kind: &str, name: &str, reason: &str) -> Leftover {
        Leftover {
            key: ResourceKey { node: "local".into(), kind: kind.into(), name: name.into() },
            reason: reason.into(),
            attached: Vec::new(),
        }
    }

    #[test]
    fn each_kind_gets_a_remedy_naming_the_object_and_the_command() {
        let network = left("network", "n1", "error while removing network: network n1 id abc has active endpoints");
        assert_eq!(
            remedy(&network, "infra destroy"),
            "`docker network inspect n1` shows the endpoints; `docker network disconnect -f n1 <endpoint>` for each, \
             then `rivetctl infra destroy` again"
        );
        let busy = Leftover { attached: vec!["web".into()], ..network.clone() };
        assert_eq!(
            remedy(&busy, "infra destroy"),
            "containers rivetctl does not own are attached: `docker network disconnect -f n1 web`, \
             then `rivetctl infra destroy` again"
        );
        let volume = left("volume", "v1", "remove v1: volume is in use - [abc]");
        assert!(remedy(&volume, "infra destroy --volumes").contains("docker ps -a --filter volume=v1"));
        assert!(remedy(&volume, "infra destroy --volumes").ends_with("`rivetctl infra destroy --volumes` again"));
        let container = left("container", "c1", "removal of container c1 is already in progress");
        assert!(remedy(&container, "infra up").contains("docker rm -f c1"));
    }
}
