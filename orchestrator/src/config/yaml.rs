//! A YAML tree that remembers where every node came from.
//!
//! rivetctl reports every config error at `file:line:col`, and reports all of them in one
//! run, so it cannot deserialize straight into structs (serde stops at the first error).
//! Instead the text is parsed into this small tree (scalars keep their raw text and whether
//! they were quoted), and [`super::check`] walks it against the schema.
//!
//! Aliases are expanded here with a budget: a "billion laughs" document fails with an error
//! instead of exhausting memory.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

use super::diagnostics::{Diagnostic, Pos};

/// The most nodes a document may expand to (counting alias expansions).
pub const MAX_NODES: usize = 200_000;
/// The deepest nesting accepted.
pub const MAX_DEPTH: usize = 64;

/// One node of the document with the position where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Yaml {
    pub pos: Pos,
    /// Length in characters of the node's first line (for carets under scalars).
    pub len: usize,
    pub kind: YamlKind,
}

/// What a node holds.
#[derive(Debug, Clone, PartialEq)]
pub enum YamlKind {
    /// A scalar: its text and whether it was written plain (unquoted, so `16`, `true`, `~`
    /// may mean a number, a boolean or null).
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Yaml>),
    /// Keys in document order; duplicate keys are rejected while parsing.
    Map(Vec<(Yaml, Yaml)>),
}

impl Yaml {
    /// The scalar text, if this is a scalar.
    pub fn as_scalar(&self) -> Option<&str> {
        match &self.kind {
            YamlKind::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// True for `~`, `null`, an empty plain scalar.
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, YamlKind::Scalar { text, plain: true } if is_null_text(text))
    }

    /// The YAML type name used in error messages.
    pub fn type_name(&self) -> &'static str {
        match &self.kind {
            YamlKind::Seq(_) => "a list",
            YamlKind::Map(_) => "an object",
            YamlKind::Scalar { text, plain } => {
                if !plain {
                    "a string"
                } else if is_null_text(text) {
                    "null"
                } else if parse_bool(text).is_some() {
                    "a boolean"
                } else if parse_int(text).is_some() || parse_float(text).is_some() {
                    "a number"
                } else {
                    "a string"
                }
            }
        }
    }
}

