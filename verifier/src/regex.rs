//! RE2 regexes (the syntax of Cilium's HTTP `method`, `path` and `host` rules) as z3 regular
//! expressions, so that "some request matches this rule" is a solver constraint.
//!
//! The pattern is parsed with `regex-syntax` into its high-level form and rebuilt with z3's
//! regular-expression constructors. z3's membership is a whole-string match, which is what
//! Envoy's safe-regex matcher does with Cilium's rules, so `^` and `$` at the ends mean
//! nothing more. Word boundaries, anchors inside the pattern and anything else z3 cannot
//! express give `None`; callers then treat the rule as unknown.

use regex_syntax::hir::{Class, Hir, HirKind, Look};
use z3::ast::Regexp;

/// The characters the encoding gives requests: printable ASCII without space (HTTP methods,
/// paths and hosts are such text). Classes are cut to this range.
const FIRST: u32 = 0x21;
const LAST: u32 = 0x7E;

/// A regex for the whole of a string, or `None` when z3 cannot express it.
pub fn to_z3(pattern: &str) -> Option<Regexp> {
    let hir = regex_syntax::ParserBuilder::new()
        .build()
        .parse(pattern)
        .ok()?;
    build(
        &hir,
        Position {
            first: true,
            last: true,
        },
    )
}

/// Where a node sits: an anchor means nothing only at the pattern's own start or end.
#[derive(Clone, Copy)]
struct Position {
    first: bool,
    last: bool,
}

/// A literal as z3 reads string constants: backslash starts an escape, so it is escaped too.
fn literal(text: &str) -> Regexp {
    let mut s = String::new();
    for c in text.chars() {
        if (' '..='~').contains(&c) && c != '\\' {
            s.push(c);
        } else {
            s.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        }
    }
    Regexp::literal(&s)
}

/// The characters of `lo..=hi` within the request alphabet; the backslash is given as a
/// literal, because z3 would read it as the start of an escape.
fn ranges(lo: u32, hi: u32, out: &mut Vec<Regexp>) {
    let (lo, hi) = (lo.max(FIRST), hi.min(LAST));
    if lo > hi {
        return;
    }
    let ch = |c: u32| char::from_u32(c).unwrap_or('!');
    let bs = u32::from('\\');
    if (lo..=hi).contains(&bs) {
        if lo < bs {
            out.push(Regexp::range(&ch(lo), &ch(bs - 1)));
        }
        out.push(literal("\\"));
        if bs < hi {
            out.push(Regexp::range(&ch(bs + 1), &ch(hi)));
        }
    } else {
        out.push(Regexp::range(&ch(lo), &ch(hi)));
    }
}

/// The request alphabet, for constraining free request fields.
pub fn alphabet() -> Regexp {
    let mut out = Vec::new();
    ranges(FIRST, LAST, &mut out);
    Regexp::union(&out)
}

/// A union of any number of regexes (z3's `re.union` takes two or more).
fn union_or_empty(parts: &[Regexp]) -> Regexp {
    match parts {
        [] => Regexp::empty(),
        [one] => one.clone(),
        _ => Regexp::union(parts),
    }
}

fn build(h: &Hir, at: Position) -> Option<Regexp> {
    Some(match h.kind() {
        HirKind::Empty => literal(""),
        HirKind::Literal(lit) => literal(std::str::from_utf8(&lit.0).ok()?),
        HirKind::Class(Class::Unicode(cls)) => {
            let mut out = Vec::new();
            for r in cls.ranges() {
                ranges(u32::from(r.start()), u32::from(r.end()), &mut out);
            }
            union_or_empty(&out)
        }
        HirKind::Class(Class::Bytes(cls)) => {
            let mut out = Vec::new();
            for r in cls.ranges() {
                ranges(u32::from(r.start()), u32::from(r.end()), &mut out);
            }
            union_or_empty(&out)
        }
        HirKind::Look(look) => match look {
            Look::Start | Look::StartLF | Look::StartCRLF if at.first => literal(""),
            Look::End | Look::EndLF | Look::EndCRLF if at.last => literal(""),
            _ => return None,
        },
        HirKind::Repetition(rep) => {
            let inner = build(
                &rep.sub,
                Position {
                    first: false,
                    last: false,
                },
            )?;
            match rep.max {
                None if rep.min == 0 => inner.star(),
                None if rep.min == 1 => inner.plus(),
                None => Regexp::concat(&[inner.power(rep.min), inner.star()]),
                Some(max) => inner.r#loop(rep.min, max),
            }
        }
        HirKind::Capture(cap) => build(&cap.sub, at)?,
        HirKind::Concat(parts) => {
            let n = parts.len();
            let built: Vec<Regexp> = parts
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    build(
                        p,
                        Position {
                            first: at.first && i == 0,
                            last: at.last && i + 1 == n,
                        },
                    )
                })
                .collect::<Option<_>>()?;
            Regexp::concat(&built)
        }
        HirKind::Alternation(alts) => {
            let built: Vec<Regexp> = alts.iter().map(|a| build(a, at)).collect::<Option<_>>()?;
            union_or_empty(&built)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use z3::ast::String as Str;
    use z3::{SatResult, Solver};

    /// Whether z3 agrees with the `regex` crate on a whole-string match.
    fn agrees(pattern: &str, text: &str) {
        let re = to_z3(pattern).expect("expressible");
        let s = Solver::new();
        s.assert(Str::from(text).regex_matches(&re));
        let z3_says = s.check() == SatResult::Sat;
        let want = polc_compiler::eval::full_match(pattern, text);
        assert_eq!(z3_says, want, "{pattern:?} on {text:?}");
    }

    #[test]
    fn matches_like_envoy() {
        for (p, texts) in [
            ("GET", &["GET", "GETX", "get", ""][..]),
            ("GET|POST", &["GET", "POST", "PUT"][..]),
            (
                "/api/v[0-9]+/items",
                &["/api/v1/items", "/api/v/items", "/api/v12/items/"][..],
            ),
            ("/public/.*", &["/public/", "/public/a/b", "/private/"][..]),
            ("^/health$", &["/health", "/healthz"][..]),
            (
                "(foo|bar){2,3}",
                &["foobar", "foo", "barbarbar", "foobarfoobar"][..],
            ),
            (
                "[^/]+\\.example\\.com",
                &["a.example.com", "a/b.example.com"][..],
            ),
            ("a?b*c", &["c", "abbbc", "aac"][..]),
            ("\\d{3}", &["123", "12", "1234"][..]),
        ] {
            for t in texts {
                agrees(p, t);
            }
        }
    }

    #[test]
    fn inexpressible_patterns_are_none() {
        assert!(to_z3("\\bword\\b").is_none());
        assert!(to_z3("a^b").is_none());
        assert!(to_z3("(").is_none());
    }
}
