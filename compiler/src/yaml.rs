//! YAML text to a tree of located nodes.
//!
//! polc reads YAML with `saphyr-parser` (a maintained YAML 1.2 event parser that reports the
//! position of every event) and builds its own small tree, so that it can
//!
//! - keep a [`Loc`] on every node, key and scalar;
//! - reject what Kubernetes' decoder rejects (duplicate keys, complex keys) with a code;
//! - bound work on hostile input: nesting depth, alias expansion ("billion laughs") and
//!   document size are limited, and the builder never recurses;
//! - resolve plain scalars the way Kubernetes does (YAML 1.1 style, as `sigs.k8s.io/yaml`
//!   does), so that `port: 80` is an integer and `value: yes` a boolean.
//!
//! A multi-document stream is split at its `---` lines before parsing, so a syntax error in
//! one document does not hide the others.

use crate::diag::{Code, Diagnostic};
use crate::source::{FileId, Loc, SourceFile};
use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Span};
use std::collections::HashMap;

const UNQUOTED_STAR_HELP: &str = "a plain value starting with `*` is a YAML alias (and `&` an \
     anchor); quote it: `\"*.example.com\"`";

/// Limits that bound the work done on one input.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Maximum nesting depth of collections.
    pub max_depth: usize,
    /// Maximum number of nodes that aliases may add to one document.
    pub max_alias_nodes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 128,
            max_alias_nodes: 100_000,
        }
    }
}

/// How a scalar was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// Unquoted: subject to type resolution (`80` is a number, `yes` a boolean).
    Plain,
    /// Single- or double-quoted, or a block scalar: always a string.
    Quoted,
}

/// The core-schema tags a scalar may carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoreTag {
    /// `!!str` (or the non-specific `!`).
    Str,
    /// `!!int`.
    Int,
    /// `!!bool`.
    Bool,
    /// `!!null`.
    Null,
    /// `!!float`.
    Float,
}

/// A scalar as written.
#[derive(Clone, Debug, PartialEq)]
pub struct Scalar {
    /// The scalar's text, after unescaping.
    pub text: String,
    /// How it was written.
    pub style: Style,
    /// An explicit core-schema tag (`!!str`, `!!int`, ...), if any.
    pub tag: Option<CoreTag>,
}

/// What a scalar means under Kubernetes' YAML resolution.
#[derive(Clone, Debug, PartialEq)]
pub enum Resolved<'a> {
    /// `null`, `~`, or nothing.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// A string.
    Str(&'a str),
}

impl Resolved<'_> {
    /// The type name users see in messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Resolved::Null => "null",
            Resolved::Bool(_) => "boolean",
            Resolved::Int(_) => "integer",
            Resolved::Float(_) => "number",
            Resolved::Str(_) => "string",
        }
    }
}

impl Scalar {
    /// Resolves the scalar's type as Kubernetes' YAML decoder does.
    pub fn resolve(&self) -> Resolved<'_> {
        match self.tag {
            Some(CoreTag::Str) => return Resolved::Str(&self.text),
            Some(CoreTag::Null) => return Resolved::Null,
            Some(CoreTag::Bool) => {
                return resolve_bool(&self.text).map_or(Resolved::Str(&self.text), Resolved::Bool);
            }
            Some(CoreTag::Int) => {
                return resolve_int(&self.text).map_or(Resolved::Str(&self.text), Resolved::Int);
            }
            Some(CoreTag::Float) => {
                return resolve_float(&self.text)
                    .map_or(Resolved::Str(&self.text), Resolved::Float);
            }
            _ => {}
        }
        if self.style == Style::Quoted {
            return Resolved::Str(&self.text);
        }
        let t = self.text.as_str();
        if matches!(t, "" | "~" | "null" | "Null" | "NULL") {
            return Resolved::Null;
        }
        if let Some(b) = resolve_bool(t) {
            return Resolved::Bool(b);
        }
        if let Some(i) = resolve_int(t) {
            return Resolved::Int(i);
        }
        if let Some(f) = resolve_float(t) {
            return Resolved::Float(f);
        }
        Resolved::Str(t)
    }
}