/// YAML 1.2 core schema null.
pub fn is_null_text(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

/// YAML 1.2 core schema booleans.
pub fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

/// YAML 1.2 core schema integers (decimal, `0o` octal, `0x` hex).
pub fn parse_int(text: &str) -> Option<i64> {
    let (neg, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let value = if let Some(hex) = digits.strip_prefix("0x") {
        i64::from_str_radix(hex, 16).ok()?
    } else if let Some(oct) = digits.strip_prefix("0o") {
        i64::from_str_radix(oct, 8).ok()?
    } else if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse::<i64>().ok()?
    } else {
        return None;
    };
    Some(if neg { -value } else { value })
}

/// YAML 1.2 core schema floats (without the infinities and NaN, which no field accepts).
pub fn parse_float(text: &str) -> Option<f64> {
    let ok = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'))
        && text.bytes().any(|b| b.is_ascii_digit());
    if ok { text.parse().ok() } else { None }
}

/// Parses one YAML document. An empty document yields a null scalar.
pub fn parse(source: &str) -> Result<Yaml, Vec<Diagnostic>> {
    let mut builder = Builder::default();
    for event in Parser::new_from_str(source) {
        match event {
            Ok((event, span)) => {
                if let Err(diag) = builder.push(event, span) {
                    return Err(vec![diag]);
                }
            }
            Err(err) => {
                let mark = err.marker();
                return Err(vec![
                    Diagnostic::error(
                        format!("invalid YAML: {}", err.info()),
                        Some(Pos::new(mark.line(), mark.col() + 1)),
                    )
                    .with_hint("check the indentation and quoting around this position"),
                ]);
            }
        }
    }
    if !builder.errors.is_empty() {
        return Err(builder.errors);
    }
    Ok(builder.root.unwrap_or(Yaml {
        pos: Pos::new(1, 1),
        len: 0,
        kind: YamlKind::Scalar { text: String::new(), plain: true },
    }))
}

enum Open {
    Seq {
        node: Yaml,
        anchor: usize,
    },
    /// `merged`: keys copied in by a merge key (`<<`), which explicit keys override.
    Map {
        node: Yaml,
        anchor: usize,
        key: Option<Yaml>,
        merged: Vec<String>,
        /// Explicit keys so far, with the line each was written on (duplicates are errors).
        seen: HashMap<String, usize>,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Open>,
    anchors: HashMap<usize, Yaml>,
    root: Option<Yaml>,
    documents: usize,
    nodes: usize,
    errors: Vec<Diagnostic>,
}

fn pos_of(span: &Span) -> Pos {
    Pos::new(span.start.line(), span.start.col() + 1)
}

fn count_nodes(node: &Yaml) -> usize {
    match &node.kind {
        YamlKind::Scalar { .. } => 1,
        YamlKind::Seq(items) => 1 + items.iter().map(count_nodes).sum::<usize>(),
        YamlKind::Map(entries) => 1 + entries.iter().map(|(k, v)| count_nodes(k) + count_nodes(v)).sum::<usize>(),
    }
}

impl Builder {
    fn push(&mut self, event: Event<'_>, span: Span) -> Result<(), Diagnostic> {
        match event {
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(Diagnostic::error(
                        "expected a single YAML document, found a second one",
                        Some(pos_of(&span)),
                    )
                    .with_hint("remove the `---` separator: rivet.config.yaml holds one document"));
                }
            }
            Event::Scalar(text, style, anchor, _tag) => {
                let len = text.lines().next().map_or(0, |l| l.chars().count()).max(1);
                let node = Yaml {
                    pos: pos_of(&span),
                    len: if matches!(style, ScalarStyle::Plain) { len } else { len + 2 },
                    kind: YamlKind::Scalar { text: text.into_owned(), plain: matches!(style, ScalarStyle::Plain) },
                };
                self.finish(node, anchor)?;
            }
            Event::SequenceStart(anchor, _) => {
                self.open_check(&span)?;
                self.stack.push(Open::Seq {
                    node: Yaml { pos: pos_of(&span), len: 1, kind: YamlKind::Seq(Vec::new()) },
                    anchor,
                });
            }
            Event::MappingStart(anchor, _) => {
                self.open_check(&span)?;
                self.stack.push(Open::Map {
                    node: Yaml { pos: pos_of(&span), len: 1, kind: YamlKind::Map(Vec::new()) },
                    anchor,
                    key: None,
                    merged: Vec::new(),
                    seen: HashMap::new(),
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match self.stack.pop() {
                    Some(Open::Seq { node, anchor }) | Some(Open::Map { node, anchor, .. }) => (node, anchor),
                    None => return Ok(()),
                };
                self.finish(node, anchor)?;
            }
            Event::Alias(id) => {
                let Some(target) = self.anchors.get(&id) else {
                    return Err(Diagnostic::error("alias to an unknown anchor", Some(pos_of(&span))));
                };
                let mut node = target.clone();
                self.nodes += count_nodes(&node);
                if self.nodes > MAX_NODES {
                    return Err(Diagnostic::error(
                        format!("the document expands to more than {MAX_NODES} nodes through aliases"),
                        Some(pos_of(&span)),
                    )
                    .with_hint("aliases (`*name`) copy whole subtrees; use fewer nested aliases"));
                }
                node.pos = pos_of(&span);
                self.attach(node)?;
            }
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
        }
        Ok(())
    }

    fn open_check(&mut self, span: &Span) -> Result<(), Diagnostic> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(Diagnostic::error(format!("nesting deeper than {MAX_DEPTH} levels"), Some(pos_of(span))));
        }
        Ok(())
    }

    fn finish(&mut self, node: Yaml, anchor: usize) -> Result<(), Diagnostic> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(Diagnostic::error(format!("the document has more than {MAX_NODES} nodes"), Some(node.pos)));
        }
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        self.attach(node)
    }

    fn attach(&mut self, node: Yaml) -> Result<(), Diagnostic> {
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Open::Seq { node: seq, .. }) => {
                if let YamlKind::Seq(items) = &mut seq.kind {
                    items.push(node);
                }
            }
            Some(Open::Map { node: map, key, merged, seen, .. }) => match key.take() {
                None => *key = Some(node),
                Some(k) => {
                    if let YamlKind::Map(entries) = &mut map.kind {
                        if let Some(text) = k.as_scalar()
                            && text == "<<"
                            && matches!(&k.kind, YamlKind::Scalar { plain: true, .. })
                        {
                            merge_into(entries, node, merged, &mut self.errors);
                            return Ok(());
                        }
                        if let Some(name) = k.as_scalar()
                            && let Some(at) = merged.iter().position(|m| m == name)
                        {
                            merged.remove(at);
                            seen.insert(name.to_string(), k.pos.line);
                            entries.retain(|(existing, _)| existing.as_scalar() != Some(name));
                            entries.push((k, node));
                            return Ok(());
                        }
                        let first = k.as_scalar().and_then(|name| match seen.get(name) {
                            Some(line) => Some(*line),
                            None => {
                                seen.insert(name.to_string(), k.pos.line);
                                None
                            }
                        });
                        if let Some(line) = first {
                            self.errors.push(
                                Diagnostic::error(
                                    format!(
                                        "duplicate key \"{}\" (first defined at line {line})",
                                        k.as_scalar().unwrap_or_default(),
                                    ),
                                    Some(k.pos),
                                )
                                .with_len(k.len)
                                .with_hint("each key may appear once in a mapping; remove one"),
                            );
                            return Ok(());
                        }
                        entries.push((k, node));
                    }
                }
            },
        }
        Ok(())
    }
}

