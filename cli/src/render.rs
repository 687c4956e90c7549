//! Rendering diagnostics: human (miette: snippet, underline, help), JSON, SARIF 2.1.0 and
//! GitHub workflow annotations.

use polc_compiler::diag::{Code, Diagnostic, Severity};
use polc_compiler::source::{LineCol, SourceMap};
use serde_json::{Value, json};
use std::fmt::Write as _;

/// Output formats of `polc lint`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Snippets with underlines, for people.
    Human,
    /// One JSON document.
    Json,
    /// SARIF 2.1.0, for GitHub code scanning and other SARIF consumers.
    Sarif,
    /// GitHub Actions workflow commands (`::error file=...::`).
    Github,
}

/// Counts for the summary.
#[derive(Clone, Copy, Debug, Default)]
pub struct Summary {
    /// Files read.
    pub files: usize,
    /// Objects found.
    pub objects: usize,
    /// Errors.
    pub errors: usize,
    /// Warnings.
    pub warnings: usize,
    /// Notes.
    pub notes: usize,
}

impl Summary {
    /// Counts the diagnostics.
    pub fn new(files: usize, objects: usize, diags: &[Diagnostic]) -> Self {
        let count = |s| diags.iter().filter(|d| d.severity == s).count();
        Summary {
            files,
            objects,
            errors: count(Severity::Error),
            warnings: count(Severity::Warning),
            notes: count(Severity::Note),
        }
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// Where a diagnostic starts and ends, one-based.
fn range(sources: &SourceMap, d: &Diagnostic) -> (LineCol, LineCol) {
    let f = sources.get(d.loc.file);
    (
        f.line_col(d.loc.start as usize),
        f.line_col(d.loc.end as usize),
    )
}

/// Renders the human format.
pub fn human(sources: &SourceMap, diags: &[Diagnostic], summary: Summary, color: bool) -> String {
    use miette::{
        GraphicalReportHandler, GraphicalTheme, LabeledSpan, MietteDiagnostic, NamedSource, Report,
    };
    let theme = if color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme)
        .with_width(100)
        .with_links(false);
    let mut out = String::new();
    for d in diags {
        let file = sources.get(d.loc.file);
        let severity = match d.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
            Severity::Note => miette::Severity::Advice,
        };
        let mut md = MietteDiagnostic::new(d.message.clone())
            .with_code(format!("{} {}", d.code.as_str(), d.code.name()))
            .with_severity(severity);
        let mut help = d.help.clone().unwrap_or_default();
        if !file.text.is_empty() {
            md = md.with_label(LabeledSpan::new_primary_with_span(
                Some(d.label.clone()),
                (d.loc.start as usize, d.loc.len()),
            ));
            // Related places go into the help text: miette drops labels when it merges
            // snippets of nearby lines.
            for r in &d.related {
                let other = sources.get(r.loc.file);
                if !help.is_empty() {
                    help.push('\n');
                }
                let _ = write!(
                    help,
                    "{}: {}:{}",
                    r.message,
                    other.name,
                    sources.line_col(r.loc)
                );
            }
        }
        if !help.is_empty() {
            md = md.with_help(help);
        }
        let report = if file.text.is_empty() {
            Report::new(md)
        } else {
            Report::new(md).with_source_code(NamedSource::new(file.name.clone(), file.text.clone()))
        };
        let mut buf = String::new();
        if handler.render_report(&mut buf, report.as_ref()).is_err() {
            let (start, _) = range(sources, d);
            let _ = writeln!(
                buf,
                "{}: {} [{}] {}:{}",
                d.severity, d.message, d.code, file.name, start
            );
        }
        if file.text.is_empty() {
            let _ = writeln!(buf, "  at {}", file.name);
        }
        out.push_str(&buf);
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "polc: {}, {}, {} in {} ({})",
        plural(summary.errors, "error"),
        plural(summary.warnings, "warning"),
        plural(summary.notes, "note"),
        plural(summary.files, "file"),
        plural(summary.objects, "object"),
    );
    out
}

fn diag_json(sources: &SourceMap, d: &Diagnostic) -> Value {
    let file = sources.get(d.loc.file);
    let (start, end) = range(sources, d);
    json!({
        "code": d.code.as_str(),
        "name": d.code.name(),
        "severity": d.severity.as_str(),
        "message": d.message,
        "file": file.name,
        "line": start.line,
        "column": start.col,
        "end_line": end.line,
        "end_column": end.col,
        "span": { "start": d.loc.start, "end": d.loc.end },
        "label": d.label,
        "help": d.help,
        "related": d.related.iter().map(|r| {
            let lc = sources.line_col(r.loc);
            json!({
                "file": sources.get(r.loc.file).name,
                "line": lc.line,
                "column": lc.col,
                "message": r.message,
            })
        }).collect::<Vec<_>>(),
    })
}

