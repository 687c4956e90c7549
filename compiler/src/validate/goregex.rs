//! Validity of a regular expression as Go's `regexp` (RE2 syntax) judges it: Cilium compiles
//! HTTP `method`, `path` and `host` with Go, so what Go rejects rejects the policy.
//!
//! Parsing uses `regex-syntax` (Rust's RE2-family parser) after translating the few things Go
//! accepts and Rust does not (`\Q...\E` quoting, octal escapes, a `{` that starts no
//! repetition), then rejects what Rust accepts and Go does not: nested repetition operators
//! (`a**`, `a++`), repeat counts above 1000 (also when nested repetitions multiply past
//! 1000), the flags `x`, `u`, `R`, and the assertions `\<`, `\>`, `\b{...}`.

use regex_syntax::ast::{self, Ast};

/// Go's limit on repeat counts (`regexp/syntax`).
const MAX_REPEAT: u32 = 1000;

/// Why Go's `regexp.Compile` would reject `pattern`, or `None` if it accepts it.
pub fn go_regex_error(pattern: &str) -> Option<String> {
    let translated = match translate(pattern) {
        Ok(t) => t,
        Err(why) => return Some(why),
    };
    let parsed = ast::parse::ParserBuilder::new()
        .octal(true)
        .build()
        .parse(&translated);
    let ast = match parsed {
        Ok(a) => a,
        Err(e) => return Some(last_line(&e.to_string())),
    };
    if let Some(why) = go_only(&ast, MAX_REPEAT) {
        return Some(why);
    }
    // Semantic checks (class ranges, Unicode class names, ...).
    let mut tr = regex_syntax::hir::translate::TranslatorBuilder::new()
        .utf8(false)
        .build();
    tr.translate(&translated, &ast)
        .err()
        .map(|e| last_line(&e.to_string()))
}

fn last_line(text: &str) -> String {
    text.lines().last().unwrap_or("").trim().to_string()
}

/// Rewrites Go-only syntax into equivalent Rust syntax (an unterminated `\Q` quotes to the
/// end, as in Go), or says why Go rejects an escape that Rust's octal mode would accept.
fn translate(p: &str) -> Result<String, String> {
    let chars: Vec<char> = p.chars().collect();
    let mut out = String::with_capacity(p.len());
    let mut i = 0;
    let mut in_class = false;
    let mut class_start = false;
    let mut after_perl_class = false;
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' && i + 1 < chars.len() {
            let n = chars[i + 1];
            if n == 'Q' && !in_class {
                // \Q...\E: everything in between is literal.
                let mut j = i + 2;
                let mut lit = String::new();
                while j < chars.len() && !(chars[j] == '\\' && chars.get(j + 1) == Some(&'E')) {
                    lit.push(chars[j]);
                    j += 1;
                }
                out.push_str(&regex_syntax::escape(&lit));
                i = if j < chars.len() { j + 2 } else { j };
                continue;
            }
            // Go reads `\1`-`\7` as octal only when another octal digit follows; alone they
            // would be backreferences, which RE2 does not have.
            if ('1'..='7').contains(&n)
                && !chars.get(i + 2).is_some_and(|d| ('0'..='7').contains(d))
            {
                return Err(format!(
                    "invalid escape sequence `\\{n}`: backreferences are not supported"
                ));
            }
            out.push(c);
            out.push(n);
            after_perl_class = in_class && matches!(n, 'd' | 'D' | 'w' | 'W' | 's' | 'S');
            class_start = false;
            i += 2;
            continue;
        }
        if in_class {
            if c == ']' && !class_start {
                in_class = false;
            } else if c == '-' && after_perl_class && chars.get(i + 1).is_some_and(|&x| x != ']') {
                // Go reads `[\d-z]` as `\d`, `-`, `z`; Rust calls it a bad range.
                out.push_str("\\-");
                i += 1;
                after_perl_class = false;
                class_start = false;
                continue;
            }
            if c == '[' && chars.get(i + 1) == Some(&':') {
                // POSIX class `[:alpha:]`: copy it whole.
                if let Some(end) = (i + 2..chars.len().saturating_sub(1))
                    .find(|&k| chars[k] == ':' && chars[k + 1] == ']')
                {
                    out.extend(&chars[i..end + 2]);
                    i = end + 2;
                    class_start = false;
                    after_perl_class = false;
                    continue;
                }
            }
            if c == '[' {
                // A `[` inside a class is a literal in Go (no nested classes).
                out.push_str("\\[");
                i += 1;
                class_start = false;
                after_perl_class = false;
                continue;
            }
            if c == '^' && class_start {
                out.push(c);
                i += 1;
                continue;
            }
            out.push(c);
            class_start = false;
            after_perl_class = false;
            i += 1;
            continue;
        }
        match c {
            '[' => {
                in_class = true;
                class_start = true;
                out.push(c);
            }
            '{' if !starts_repetition(&chars[i..]) => out.push_str("\\{"),
            _ => out.push(c),
        }
        i += 1;
    }
    Ok(out)
}

