//! Asking before destructive steps: `--yes`, or a prompt on a terminal; without a terminal
//! and without `--yes`, destructive steps are refused and nothing is changed.

use std::io::{BufRead, IsTerminal, Write};

use crate::exit::hinted;

/// Returns Ok(()) when the user agreed (or `yes`), an error otherwise.
pub fn confirm(yes: bool, what: &str, items: &[String]) -> anyhow::Result<()> {
    if yes || items.is_empty() {
        return Ok(());
    }
    let listed = items.iter().map(|i| format!("  - {i}")).collect::<Vec<_>>().join("\n");
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return Err(hinted(
            format!("refusing to {what} without confirmation (no terminal to ask on); nothing was changed:\n{listed}"),
            "re-run with --yes to confirm",
        ));
    }
    eprint!("rivetctl will {what}:\n{listed}\nType \"yes\" to continue: ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if answer.trim() == "yes" {
        Ok(())
    } else {
        Err(hinted("not confirmed; nothing was changed", "answer \"yes\" to go ahead, or pass --yes"))
    }
}