fn resolve_bool(t: &str) -> Option<bool> {
    match t {
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            Some(true)
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            Some(false)
        }
        _ => None,
    }
}

fn resolve_int(t: &str) -> Option<i64> {
    let (neg, body) = match t.as_bytes().first()? {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    let body = body.replace('_', "");
    if body.is_empty() {
        return None;
    }
    let (digits, radix) = if let Some(h) = body.strip_prefix("0x") {
        (h, 16)
    } else if let Some(b) = body.strip_prefix("0b") {
        (b, 2)
    } else if let Some(o) = body.strip_prefix("0o") {
        (o, 8)
    } else if body.len() > 1 && body.starts_with('0') {
        (&body[1..], 8)
    } else {
        (body.as_str(), 10)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let v = i64::from_str_radix(digits, radix).ok()?;
    Some(if neg { -v } else { v })
}

fn resolve_float(t: &str) -> Option<f64> {
    match t {
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Some(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Some(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Some(f64::NAN),
        _ => {}
    }
    let b = t.as_bytes();
    let digits_start = usize::from(matches!(b.first(), Some(b'-' | b'+')));
    let rest = &t[digits_start..];
    if rest.is_empty()
        || !rest
            .bytes()
            .next()
            .is_some_and(|c| c.is_ascii_digit() || c == b'.')
        || !rest
            .bytes()
            .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'-' | b'+' | b'_'))
        || !rest.bytes().any(|c| c.is_ascii_digit())
    {
        return None;
    }
    rest.replace('_', "")
        .parse::<f64>()
        .ok()
        .map(|f| if b.first() == Some(&b'-') { -f } else { f })
}

/// One entry of a mapping.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The key's text.
    pub key: String,
    /// Where the key is.
    pub key_loc: Loc,
    /// The value.
    pub value: Node,
}

/// The shape of a node.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A scalar (including null).
    Scalar(Scalar),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in document order; keys are unique.
    Map(Vec<Entry>),
}

/// A located YAML node.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Where the node is. For an empty value (`key:`), an empty span after the key.
    pub loc: Loc,
    /// What it is.
    pub value: Value,
}

impl Node {
    /// The field path, kubectl style (`spec.ingress[0].toPorts`), of the innermost key or
    /// value under this node that holds byte `offset` (empty: this node itself).
    pub fn path_to(&self, offset: u32) -> String {
        let within = |l: Loc| l.start <= offset && (offset < l.end || offset == l.start);
        let mut path = String::new();
        let mut node = self;
        loop {
            match &node.value {
                Value::Map(entries) => {
                    let Some(e) = entries
                        .iter()
                        .find(|e| within(e.key_loc) || within(e.value.loc))
                    else {
                        break;
                    };
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(&e.key);
                    if within(e.key_loc) {
                        break;
                    }
                    node = &e.value;
                }
                Value::Seq(items) => {
                    let Some((i, n)) = items.iter().enumerate().find(|(_, n)| within(n.loc)) else {
                        break;
                    };
                    path.push_str(&format!("[{i}]"));
                    node = n;
                }
                Value::Scalar(_) => break,
            }
        }
        path
    }

    /// The node as a mapping, if it is one.
    pub fn as_map(&self) -> Option<&[Entry]> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The value of `key` in a mapping node.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.as_map()?.iter().find(|e| e.key == key)
    }

    /// Whether the node is a null scalar.
    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar(s) if s.resolve() == Resolved::Null)
    }

    /// The type name users see in messages (`mapping`, `list`, `string`, ...).
    pub fn type_name(&self) -> &'static str {
        match &self.value {
            Value::Scalar(s) => s.resolve().type_name(),
            Value::Seq(_) => "list",
            Value::Map(_) => "mapping",
        }
    }

    /// The number of nodes in this subtree.
    pub fn size(&self) -> usize {
        let mut n = 0;
        let mut stack = vec![self];
        while let Some(node) = stack.pop() {
            n += 1;
            match &node.value {
                Value::Scalar(_) => {}
                Value::Seq(items) => stack.extend(items.iter()),
                Value::Map(entries) => stack.extend(entries.iter().map(|e| &e.value)),
            }
        }
        n
    }
}

