//! Errors and warnings about a config file, with positions, hints and a caret rendering.
//!
//! Every problem found in a file is collected (not only the first), so a user fixes them all
//! in one pass. Rendering is plain string formatting: the caller decides where it goes.

use std::fmt::Write as _;

/// A 1-based line and column in the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl Pos {
    pub fn new(line: usize, col: usize) -> Self {
        Pos { line, col }
    }
}

/// How bad a diagnostic is: errors stop the command, warnings are printed and ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// What is wrong, including what was expected.
    pub message: String,
    /// Where, when known (a missing section has no position of its own).
    pub pos: Option<Pos>,
    /// How many characters to underline.
    pub len: usize,
    /// A concrete suggestion.
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn error(message: impl Into<String>, pos: Option<Pos>) -> Self {
        Diagnostic { severity: Severity::Error, message: message.into(), pos, len: 1, hint: None }
    }

    pub fn warning(message: impl Into<String>, pos: Option<Pos>) -> Self {
        Diagnostic { severity: Severity::Warning, message: message.into(), pos, len: 1, hint: None }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_len(mut self, len: usize) -> Self {
        self.len = len.max(1);
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Renders the diagnostic like a compiler: message, `--> file:line:col`, the source line
    /// with a caret under the offending text, and the hint.
    pub fn render(&self, file: &str, source: &str) -> String {
        let mut out = String::new();
        let label = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let _ = writeln!(out, "{label}: {}", self.message);
        match self.pos {
            Some(pos) => {
                let _ = writeln!(out, "  --> {file}:{}:{}", pos.line, pos.col);
                // A position just past the end (an unclosed bracket) points after the last line.
                let lines: Vec<&str> = source.lines().collect();
                let pos = match lines.len() {
                    n if n > 0 && pos.line > n => Pos::new(n, lines[n - 1].chars().count() + 1),
                    _ => pos,
                };
                if let Some(line) = lines.get(pos.line.saturating_sub(1)) {
                    let number = pos.line.to_string();
                    let gutter = " ".repeat(number.len());
                    let indent: String = line
                        .chars()
                        .take(pos.col.saturating_sub(1))
                        .map(|c| if c == '\t' { '\t' } else { ' ' })
                        .collect();
                    let available = line.chars().count().saturating_sub(pos.col.saturating_sub(1));
                    let carets = "^".repeat(self.len.min(available.max(1)));
                    let _ = writeln!(out, " {gutter} |");
                    let _ = writeln!(out, " {number} | {line}");
                    let _ = writeln!(out, " {gutter} | {indent}{carets}");
                }
            }
            None => {
                let _ = writeln!(out, "  --> {file}");
            }
        }
        if let Some(hint) = &self.hint {
            let _ = writeln!(out, "hint: {hint}");
        }
        out
    }
}

/// Suggests the closest candidate to a misspelt word, if any is close enough.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|candidate| (strsim::jaro_winkler(word, candidate), candidate))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_caret_under_the_value() {
        let source = "deployment:\n  docker:\n    postgres_port: 70000\n";
        let diag = Diagnostic::error("\"postgres_port\" must be a number between 0 and 65535", Some(Pos::new(3, 20)))
            .with_len(5)
            .with_hint("use 0 to keep the port unpublished");
        let text = diag.render("rivet.config.yaml", source);
        assert_eq!(
            text,
            "error: \"postgres_port\" must be a number between 0 and 65535\n  --> rivet.config.yaml:3:20\n   |\n 3 |     postgres_port: 70000\n   |                    ^^^^^\nhint: use 0 to keep the port unpublished\n"
        );
    }

    #[test]
    fn suggests_close_keys_only() {
        let keys = ["postgres_port", "project_name", "network"];
        assert_eq!(did_you_mean("postgres_prot", keys), Some("postgres_port"));
        assert_eq!(did_you_mean("zzz", keys), None);
    }
}
