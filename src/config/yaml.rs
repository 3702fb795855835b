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
    pub fn parse(text: &'i str) -> Option<Flat<'i>> {
        let mut builder = Builder {
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

impl<'i> SpannedEventReceiver<'i> for Builder<'i> {
    fn on_event(&mut self, event: Event<'i>, span: Span) {
        if !self.plain {
            return;
        }
        let line = span.start.line();
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