/// One document of a stream.
#[derive(Clone, Debug)]
pub struct Document {
    /// The root node.
    pub root: Node,
}

/// Parses every document of `file`. Syntax errors are reported per document; the documents
/// that parsed are returned.
pub fn parse_stream(
    id: FileId,
    file: &SourceFile,
    limits: Limits,
    diags: &mut Vec<Diagnostic>,
) -> Vec<Document> {
    let mut docs = Vec::new();
    for chunk in split_documents(&file.text) {
        let mut builder = Builder::new(id, file, chunk, limits);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| builder.run()));
        match result {
            Ok(Ok(())) => {}
            Ok(Err(d)) => diags.push(*d),
            Err(_) => diags.push(Diagnostic::new(
                Code::YamlSyntax,
                Loc::new(id, chunk.start, chunk.start),
                "the YAML parser failed on this document",
            )),
        }
        docs.append(&mut builder.docs);
    }
    docs
}

/// A byte range of the text holding one or more documents, and the zero-based line it starts on.
#[derive(Clone, Copy, Debug)]
struct Chunk {
    start: usize,
    end: usize,
    line: usize,
}

/// Splits a stream before every line that starts with a `---` document marker.
fn split_documents(text: &str) -> Vec<Chunk> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut start_line = 0;
    let mut offset = 0;
    for (line_no, line) in text.split_inclusive('\n').enumerate() {
        let is_marker = line.starts_with("---")
            && line[3..]
                .chars()
                .next()
                .is_none_or(|c| c == ' ' || c == '\t' || c == '\n' || c == '\r');
        if is_marker && offset > start {
            chunks.push(Chunk {
                start,
                end: offset,
                line: start_line,
            });
            start = offset;
            start_line = line_no;
        }
        offset += line.len();
    }
    chunks.push(Chunk {
        start,
        end: text.len(),
        line: start_line,
    });
    chunks
}

enum Frame {
    Seq {
        start: Loc,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        start: Loc,
        anchor: usize,
        entries: Vec<Entry>,
        key: Option<(String, Loc)>,
        /// Key index, built once a mapping is large enough for linear scans to hurt.
        index: Option<HashMap<String, Loc>>,
    },
}

struct Builder<'a> {
    id: FileId,
    file: &'a SourceFile,
    chunk: Chunk,
    limits: Limits,
    /// Whether the chunk is ASCII text.
    ascii: bool,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    alias_nodes: usize,
    docs: Vec<Document>,
}

impl<'a> Builder<'a> {
    fn new(id: FileId, file: &'a SourceFile, chunk: Chunk, limits: Limits) -> Self {
        Builder {
            id,
            file,
            chunk,
            limits,
            ascii: file
                .text
                .get(chunk.start..chunk.end)
                .is_some_and(str::is_ascii),
            stack: Vec::new(),
            anchors: HashMap::new(),
            alias_nodes: 0,
            docs: Vec::new(),
        }
    }

    fn offset(&self, m: saphyr_parser::Marker) -> usize {
        if self.ascii {
            // One byte per character: the marker's character index is the byte offset in
            // the chunk (much cheaper than finding the line and its column).
            return (self.chunk.start + m.index()).min(self.file.text.len());
        }
        self.file.offset_of(m.line() + self.chunk.line, m.col())
    }

    fn loc(&self, span: Span) -> Loc {
        let start = self.offset(span.start);
        let end = self.offset(span.end).max(start);
        Loc::new(self.id, start, end)
    }

    fn too_deep(&self, loc: Loc) -> Diagnostic {
        Diagnostic::new(
            Code::NestingTooDeep,
            loc,
            format!(
                "the document is nested more than {} levels deep",
                self.limits.max_depth
            ),
        )
        .label("too deep")
        .help("policies are a dozen levels deep at most; flatten the document")
    }

