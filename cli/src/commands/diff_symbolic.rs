//! `polc diff OLD NEW` without an inventory: the verifier compares the two policy sets for
//! every pod that could exist (`polc_verifier::diff`) and prints one class per rule that
//! makes a difference, each with an example flow the reference evaluator judged under both
//! sets.

use super::cluster::Loaded;
use super::diff::{DiffFormat, FailOn};
use crate::{EXIT_CLEAN, EXIT_FINDINGS, EXIT_UNKNOWN, Io};
use polc_compiler::raw::Kind;
use polc_compiler::source::SourceMap;
use polc_verifier::Limits;
use polc_verifier::diff::{self, Cause, Class, Diff, Protocol, Side};
use serde_json::json;
use std::collections::HashMap;
use std::fmt::Write as _;

/// The text of every policy object and CIDR group, by kind, namespace and name.
fn texts(l: &Loaded) -> HashMap<(Kind, String, String), String> {
    l.objects
        .iter()
        .filter(|o| o.kind.is_policy() || o.kind == Kind::CiliumCidrGroup)
        .map(|o| {
            (
                (o.kind, o.namespace().to_string(), o.name().to_string()),
                l.sources.get(o.loc.file).slice(o.loc).to_string(),
            )
        })
        .collect()
}

/// Which rules of `side` belong to objects the other side lacks or has in another form. A
/// changed CIDR group changes every rule (any of them may refer to it).
fn changed(
    side: &Loaded,
    mine: &HashMap<(Kind, String, String), String>,
    other: &HashMap<(Kind, String, String), String>,
) -> Vec<bool> {
    let groups_changed = mine
        .iter()
        .chain(other.iter())
        .filter(|((k, _, _), _)| *k == Kind::CiliumCidrGroup)
        .any(|(key, text)| mine.get(key) != Some(text) || other.get(key) != Some(text));
    side.model
        .policies
        .rules
        .iter()
        .map(|r| {
            let key = (
                r.origin.kind,
                r.origin.namespace.clone(),
                r.origin.name.clone(),
            );
            groups_changed || mine.get(&key) != other.get(&key)
        })
        .collect()
}

/// Runs the symbolic diff and prints it; returns the exit code.
pub fn run(
    old: &Loaded,
    new: &Loaded,
    format: DiffFormat,
    fail_on: Option<FailOn>,
    limits: Limits,
    io: &mut Io<'_>,
) -> anyhow::Result<i32> {
    let (to, tn) = (texts(old), texts(new));
    let old_side = Side {
        set: &old.model.policies,
        objects: &old.objects,
        changed: changed(old, &to, &tn),
    };
    let new_side = Side {
        set: &new.model.policies,
        objects: &new.objects,
        changed: changed(new, &tn, &to),
    };
    let d = diff::diff(&old_side, &new_side, new.model.config.version, limits);
    let widened = d.classes.iter().filter(|c| c.widened).count();
    let narrowed = d.classes.len() - widened;
    let at = |c: &Class| {
        let sources: &SourceMap = if c.in_new { &new.sources } else { &old.sources };
        let f = sources.get(c.loc.file);
        let lc = f.line_col(c.loc.start as usize);
        (f.name.clone(), lc.line, lc.col)
    };
    let text = match format {
        DiffFormat::Human => human(&d, &at),
        DiffFormat::Markdown => markdown(&d),
        DiffFormat::Json => {
            let list: Vec<_> = d
                .classes
                .iter()
                .map(|c| {
                    let (file, line, col) = at(c);
                    json!({
                        "change": if c.widened { "widened" } else { "narrowed" },
                        "cause": cause(c),
                        "rule": c.rule,
                        "file": file,
                        "line": line,
                        "column": col,
                        "subject": c.subject,
                        "direction": c.direction.name(),
                        "peers": c.peers,
                        "ports": c.ports,
                        "l7": c.l7.is_some(),
                        "l7_protocol": c.l7.map(|p| p.name()),
                        "example": c.example.text,
                        "old": c.old_verdict.name(),
                        "new": c.example.outcome.verdict.name(),
                    })
                })
                .collect();
            let mut s = serde_json::to_string_pretty(&json!({
                "mode": "symbolic",
                "widened": widened,
                "narrowed": narrowed,
                "changes": list,
                "unknown": d.unknown,
                "internal_errors": d.internal,
            }))?;
            s.push('\n');
            s
        }
        DiffFormat::Sarif => sarif(&d, &at)?,
    };
    io.stdout.write_all(text.as_bytes())?;
    for m in &d.internal {
        writeln!(
            io.stderr,
            "polc: internal error: the verifier and the reference evaluator disagree: {m}; \
             please report this"
        )?;
    }
    let fail = match fail_on {
        None => false,
        Some(FailOn::Widen) => widened > 0,
        Some(FailOn::Narrow) => narrowed > 0,
        Some(FailOn::Any) => !d.classes.is_empty(),
    };
    // An undecided question may hide a change: a gate must not pass on it.
    let undecided = fail_on.is_some() && (!d.unknown.is_empty() || !d.internal.is_empty());
    Ok(if fail {
        EXIT_FINDINGS
    } else if undecided {
        EXIT_UNKNOWN
    } else {
        EXIT_CLEAN
    })
}

