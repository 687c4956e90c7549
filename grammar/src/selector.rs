//! Label selector expressions in kubectl's syntax (`app=web,env in (prod,staging),!legacy`),
//! with Cilium's label sources (`k8s:app=web`, `$host` for `reserved:host`).
//!
//! The grammar is `selector.pest`; this module turns its parse tree into a [`Selector`], checks
//! what the grammar cannot (value syntax, empty sets), and matches label sets.

use pest::Parser as _;
use pest::iterators::Pair;
use std::fmt;

mod parser {
    #![allow(missing_docs)]
    //! The pest parser generated from `selector.pest`.

    #[derive(pest_derive::Parser)]
    #[grammar = "selector.pest"]
    pub struct SelectorParser;
}

use parser::{Rule, SelectorParser};

/// A selector requirement's operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operator {
    /// `key=value` (or `key==value`).
    Equals,
    /// `key!=value`: the key is absent or has another value.
    NotEquals,
    /// `key in (a,b)`.
    In,
    /// `key notin (a,b)`: the key is absent or has none of the values.
    NotIn,
    /// `key`.
    Exists,
    /// `!key`.
    DoesNotExist,
}

/// One requirement; a selector ANDs its requirements.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Requirement {
    /// The label key as written (with its source prefix, if any).
    pub key: String,
    /// The operator.
    pub op: Operator,
    /// The values (one for `=`/`!=`, none for `Exists`/`DoesNotExist`).
    pub values: Vec<String>,
    /// Byte span of the requirement in the input.
    pub span: (usize, usize),
}

/// A parsed selector expression. The empty expression selects everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Selector {
    /// The requirements, in the order written.
    pub requirements: Vec<Requirement>,
}

/// Why an expression is not a valid selector.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ParseError {
    /// One sentence.
    pub message: String,
    /// Byte span of the problem in the input.
    pub span: (usize, usize),
}

/// Parses a selector expression.
pub fn parse_selector(input: &str) -> Result<Selector, ParseError> {
    let mut pairs = SelectorParser::parse(Rule::selector, input).map_err(|e| {
        let span = match e.location {
            pest::error::InputLocation::Pos(p) => (p, p),
            pest::error::InputLocation::Span(s) => s,
        };
        ParseError {
            message: format!(
                "invalid selector expression at byte {}: expected `key`, `!key`, `key=value`, \
                 `key!=value`, `key in (v1,v2)` or `key notin (v1,v2)`, separated by commas",
                span.0
            ),
            span,
        }
    })?;
    let mut requirements = Vec::new();
    let Some(top) = pairs.next() else {
        return Ok(Selector::default());
    };
    for pair in top.into_inner() {
        if pair.as_rule() == Rule::requirement {
            requirements.push(requirement(pair)?);
        }
    }
    Ok(Selector { requirements })
}

fn requirement(pair: Pair<'_, Rule>) -> Result<Requirement, ParseError> {
    let span = (pair.as_span().start(), pair.as_span().end());
    let Some(inner) = pair.into_inner().next() else {
        return Err(ParseError {
            message: "empty requirement".into(),
            span,
        });
    };
    let kind = inner.as_rule();
    let mut key = String::new();
    let mut op = Operator::Exists;
    let mut values = Vec::new();
    for p in inner.into_inner() {
        match p.as_rule() {
            Rule::key => key = p.as_str().to_string(),
            Rule::eq_op => {
                op = if p.as_str() == "!=" {
                    Operator::NotEquals
                } else {
                    Operator::Equals
                }
            }
            Rule::set_op => {
                op = if p.as_str() == "notin" {
                    Operator::NotIn
                } else {
                    Operator::In
                }
            }
            Rule::value | Rule::set_value => {
                let v = p.as_str();
                check_value(v, (p.as_span().start(), p.as_span().end()))?;
                values.push(v.to_string());
            }
            _ => {}
        }
    }
    match kind {
        Rule::not_exists => op = Operator::DoesNotExist,
        Rule::exists => op = Operator::Exists,
        Rule::set_req if values.is_empty() => {
            return Err(ParseError {
                message: format!("`{key}` needs at least one value in its set"),
                span,
            });
        }
        _ => {}
    }
    Ok(Requirement {
        key,
        op,
        values,
        span,
    })
}

/// Kubernetes label values: at most 63 characters, alphanumeric at both ends (or empty).
fn check_value(v: &str, span: (usize, usize)) -> Result<(), ParseError> {
    let ok = v.is_empty()
        || (v.len() <= 63
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric()));
    if ok {
        Ok(())
    } else {
        Err(ParseError {
            message: format!("`{v}` is not a valid label value"),
            span,
        })
    }
}

