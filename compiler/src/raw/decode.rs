//! Decoding located YAML nodes into the raw types, collecting diagnostics instead of stopping.
//!
//! The decoder is hand-driven rather than serde-derived so that it can report *every* problem
//! of a document (serde stops at the first), warn about unknown fields with their full path the
//! way kubectl's strict validation does, and keep a [`Loc`] for every key and value.

use crate::diag::{Code, Diagnostic};
use crate::source::Loc;
use crate::yaml::{Entry, Node, Resolved, Style, Value};
use std::fmt::Write as _;

/// A decoded value with the location of its value and of the key that introduced it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Spanned<T> {
    /// The value.
    pub value: T,
    /// Where the value is.
    pub loc: Loc,
    /// Where the key of the field holding the value is (the value's own location for list
    /// items).
    pub key: Loc,
}

impl<T> Spanned<T> {
    /// A value at `loc` (key and value at the same place).
    pub fn new(value: T, loc: Loc) -> Self {
        Spanned {
            value,
            loc,
            key: loc,
        }
    }

    /// The span from the key to the end of the value.
    pub fn whole(&self) -> Loc {
        self.key.to(self.loc)
    }
}

impl<T> std::ops::Deref for Spanned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

/// Either an integer or a string (Kubernetes' `IntOrString`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum IntOrString {
    /// An integer.
    Int(i64),
    /// A string.
    Str(String),
}

/// A string-to-string map (labels, `matchLabels`), in document order.
pub type StringMap = Vec<(Spanned<String>, Spanned<String>)>;

/// A value polc accepts in any shape and does not look at (`status`, `managedFields`, ...).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ignored;

#[derive(Clone, Debug)]
enum Seg {
    Key(String),
    Index(usize),
}

/// How a mapping treats keys it does not know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strictness {
    /// Unknown keys are reported (policy objects).
    Strict,
    /// Unknown keys are ignored (inventory objects, whose dumps carry many fields).
    Lenient,
}

/// A field that exists in the policy language, but not where it was written.
#[derive(Clone, Copy, Debug)]
pub struct Elsewhere {
    /// The field name.
    pub field: &'static str,
    /// Why it is not allowed here, completing "`field` ...".
    pub why: &'static str,
}

/// The decoding context: where we are, and the diagnostics found so far.
pub struct Cx<'d> {
    diags: &'d mut Vec<Diagnostic>,
    path: Vec<Seg>,
    /// The key whose value is being decoded (none inside list items): a block value of the
    /// wrong type is reported at its key, the line a reader looks at.
    key: Option<Loc>,
    /// Match field names case-insensitively, as Go's `encoding/json` does for the agent's
    /// own rule format (`cilium-dbg policy import`); the API server is case-sensitive.
    pub case_insensitive: bool,
}

/// Something that can be decoded from a node.
pub trait Decode: Sized {
    /// Decodes `node`, reporting problems to `cx`; `None` when the node is unusable.
    fn decode(cx: &mut Cx<'_>, node: &Node) -> Option<Self>;
}

impl<'d> Cx<'d> {
    /// A context that adds diagnostics to `diags`.
    pub fn new(diags: &'d mut Vec<Diagnostic>) -> Self {
        Cx {
            diags,
            path: Vec::new(),
            key: None,
            case_insensitive: false,
        }
    }

