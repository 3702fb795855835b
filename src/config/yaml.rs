//! The two ways the registry's YAML is read, behind one [`Node`] trait the
//! registry's walk is written against:
//!
//! - a **flat tree** built straight from saphyr's parser events: one vector
//!   of nodes in document order, each knowing where its subtree ends, the
//!   scalars resolved by saphyr's own core-schema rules. No hash map per
//!   mapping, no node per key, strings borrowed from the text where the
//!   parser allows. It takes only plain documents: one document, string
//!   keys, no duplicate key, no anchor, alias or tag. Anything else is
//!   left to
//! - saphyr's **marked tree** (`MarkedYaml`), which the registry was always
//!   read from and which gives every error its message.
//!
//! The registry reads the flat tree first and falls back to the marked one
//! whenever the flat tree was not built or its walk failed, so errors
//! (their text, their line, which one comes first) are the marked tree's
//! by construction; a registry read from the flat tree is the one the marked
//! tree gives (a test compares both on every registry the tests use).
//! Building the marked tree cost ~20 k instructions a secret, most of it in
//! allocations (a `LinkedHashMap` per mapping) and their release.

#![forbid(unsafe_code)]

use std::collections::HashSet;

use saphyr::{MarkedYaml, Scalar, YamlData};
use saphyr_parser::{Event, Parser, Span, SpannedEventReceiver};

/// What the registry's walk reads of a YAML node. Implemented for saphyr's
/// marked tree and for the flat tree, with the same answers.
pub(super) trait Node<'t>: Copy {
    /// The line the node starts on (1-based).
    fn line(self) -> usize;
    /// The scalar, when the node is one (tagged, aliased or collection
    /// nodes are not).
    fn scalar(self) -> Option<&'t Scalar<'t>>;
    /// What the node is, for messages: "a string", "a list", ...
    fn type_name(self) -> &'static str;
    /// The keys and values of a mapping, in file order.
    fn entries(self) -> Option<impl Iterator<Item = (Self, Self)>>;
    /// The items of a sequence, in order.
    fn items(self) -> Option<impl Iterator<Item = Self>>;

    /// The text of a string scalar.
    fn as_str(self) -> Option<&'t str> {
        match self.scalar()? {
            Scalar::String(s) => Some(s.as_ref()),
            _ => None,
        }
    }
}

/// How a scalar is named in messages.
fn scalar_name(s: &Scalar<'_>) -> &'static str {
    match s {
        Scalar::String(_) => "a string",
        Scalar::Integer(_) => "an integer",
        Scalar::FloatingPoint(_) => "a number",
        Scalar::Boolean(_) => "a boolean",
        Scalar::Null => "empty",
    }
}

impl<'t> Node<'t> for &'t MarkedYaml<'t> {
    fn line(self) -> usize {
        self.span.start.line()
    }

    fn scalar(self) -> Option<&'t Scalar<'t>> {
        match &self.data {
            YamlData::Value(s) => Some(s),
            _ => None,
        }
    }

    fn type_name(self) -> &'static str {
        match &self.data {
            YamlData::Value(s) => scalar_name(s),
            YamlData::Sequence(_) => "a list",
            YamlData::Mapping(_) => "a mapping",
            _ => "an unsupported value",
        }
    }

    fn entries(self) -> Option<impl Iterator<Item = (Self, Self)>> {
        match &self.data {
            YamlData::Mapping(map) => Some(map.iter()),
            _ => None,
        }
    }

    fn items(self) -> Option<impl Iterator<Item = Self>> {
        match &self.data {
            YamlData::Sequence(items) => Some(items.iter()),
            _ => None,
        }
    }
}

/// One node of the flat tree.
struct FlatNode<'i> {
    line: usize,
    /// The index just past this node's subtree: its next sibling's.
    next: usize,
    data: FlatData<'i>,
}

enum FlatData<'i> {
    Scalar(Scalar<'i>),
    Sequence,
    Mapping,
}

/// A YAML document as a flat tree (see the module's paragraph).
pub(super) struct Flat<'i> {
    nodes: Vec<FlatNode<'i>>,
}

/// Counts only: a scalar may be a key pasted by mistake, never echoed.
impl std::fmt::Debug for Flat<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flat")
            .field("nodes", &self.nodes.len())
            .finish()
    }
}

