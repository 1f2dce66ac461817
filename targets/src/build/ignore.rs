//! `.dockerignore` matching with Docker's semantics (not gitignore's).
//!
//! Patterns are relative to the context root (`*.md` matches only at the root; `**/*.md`
//! anywhere), `*` does not cross `/`, a pattern that matches a directory excludes what is
//! in it, `!pattern` re-includes, and the last matching pattern wins — as in Docker's
//! `patternmatcher`. BuildKit's per-Dockerfile ignore file (`<Dockerfile>.dockerignore`)
//! takes precedence over the root one, so each image can narrow its own context.

use globset::{Glob, GlobBuilder, GlobMatcher};

/// One compiled pattern.
#[derive(Debug, Clone)]
struct Pattern {
    matcher: GlobMatcher,
    exclusion: bool,
}

/// A compiled ignore file.
#[derive(Debug, Clone, Default)]
pub struct IgnoreRules {
    patterns: Vec<Pattern>,
}

/// An invalid pattern.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: invalid pattern {pattern:?}")]
pub struct PatternError {
    pub line: usize,
    pub pattern: String,
    #[source]
    pub source: globset::Error,
}

/// Cleans a pattern the way Go's `filepath.Clean` does for the cases that matter here.
fn clean(pattern: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in pattern.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    parts.join("/")
}

impl IgnoreRules {
    /// Parses the text of an ignore file.
    pub fn parse(text: &str) -> Result<IgnoreRules, PatternError> {
        let mut patterns = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (exclusion, raw) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let cleaned = clean(raw);
            if cleaned.is_empty() {
                continue;
            }
            let glob: Glob = GlobBuilder::new(&cleaned)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|source| PatternError { line: i + 1, pattern: raw.to_string(), source })?;
            patterns.push(Pattern { matcher: glob.compile_matcher(), exclusion });
        }
        Ok(IgnoreRules { patterns })
    }

    /// Whether any pattern re-includes (`!pattern`).
    pub fn has_exceptions(&self) -> bool {
        self.patterns.iter().any(|p| p.exclusion)
    }

    /// Whether `path` (relative, `/`-separated) is left out of the context.
    pub fn is_excluded(&self, path: &str) -> bool {
        let mut excluded = false;
        for pattern in &self.patterns {
            let mut hit = pattern.matcher.is_match(path);
            if !hit {
                // A pattern matching a parent directory matches everything below it.
                let mut prefix = path;
                while let Some((parent, _)) = prefix.rsplit_once('/') {
                    if pattern.matcher.is_match(parent) {
                        hit = true;
                        break;
                    }
                    prefix = parent;
                }
            }
            if hit {
                excluded = !pattern.exclusion;
            }
        }
        excluded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(rules: &str, cases: &[(&str, bool)]) {
        let rules = IgnoreRules::parse(rules).unwrap();
        for (path, excluded) in cases {
            assert_eq!(rules.is_excluded(path), *excluded, "{path}");
        }
    }

    #[test]
    fn root_relative_patterns() {
        check("*.md\n", &[("README.md", true), ("docs/guide.md", false)]);
        check("**/*.md\n", &[("README.md", true), ("docs/guide.md", true)]);
    }

    #[test]
    fn directories_exclude_their_contents() {
        check(
            "node_modules\n/target/\n",
            &[("node_modules/a/b.js", true), ("target/debug/x", true), ("src/target.rs", false)],
        );
    }

    #[test]
    fn exceptions_and_last_match_wins() {
        check(
            "*\n!containers/datahub\n",
            &[("containers/datahub/bin/x", false), ("containers/agent/Dockerfile", true)],
        );
        check("docs\n!docs/keep.md\ndocs/keep.md\n", &[("docs/keep.md", true)]);
    }

    #[test]
    fn comments_and_blank_lines() {
        check("# comment\n\n  .git  \n", &[(".git/HEAD", true), ("# comment", false)]);
    }
}