    /// Reports a diagnostic.
    pub fn report(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    /// The current field path, kubectl style: `spec.ingress[0].toPorts`.
    pub fn path(&self) -> String {
        let mut s = String::new();
        for seg in &self.path {
            match seg {
                Seg::Key(k) => {
                    if !s.is_empty() {
                        s.push('.');
                    }
                    s.push_str(k);
                }
                Seg::Index(i) => {
                    let _ = write!(s, "[{i}]");
                }
            }
        }
        s
    }

    /// The current path extended by `key`.
    pub fn path_with(&self, key: &str) -> String {
        let p = self.path();
        if p.is_empty() {
            key.to_string()
        } else {
            format!("{p}.{key}")
        }
    }

    /// Runs `f` with `key` appended to the path.
    pub fn at_key<R>(&mut self, key: &str, f: impl FnOnce(&mut Self) -> R) -> R {
        self.path.push(Seg::Key(key.to_string()));
        let r = f(self);
        self.path.pop();
        r
    }

    /// Runs `f` on the value of the mapping entry `e`: the path is extended by its key, and
    /// a value of the wrong shape is reported at the key.
    pub fn at_entry<R>(&mut self, e: &Entry, f: impl FnOnce(&mut Self) -> R) -> R {
        self.path.push(Seg::Key(e.key.clone()));
        let outer = self.key.replace(e.key_loc);
        let r = f(self);
        self.key = outer;
        self.path.pop();
        r
    }

    /// Runs `f` with `[index]` appended to the path.
    pub fn at_index<R>(&mut self, index: usize, f: impl FnOnce(&mut Self) -> R) -> R {
        self.path.push(Seg::Index(index));
        let key = self.key.take();
        let r = f(self);
        self.key = key;
        self.path.pop();
        r
    }

    /// Reports that `node` has the wrong type.
    pub fn wrong_type(&mut self, node: &Node, expected: &str) {
        let found = node.type_name();
        // A list or mapping where a scalar belongs starts on the key's line (or below it).
        let loc = match (&node.value, self.key) {
            (Value::Seq(_) | Value::Map(_), Some(key)) => key.to(node.loc),
            _ => node.loc,
        };
        let mut d = Diagnostic::new(
            Code::WrongType,
            loc,
            format!("`{}` must be {expected}, found {found}", self.path()),
        )
        .label(format!("this is {}", article(found)));
        d = match &node.value {
            Value::Scalar(s) if expected.contains("string") && s.style == Style::Plain => {
                d.help(format!(
                    "YAML reads the unquoted `{}` as {}; quote it: `\"{}\"`",
                    s.text,
                    article(found),
                    s.text
                ))
            }
            _ if expected.starts_with("a list") => {
                d.help("write a list: one `- ` item per line, or `[a, b]`")
            }
            _ if expected.starts_with("a mapping") => {
                d.help("write `key: value` pairs indented under the key")
            }
            _ if expected.starts_with("a boolean") => {
                d.help("write `true` or `false`, without quotes")
            }
            _ if expected.starts_with("an integer") => d.help("write a number without quotes"),
            _ => d.help(format!("the schema expects {expected} here")),
        };
        self.report(d);
    }
    /// Iterates the entries of a mapping node: known keys go to `f` with their canonical
    /// spelling (and the path extended), unknown keys are reported according to
    /// `strictness`. Null values count as absent, as the API server prunes them. Returns
    /// `None` if the node is not a mapping, else the known fields that were written
    /// misspelled (reported already), so validation does not also call them missing.
    pub fn fields(
        &mut self,
        node: &Node,
        what: &str,
        known: &[&'static str],
        strictness: Strictness,
        elsewhere: &[Elsewhere],
        mut f: impl FnMut(&mut Self, &str, &Entry),
    ) -> Option<Vec<&'static str>> {
        let Some(entries) = node.as_map() else {
            if !node.is_null() {
                self.wrong_type(node, &format!("a mapping ({what})"));
            }
            return None;
        };
        let mut misspelled = Vec::new();
        for e in entries {
            let canonical = known
                .iter()
                .copied()
                .find(|k| *k == e.key || (self.case_insensitive && k.eq_ignore_ascii_case(&e.key)));
            if let Some(key) = canonical {
                if e.value.is_null() {
                    continue;
                }
                self.at_entry(e, |cx| f(cx, key, e));
            } else if strictness == Strictness::Strict {
                misspelled.extend(self.unknown_field(e, what, known, elsewhere));
            }
        }
        Some(misspelled)
    }

    /// Reports an unknown field; returns the known field it is a misspelling of, if any.
    fn unknown_field(
        &mut self,
        e: &Entry,
        what: &str,
        known: &[&'static str],
        elsewhere: &[Elsewhere],
    ) -> Option<&'static str> {
        let path = self.path_with(&e.key);
        let elsewhere_names: Vec<&'static str> = elsewhere.iter().map(|x| x.field).collect();
        let place = elsewhere.iter().find(|x| x.field == e.key).or_else(|| {
            // A near miss of a field of another section (`toEntity` in an ingress item)
            // is that field, unless it is also a near miss of a field of this one.
            let near = near_miss(&e.key, &elsewhere_names)?;
            if near_miss(&e.key, known).is_some() {
                return None;
            }
            elsewhere.iter().find(|x| x.field == near)
        });
        if let Some(x) = place {
            let written = if x.field == e.key {
                format!("`{}`", e.key)
            } else {
                format!("`{}` (read as `{}`)", e.key, x.field)
            };
            self.report(
                Diagnostic::new(
                    Code::FieldNotAllowedHere,
                    e.key_loc,
                    format!("{written} {}", x.why),
                )
                .label(format!("not a field of {}", article(what)))
                .help(format!(
                    "the API server drops `{path}` (or rejects it under strict field \
                     validation), which changes what the rule means; remove it or move it"
                )),
            );
            // A NetworkPolicy-style subject stands for the subject Cilium expects: it is not
            // also missing.
            return (x.field == "podSelector" && known.contains(&"endpointSelector"))
                .then_some("endpointSelector");
        }
        if let Some(near) = near_miss(&e.key, known) {
            self.report(
                Diagnostic::new(
                    Code::MisspelledField,
                    e.key_loc,
                    format!("unknown field `{path}`, did you mean `{near}`?"),
                )
                .label(format!("not a field of {}", article(what)))
                .help(format!(
                    "rename it to `{near}`; as written the API server drops the field and the \
                     rule loses its meaning"
                )),
            );
            return Some(near);
        }
        let mut d = Diagnostic::new(
            Code::UnknownField,
            e.key_loc,
            format!("unknown field `{path}`"),
        )
        .label(format!("not a field of {}", article(what)));
        d = d.help(if e.key == "description" && self.path.is_empty() {
            "a policy's description belongs in `spec.description`; the API server drops a \
             top-level one (or rejects it under strict field validation)"
                .to_string()
        } else {
            format!(
                "known fields here: {}; the API server drops unknown fields (or rejects them \
                 under strict field validation)",
                known
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        });
        self.report(d);
        None
    }

    /// Decodes the value of a mapping entry as `T`, keeping the key's location.
    pub fn field<T: Decode>(&mut self, e: &Entry) -> Option<Spanned<T>> {
        let value = T::decode(self, &e.value)?;
        Some(Spanned {
            value,
            loc: e.value.loc,
            key: e.key_loc,
        })
    }
}

impl Decode for String {
    fn decode(cx: &mut Cx<'_>, node: &Node) -> Option<Self> {
        match &node.value {
            Value::Scalar(s) => match s.resolve() {
                Resolved::Str(t) => Some(t.to_string()),
                _ => {
                    cx.wrong_type(node, "a string");
                    None
                }
            },
            _ => {
                cx.wrong_type(node, "a string");
                None
            }
        }
    }
}

impl Decode for i64 {
    fn decode(cx: &mut Cx<'_>, node: &Node) -> Option<Self> {
        if let Value::Scalar(s) = &node.value {
            match s.resolve() {
                Resolved::Int(i) => return Some(i),
                Resolved::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
                    return Some(f as i64);
                }
                _ => {}
            }
        }
        cx.wrong_type(node, "an integer");
        None
    }
}

impl Decode for bool {
    fn decode(cx: &mut Cx<'_>, node: &Node) -> Option<Self> {
        if let Value::Scalar(s) = &node.value
            && let Resolved::Bool(b) = s.resolve()
        {
            return Some(b);
        }
        cx.wrong_type(node, "a boolean (`true` or `false`)");
        None
    }
}

impl Decode for IntOrString {
    fn decode(cx: &mut Cx<'_>, node: &Node) -> Option<Self> {
        if let Value::Scalar(s) = &node.value {
            match s.resolve() {
                Resolved::Int(i) => return Some(IntOrString::Int(i)),
                Resolved::Str(t) => return Some(IntOrString::Str(t.to_string())),
                _ => {}
            }
        }
        cx.wrong_type(node, "an integer or a string");
        None
    }
}

impl Decode for Ignored {
    fn decode(_: &mut Cx<'_>, _: &Node) -> Option<Self> {
        Some(Ignored)
    }
}

impl<T: Decode> Decode for Spanned<T> {
    fn decode(cx: &mut Cx<'_>, node: &Node) -> Option<Self> {
        Some(Spanned::new(T::decode(cx, node)?, node.loc))
    }
}

impl<T: Decode> Decode for Vec<T> {
    fn decode(cx: &mut Cx<'_>, node: &Node) -> Option<Self> {
        let Value::Seq(items) = &node.value else {
            cx.wrong_type(node, "a list");
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            if item.is_null() {
                // `- ` with nothing after it: the API server rejects a null list item.
                cx.at_index(i, |cx| {
                    let d = Diagnostic::new(
                        Code::WrongType,
                        item.loc,
                        format!("`{}` is an empty list item", cx.path()),
                    )
                    .label("null item")
                    .help("remove the `-` line, or write the item (`{}` for an empty one)");
                    cx.report(d);
                });
                continue;
            }
            if let Some(v) = cx.at_index(i, |cx| T::decode(cx, item)) {
                out.push(v);
            }
        }
        if out.is_empty() && !items.is_empty() {
            // Every item was unusable (and reported): the list is not "empty", it is invalid.
            return None;
        }
        Some(out)
    }
}

/// The known fields a mapping node writes with a non-null value.
pub fn written_keys(
    node: &Node,
    known: &[&'static str],
    case_insensitive: bool,
) -> Vec<&'static str> {
    node.as_map()
        .into_iter()
        .flatten()
        .filter(|e| !e.value.is_null())
        .filter_map(|e| {
            known
                .iter()
                .copied()
                .find(|k| *k == e.key || (case_insensitive && k.eq_ignore_ascii_case(&e.key)))
        })
        .collect()
}

/// Decodes a string-to-string map.
pub fn decode_string_map(cx: &mut Cx<'_>, node: &Node) -> Option<StringMap> {
    let Some(entries) = node.as_map() else {
        cx.wrong_type(node, "a mapping of strings");
        return None;
    };
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let value = if e.value.is_null() {
            // `key:` with no value; Kubernetes drops the entry for maps of strings.
            cx.at_entry(e, |cx| cx.wrong_type(&e.value, "a string"));
            continue;
        } else {
            cx.at_entry(e, |cx| String::decode(cx, &e.value))
        };
        if let Some(v) = value {
            out.push((
                Spanned::new(e.key.clone(), e.key_loc),
                Spanned::new(v, e.value.loc),
            ));
        }
    }
    Some(out)
}

/// A wrapper so string maps can be fields of raw structs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Labels(pub StringMap);

impl Decode for Labels {
    fn decode(cx: &mut Cx<'_>, node: &Node) -> Option<Self> {
        decode_string_map(cx, node).map(Labels)
    }
}

impl Labels {
    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Spanned<String>> {
        self.0.iter().find(|(k, _)| k.value == key).map(|(_, v)| v)
    }
}

/// "a mapping", "an integer": the word with its indefinite article.
pub fn article(word: &str) -> String {
    let first = word.chars().next().unwrap_or('x').to_ascii_lowercase();
    if "aeio".contains(first) {
        format!("an {word}")
    } else {
        format!("a {word}")
    }
}

/// A known field that `key` is probably a misspelling of.
pub(crate) fn near_miss<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    let lower = key.to_ascii_lowercase();
    // `fromEntity` for `fromEntities`: compare singular forms too.
    let singular = |s: &str| -> String {
        if let Some(stem) = s.strip_suffix("ies") {
            format!("{stem}y")
        } else {
            s.strip_suffix('s').unwrap_or(s).to_string()
        }
    };
    known
        .iter()
        .copied()
        .map(|k| {
            let kl = k.to_ascii_lowercase();
            let d = if kl == lower || singular(&kl) == singular(&lower) {
                0
            } else {
                edit_distance(&lower, &kl)
            };
            (d, k)
        })
        .filter(|&(d, k)| {
            let limit = if k.len() >= 8 {
                2
            } else {
                usize::from(k.len() >= 4)
            };
            d <= limit
        })
        .min_by_key(|&(d, _)| d)
        .map(|(_, k)| k)
}