impl<'i> Flat<'i> {
    /// The flat tree of `text`, or `None` when it is not a plain document
    /// (or not valid YAML): the marked tree must read it.
    #[cfg(test)]
    pub fn parse(text: &'i str) -> Option<Flat<'i>> {
        Flat::parse_from_line(text, 1)
    }

    /// [`Flat::parse`] of a part of a document that starts on line
    /// `first_line` of it, so that every node gets its line in the whole.
    pub fn parse_from_line(text: &'i str, first_line: usize) -> Option<Flat<'i>> {
        let mut builder = Builder {
            lines_before: first_line - 1,
            // A guess from the registry's usual shape, to grow rarely.
            nodes: Vec::with_capacity(text.len() / 8),
            open: Vec::new(),
            documents: 0,
            plain: true,
        };
        Parser::new_from_str(text).load(&mut builder, true).ok()?;
        let plain = builder.plain && builder.open.is_empty() && builder.documents <= 1;
        // A document always holds a node (an empty one is a null scalar).
        let whole = builder.documents == 0 || !builder.nodes.is_empty();
        (plain && whole).then_some(Flat {
            nodes: builder.nodes,
        })
    }

    /// The document's root node; `None` for a stream without a document.
    pub fn root(&self) -> Option<FlatRef<'_, 'i>> {
        (!self.nodes.is_empty()).then_some(FlatRef {
            nodes: &self.nodes,
            at: 0,
        })
    }
}

/// Collects the flat tree from the parser's events; `plain` turns false at
/// the first thing it does not take, and the rest is only parsed.
struct Builder<'i> {
    /// Added to the parser's line numbers.
    lines_before: usize,
    nodes: Vec<FlatNode<'i>>,
    /// The collections not closed yet, innermost last.
    open: Vec<usize>,
    documents: usize,
    plain: bool,
}

impl Builder<'_> {
    /// Close the innermost collection; a mapping's keys must be distinct
    /// strings.
    fn close(&mut self) {
        let Some(at) = self.open.pop() else {
            self.plain = false;
            return;
        };
        let end = self.nodes.len();
        self.nodes[at].next = end;
        if matches!(self.nodes[at].data, FlatData::Mapping) {
            self.plain = distinct_string_keys(&self.nodes, at);
        }
    }
}

/// Whether the keys of the mapping at `at` are strings, none twice (what
/// saphyr's loader would refuse as "duplicated key in mapping").
fn distinct_string_keys(nodes: &[FlatNode<'_>], at: usize) -> bool {
    let mut keys: Vec<&str> = Vec::new();
    let mut child = at + 1;
    while child < nodes[at].next {
        let FlatData::Scalar(Scalar::String(key)) = &nodes[child].data else {
            return false;
        };
        keys.push(key.as_ref());
        let value = nodes[child].next;
        child = nodes[value].next;
    }
    if keys.len() <= 16 {
        return keys.iter().enumerate().all(|(i, k)| !keys[..i].contains(k));
    }
    let mut seen = HashSet::with_capacity(keys.len());
    keys.into_iter().all(|k| seen.insert(k))
}

/// Where `text` can be cut in two documents that read, one after the other,
/// as it reads whole: the start of the first line at or after byte `from`
/// that begins a top-level key (`id:` at column 0, an id's characters
/// only). `None` when there is none, or when `text` has what a cut could
/// change the meaning of: a document marker or directive (`---`, `...`,
/// `%` at a line's start), or a bare carriage return (a line break this
/// cut does not count).
///
/// Why a cut there keeps the meaning: a line at column 0 ends every block
/// construct of a mapping at column 0, so the first part is whole unless a
/// flow collection or a quoted scalar is still open, and then it is not
/// valid YAML on its own; the caller falls back to the whole text whenever
/// either part is not a plain document, or a key is in both.
pub(super) fn split_point(text: &str, from: usize) -> Option<usize> {
    let marker = |m: &str| text.starts_with(m) || text.contains(&format!("\n{m}"));
    if marker("---") || marker("...") || marker("%") {
        return None;
    }
    if text.matches('\r').count() != text.matches("\r\n").count() {
        return None;
    }
    let bytes = text.as_bytes();
    // The start of the line after the one holding byte `at`.
    let next_line = |at: usize| {
        let newline = bytes[at..].iter().position(|&b| b == b'\n')?;
        Some(at + newline + 1)
    };
    let mut start = from.min(bytes.len());
    if start == 0 || bytes[start - 1] != b'\n' {
        start = next_line(start)?;
    }
    while start < bytes.len() {
        if begins_key(&bytes[start..]) {
            return Some(start);
        }
        start = next_line(start)?;
    }
    None
}

/// Whether `line` starts with `id:` followed by a space or the line's end.
fn begins_key(line: &[u8]) -> bool {
    let id = line
        .iter()
        .take_while(|&&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        .count();
    id > 0
        && line[0] != b'-'
        && line[0] != b'.'
        && line.get(id) == Some(&b':')
        && matches!(line.get(id + 1), None | Some(b' ' | b'\n' | b'\r'))
}

impl<'i> SpannedEventReceiver<'i> for Builder<'i> {
    fn on_event(&mut self, event: Event<'i>, span: Span) {
        if !self.plain {
            return;
        }
        let line = self.lines_before + span.start.line();
        let at = self.nodes.len();
        match event {
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
            Event::DocumentStart(_) => {
                self.documents += 1;
                self.plain = self.documents == 1;
            }
            Event::Scalar(value, style, anchor, tag) => {
                if anchor != 0 || tag.is_some() {
                    self.plain = false;
                    return;
                }
                // saphyr's loader resolves untagged scalars with this.
                match Scalar::parse_from_cow_and_metadata(value, style, None) {
                    Some(scalar) => self.nodes.push(FlatNode {
                        line,
                        next: at + 1,
                        data: FlatData::Scalar(scalar),
                    }),
                    None => self.plain = false,
                }
            }
            Event::SequenceStart(anchor, ref tag) | Event::MappingStart(anchor, ref tag) => {
                if anchor != 0 || tag.is_some() {
                    self.plain = false;
                    return;
                }
                let data = if matches!(event, Event::MappingStart(..)) {
                    FlatData::Mapping
                } else {
                    FlatData::Sequence
                };
                self.nodes.push(FlatNode {
                    line,
                    next: at + 1,
                    data,
                });
                self.open.push(at);
            }
            Event::SequenceEnd | Event::MappingEnd => self.close(),
            Event::Alias(_) => self.plain = false,
        }
    }
}

/// A node of a [`Flat`] tree.
#[derive(Clone, Copy)]
pub(super) struct FlatRef<'t, 'i> {
    nodes: &'t [FlatNode<'i>],
    at: usize,
}

