//! Source files and locations.
//!
//! Every value polc reads keeps a [`Loc`]: the file it came from and its byte span. Lines and
//! columns are derived from the [`SourceFile`]'s line table, so a `Loc` stays small (it sits
//! on every node of every policy).

use std::fmt;

/// Index of a file in a [`SourceMap`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct FileId(pub u32);

/// A byte span in one source file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Loc {
    /// The file the span is in.
    pub file: FileId,
    /// Byte offset of the first byte.
    pub start: u32,
    /// Byte offset one past the last byte.
    pub end: u32,
}

impl Loc {
    /// A span of `file` from byte `start` to byte `end`.
    pub fn new(file: FileId, start: usize, end: usize) -> Self {
        let start = u32::try_from(start).unwrap_or(u32::MAX);
        let end = u32::try_from(end).unwrap_or(u32::MAX).max(start);
        Loc { file, start, end }
    }

    /// Length of the span in bytes.
    pub fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    /// Whether the span covers no bytes.
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// The smallest span covering both `self` and `other` (same file assumed).
    pub fn to(self, other: Loc) -> Loc {
        Loc {
            file: self.file,
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
}

/// A one-based line and column (the column counts characters, as editors do).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct LineCol {
    /// One-based line number.
    pub line: usize,
    /// One-based column, in characters.
    pub col: usize,
}

impl fmt::Display for LineCol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// One input file: its display name and text.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// The name diagnostics show (a path as the user wrote it, or `<stdin>`).
    pub name: String,
    /// The file's text. Files that are not UTF-8 are kept as an empty text.
    pub text: String,
    /// Byte offset of the start of each line.
    line_starts: Vec<u32>,
    /// False for a placeholder standing for a path that could not be read; such files are
    /// named in diagnostics but not linted.
    pub readable: bool,
}

impl SourceFile {
    /// A source file named `name` holding `text`.
    pub fn new(name: impl Into<String>, text: String) -> Self {
        let mut line_starts = vec![0u32];
        line_starts.extend(
            text.bytes()
                .enumerate()
                .filter(|&(_, b)| b == b'\n')
                .map(|(i, _)| u32::try_from(i + 1).unwrap_or(u32::MAX)),
        );
        SourceFile {
            name: name.into(),
            text,
            line_starts,
            readable: true,
        }
    }

    /// A placeholder for a path that could not be read.
    pub fn unreadable(name: impl Into<String>) -> Self {
        SourceFile {
            readable: false,
            ..SourceFile::new(name, String::new())
        }
    }

    /// Byte offset where the zero-based line `line` starts.
    pub fn line_start(&self, line: usize) -> usize {
        match self.line_starts.get(line) {
            Some(&s) => s as usize,
            None => self.text.len(),
        }
    }

    /// Number of lines.
    pub fn line_count(&self) -> usize {
        self.line_starts.len()
    }

    /// The line and column of a byte offset.
    pub fn line_col(&self, offset: usize) -> LineCol {
        let offset = offset.min(self.text.len());
        let line = match self.line_starts.binary_search(&(offset as u32)) {
            Ok(l) => l,
            Err(l) => l.saturating_sub(1),
        };
        let start = self.line_start(line);
        let col = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        LineCol {
            line: line + 1,
            col: col + 1,
        }
    }

    /// Byte offset of the zero-based character column `col` of the one-based line `line`.
    pub fn offset_of(&self, line: usize, col: usize) -> usize {
        let start = self.line_start(line.saturating_sub(1));
        let rest = &self.text[start..];
        let line_text = rest.split('\n').next().unwrap_or("");
        if line_text.is_ascii() {
            return start + col.min(line_text.len() + 1).min(rest.len());
        }
        match line_text.char_indices().nth(col) {
            Some((b, _)) => start + b,
            None => start + line_text.len() + usize::from(col > line_text.chars().count()),
        }
        .min(self.text.len())
    }

    /// The text a location covers.
    pub fn slice(&self, loc: Loc) -> &str {
        self.text
            .get(loc.start as usize..loc.end as usize)
            .unwrap_or("")
    }
}

/// All files of one run, indexed by [`FileId`].
#[derive(Debug, Default, Clone)]
pub struct SourceMap {
    files: Vec<SourceFile>,
}

impl SourceMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a file and returns its id.
    pub fn add(&mut self, file: SourceFile) -> FileId {
        self.files.push(file);
        FileId(u32::try_from(self.files.len() - 1).unwrap_or(u32::MAX))
    }

    /// The file with id `id`.
    ///
    /// Ids come from [`SourceMap::add`] on this map; an id from another map yields the last
    /// file, never a panic.
    pub fn get(&self, id: FileId) -> &SourceFile {
        static EMPTY: std::sync::OnceLock<SourceFile> = std::sync::OnceLock::new();
        self.files
            .get(id.0 as usize)
            .unwrap_or_else(|| EMPTY.get_or_init(|| SourceFile::new("<unknown>", String::new())))
    }

    /// All files, in the order they were added.
    pub fn files(&self) -> impl Iterator<Item = (FileId, &SourceFile)> {
        self.files
            .iter()
            .enumerate()
            .map(|(i, f)| (FileId(i as u32), f))
    }

    /// Where a location starts, as a line and column.
    pub fn line_col(&self, loc: Loc) -> LineCol {
        self.get(loc.file).line_col(loc.start as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_characters() {
        let f = SourceFile::new("x", "ab\ncé d\n".to_string());
        assert_eq!(f.line_col(0), LineCol { line: 1, col: 1 });
        assert_eq!(f.line_col(3), LineCol { line: 2, col: 1 });
        // `d` is at byte 7 (é takes two bytes) but character column 4.
        assert_eq!(f.line_col(7), LineCol { line: 2, col: 4 });
        assert_eq!(f.offset_of(2, 3), 7);
        assert_eq!(f.offset_of(1, 1), 1);
    }
}
