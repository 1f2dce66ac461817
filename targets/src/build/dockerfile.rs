//! The base images a Dockerfile builds FROM, read without building: `doctor` reports them and
//! the build path makes sure each one is on the engine (or can be pulled) before it builds,
//! so a missing base image is named instead of surfacing as the engine's raw pull error.
//!
//! Only what can be known from the text is returned: `scratch`, earlier stage names and
//! references with an unresolved `$VARIABLE` are left out. Variables resolve from the global
//! `ARG`s (those before the first `FROM`), their defaults overridden by the build args.

use std::collections::BTreeMap;

/// The external images `dockerfile` builds FROM, in order, each once.
pub fn base_images(dockerfile: &str, build_args: &BTreeMap<String, String>) -> Vec<String> {
    let mut global_args: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut stages: Vec<String> = Vec::new();
    let mut bases: Vec<String> = Vec::new();
    let mut seen_from = false;
    for instruction in instructions(dockerfile) {
        let (keyword, rest) = instruction.split_once(char::is_whitespace).unwrap_or((&instruction, ""));
        if keyword.eq_ignore_ascii_case("ARG") && !seen_from {
            for declaration in rest.split_whitespace() {
                let (name, default) = match declaration.split_once('=') {
                    Some((name, value)) => (name, Some(unquote(value).to_string())),
                    None => (declaration, None),
                };
                global_args.insert(name.to_string(), default);
            }
        } else if keyword.eq_ignore_ascii_case("FROM") {
            seen_from = true;
            let mut words = rest.split_whitespace().filter(|w| !w.starts_with("--"));
            let Some(reference) = words.next() else { continue };
            let stage = match (words.next(), words.next()) {
                (Some(as_word), Some(stage)) if as_word.eq_ignore_ascii_case("AS") => Some(stage.to_ascii_lowercase()),
                _ => None,
            };
            let value = |name: &str| {
                build_args
                    .get(name)
                    .filter(|_| global_args.contains_key(name))
                    .cloned()
                    .or_else(|| global_args.get(name).cloned().flatten())
            };
            let image = substitute(reference, &value);
            // Stage names are visible to the FROM lines after the one that names them.
            let earlier_stage = image.as_ref().is_some_and(|i| stages.contains(&i.to_ascii_lowercase()));
            stages.extend(stage);
            let Some(image) = image else { continue };
            if image.is_empty() || image.eq_ignore_ascii_case("scratch") || earlier_stage || bases.contains(&image) {
                continue;
            }
            bases.push(image);
        }
    }
    bases
}

/// The instructions of a Dockerfile: comments dropped, `\` continuations joined.
fn instructions(dockerfile: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && !current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                if !current.trim().is_empty() {
                    out.push(current.trim().to_string());
                }
                current.clear();
            }
        }
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_string());
    }
    out
}

fn unquote(value: &str) -> &str {
    for quote in ['"', '\''] {
        if let Some(inner) = value.strip_prefix(quote).and_then(|v| v.strip_suffix(quote)) {
            return inner;
        }
    }
    value
}

/// Replaces `$NAME`, `${NAME}` and `${NAME:-default}`; `None` when a variable has no value.
fn substitute(text: &str, value: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(braced) = rest.strip_prefix('{') {
            let end = braced.find('}')?;
            let inner = &braced[..end];
            rest = &braced[end + 1..];
            let resolved = match inner.split_once(":-") {
                Some((name, default)) => value(name).filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_string()),
                None => value(inner)?,
            };
            out.push_str(&resolved);
        } else {
            let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
            if end == 0 {
                return None;
            }
            out.push_str(&value(&rest[..end])?);
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(dockerfile: &str, args: &[(&str, &str)], expect: &[&str]) {
        let args = args.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(base_images(dockerfile, &args), expect, "{dockerfile}");
    }

    #[test]
    fn plain_and_flagged_from_lines() {
        check("# c\nFROM rivetos-base:busybox\nRUN true\n", &[], &["rivetos-base:busybox"]);
        check("from --platform=linux/amd64 node:24-alpine AS build\n", &[], &["node:24-alpine"]);
        check("FROM \\\n  postgres:16\n", &[], &["postgres:16"]);
    }

    #[test]
    fn scratch_and_earlier_stages_are_not_images() {
        check("FROM scratch\n", &[], &[]);
        check(
            "FROM node:24 AS Build\nRUN make\nFROM build AS test\nFROM alpine:3\nCOPY --from=build /a /a\nFROM node:24\n",
            &[],
            &["node:24", "alpine:3"],
        );
    }

    #[test]
    fn global_args_resolve_and_build_args_override_them() {
        let text = "ARG BASE=rivetos-base:busybox\nARG TAG\nFROM ${BASE}\nFROM alpine:$TAG\nFROM debian:${TAG:-12}\n";
        check(text, &[], &["rivetos-base:busybox", "debian:12"]);
        check(text, &[("BASE", "other:1"), ("TAG", "3")], &["other:1", "alpine:3", "debian:3"]);
        // An ARG inside a stage or an undeclared build arg does not reach FROM.
        check("FROM a:1\nARG X=b:2\nFROM $X\n", &[("Y", "c:3")], &["a:1"]);
        check("ARG X=\"quoted:1\"\nFROM $X\n", &[], &["quoted:1"]);
    }
}
