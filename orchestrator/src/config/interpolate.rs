//! `${VAR}` and `${VAR:-default}` in config values.
//!
//! Values come from the process environment and from the `.env` beside the config (the
//! runtime layer reads both and hands them in as [`Variables`]; this module does no I/O).
//! Values from `.env`, and variables whose names look like credentials, are sensitive: a
//! config value built from one is never printed.

use std::collections::BTreeMap;

/// One variable's value and whether it must be kept out of output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    pub value: String,
    pub sensitive: bool,
}

/// The variables a config may refer to.
#[derive(Debug, Clone, Default)]
pub struct Variables {
    /// From `.env` beside the config (all sensitive: RivetOS keeps its secrets there).
    pub dotenv: BTreeMap<String, String>,
    /// From the process environment (sensitive when the name looks like a credential).
    pub environment: BTreeMap<String, String>,
}

impl Variables {
    /// Looks a variable up: the process environment wins over `.env`, as in Docker Compose.
    pub fn get(&self, name: &str) -> Option<Variable> {
        if let Some(value) = self.environment.get(name) {
            let sensitive = looks_secret(name) || self.dotenv.contains_key(name);
            return Some(Variable { value: value.clone(), sensitive });
        }
        self.dotenv.get(name).map(|value| Variable { value: value.clone(), sensitive: true })
    }
}

/// True for names like `*_KEY`, `*_TOKEN`, `*PASSWORD*`, `*SECRET*`.
pub fn looks_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    ["KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "PRIVATE", "PG_URL", "DATABASE_URL"]
        .iter()
        .any(|marker| upper.contains(marker))
}

/// Why a value could not be interpolated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterpolateError {
    /// `${NAME}` with no value and no default.
    Missing { name: String },
    /// `${` without `}`, or a bad name.
    Syntax { message: String },
}

/// The interpolated text and whether any sensitive variable went into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interpolated {
    pub text: String,
    pub sensitive: bool,
}

/// Replaces `${NAME}`, `${NAME:-default}` (default when unset or empty) and
/// `${NAME-default}` (default when unset); `$$` is a literal `$`.
pub fn interpolate(text: &str, vars: &Variables) -> Result<Interpolated, Vec<InterpolateError>> {
    if !text.contains('$') {
        return Ok(Interpolated { text: text.to_string(), sensitive: false });
    }
    let mut out = String::with_capacity(text.len());
    let mut sensitive = false;
    let mut errors = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
            continue;
        }
        let Some(body_and_tail) = after.strip_prefix('{') else {
            out.push('$');
            rest = after;
            continue;
        };
        let Some(close) = body_and_tail.find('}') else {
            errors.push(InterpolateError::Syntax { message: "`${` is not closed by `}`".into() });
            return Err(errors);
        };
        let body = &body_and_tail[..close];
        rest = &body_and_tail[close + 1..];
        let (name, default, empty_counts) = if let Some((name, default)) = body.split_once(":-") {
            (name, Some(default), true)
        } else if let Some((name, default)) = body.split_once('-') {
            (name, Some(default), false)
        } else {
            (body, None, false)
        };
        if !is_valid_name(name) {
            errors.push(InterpolateError::Syntax {
                message: format!("`${{{body}}}` is not a variable reference: names are letters, digits and `_`"),
            });
            continue;
        }
        match (vars.get(name), default) {
            (Some(var), Some(default)) if empty_counts && var.value.is_empty() => out.push_str(default),
            (Some(var), _) => {
                sensitive |= var.sensitive;
                out.push_str(&var.value);
            }
            (None, Some(default)) => out.push_str(default),
            (None, None) => errors.push(InterpolateError::Missing { name: name.to_string() }),
        }
    }
    out.push_str(rest);
    if errors.is_empty() { Ok(Interpolated { text: out, sensitive }) } else { Err(errors) }
}

fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Variables {
        let mut v = Variables::default();
        v.environment.insert("HOST".into(), "node1".into());
        v.environment.insert("EMPTY".into(), String::new());
        v.dotenv.insert("POSTGRES_PASSWORD".into(), "hunter2".into());
        v
    }

    fn check(input: &str, expect: Result<(&str, bool), Vec<InterpolateError>>) {
        let got = interpolate(input, &vars()).map(|i| (i.text, i.sensitive));
        let expect = expect.map(|(t, s)| (t.to_string(), s));
        assert_eq!(got, expect, "{input}");
    }

    #[test]
    fn references() {
        check("plain", Ok(("plain", false)));
        check("${HOST}:5432", Ok(("node1:5432", false)));
        check("${POSTGRES_PASSWORD}", Ok(("hunter2", true)));
        check("${NOPE:-fallback}", Ok(("fallback", false)));
        check("${EMPTY:-fallback}", Ok(("fallback", false)));
        check("${EMPTY-fallback}", Ok(("", false)));
        check("$$HOME and $5", Ok(("$HOME and $5", false)));
        check("${NOPE}", Err(vec![InterpolateError::Missing { name: "NOPE".into() }]));
    }

    #[test]
    fn syntax_errors() {
        assert!(matches!(interpolate("${HOST", &vars()), Err(e) if matches!(e[0], InterpolateError::Syntax { .. })));
        assert!(matches!(interpolate("${1X}", &vars()), Err(e) if matches!(e[0], InterpolateError::Syntax { .. })));
    }

    #[test]
    fn secret_names() {
        assert!(looks_secret("ANTHROPIC_API_KEY"));
        assert!(looks_secret("PVE_TOKEN_SECRET"));
        assert!(!looks_secret("HOME"));
    }
}
