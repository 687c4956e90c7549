//! Gathering input: files, directories (recursively, `.yaml`/`.yml`/`.json`), and `-` for
//! standard input, into a [`SourceMap`]. Problems reading a path become diagnostics, so one
//! unreadable file does not stop the others.

use polc_compiler::diag::{Code, Diagnostic};
use polc_compiler::source::{FileId, Loc, SourceFile, SourceMap};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The default size limit for one input file.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 64 * 1024 * 1024;

/// Everything read for one run.
#[derive(Default)]
pub struct Inputs {
    /// The files, in the order found.
    pub sources: SourceMap,
    /// Problems reading them (unreadable, too large, not UTF-8).
    pub diagnostics: Vec<Diagnostic>,
    /// Whether any input could not be read at all (exit code 2).
    pub unreadable: bool,
    /// Whether standard input was read already.
    pub stdin_read: bool,
}

/// Whether a directory entry is a policy file polc reads.
pub fn is_policy_file(p: &Path) -> bool {
    matches!(
        p.extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("yaml" | "yml" | "json")
    )
}

/// Reads every path. Directories are walked in sorted order; hidden entries inside them
/// (`.git`, ...) are skipped.
pub fn gather(paths: &[PathBuf], stdin: &mut dyn Read, max_size: u64) -> Inputs {
    let mut inputs = Inputs::default();
    gather_into(&mut inputs, paths, stdin, max_size);
    inputs
}

/// [`gather`], adding to `inputs` (standard input is read once, whatever was gathered
/// before).
pub fn gather_into(inputs: &mut Inputs, paths: &[PathBuf], stdin: &mut dyn Read, max_size: u64) {
    for path in paths {
        if path.as_os_str() == "-" {
            if inputs.stdin_read {
                continue;
            }
            inputs.stdin_read = true;
            let res = read_limited(&mut *stdin, max_size, 0);
            add(inputs, "<stdin>", res, max_size);
            continue;
        }
        if path.is_dir() {
            // Links are followed: a ConfigMap mounted as a volume is files linked into a
            // hidden `..data` directory.
            let walker = walkdir::WalkDir::new(path)
                .follow_links(true)
                .sort_by_file_name()
                .into_iter()
                .filter_entry(|e| {
                    e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.')
                });
            let before = inputs.sources.files().count();
            for entry in walker {
                match entry {
                    Ok(e) if e.file_type().is_file() && is_policy_file(e.path()) => {
                        read_path(inputs, e.path(), max_size);
                    }
                    Ok(_) => {}
                    Err(err) => {
                        let name = err.path().unwrap_or(path).display().to_string();
                        let io = std::io::Error::other(err.to_string());
                        add(inputs, &name, Err(ReadError::Io(io)), max_size);
                    }
                }
            }
            if inputs.sources.files().count() == before {
                // Probably the wrong directory: say so rather than report a clean run.
                let name = display_name(path);
                let io = std::io::Error::other("it contains no `.yaml`, `.yml` or `.json` files");
                add(inputs, &name, Err(ReadError::Io(io)), max_size);
                if let Some(d) = inputs.diagnostics.last_mut() {
                    d.help =
                        Some("give the directory (or the files) that hold the policies".into());
                }
            }
        } else {
            read_path(inputs, path, max_size);
        }
    }
}

/// Why a path's bytes could not be had.
enum ReadError {
    Io(std::io::Error),
    TooLarge(u64),
}

fn read_limited(r: impl Read, max_size: u64, hint: u64) -> Result<Vec<u8>, ReadError> {
    let mut buf = Vec::with_capacity(usize::try_from(hint.min(max_size)).unwrap_or(0));
    r.take(max_size + 1)
        .read_to_end(&mut buf)
        .map_err(ReadError::Io)?;
    if buf.len() as u64 > max_size {
        return Err(ReadError::TooLarge(buf.len() as u64));
    }
    Ok(buf)
}

fn read_path(inputs: &mut Inputs, path: &Path, max_size: u64) {
    let res = std::fs::File::open(path)
        .map_err(ReadError::Io)
        .and_then(|f| {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            if len > max_size {
                return Err(ReadError::TooLarge(len));
            }
            read_limited(f, max_size, len)
        });
    add(inputs, &display_name(path), res, max_size);
}

/// Adds in-memory bytes as an input named `name`, with the same checks as a file.
pub fn add_bytes(inputs: &mut Inputs, name: &str, bytes: Vec<u8>, max_size: u64) {
    let res = if bytes.len() as u64 > max_size {
        Err(ReadError::TooLarge(bytes.len() as u64))
    } else {
        Ok(bytes)
    };
    add(inputs, name, res, max_size);
}

fn display_name(path: &Path) -> String {
    let s = path.display().to_string();
    s.strip_prefix("./").map(str::to_string).unwrap_or(s)
}

fn add(inputs: &mut Inputs, name: &str, res: Result<Vec<u8>, ReadError>, max_size: u64) {
    let bytes = match res {
        Ok(b) => b,
        Err(ReadError::TooLarge(size)) => {
            let id = inputs.sources.add(SourceFile::unreadable(name));
            inputs.unreadable = true;
            inputs.diagnostics.push(
                Diagnostic::new(
                    Code::InputTooLarge,
                    Loc::new(id, 0, 0),
                    format!("`{name}` is larger than the input limit ({size} > {max_size} bytes)"),
                )
                .label("too large")
                .help("split the file, or raise the limit with `--max-file-size`"),
            );
            return;
        }
        Err(ReadError::Io(e)) => {
            let id = inputs.sources.add(SourceFile::unreadable(name));
            inputs.unreadable = true;
            let why = match e.kind() {
                std::io::ErrorKind::NotFound => "no such file or directory".to_string(),
                std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
                _ => e.to_string(),
            };
            inputs.diagnostics.push(
                Diagnostic::new(
                    Code::UnreadableInput,
                    Loc::new(id, 0, 0),
                    format!("cannot read `{name}`: {why}"),
                )
                .label("unreadable")
                .help("check the path and its permissions"),
            );
            return;
        }
    };
    match polc_compiler::decode_text(bytes) {
        Ok(text) => {
            inputs.sources.add(SourceFile::new(name, text));
        }
        Err(mut d) => {
            let id: FileId = inputs.sources.add(SourceFile::unreadable(name));
            inputs.unreadable = true;
            d.loc = Loc::new(id, 0, 0);
            inputs.diagnostics.push(d);
        }
    }
}

/// A YAML node as JSON, with Kubernetes' scalar resolution (what the API server would store
/// for a manifest).
pub fn yaml_to_json(node: &polc_compiler::yaml::Node) -> serde_json::Value {
    use polc_compiler::yaml::{Resolved, Value};
    match &node.value {
        Value::Scalar(s) => match s.resolve() {
            Resolved::Null => serde_json::Value::Null,
            Resolved::Bool(b) => serde_json::Value::from(b),
            Resolved::Int(n) => serde_json::Value::from(n),
            Resolved::Float(f) => serde_json::Value::from(f),
            _ => serde_json::Value::from(s.text.clone()),
        },
        Value::Seq(items) => items.iter().map(yaml_to_json).collect(),
        Value::Map(entries) => entries
            .iter()
            .map(|e| (e.key.clone(), yaml_to_json(&e.value)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
    }
}