/// Where it is only (see [`Flat`]'s `Debug`).
impl std::fmt::Debug for FlatRef<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlatRef")
            .field("at", &self.at)
            .field("line", &self.nodes[self.at].line)
            .finish()
    }
}

impl<'t> Node<'t> for FlatRef<'t, '_> {
    fn line(self) -> usize {
        self.nodes[self.at].line
    }

    fn scalar(self) -> Option<&'t Scalar<'t>> {
        match &self.nodes[self.at].data {
            FlatData::Scalar(s) => Some(s),
            _ => None,
        }
    }

    fn type_name(self) -> &'static str {
        match &self.nodes[self.at].data {
            FlatData::Scalar(s) => scalar_name(s),
            FlatData::Sequence => "a list",
            FlatData::Mapping => "a mapping",
        }
    }

    fn entries(self) -> Option<impl Iterator<Item = (Self, Self)>> {
        let FlatData::Mapping = self.nodes[self.at].data else {
            return None;
        };
        let (nodes, end) = (self.nodes, self.nodes[self.at].next);
        let mut child = self.at + 1;
        Some(std::iter::from_fn(move || {
            if child >= end {
                return None;
            }
            let key = FlatRef { nodes, at: child };
            let value = FlatRef {
                nodes,
                at: nodes[child].next,
            };
            child = nodes[value.at].next;
            Some((key, value))
        }))
    }

    fn items(self) -> Option<impl Iterator<Item = Self>> {
        let FlatData::Sequence = self.nodes[self.at].data else {
            return None;
        };
        let (nodes, end) = (self.nodes, self.nodes[self.at].next);
        let mut child = self.at + 1;
        Some(std::iter::from_fn(move || {
            if child >= end {
                return None;
            }
            let item = FlatRef { nodes, at: child };
            child = nodes[child].next;
            Some(item)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::split_point;

    #[test]
    fn split_points_are_top_level_keys() {
        let text = "a:\n  dev:\n    secret_ref: kv://a\n# b:\n\"c\":\n  dev: {}\n- d:\n.e:\nf.g-h_1:\ni:x\nj: 1\n";
        let at = |key: &str| text.find(key).expect("in the text");
        for (from, want) in [
            (0, Some(at("f.g-h_1:"))),
            (1, Some(at("f.g-h_1:"))),
            (at("f.g-h_1:"), Some(at("f.g-h_1:"))),
            (at("f.g-h_1:") + 1, Some(at("j: 1"))),
            (at("j: 1") + 1, None),
            (text.len(), None),
        ] {
            assert_eq!(split_point(text, from), want, "from {from}");
        }
        for text in [
            "a: 1\nb: 1\n---\n",
            "--- \na: 1\nb: 1\n",
            "a: 1\n...\nb: 1\n",
            "%YAML 1.2\n---\na: 1\nb: 1\n",
            "a: 1\rb: 1\n",
        ] {
            assert_eq!(split_point(text, 0), None, "{text:?}");
        }
        assert_eq!(split_point("a: 1\r\nb: 1\r\n", 0), Some(6));
    }
}