    fn scan_error(&self, e: &ScanError) -> Box<Diagnostic> {
        let at = self.offset(*e.marker());
        let info = e.info();
        // Underline the character the parser stopped at (whole, even if multi-byte).
        let width = self
            .file
            .text
            .get(at..)
            .and_then(|t| t.chars().next())
            .map_or(0, char::len_utf8);
        let loc = Loc::new(self.id, at, at + width);
        let d = if info.contains("recursion limit") {
            self.too_deep(loc)
        } else if info.contains("tab") {
            Diagnostic::new(
                Code::TabIndentation,
                loc,
                "a tab character is used where YAML requires spaces",
            )
            .label("tab here")
            .help("indent with spaces; YAML does not allow tabs in indentation")
        } else {
            let mut d = Diagnostic::new(Code::YamlSyntax, loc, format!("invalid YAML: {info}"))
                .label("the parser stopped here")
                .help("check the indentation and quoting at and just above the marked position");
            if info.contains("anchor") || info.contains("alias") {
                d = d.help(UNQUOTED_STAR_HELP);
            }
            // Inside a flow collection the real mistake is usually an unclosed bracket.
            if let Some(open) = self.stack.iter().rev().find_map(|f| {
                let start = match f {
                    Frame::Seq { start, .. } | Frame::Map { start, .. } => *start,
                };
                match self.file.text.as_bytes().get(start.start as usize) {
                    Some(b'[') | Some(b'{') => Some(start),
                    _ => None,
                }
            }) {
                let bracket = &self.file.text[open.start as usize..open.start as usize + 1];
                d = d.related(
                    Loc::new(self.id, open.start as usize, open.start as usize + 1),
                    format!("is this `{bracket}` closed?"),
                );
            }
            d
        };
        Box::new(d)
    }

