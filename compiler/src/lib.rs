//! The polc front end: policy YAML to located raw types, validated the way the API server and
//! the Cilium agent validate them.
//!
//! ```text
//! bytes --source--> SourceFile --yaml--> Node tree --raw--> Object --validate--> Diagnostics
//! ```
//!
//! **This crate does no IO**: callers hand it file contents and get values back.

pub mod compile;
pub mod connectivity;
pub mod diag;
pub mod eval;
pub mod flows;
/// The benchmark and test generator: a synthetic cluster (inventory and policies) at a given
/// scale, as YAML text. (`gen` is a reserved word in Rust 2024, hence `r#gen`.)
pub mod r#gen;
pub mod identity;
pub mod incremental;
pub mod inventory;
pub mod ir;
pub mod labels;
pub mod lower;
pub mod mapstate;
pub mod model;
pub mod raw;
pub mod source;
pub mod validate;
pub mod version;
pub mod yaml;

use diag::{Code, Diagnostic, Diagnostics};
use raw::Object;
use source::{FileId, Loc, SourceFile, SourceMap};
pub use version::CiliumVersion;

/// A hash map with a fast hash (foldhash, seeded per process) for the hot paths of compiling:
/// labels, identities, map keys.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Settings for reading and checking.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// The Cilium release whose rules apply.
    pub version: CiliumVersion,
    /// Bounds on the work done per input.
    pub limits: yaml::Limits,
}

/// Turns raw file bytes into text, or explains why they are not UTF-8 text.
pub fn decode_text(bytes: Vec<u8>) -> Result<String, Diagnostic> {
    let binary_at = bytes.iter().position(|&b| b == 0);
    match String::from_utf8(bytes) {
        Ok(text) if binary_at.is_none() => {
            // A byte-order mark is allowed by YAML; drop it so columns on line 1 are right.
            Ok(match text.strip_prefix('\u{feff}') {
                Some(t) => t.to_string(),
                None => text,
            })
        }
        Ok(_) => Err(not_text(
            binary_at.unwrap_or(0),
            "the file contains NUL bytes: it looks like a binary file",
        )),
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let line = e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count() + 1;
            Err(not_text(
                at,
                &format!("the file is not valid UTF-8 (line {line}, byte {at})"),
            ))
        }
    }
}

fn not_text(at: usize, message: &str) -> Diagnostic {
    Diagnostic::new(
        Code::NotUtf8,
        Loc::new(FileId(0), 0, 0),
        message.to_string(),
    )
    .label(format!("first bad byte at offset {at}"))
    .help("Kubernetes manifests are UTF-8 text; re-encode the file or leave it out")
}

/// Reads every object of one file. Documents that fail to parse are reported and skipped;
/// the others are returned.
pub fn read_file(id: FileId, file: &SourceFile, opts: &Options) -> (Vec<Object>, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let docs = yaml::parse_stream(id, file, opts.limits, &mut diags);
    if docs.iter().all(|d| d.root.is_null()) && diags.is_empty() {
        diags.push(
            Diagnostic::new(
                Code::EmptyInput,
                Loc::new(id, 0, 0),
                "the file contains no YAML documents",
            )
            .label("empty")
            .help("remove the file from the paths given to polc, or add a policy"),
        );
    }
    let mut objects = Vec::new();
    for doc in &docs {
        objects.extend(raw::read_document(&doc.root, &mut diags));
    }
    (objects, diags)
}

/// Reads every readable file of `sources` (in parallel: a cluster's inventory is tens of
/// megabytes of YAML), and returns the objects in file order with the parse and decoding
/// diagnostics.
pub fn read_files(sources: &SourceMap, opts: &Options) -> (Vec<Object>, Vec<Diagnostic>) {
    use rayon::prelude::*;
    let files: Vec<(FileId, &SourceFile)> = sources.files().filter(|(_, f)| f.readable).collect();
    // Largest first, so that a big file does not start last; the results are put back in
    // file order.
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.sort_by_key(|&k| std::cmp::Reverse(files[k].1.text.len()));
    let mut read: Vec<(usize, Vec<Object>, Vec<Diagnostic>)> = order
        .into_par_iter()
        .map(|k| {
            let (id, file) = files[k];
            let (objects, diags) = read_file(id, file, opts);
            (k, objects, diags)
        })
        .collect();
    read.sort_unstable_by_key(|(k, _, _)| *k);
    let mut objects = Vec::with_capacity(read.iter().map(|(_, o, _)| o.len()).sum());
    let mut diags = Vec::new();
    for (_, o, d) in read {
        objects.extend(o);
        diags.extend(d);
    }
    (objects, diags)
}

/// What [`check`] works out about a set of objects: the diagnostics, and on the way the
/// policies lowered (`toServices` not yet bound), which a command that goes on to build a
/// [`model::Model`] uses instead of lowering them again.
pub struct Checked {
    /// Validation and lowering diagnostics (not sorted).
    pub diags: Vec<Diagnostic>,
    /// The policies, lowered.
    pub policies: ir::PolicySet,
}

/// Checks objects read by [`read_files`]: schema and agent validation, lint warnings, and
/// dangling CIDR groups (which only show when the objects are put together). Duplicate
/// inventory objects are found by [`inventory::Inventory::from_objects`].
pub fn check(objects: &[Object], opts: &Options) -> Checked {
    let mut diags = validate::check(objects, opts).into_vec();
    let (policies, lowered) = lower::lower(objects, opts.version);
    diags.extend(lowered);
    Checked { diags, policies }
}

/// Reads and checks every file of `sources`: parse errors, schema and agent validation, and
/// lint warnings, sorted by position.
pub fn lint(sources: &SourceMap, opts: &Options) -> (Vec<Object>, Diagnostics) {
    let (objects, read) = read_files(sources, opts);
    let checked = check(&objects, opts);
    let (_, inventory) = inventory::Inventory::from_objects(&objects, "default");
    let mut diags = Diagnostics::new();
    for d in read.into_iter().chain(checked.diags).chain(inventory) {
        diags.push(d);
    }
    diags.sort();
    (objects, diags)
}