impl Requirement {
    /// Whether a label set satisfies the requirement; `get` looks a key up.
    pub fn matches<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        let found = get(&self.key);
        match self.op {
            Operator::Exists => found.is_some(),
            Operator::DoesNotExist => found.is_none(),
            Operator::Equals | Operator::In => {
                found.is_some_and(|v| self.values.iter().any(|x| x == v))
            }
            Operator::NotEquals | Operator::NotIn => {
                found.is_none_or(|v| !self.values.iter().any(|x| x == v))
            }
        }
    }
}

impl Selector {
    /// Whether a label set satisfies every requirement.
    pub fn matches<'a>(&self, get: impl Fn(&str) -> Option<&'a str> + Copy) -> bool {
        self.requirements.iter().all(|r| r.matches(get))
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.op {
            Operator::Exists => write!(f, "{}", self.key),
            Operator::DoesNotExist => write!(f, "!{}", self.key),
            Operator::Equals => write!(f, "{}={}", self.key, self.values.join("")),
            Operator::NotEquals => write!(f, "{}!={}", self.key, self.values.join("")),
            Operator::In => write!(f, "{} in ({})", self.key, self.values.join(",")),
            Operator::NotIn => write!(f, "{} notin ({})", self.key, self.values.join(",")),
        }
    }
}

impl fmt::Display for Selector {
    /// The canonical form, which parses back to the same selector.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn sel(s: &str) -> Selector {
        parse_selector(s).unwrap()
    }

    #[test]
    fn parses_every_operator() {
        let s = sel(
            "app=web, tier==api,env!=dev,zone in (a, b),team notin (x),k8s:release,!legacy,$host",
        );
        let ops: Vec<_> = s.requirements.iter().map(|r| r.op).collect();
        assert_eq!(
            ops,
            [
                Operator::Equals,
                Operator::Equals,
                Operator::NotEquals,
                Operator::In,
                Operator::NotIn,
                Operator::Exists,
                Operator::DoesNotExist,
                Operator::Exists,
            ]
        );
        assert_eq!(s.requirements[3].values, ["a", "b"]);
        assert_eq!(s.requirements[5].key, "k8s:release");
        assert_eq!(s.requirements[7].key, "$host");
        assert_eq!(sel("").requirements.len(), 0);
        assert_eq!(
            sel("app.kubernetes.io/name=db").requirements[0].key,
            "app.kubernetes.io/name"
        );
        assert_eq!(sel("app=").requirements[0].values, [""]);
    }

    #[test]
    fn rejects_bad_expressions_with_a_span() {
        for bad in [
            "app in ()",
            "=web",
            "app==",
            "app=-bad",
            "a b",
            "app in (x",
            ",app",
            "app,",
        ] {
            let e = parse_selector(bad);
            if bad == "app==" {
                // `app==` is `app` equal to the empty value.
                assert!(e.is_ok(), "{bad}");
                continue;
            }
            let e = e.expect_err(bad);
            assert!(e.span.0 <= bad.len(), "{bad}: {e:?}");
        }
    }

    #[test]
    fn matches_like_kubernetes() {
        let labels: BTreeMap<&str, &str> = [("app", "web"), ("env", "prod")].into();
        let get = |k: &str| labels.get(k).copied();
        assert!(sel("app=web,env in (prod,staging)").matches(get));
        assert!(sel("tier!=db").matches(get), "!= matches an absent key");
        assert!(
            sel("tier notin (db)").matches(get),
            "notin matches an absent key"
        );
        assert!(!sel("app!=web").matches(get));
        assert!(sel("!legacy,app").matches(get));
        assert!(!sel("legacy").matches(get));
        assert!(sel("").matches(get));
    }

    fn requirement_strategy() -> impl Strategy<Value = Requirement> {
        let key = "[a-z]{1,5}(\\.[a-z]{1,3})?(/[a-z]{1,4})?";
        let value = "[a-z0-9]([a-z0-9-]{0,4}[a-z0-9])?";
        (key, prop::collection::vec(value, 1..4), 0..6usize).prop_map(|(key, values, op)| {
            let op = [
                Operator::Equals,
                Operator::NotEquals,
                Operator::In,
                Operator::NotIn,
                Operator::Exists,
                Operator::DoesNotExist,
            ][op];
            let values = match op {
                Operator::Exists | Operator::DoesNotExist => Vec::new(),
                Operator::Equals | Operator::NotEquals => values[..1].to_vec(),
                _ => values,
            };
            Requirement {
                key,
                op,
                values,
                span: (0, 0),
            }
        })
    }

    proptest! {
        #[test]
        fn display_parses_back(reqs in prop::collection::vec(requirement_strategy(), 0..5)) {
            let s = Selector { requirements: reqs };
            let text = s.to_string();
            let back = parse_selector(&text).unwrap();
            let strip = |s: &Selector| s.requirements.iter().map(|r| (r.key.clone(), r.op, r.values.clone())).collect::<Vec<_>>();
            prop_assert_eq!(strip(&back), strip(&s));
        }
    }
}
