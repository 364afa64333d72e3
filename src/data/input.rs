//! What to read, as the data module takes it: the input's files, format and columns (`InputSpec`, built by the
//! plan), side files such as labels (`LabelsFile`), and the listing of a folder or glob ([`input_files`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Input file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Csv,
    Parquet,
}

/// Which file or files to read and how.
#[derive(Debug, Clone)]
pub struct InputSpec {
    /// As configured (resolved against the pipeline's folder): a file, a folder or a glob.
    pub path: PathBuf,
    pub format: Format,
    pub columns: InputColumns,
    pub separator: u8,
    /// The files it names, in the order they are read (sorted by path); one for a plain file.
    pub files: Vec<PathBuf>,
    /// The folder hive partitions (`key=value` folders) are read below: a folder input, or a glob's fixed prefix.
    pub root: PathBuf,
}

impl InputSpec {
    /// One file.
    pub fn file(path: PathBuf, format: Format, columns: InputColumns, separator: u8) -> InputSpec {
        InputSpec {
            files: vec![path.clone()],
            root: path.parent().map(Path::to_path_buf).unwrap_or_default(),
            path,
            format,
            columns,
            separator,
        }
    }

    /// Whether the input is more than one plain file (a folder or a glob).
    pub fn is_many(&self) -> bool {
        self.files.len() != 1 || self.files[0] != self.path
    }
}

/// The files a folder or glob names: data files (`.parquet`, `.pq`, `.csv`, `.tsv`, `.txt`), sorted by path,
/// skipping names that start with `.` or `_` (`_SUCCESS`, `.crc` files as Spark writes them); and the folder hive
/// partitions are counted from.
pub fn input_files(path: &Path) -> std::result::Result<(Vec<PathBuf>, PathBuf), String> {
    let data = |p: &Path| {
        let visible =
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| !n.starts_with('.') && !n.starts_with('_'));
        let ext = p.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        visible && matches!(ext.as_deref(), Some("parquet" | "pq" | "csv" | "tsv" | "txt"))
    };
    let text = path.to_string_lossy();
    if text.contains(['*', '?', '[']) {
        let entries = glob::glob(&text).map_err(|e| format!("not a valid glob: {e}"))?;
        let mut files: Vec<PathBuf> = entries.filter_map(std::result::Result::ok).filter(|p| p.is_file()).collect();
        files.sort();
        // The fixed folder before the first wildcard.
        let mut root = PathBuf::new();
        for c in path.components() {
            if c.as_os_str().to_string_lossy().contains(['*', '?', '[']) {
                break;
            }
            root.push(c);
        }
        return Ok((files, root));
    }
    if path.is_dir() {
        let mut files = Vec::new();
        let mut stack = vec![path.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let entries = std::fs::read_dir(&dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
            for e in entries.flatten() {
                let p = e.path();
                let hidden =
                    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.') || n.starts_with('_'));
                if p.is_dir() && !hidden {
                    stack.push(p);
                } else if p.is_file() && data(&p) {
                    files.push(p);
                }
            }
        }
        files.sort();
        return Ok((files, path.to_path_buf()));
    }
    Ok((vec![path.to_path_buf()], path.parent().map(Path::to_path_buf).unwrap_or_default()))
}

/// The columns to read, by layout.
#[derive(Debug, Clone, PartialEq)]
pub enum InputColumns {
    Long {
        user: String,
        item: String,
        order: Option<String>,
        weight: Option<String>,
    },
    List {
        user: String,
        items: String,
    },
    Text {
        text: String,
        id: Option<String>,
    },
    /// `columns: None` means every numeric column but the id and `exclude`.
    Numeric {
        columns: Option<Vec<String>>,
        id: Option<String>,
        exclude: Vec<String>,
    },
}

/// An item (or, for documents, row id) → category file for the similarity evaluation.
#[derive(Debug, Clone)]
pub struct LabelsFile {
    pub path: PathBuf,
    pub format: Format,
    /// The key column: items, or documents' row ids.
    pub item: String,
    pub category: String,
}

/// A side file (similarity pairs, sense sentences): its path and format.
#[derive(Debug, Clone, PartialEq)]
pub struct SideFile {
    pub path: PathBuf,
    pub format: Format,
}