/// Optimal-string-alignment distance (Levenshtein plus adjacent transpositions).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

/// Declares a raw struct mirroring a CRD object and its [`Decode`] implementation.
///
/// Every field is `Option<Spanned<T>>`: absent (or null) is `None`.
macro_rules! raw_struct {
    (
        $(#[$m:meta])*
        $name:ident ($what:literal, $strict:ident $(, elsewhere = $elsewhere:expr)?) {
            $( $(#[$fm:meta])* $field:ident : $key:literal => $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$m])*
        #[derive(Clone, Debug, Default, PartialEq)]
        pub struct $name {
            /// Where the object is.
            pub loc: $crate::source::Loc,
            /// Fields that were written but could not be decoded (already reported), so
            /// validation does not also call them missing.
            pub invalid: Vec<&'static str>,
            $( $(#[$fm])* pub $field: Option<$crate::raw::decode::Spanned<$ty>>, )*
        }

        impl $name {
            /// The field names the schema defines, as written in YAML.
            pub const FIELDS: &'static [&'static str] = &[$($key),*];

            /// Whether `key` was written, even if its value could not be decoded.
            #[allow(dead_code)]
            pub fn written(&self, key: &str) -> bool {
                self.invalid.contains(&key)
                    || match key {
                        $( $key => self.$field.is_some(), )*
                        _ => false,
                    }
            }
        }

        impl $crate::raw::decode::Decode for $name {
            fn decode(
                cx: &mut $crate::raw::decode::Cx<'_>,
                node: &$crate::yaml::Node,
            ) -> Option<Self> {
                let mut out = $name { loc: node.loc, ..Default::default() };
                #[allow(unused_variables)]
                let elsewhere: &[$crate::raw::decode::Elsewhere] = &[];
                $( let elsewhere: &[$crate::raw::decode::Elsewhere] = $elsewhere; )?
                let misspelled = cx.fields(
                    node,
                    $what,
                    Self::FIELDS,
                    $crate::raw::decode::Strictness::$strict,
                    elsewhere,
                    |cx, key, e| match key {
                        $( $key => {
                            out.$field = cx.field(e);
                            if out.$field.is_none() {
                                out.invalid.push($key);
                            }
                        } )*
                        _ => {}
                    },
                )?;
                out.invalid.extend(misspelled);
                Some(out)
            }
        }
    };
}

pub(crate) use raw_struct;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_misses() {
        assert_eq!(
            near_miss("toPort", &["toPorts", "toEndpoints"]),
            Some("toPorts")
        );
        assert_eq!(
            near_miss("fromEndpoint", &["fromEndpoints", "fromCIDR"]),
            Some("fromEndpoints")
        );
        assert_eq!(
            near_miss("matchlabels", &["matchLabels"]),
            Some("matchLabels")
        );
        assert_eq!(near_miss("description", &["spec", "specs"]), None);
        assert_eq!(near_miss("foo", &["for"]), None);
    }
}