/// `<<: *base` (or a list of them): copies keys not already present, as YAML 1.1 merge keys
/// (Docker Compose files use them, so people expect them).
fn merge_into(entries: &mut Vec<(Yaml, Yaml)>, source: Yaml, merged: &mut Vec<String>, errors: &mut Vec<Diagnostic>) {
    let sources = match source.kind {
        YamlKind::Map(_) => vec![source],
        YamlKind::Seq(items) => items,
        YamlKind::Scalar { .. } => {
            errors.push(
                Diagnostic::error("a merge key (`<<`) needs an object or a list of objects", Some(source.pos))
                    .with_len(source.len),
            );
            return;
        }
    };
    for source in sources {
        let pos = source.pos;
        match source.kind {
            YamlKind::Map(from) => {
                for (k, v) in from {
                    if !entries.iter().any(|(existing, _)| existing.as_scalar() == k.as_scalar()) {
                        merged.extend(k.as_scalar().map(str::to_string));
                        entries.push((k, v));
                    }
                }
            }
            _ => errors.push(Diagnostic::error("a merge key (`<<`) needs an object or a list of objects", Some(pos))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map_keys(node: &Yaml) -> Vec<String> {
        match &node.kind {
            YamlKind::Map(entries) => entries.iter().map(|(k, _)| k.as_scalar().unwrap().to_string()).collect(),
            _ => panic!("not a map"),
        }
    }

    #[test]
    fn positions_are_one_based() {
        let doc = parse("a:\n  b: 16\n").unwrap();
        let YamlKind::Map(top) = &doc.kind else { panic!() };
        let YamlKind::Map(inner) = &top[0].1.kind else { panic!() };
        assert_eq!(inner[0].1.pos, Pos::new(2, 6));
        assert_eq!(inner[0].1.as_scalar(), Some("16"));
    }

    #[test]
    fn quoted_scalars_are_not_plain() {
        let doc = parse("a: \"16\"\nb: 16\n").unwrap();
        let YamlKind::Map(top) = &doc.kind else { panic!() };
        assert_eq!(top[0].1.type_name(), "a string");
        assert_eq!(top[1].1.type_name(), "a number");
    }

    #[test]
    fn merge_keys_copy_missing_entries() {
        let doc = parse("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\n").unwrap();
        let YamlKind::Map(top) = &doc.kind else { panic!() };
        assert_eq!(map_keys(&top[1].1), vec!["x", "y"]);
        let YamlKind::Map(other) = &top[1].1.kind else { panic!() };
        assert_eq!(other[1].1.as_scalar(), Some("3"), "explicit keys override merged ones");
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let errors = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].message.contains("duplicate key \"a\""));
        assert_eq!(errors[0].pos, Some(Pos::new(3, 1)));
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = i - 1;
            doc.push_str(&format!(
                "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        let errors = parse(&doc).unwrap_err();
        assert!(errors[0].message.contains("expands to more than"), "{errors:?}");
    }

    #[test]
    fn syntax_errors_carry_a_position() {
        let errors = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(errors[0].pos.is_some());
        assert!(errors[0].message.starts_with("invalid YAML"));
    }

    #[test]
    fn second_documents_are_refused() {
        let errors = parse("a: 1\n---\nb: 2\n").unwrap_err();
        assert!(errors[0].message.contains("single YAML document"));
    }

    #[test]
    fn integers_follow_the_core_schema() {
        assert_eq!(parse_int("5432"), Some(5432));
        assert_eq!(parse_int("0x10"), Some(16));
        assert_eq!(parse_int("-3"), Some(-3));
        assert_eq!(parse_int("12a"), None);
        assert_eq!(parse_int(""), None);
    }
}
