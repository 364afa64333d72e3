//! Hand-off formats: every embedding table of a run also in the formats other tools load.
//!
//! * `<name>.vec`: the word2vec text format (gensim's `KeyedVectors.load_word2vec_format`, fastText): a header line
//!   `count dim`, then one line per vector, `key v1 v2 ...`. Keys are made safe: every whitespace character becomes
//!   `_`, an empty key is `_`, and a key seen before gets `__2`, `__3`, ... appended.
//! * `projector/<name>/tensors.tsv` and `metadata.tsv`, listed in `projector/projector_config.pbtxt`: TensorBoard's
//!   embedding projector. It shows at most [`PROJECTOR_MAX_POINTS`] points, so above that the projector files hold a
//!   stratified sample (by category where there is one): each stratum keeps its share of the sample
//!   (largest remainders), at evenly spaced positions among its rows.
//!
//! The files are written from the run's own Parquet outputs, read back a slice at a time, so they hold the same
//! vectors without the whole table in memory.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::data::table::{ColumnData, Table};
use crate::error::{Error, Result};

/// The most points TensorBoard's projector shows.
pub const PROJECTOR_MAX_POINTS: usize = 100_000;

/// The fixed width of a .vec header line (rewritten with the counts when the file is complete).
const HEADER_WIDTH: usize = 40;

/// A word2vec key with whitespace replaced by `_` (empty: `_`).
pub fn safe_key(key: &str) -> String {
    let s: String = key.chars().map(|c| if c.is_whitespace() { '_' } else { c }).collect();
    if s.is_empty() {
        "_".into()
    } else {
        s
    }
}

/// A metadata cell: tabs and line breaks would break the TSV, so they become spaces.
fn tsv_cell(v: &str) -> String {
    v.chars().map(|c| if matches!(c, '\t' | '\n' | '\r') { ' ' } else { c }).collect()
}

/// Which rows the projector gets: every row when there are at most `max`, else exactly `max` of them, each stratum
/// (`strata[i]` is row i's) keeping its share by largest remainders (ties to the smaller stratum), at evenly spaced
/// positions among its rows.
pub fn projector_sample(strata: &[u32], max: usize) -> Vec<bool> {
    let n = strata.len();
    if n <= max {
        return vec![true; n];
    }
    let mut count: BTreeMap<u32, usize> = BTreeMap::new();
    for &s in strata {
        *count.entry(s).or_default() += 1;
    }
    let mut quota: BTreeMap<u32, usize> = count.iter().map(|(&s, &c)| (s, c * max / n)).collect();
    let mut left = max - quota.values().sum::<usize>();
    let mut by_remainder: Vec<(usize, u32)> = count.iter().map(|(&s, &c)| ((c * max) % n, s)).collect();
    by_remainder.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, s) in by_remainder {
        if left == 0 {
            break;
        }
        *quota.entry(s).or_default() += 1;
        left -= 1;
    }
    // Row positions within each stratum to keep: floor((i + 1/2) · n_c / q_c).
    let mut seen: HashMap<u32, usize> = HashMap::new();
    let mut next: HashMap<u32, usize> = HashMap::new();
    strata
        .iter()
        .map(|&s| {
            let (c, q) = (count[&s], quota[&s]);
            let pos = seen.entry(s).or_default();
            let i = next.entry(s).or_default();
            let keep = *i < q && *pos == ((2 * *i + 1) * c) / (2 * q);
            if keep {
                *i += 1;
            }
            *pos += 1;
            keep
        })
        .collect()
}

/// What one embedding's hand-off files hold.
#[derive(Debug, Clone)]
pub struct Written {
    pub name: String,
    pub vectors: usize,
    pub projector_points: usize,
}

/// The .vec and projector files of one embedding, written row by row.
pub struct Writer {
    name: String,
    dim: usize,
    vec_path: PathBuf,
    vec: BufWriter<File>,
    tensors: BufWriter<File>,
    metadata: BufWriter<File>,
    keep: Option<Vec<bool>>,
    row: usize,
    points: usize,
    keys: HashMap<String, usize>,
}

fn create(path: &Path) -> Result<BufWriter<File>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::output(dir, "cannot create", e))?;
    }
    File::create(path).map(BufWriter::new).map_err(|e| Error::output(path, "cannot create", e))
}

impl Writer {
    /// Files under `root` (the run's staging folder); `columns` name the metadata columns; `keep` says which rows
    /// the projector gets (all when `None`).
    pub fn create(root: &Path, name: &str, dim: usize, columns: &[&str], keep: Option<Vec<bool>>) -> Result<Writer> {
        let vec_path = root.join(format!("{name}.vec"));
        let mut vec = create(&vec_path)?;
        let w = |e| Error::output(&vec_path, "cannot write", e);
        writeln!(vec, "{}", " ".repeat(HEADER_WIDTH - 1)).map_err(w)?;
        let dir = root.join("projector").join(name);
        let tensors = create(&dir.join("tensors.tsv"))?;
        let mut metadata = create(&dir.join("metadata.tsv"))?;
        // TensorBoard reads a one-column metadata file without a header, a wider one with.
        if columns.len() > 1 {
            let header: Vec<String> = columns.iter().map(|c| tsv_cell(c)).collect();
            writeln!(metadata, "{}", header.join("\t")).map_err(|e| Error::output(&dir, "cannot write", e))?;
        }
        Ok(Writer {
            name: name.to_owned(),
            dim,
            vec_path,
            vec,
            tensors,
            metadata,
            keep,
            row: 0,
            points: 0,
            keys: HashMap::new(),
        })
    }