/// Whether `s` (starting at `{`) is `{n}`, `{n,}` or `{n,m}`.
fn starts_repetition(s: &[char]) -> bool {
    let mut i = 1;
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < s.len() && s[*i].is_ascii_digit() {
            *i += 1;
        }
        *i > start
    };
    if !digits(&mut i) {
        return false;
    }
    if s.get(i) == Some(&'}') {
        return true;
    }
    if s.get(i) != Some(&',') {
        return false;
    }
    i += 1;
    digits(&mut i);
    s.get(i) == Some(&'}')
}

/// What Rust's parser accepts and Go's rejects. `budget` is the repeat count still allowed
/// under the enclosing repetitions.
fn go_only(a: &Ast, budget: u32) -> Option<String> {
    match a {
        Ast::Repetition(r) => {
            if matches!(*r.ast, Ast::Repetition(_)) {
                return Some("invalid nested repetition operator".to_string());
            }
            let max = match r.op.kind {
                ast::RepetitionKind::Range(ast::RepetitionRange::Exactly(n))
                | ast::RepetitionKind::Range(ast::RepetitionRange::AtLeast(n)) => n,
                ast::RepetitionKind::Range(ast::RepetitionRange::Bounded(lo, hi)) => {
                    if lo > MAX_REPEAT {
                        return Some(format!("invalid repeat count: {lo} is above 1000"));
                    }
                    hi
                }
                _ => 0,
            };
            if max > budget {
                return Some(if budget == MAX_REPEAT {
                    format!("invalid repeat count: {max} is above 1000")
                } else {
                    "invalid repeat count: nested repetitions exceed 1000".to_string()
                });
            }
            go_only(&r.ast, budget.checked_div(max).unwrap_or(budget))
        }
        Ast::Flags(f) => unsupported_flags(&f.flags),
        Ast::Group(g) => {
            if let ast::GroupKind::NonCapturing(f) = &g.kind
                && let Some(why) = unsupported_flags(f)
            {
                return Some(why);
            }
            go_only(&g.ast, budget)
        }
        Ast::Assertion(x) => match x.kind {
            ast::AssertionKind::StartLine
            | ast::AssertionKind::EndLine
            | ast::AssertionKind::StartText
            | ast::AssertionKind::EndText
            | ast::AssertionKind::WordBoundary
            | ast::AssertionKind::NotWordBoundary => None,
            _ => {
                Some("invalid escape sequence: Go supports only `\\b`, `\\B`, `\\A`, `\\z`".into())
            }
        },
        Ast::Alternation(x) => x.asts.iter().find_map(|a| go_only(a, budget)),
        Ast::Concat(x) => x.asts.iter().find_map(|a| go_only(a, budget)),
        _ => None,
    }
}

fn unsupported_flags(f: &ast::Flags) -> Option<String> {
    f.items.iter().find_map(|item| match item.kind {
        ast::FlagsItemKind::Flag(
            ast::Flag::IgnoreWhitespace | ast::Flag::Unicode | ast::Flag::CRLF,
        ) => Some(
            "invalid or unsupported Perl syntax: Go supports only the flags `i`, `m`, `s`, `U`"
                .to_string(),
        ),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::go_regex_error;

    #[test]
    fn accepts_what_go_accepts() {
        for p in [
            "/api/v1/.*",
            "GET|POST",
            "/\\Q.well-known\\E/.*",
            "/\\101pi",
            "/a{,5}",
            "[\\d-z]+",
            "(?P<id>[0-9]+)",
            "(?i)/Api",
            "/a{2,1000}",
            "[[:alpha:]]+",
            "x{}",
            "/(a|b)*",
        ] {
            assert_eq!(go_regex_error(p), None, "{p}");
        }
    }

    #[test]
    fn rejects_what_go_rejects() {
        for p in [
            "/api/(v1",
            "/a{1,1001}",
            "/(a{1000}){1000}",
            "/api/v[0-9]++/",
            "/id/[0-9]{4}+",
            "a**",
            "(?x) /api",
            "/(a)\\1",
            "\\<word\\>",
            "[z-a]",
            "*",
        ] {
            assert!(go_regex_error(p).is_some(), "{p}");
        }
    }
}