fn cause(c: &Class) -> &'static str {
    let dns = c.l7 == Some(Protocol::Dns);
    match (&c.cause, c.widened) {
        (Cause::Allow, true) => "allow rule added or changed",
        (Cause::Allow, false) => "allow rule removed or changed",
        (Cause::Deny, true) => "deny rule removed or changed",
        (Cause::Deny, false) => "deny rule added or changed",
        (Cause::Enforcement, true) => "default-deny removed",
        (Cause::Enforcement, false) => "default-deny added",
        (Cause::L7, true) if dns => "DNS rules removed or loosened",
        (Cause::L7, false) if dns => "DNS rules added or tightened",
        (Cause::L7, true) => "HTTP rules removed or loosened",
        (Cause::L7, false) => "HTTP rules added or tightened",
    }
}

/// The class in one line: who, which way, to or from whom, on what.
fn summary(c: &Class) -> String {
    let dir = match c.direction {
        polc_compiler::ir::Direction::Ingress => "from",
        polc_compiler::ir::Direction::Egress => "to",
    };
    let mut s = format!(
        "pods `{}` {} {dir} {} on {}",
        c.subject,
        c.direction.name(),
        if c.peers == "*" { "any peer" } else { &c.peers },
        if c.ports == "*" { "any port" } else { &c.ports },
    );
    match c.l7 {
        Some(Protocol::Http) => s.push_str(", HTTP requests"),
        Some(Protocol::Dns) => s.push_str(", DNS queries"),
        None => {}
    }
    s
}

fn human(d: &Diff, at: &dyn Fn(&Class) -> (String, usize, usize)) -> String {
    let mut s = String::new();
    for c in &d.classes {
        let (file, line, col) = at(c);
        let _ = writeln!(
            s,
            "{} {} ({}, {file}:{line}:{col})\n    {}\n    e.g. {}: {} before, {} after",
            if c.widened { "+" } else { "-" },
            c.rule,
            cause(c),
            summary(c),
            c.example.text,
            c.old_verdict.name(),
            c.example.outcome.verdict.name()
        );
    }
    for u in &d.unknown {
        let _ = writeln!(s, "? unknown: {u}");
    }
    let widened = d.classes.iter().filter(|c| c.widened).count();
    let _ = writeln!(
        s,
        "{} widened (+, newly allowed), {} narrowed (-, newly denied){}",
        widened,
        d.classes.len() - widened,
        if d.unknown.is_empty() {
            String::new()
        } else {
            format!(", {} unknown", d.unknown.len())
        }
    );
    s
}

fn markdown(d: &Diff) -> String {
    let widened = d.classes.iter().filter(|c| c.widened).count();
    let mut s = format!(
        "### Policy diff\n\n**{widened}** widened (newly allowed), **{}** narrowed (newly \
         denied), for every pod that could exist.\n\n",
        d.classes.len() - widened
    );
    if !d.classes.is_empty() {
        s.push_str("| | rule | flows | example |\n|---|---|---|---|\n");
        for c in &d.classes {
            let _ = writeln!(
                s,
                "| {} | `{}` ({}) | {} | `{}` |",
                if c.widened { "➕" } else { "➖" },
                c.rule,
                cause(c),
                summary(c).replace('|', "\\|"),
                c.example.text.replace('|', "\\|")
            );
        }
    }
    if !d.unknown.is_empty() {
        s.push_str("\n**Undecided** (the solver could not answer; these may hide changes):\n\n");
        for u in &d.unknown {
            let _ = writeln!(s, "- {u}");
        }
    }
    s
}

fn sarif(d: &Diff, at: &dyn Fn(&Class) -> (String, usize, usize)) -> anyhow::Result<String> {
    let results: Vec<_> = d
        .classes
        .iter()
        .map(|c| {
            let (file, line, col) = at(c);
            json!({
                "ruleId": if c.widened { "polc/diff-widened" } else { "polc/diff-narrowed" },
                "level": if c.widened { "warning" } else { "note" },
                "message": {"text": format!(
                    "{} ({}): {}; e.g. {}: {} before, {} after",
                    c.rule, cause(c), summary(c), c.example.text,
                    c.old_verdict.name(), c.example.outcome.verdict.name()
                )},
                "locations": [{"physicalLocation": {
                    "artifactLocation": {"uri": crate::render::sarif_uri(&file)},
                    "region": {"startLine": line, "startColumn": col},
                }}],
            })
        })
        .collect();
    let doc = json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "polc",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": [
                    {"id": "polc/diff-widened", "shortDescription": {"text": "flows the change newly allows"}},
                    {"id": "polc/diff-narrowed", "shortDescription": {"text": "flows the change newly denies"}},
                ],
            }},
            "results": results,
        }],
    });
    let mut s = serde_json::to_string_pretty(&doc)?;
    s.push('\n');
    Ok(s)
}
