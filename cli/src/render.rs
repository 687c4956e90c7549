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
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Files read.
    pub files: usize,
    /// Objects found.
    pub objects: usize,
    /// Objects per kind, in a fixed order.
    pub kinds: Vec<(&'static str, usize)>,
    /// Errors.
    pub errors: usize,
    /// Warnings.
    pub warnings: usize,
    /// Notes.
    pub notes: usize,
}

impl Summary {
    /// Counts the objects by kind and the diagnostics by severity.
    pub fn new(files: usize, objects: &[polc_compiler::raw::Object], diags: &[Diagnostic]) -> Self {
        let count = |s| diags.iter().filter(|d| d.severity == s).count();
        let mut kinds: Vec<(polc_compiler::raw::Kind, usize)> = Vec::new();
        for o in objects {
            match kinds.iter_mut().find(|(k, _)| *k == o.kind) {
                Some((_, n)) => *n += 1,
                None => kinds.push((o.kind, 1)),
            }
        }
        kinds.sort();
        Summary {
            files,
            objects: objects.len(),
            kinds: kinds.into_iter().map(|(k, n)| (k.name(), n)).collect(),
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

/// A source file as miette reads it: snippets are cut with the file's line table, so
/// rendering a diagnostic costs the size of its snippet, not of the file.
struct Snippets<'a> {
    file: &'a polc_compiler::source::SourceFile,
}

impl miette::SourceCode for Snippets<'_> {
    fn read_span<'s>(
        &'s self,
        span: &miette::SourceSpan,
        before: usize,
        after: usize,
    ) -> Result<Box<dyn miette::SpanContents<'s> + 's>, miette::MietteError> {
        let text = self.file.text.as_str();
        let start = span.offset();
        let end = start + span.len();
        if end > text.len() {
            return Err(miette::MietteError::OutOfBounds);
        }
        let first = self.file.line_col(start).line - 1;
        let last_byte = if end > start { end - 1 } else { start };
        let last = (self.file.line_col(last_byte).line - 1 + after)
            .min(self.file.line_count().saturating_sub(1));
        let (from, line, column) = if before == 0 {
            (start, first, self.file.line_col(start).col - 1)
        } else {
            let line = first.saturating_sub(before);
            (self.file.line_start(line), line, 0)
        };
        let to = if last + 1 < self.file.line_count() {
            self.file.line_start(last + 1)
        } else {
            text.len()
        };
        Ok(Box::new(miette::MietteSpanContents::new_named(
            self.file.name.clone(),
            &text.as_bytes()[from..to],
            (from, to - from).into(),
            line,
            column,
            last + 1 - line,
        )))
    }
}

/// A diagnostic with its (borrowed) source, as miette renders it.
struct Report<'a> {
    inner: miette::MietteDiagnostic,
    source: Option<Snippets<'a>>,
}

impl std::fmt::Debug for Report<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.inner, f)
    }
}

impl std::fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.inner, f)
    }
}

impl std::error::Error for Report<'_> {}

impl miette::Diagnostic for Report<'_> {
    fn code<'b>(&'b self) -> Option<Box<dyn std::fmt::Display + 'b>> {
        self.inner.code()
    }
    fn severity(&self) -> Option<miette::Severity> {
        self.inner.severity()
    }
    fn help<'b>(&'b self) -> Option<Box<dyn std::fmt::Display + 'b>> {
        self.inner.help()
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.source.as_ref().map(|s| s as &dyn miette::SourceCode)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        self.inner.labels()
    }
}

/// Renders diagnostics in the human format, without the summary line.
pub fn human_diagnostics(sources: &SourceMap, diags: &[Diagnostic], color: bool) -> String {
    use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, MietteDiagnostic};
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
        }
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
        if !help.is_empty() {
            md = md.with_help(help);
        }
        let report = Report {
            inner: md,
            source: (!file.text.is_empty()).then_some(Snippets { file }),
        };
        let mut buf = String::new();
        if handler.render_report(&mut buf, &report).is_err() {
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
    out
}

/// Renders the human format: the diagnostics, then the summary line.
pub fn human(sources: &SourceMap, diags: &[Diagnostic], summary: &Summary, color: bool) -> String {
    let mut out = human_diagnostics(sources, diags, color);
    let kinds = summary
        .kinds
        .iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect::<Vec<_>>()
        .join(", ");
    let _ = writeln!(
        out,
        "polc: {}, {}, {} in {} ({}{}{})",
        plural(summary.errors, "error"),
        plural(summary.warnings, "warning"),
        plural(summary.notes, "note"),
        plural(summary.files, "file"),
        plural(summary.objects, "object"),
        if kinds.is_empty() { "" } else { ": " },
        kinds,
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
pub fn json(sources: &SourceMap, diags: &[Diagnostic], summary: &Summary) -> String {
    let v = json!({
        "version": 1,
        "diagnostics": diags.iter().map(|d| diag_json(sources, d)).collect::<Vec<_>>(),
        "summary": {
            "files": summary.files,
            "objects": summary.objects,
            "errors": summary.errors,
            "warnings": summary.warnings,
            "notes": summary.notes,
            "kinds": summary.kinds.iter().map(|(k, n)| (k.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
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
pub(crate) fn sarif_uri(name: &str) -> String {
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