    /// One vector with its key and metadata cells (one per metadata column).
    pub fn append(&mut self, key: &str, cells: &[&str], vector: &[f32]) -> Result<()> {
        let w = |e| Error::output(&self.vec_path, "cannot write", e);
        let mut key = safe_key(key);
        let seen = self.keys.entry(key.clone()).or_insert(0);
        *seen += 1;
        if *seen > 1 {
            key = format!("{key}__{seen}");
        }
        let mut line = key;
        for v in vector {
            line.push(' ');
            line.push_str(&v.to_string());
        }
        writeln!(self.vec, "{line}").map_err(w)?;
        if self.keep.as_ref().is_none_or(|k| k.get(self.row).copied().unwrap_or(false)) {
            let t: Vec<String> = vector.iter().map(f32::to_string).collect();
            writeln!(self.tensors, "{}", t.join("\t")).map_err(w)?;
            let m: Vec<String> = cells.iter().map(|c| tsv_cell(c)).collect();
            writeln!(self.metadata, "{}", m.join("\t")).map_err(w)?;
            self.points += 1;
        }
        self.row += 1;
        Ok(())
    }

    /// Completes the files: the .vec header gets its counts.
    pub fn finish(self) -> Result<Written> {
        let path = self.vec_path.clone();
        let w = |e| Error::output(&path, "cannot write", e);
        let mut file = self.vec.into_inner().map_err(|e| w(e.into_error()))?;
        let header = format!("{} {}", self.row, self.dim);
        file.seek(SeekFrom::Start(0)).map_err(w)?;
        file.write_all(format!("{header:<width$}", width = HEADER_WIDTH - 1).as_bytes()).map_err(w)?;
        let mut t = self.tensors;
        t.flush().map_err(w)?;
        let mut m = self.metadata;
        m.flush().map_err(w)?;
        Ok(Written { name: self.name, vectors: self.row, projector_points: self.points })
    }
}

/// `projector/projector_config.pbtxt`, listing every embedding written.
pub fn write_projector_config(root: &Path, written: &[Written]) -> Result<()> {
    let path = root.join("projector").join("projector_config.pbtxt");
    let mut f = create(&path)?;
    for e in written {
        writeln!(
            f,
            "embeddings {{\n  tensor_name: \"{0}\"\n  tensor_path: \"{0}/tensors.tsv\"\n  metadata_path: \"{0}/metadata.tsv\"\n}}",
            e.name
        )
        .map_err(|e| Error::output(&path, "cannot write", e))?;
    }
    f.flush().map_err(|e| Error::output(&path, "cannot write", e))
}

/// A table column by name.
pub fn column<'a>(t: &'a Table, name: &str) -> Option<&'a ColumnData> {
    t.columns.iter().find(|(n, _)| n == name).map(|(_, c)| c)
}

/// Row `i` of a column as text (integers in decimal, null as empty).
pub fn cell(c: &ColumnData, i: usize) -> String {
    match c {
        ColumnData::Str(v) => v[i].clone(),
        ColumnData::I32(v) => v[i].to_string(),
        ColumnData::I64(v) => v[i].to_string(),
        ColumnData::OptI64(v) => v[i].map(|x| x.to_string()).unwrap_or_default(),
        ColumnData::F64(v) => v[i].to_string(),
        ColumnData::Vectors { .. } => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_made_safe_and_unique() {
        assert_eq!(safe_key("mac and cheese"), "mac_and_cheese");
        assert_eq!(safe_key("a\tb\nc"), "a_b_c");
        assert_eq!(safe_key(""), "_");
        let dir = tempfile::tempdir().expect("dir");
        let mut w = Writer::create(dir.path(), "x", 2, &["item"], None).expect("create");
        w.append("a b", &["a b"], &[1.0, 2.5]).expect("row");
        w.append("a_b", &["a_b"], &[0.0, -1.0]).expect("row");
        let out = w.finish().expect("finish");
        assert_eq!((out.vectors, out.projector_points), (2, 2));
        let text = std::fs::read_to_string(dir.path().join("x.vec")).expect("vec");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0].trim_end(), "2 2");
        assert_eq!(lines[1], "a_b 1 2.5");
        assert_eq!(lines[2], "a_b__2 0 -1");
        let meta = std::fs::read_to_string(dir.path().join("projector/x/metadata.tsv")).expect("meta");
        assert_eq!(meta, "a b\na_b\n", "one column: no header");
    }

    #[test]
    fn the_projector_sample_keeps_each_strata_share() {
        assert_eq!(projector_sample(&[0, 1, 0], 5), vec![true; 3]);
        // 10 rows, strata 0 (6 rows) and 1 (4 rows), 5 kept: quotas 3 and 2.
        let strata = [0, 0, 1, 0, 1, 0, 1, 0, 1, 0];
        let keep = projector_sample(&strata, 5);
        assert_eq!(keep.iter().filter(|&&k| k).count(), 5);
        let kept = |s: u32| strata.iter().zip(&keep).filter(|(&x, &k)| x == s && k).count();
        assert_eq!((kept(0), kept(1)), (3, 2));
        // Stratum 0's rows are positions 0..6: kept at floor((2i + 1) · 6 / 6) = 1, 3, 5 of them.
        let pos0: Vec<usize> = strata.iter().enumerate().filter(|(_, &s)| s == 0).map(|(i, _)| i).collect();
        let kept0: Vec<usize> = pos0.iter().enumerate().filter(|(_, &i)| keep[i]).map(|(p, _)| p).collect();
        assert_eq!(kept0, vec![1, 3, 5]);
        // Remainders decide: 3 strata of 1 row each, 2 kept: the first two.
        assert_eq!(projector_sample(&[0, 1, 2], 2), vec![true, true, false]);
    }
}