    fn run(&mut self) -> Result<(), Box<Diagnostic>> {
        let text = &self.file.text[self.chunk.start..self.chunk.end];
        let mut parser = Parser::new_from_str(text);
        while let Some(ev) = parser.next_event() {
            let (ev, span) = ev.map_err(|e| self.scan_error(&e))?;
            match ev {
                Event::StreamStart | Event::StreamEnd | Event::Nothing => {}
                Event::DocumentStart(_) => {
                    self.stack.clear();
                    self.anchors.clear();
                    self.alias_nodes = 0;
                }
                Event::DocumentEnd => {}
                Event::Alias(id) => {
                    let loc = self.loc(span);
                    let Some(node) = self.anchors.get(&id) else {
                        return Err(Box::new(
                            Diagnostic::new(
                                Code::YamlSyntax,
                                loc,
                                "invalid YAML: alias to an unknown anchor",
                            )
                            .label("read as an alias")
                            .help(UNQUOTED_STAR_HELP),
                        ));
                    };
                    self.alias_nodes += node.size();
                    if self.alias_nodes > self.limits.max_alias_nodes {
                        return Err(Box::new(
                            Diagnostic::new(
                                Code::AliasLimit,
                                loc,
                                format!(
                                    "aliases expand to more than {} nodes",
                                    self.limits.max_alias_nodes
                                ),
                            )
                            .label("this alias exceeds the budget")
                            .help("write the values out instead of nesting aliases"),
                        ));
                    }
                    let node = Node {
                        loc,
                        value: node.value.clone(),
                    };
                    self.add(node, 0)?;
                }
                Event::Scalar(text, style, anchor, tag) => {
                    let loc = self.loc(span);
                    let tag = match tag {
                        None => None,
                        Some(t) if t.handle == "!" && t.suffix.is_empty() => Some(CoreTag::Str),
                        Some(t) if t.is_yaml_core_schema() && core_tag(&t.suffix).is_some() => {
                            core_tag(&t.suffix)
                        }
                        Some(t) => {
                            return Err(Box::new(
                                Diagnostic::new(
                                    Code::UnsupportedYaml,
                                    loc,
                                    format!("custom YAML tag `{t}` is not supported"),
                                )
                                .label("custom tag")
                                .help("Kubernetes manifests use plain JSON-compatible values"),
                            ));
                        }
                    };
                    let style = match style {
                        ScalarStyle::Plain => Style::Plain,
                        _ => Style::Quoted,
                    };
                    // The scanner grows strings as it reads; trim them to size, since a
                    // large inventory holds millions of scalars.
                    let mut text = text.into_owned();
                    text.shrink_to_fit();
                    let node = Node {
                        loc,
                        value: Value::Scalar(Scalar { text, style, tag }),
                    };
                    self.add(node, anchor)?;
                }
                Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                    let loc = self.loc(span);
                    if let Some(Frame::Map { key: None, .. }) = self.stack.last() {
                        return Err(Box::new(
                            Diagnostic::new(
                                Code::UnsupportedYaml,
                                loc,
                                "a mapping key is a list or mapping",
                            )
                            .help("mapping keys must be plain strings"),
                        ));
                    }
                    if self.stack.len() >= self.limits.max_depth {
                        return Err(Box::new(self.too_deep(loc)));
                    }
                    let is_seq = matches!(ev, Event::SequenceStart(..));
                    self.stack.push(if is_seq {
                        Frame::Seq {
                            start: loc,
                            anchor,
                            items: Vec::new(),
                        }
                    } else {
                        Frame::Map {
                            start: loc,
                            anchor,
                            entries: Vec::new(),
                            key: None,
                            index: None,
                        }
                    });
                }
                Event::SequenceEnd | Event::MappingEnd => {
                    let end = self.loc(span);
                    let (node, anchor) = match self.stack.pop() {
                        Some(Frame::Seq {
                            start,
                            anchor,
                            items,
                        }) => {
                            let loc = span_over(start, end, items.last().map(|n| n.loc));
                            (
                                Node {
                                    loc,
                                    value: Value::Seq(items),
                                },
                                anchor,
                            )
                        }
                        Some(Frame::Map {
                            start,
                            anchor,
                            entries,
                            ..
                        }) => {
                            let loc = span_over(start, end, entries.last().map(|e| e.value.loc));
                            (
                                Node {
                                    loc,
                                    value: Value::Map(entries),
                                },
                                anchor,
                            )
                        }
                        None => continue,
                    };
                    self.add(node, anchor)?;
                }
            }
        }
        Ok(())
    }

    /// Adds a finished node to the frame on top of the stack (or ends the document).
    fn add(&mut self, node: Node, anchor: usize) -> Result<(), Box<Diagnostic>> {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.docs.push(Document { root: node }),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries,
                key,
                index,
                ..
            }) => match key.take() {
                Some((k, key_loc)) => entries.push(Entry {
                    key: k,
                    key_loc,
                    value: node,
                }),
                None => {
                    let Value::Scalar(s) = node.value else {
                        return Err(Box::new(Diagnostic::new(
                            Code::UnsupportedYaml,
                            node.loc,
                            "a mapping key is a list or mapping",
                        )));
                    };
                    if s.style == Style::Plain && s.text == "<<" {
                        return Err(Box::new(
                            Diagnostic::new(
                                Code::UnsupportedYaml,
                                node.loc,
                                "YAML merge keys (`<<`) are not supported",
                            )
                            .help("write the merged fields out"),
                        ));
                    }
                    if index.is_none() && entries.len() >= 16 {
                        *index = Some(entries.iter().map(|e| (e.key.clone(), e.key_loc)).collect());
                    }
                    let first = match index {
                        Some(ix) => ix.get(&s.text).copied(),
                        None => entries.iter().find(|e| e.key == s.text).map(|e| e.key_loc),
                    };
                    if let Some(first) = first {
                        return Err(Box::new(
                            Diagnostic::new(
                                Code::DuplicateKey,
                                node.loc,
                                format!("key `{}` is defined twice in this mapping", s.text),
                            )
                            .label("second definition")
                            .related(first, "first defined here")
                            .help("remove one of the two entries or merge them"),
                        ));
                    }
                    if let Some(ix) = index {
                        ix.insert(s.text.clone(), node.loc);
                    }
                    *key = Some((s.text, node.loc));
                }
            },
        }
        Ok(())
    }
}

