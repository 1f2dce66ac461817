//! Objects a delete could not remove: what is left, the target's reason, and what to do.
//!
//! `infra destroy` (and the delete steps of `infra up`) run every step they can; what the
//! target refused is listed at the end with its remedy (the target's hint, which knows its
//! own tools: `docker network disconnect …`), and the command exits 1.

use serde::Serialize;

use crate::execute::Leftover;
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
    let again = format!("then `rivetctl {command}` again");
    match &left.hint {
        Some(hint) => format!("{hint}, {again}"),
        None => format!("fix the cause ({} {} on node {}), {again}", left.key.kind, left.key.name, left.key.node),
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

    fn left(hint: Option<&str>) -> Leftover {
        Leftover {
            key: ResourceKey { node: "local".into(), kind: "network".into(), name: "n1".into() },
            reason: "network n1 id abc has active endpoints".into(),
            hint: hint.map(str::to_string),
        }
    }

    #[test]
    fn the_remedy_is_the_targets_hint_then_the_command_again() {
        assert_eq!(
            remedy(
                &left(Some("containers rivetctl does not own are attached: `docker network disconnect -f n1 web`")),
                "infra destroy"
            ),
            "containers rivetctl does not own are attached: `docker network disconnect -f n1 web`, \
             then `rivetctl infra destroy` again"
        );
        assert_eq!(
            remedy(&left(None), "infra destroy --volumes"),
            "fix the cause (network n1 on node local), then `rivetctl infra destroy --volumes` again"
        );
    }
}