/// Renders the JSON format.
pub fn json(sources: &SourceMap, diags: &[Diagnostic], summary: Summary) -> String {
    let v = json!({
        "version": 1,
        "diagnostics": diags.iter().map(|d| diag_json(sources, d)).collect::<Vec<_>>(),
        "summary": {
            "files": summary.files,
            "objects": summary.objects,
            "errors": summary.errors,
            "warnings": summary.warnings,
            "notes": summary.notes,
        },
    });
    let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
    s.push('\n');
    s
}

fn sarif_level(s: Severity) -> &'static str {
    match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Note => "note",
    }
}

/// A file name as a SARIF artifact URI: forward slashes, percent-encoded where needed.
fn sarif_uri(name: &str) -> String {
    let name = name.replace('\\', "/");
    let mut out = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn sarif_location(
    sources: &SourceMap,
    loc: polc_compiler::source::Loc,
    message: Option<&str>,
) -> Value {
    let f = sources.get(loc.file);
    let start = f.line_col(loc.start as usize);
    let end = f.line_col(loc.end as usize);
    let mut v = json!({
        "physicalLocation": {
            "artifactLocation": { "uri": sarif_uri(&f.name) },
            "region": {
                "startLine": start.line,
                "startColumn": start.col,
                "endLine": end.line,
                "endColumn": end.col.max(if end.line == start.line { start.col + 1 } else { 1 }),
                "byteOffset": loc.start,
                "byteLength": loc.len(),
            }
        }
    });
    if let Some(m) = message {
        v["message"] = json!({ "text": m });
    }
    v
}

/// Renders SARIF 2.1.0.
pub fn sarif(sources: &SourceMap, diags: &[Diagnostic]) -> String {
    let rules: Vec<Value> = Code::ALL
        .iter()
        .map(|c| {
            json!({
                "id": c.as_str(),
                "name": c.name(),
                "shortDescription": { "text": c.summary() },
                "fullDescription": { "text": c.doc() },
                "help": { "text": format!("{}\n\n{}\n\nRun `polc explain-code {}` for details.", c.summary(), c.doc(), c.as_str()) },
                "defaultConfiguration": { "level": sarif_level(c.severity()) },
                "properties": { "tags": [c.name()] },
            })
        })
        .collect();
    let results: Vec<Value> = diags
        .iter()
        .map(|d| {
            let rule_index = Code::ALL.iter().position(|c| *c == d.code).unwrap_or(0);
            let mut text = d.message.clone();
            if let Some(h) = &d.help {
                let _ = write!(text, "\nhelp: {h}");
            }
            let mut r = json!({
                "ruleId": d.code.as_str(),
                "ruleIndex": rule_index,
                "level": sarif_level(d.severity),
                "message": { "text": text },
                "locations": [sarif_location(sources, d.loc, None)],
            });
            if !d.related.is_empty() {
                r["relatedLocations"] = Value::Array(
                    d.related
                        .iter()
                        .enumerate()
                        .map(|(i, rel)| {
                            let mut l = sarif_location(sources, rel.loc, Some(&rel.message));
                            l["id"] = json!(i);
                            l
                        })
                        .collect(),
                );
            }
            r
        })
        .collect();
    let v = json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {
                "driver": {
                    "name": "polc",
                    "version": env!("CARGO_PKG_VERSION"),
                    "semanticVersion": env!("CARGO_PKG_VERSION"),
                    "informationUri": "https://github.com/polc-dev/polc",
                    "rules": rules,
                }
            },
            "columnKind": "unicodeCodePoints",
            "results": results,
        }],
    });
    let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
    s.push('\n');
    s
}

fn gh_escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn gh_escape_prop(s: &str) -> String {
    gh_escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// Renders GitHub Actions workflow commands, one per diagnostic.
pub fn github(sources: &SourceMap, diags: &[Diagnostic]) -> String {
    let mut out = String::new();
    for d in diags {
        let level = match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "notice",
        };
        let file = sources.get(d.loc.file);
        let (start, end) = range(sources, d);
        let mut msg = d.message.clone();
        if let Some(h) = &d.help {
            let _ = write!(msg, "\nhelp: {h}");
        }
        let _ = write!(
            out,
            "::{level} file={},line={},col={}",
            gh_escape_prop(&file.name),
            start.line,
            start.col
        );
        if end.line > start.line {
            let _ = write!(out, ",endLine={}", end.line);
        } else if end.col > start.col {
            let _ = write!(out, ",endColumn={}", end.col);
        }
        let _ = writeln!(
            out,
            ",title={}::{}",
            gh_escape_prop(&format!("{} {}", d.code.as_str(), d.code.name())),
            gh_escape_data(&msg)
        );
    }
    out
}