fn core_tag(suffix: &str) -> Option<CoreTag> {
    Some(match suffix {
        "str" => CoreTag::Str,
        "int" => CoreTag::Int,
        "bool" => CoreTag::Bool,
        "null" => CoreTag::Null,
        "float" => CoreTag::Float,
        _ => return None,
    })
}

/// The span of a collection: from its start event to its last child or end event.
fn span_over(start: Loc, end: Loc, last_child: Option<Loc>) -> Loc {
    let mut loc = start;
    if let Some(c) = last_child {
        loc = loc.to(c);
    }
    // Flow collections end with a visible `]`/`}`; block collections' end events sit at the
    // next token, which may be far below, so only take them when they are close.
    if end.start >= loc.end && end.start - loc.end <= 1 {
        loc = loc.to(end);
    }
    loc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (Vec<Document>, Vec<Diagnostic>) {
        let f = SourceFile::new("t.yaml", text.to_string());
        let mut d = Vec::new();
        let docs = parse_stream(FileId(0), &f, Limits::default(), &mut d);
        (docs, d)
    }

    #[test]
    fn scalars_resolve_like_kubernetes() {
        let s = |t: &str| Scalar {
            text: t.into(),
            style: Style::Plain,
            tag: None,
        };
        assert_eq!(s("80").resolve(), Resolved::Int(80));
        assert_eq!(s("yes").resolve(), Resolved::Bool(true));
        assert_eq!(s("010").resolve(), Resolved::Int(8));
        assert_eq!(s("1.5").resolve(), Resolved::Float(1.5));
        assert_eq!(s("web").resolve(), Resolved::Str("web"));
        assert_eq!(s("").resolve(), Resolved::Null);
        assert_eq!(s("10.0.0.0/8").resolve(), Resolved::Str("10.0.0.0/8"));
        assert_eq!(s("1.2.3.4").resolve(), Resolved::Str("1.2.3.4"));
    }

    #[test]
    fn locations_point_at_the_text() {
        let text = "a:\n  b: [x, 'yé']\n  c: 3\n";
        let (docs, d) = parse(text);
        assert!(d.is_empty(), "{d:?}");
        let root = &docs[0].root;
        let a = &root.get("a").unwrap().value;
        let b = &a.get("b").unwrap().value;
        let Value::Seq(items) = &b.value else {
            panic!()
        };
        assert_eq!(
            &text[items[1].loc.start as usize..items[1].loc.end as usize],
            "'yé'"
        );
        let c = a.get("c").unwrap();
        assert_eq!(&text[c.key_loc.start as usize..c.key_loc.end as usize], "c");
    }

    #[test]
    fn duplicate_keys_are_reported() {
        let (_, d) = parse("a: 1\nb: 2\na: 3\n");
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].code, Code::DuplicateKey);
        assert_eq!(d[0].loc.start, 10);
    }

    #[test]
    fn a_bad_document_does_not_hide_the_others() {
        let (docs, d) = parse("a: 1\n---\nb: [\n---\nc: 3\n");
        assert_eq!(docs.len(), 2);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].code, Code::YamlSyntax);
    }

    #[test]
    fn alias_bombs_are_bounded() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let (_, d) = parse(&text);
        assert_eq!(d[0].code, Code::AliasLimit);
    }

    #[test]
    fn deep_nesting_is_bounded() {
        let text = "[".repeat(10_000);
        let (_, d) = parse(&text);
        assert_eq!(d[0].code, Code::NestingTooDeep);
    }

    #[test]
    fn error_spans_cover_whole_characters() {
        // A byte-order mark inside a document: the parser stops on a three-byte character.
        let text = "a: b\nc: x\u{feff}y: z\n";
        let (_, d) = parse(text);
        assert!(!d.is_empty());
        for d in &d {
            assert!(text.is_char_boundary(d.loc.start as usize));
            assert!(text.is_char_boundary(d.loc.end as usize));
        }
    }

    #[test]
    fn tabs_get_their_own_code() {
        let (_, d) = parse("a:\n\tb: 1\n");
        assert_eq!(d[0].code, Code::TabIndentation, "{d:?}");
    }
}
