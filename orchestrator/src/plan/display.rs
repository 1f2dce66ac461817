//! The plan as people read it: `+ ~ -/+ -`, per-field diffs, identical agent changes
//! grouped, a summary line. Secrets print as `(sensitive)`.

use std::fmt::Write as _;

use super::{Action, Plan, Step};
use crate::resource::{Component, FieldValue};

/// How to render.
#[derive(Debug, Clone, Copy, Default)]
pub struct RenderOptions {
    /// ANSI colours.
    pub color: bool,
}

struct Paint(bool);

impl Paint {
    fn action(&self, action: Action, text: &str) -> String {
        if !self.0 {
            return text.to_string();
        }
        let code = match action {
            Action::Create => "32",
            Action::Update => "33",
            Action::Replace | Action::Delete => "31",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }

    fn bold(&self, text: &str) -> String {
        if self.0 { format!("\x1b[1m{text}\x1b[0m") } else { text.to_string() }
    }

    fn dim(&self, text: &str) -> String {
        if self.0 { format!("\x1b[2m{text}\x1b[0m") } else { text.to_string() }
    }
}

fn value(v: &Option<FieldValue>) -> String {
    v.as_ref().map_or_else(|| "(none)".to_string(), FieldValue::display)
}

/// The step with agent identity replaced by `<agent>`, so equal changes compare equal.
fn signature<P>(step: &Step<P>) -> Option<String> {
    let Component::Agent(id) = &step.component else {
        return None;
    };
    let name = crate::fleet::container_name_of(id);
    let generic = |text: &str| {
        if text.contains(id.as_str()) || text.contains(name.as_str()) {
            text.replace(&step.key.name, "<name>").replace(id.as_str(), "<agent>").replace(&name, "<agent>")
        } else {
            text.to_string()
        }
    };
    let mut sig = format!("{:?}|{}|{:?}|{:?}|", step.action, step.key.kind, step.forced_by, step.drift);
    let mut add = |field: &str, before: Option<&FieldValue>, after: Option<&FieldValue>| {
        let _ = write!(
            sig,
            "{field}={}>{};",
            before.map_or(String::new(), |v| generic(&v.text)),
            after.map_or(String::new(), |v| generic(&v.text))
        );
    };
    match (&step.action, &step.desired) {
        // A create's changes are its fields; reading them in place spares a copy per object.
        (Action::Create, Some(resource)) => resource.fields.iter().for_each(|(k, v)| add(k, None, Some(v))),
        _ => step.changes.iter().for_each(|c| add(&c.field, c.before.as_ref(), c.after.as_ref())),
    }
    Some(sig)
}

fn write_changes<P>(out: &mut String, step: &Step<P>, paint: &Paint, agent: Option<(&str, &str)>) {
    let generic = |text: String| match agent {
        Some((id, name)) => text.replace(name, "<agent>").replace(id, "<agent>"),
        None => text,
    };
    if let Some(drift) = &step.drift {
        let desired = match drift.desired {
            crate::resource::RunState::Running => "running",
            crate::resource::RunState::Completed => "completed",
        };
        let _ = writeln!(
            out,
            "      {} state: {} -> {}  (drift)",
            paint.action(Action::Update, "~"),
            drift.observed,
            desired
        );
    }
    match step.action {
        Action::Delete => {}
        Action::Create => {
            let changes = step.shown_changes();
            let width = changes.iter().map(|c| c.field.len()).max().unwrap_or(0);
            for change in changes.iter() {
                let _ = writeln!(out, "      {:width$} = {}", change.field, generic(value(&change.after)));
            }
        }
        Action::Update | Action::Replace => {
            for change in &step.changes {
                let symbol = match (&change.before, &change.after) {
                    (None, Some(_)) => paint.action(Action::Create, "+"),
                    (Some(_), None) => paint.action(Action::Delete, "-"),
                    _ => paint.action(Action::Update, "~"),
                };
                if let (Some(before), Some(after)) = (&change.before, &change.after)
                    && !before.sensitive
                    && !after.sensitive
                    && (before.text.contains('\n') || after.text.contains('\n'))
                {
                    // A file's text (a ConfigMap's key): the lines that differ, with context.
                    let _ = writeln!(out, "      {symbol} {}:", change.field);
                    for line in text_diff(&before.text, &after.text) {
                        let _ = writeln!(out, "          {}", generic(line));
                    }
                    continue;
                }
                let line = match (&change.before, &change.after) {
                    (None, after) => format!("{} = {}", change.field, generic(value(after))),
                    (before, None) => format!("{} = {}", change.field, generic(value(before))),
                    (before, after) => {
                        format!("{}: {} -> {}", change.field, generic(value(before)), generic(value(after)))
                    }
                };
                let forces = if change.forces_replacement {
                    paint.action(Action::Replace, "  # forces replacement")
                } else {
                    String::new()
                };
                let _ = writeln!(out, "      {symbol} {line}{forces}");
            }
        }
    }
}

/// Lines of context shown around a changed block of a multi-line value.
const CONTEXT: usize = 2;

/// The lines of `after` that differ from `before`: the changed block between the common
/// first and last lines, `-` removed and `+` added, with [`CONTEXT`] lines around it and a
/// `@@ line N @@` header (1-based, in `before`).
fn text_diff(before: &str, after: &str) -> Vec<String> {
    let (old, new): (Vec<&str>, Vec<&str>) = (before.lines().collect(), after.lines().collect());
    let prefix = old.iter().zip(&new).take_while(|(a, b)| a == b).count();
    let suffix = old[prefix..].iter().rev().zip(new[prefix..].iter().rev()).take_while(|(a, b)| a == b).count();
    let start = prefix.saturating_sub(CONTEXT);
    let mut out = vec![format!("@@ line {} @@", start + 1)];
    out.extend(old[start..prefix].iter().map(|l| format!("  {l}")));
    out.extend(old[prefix..old.len() - suffix].iter().map(|l| format!("- {l}")));
    out.extend(new[prefix..new.len() - suffix].iter().map(|l| format!("+ {l}")));
    let end = (old.len() - suffix + CONTEXT).min(old.len());
    out.extend(old[old.len() - suffix..end].iter().map(|l| format!("  {l}")));
    out
}

fn headline<P>(step: &Step<P>) -> String {
    let mut line = format!("{} {}", step.key.kind, step.key.name);
    if step.key.node != "local" && !step.key.node.is_empty() {
        let _ = write!(line, " on {}", step.key.node);
    }
    if step.action == Action::Replace {
        let _ = write!(line, " (replace: {} forces it)", step.forced_by.join(", "));
    }
    if step.action == Action::Update && step.changes.is_empty() && step.drift.is_some() {
        line.push_str(" (repair drift)");
    }
    if step.is_destructive() {
        line.push_str(if step.stateful { " [holds data]" } else { " [datahub]" });
    }
    line
}

/// Renders the steps, the kept data and the summary line.
pub fn render_text<P>(plan: &Plan<P>, options: RenderOptions) -> String {
    let paint = Paint(options.color);
    let mut out = String::new();
    if plan.is_empty() {
        let _ = writeln!(
            out,
            "No changes. Deployment \"{}\" on {} matches the configuration ({} objects checked).",
            plan.deployment, plan.target, plan.unchanged
        );
        write_kept(&mut out, plan, &paint);
        return out;
    }
    // Group agent steps with identical (agent-neutral) changes.
    let mut groups: Vec<(Option<String>, Vec<&Step<P>>)> = Vec::new();
    for step in &plan.steps {
        let sig = signature(step);
        match sig.as_ref().and_then(|s| groups.iter_mut().find(|(g, _)| g.as_ref() == Some(s))) {
            Some((_, members)) => members.push(step),
            None => groups.push((sig, vec![step])),
        }
    }
    for (_, members) in &groups {
        let step = members[0];
        let symbol = paint.action(step.action, &format!("{:>3}", step.action.symbol()));
        if members.len() == 1 {
            let _ = writeln!(out, "{symbol} {}", paint.bold(&headline(step)));
            write_changes(&mut out, step, &paint, None);
        } else {
            let names: Vec<&str> = members.iter().map(|s| s.key.name.as_str()).collect();
            let shown = if names.len() > 4 {
                format!("{}, … and {} more", names[..3].join(", "), names.len() - 3)
            } else {
                names.join(", ")
            };
            let mut line = format!("{} agents: {} {} ({shown})", members.len(), step.key.kind, step.action.as_str());
            if step.action == Action::Replace {
                let _ = write!(line, " (replace: {} forces it)", step.forced_by.join(", "));
            }
            let _ = writeln!(out, "{symbol} {}", paint.bold(&line));
            let id = match &step.component {
                Component::Agent(id) => id.as_str(),
                _ => "",
            };
            write_changes(&mut out, step, &paint, Some((id, &step.key.name)));
        }
    }
    write_kept(&mut out, plan, &paint);
    let summary = plan.summary();
    let count = |a| summary.get(&a).copied().unwrap_or(0);
    let _ = writeln!(
        out,
        "\n{} {} to create, {} to update, {} to replace, {} to delete; {} unchanged.",
        paint.bold("Plan:"),
        count(Action::Create),
        count(Action::Update),
        count(Action::Replace),
        count(Action::Delete),
        plan.unchanged
    );
    out
}

fn write_kept<P>(out: &mut String, plan: &Plan<P>, paint: &Paint) {
    if plan.kept.is_empty() {
        return;
    }
    let names: Vec<String> = plan.kept.iter().map(|k| format!("{} {}", k.key.kind, k.key.name)).collect();
    let _ = writeln!(
        out,
        "\n{} {} (data is deleted only when asked for: --volumes)",
        paint.dim("Kept, no longer in the configuration:"),
        names.join(", ")
    );
}

#[cfg(test)]
mod text_diff_tests {
    use super::text_diff;

    #[test]
    fn a_changed_line_is_shown_with_its_context() {
        let before = "a\nb\nc\nd\ne\nf\n";
        let after = "a\nb\nc\nD\ne\nf\n";
        assert_eq!(text_diff(before, after), ["@@ line 2 @@", "  b", "  c", "- d", "+ D", "  e", "  f"]);
        assert_eq!(text_diff("x\n", "x\ny\n"), ["@@ line 1 @@", "  x", "+ y"]);
        assert_eq!(text_diff("x\ny\n", "y\n"), ["@@ line 1 @@", "- x", "  y"]);
    }
}
