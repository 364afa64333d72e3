//! Checks a Parquet file's footer and page headers before polars decodes it.
//!
//! polars-parquet trusts the counts in page headers: a data page that claims a negative number of values made it
//! allocate 2^61 bytes and abort the process (found by the fuzzer, `tests/fixtures/fuzz_parquet_abort.parquet`), and
//! an allocation failure cannot be caught. So every count and size the decoder will allocate by is read here first,
//! with the Thrift structures of `polars-parquet-format` (the crate polars itself parses them with), and checked:
//! non-negative, inside the file, consistent with the column chunk, and within the machine's memory.

use std::io::Cursor;
use std::path::Path;

use polars_parquet_format::thrift::protocol::TCompactInputProtocol;
use polars_parquet_format::{ColumnMetaData, Encoding, FileMetaData, PageHeader, PageType};

use crate::error::{Error, Result};

/// Largest page header we parse (the Thrift reader refuses to read more bytes).
const MAX_HEADER_BYTES: usize = 16 << 20;
/// Bytes a decoded value may take at most in memory before strings (offsets, validity, the value).
const BYTES_PER_VALUE: u64 = 16;

/// The encodings polars decodes (it unwraps the conversion of any other value: a panic).
const KNOWN_ENCODINGS: [Encoding; 9] = [
    Encoding::PLAIN,
    Encoding::PLAIN_DICTIONARY,
    Encoding::RLE,
    Encoding::BIT_PACKED,
    Encoding::DELTA_BINARY_PACKED,
    Encoding::DELTA_LENGTH_BYTE_ARRAY,
    Encoding::DELTA_BYTE_ARRAY,
    Encoding::RLE_DICTIONARY,
    Encoding::BYTE_STREAM_SPLIT,
];

fn known(e: Encoding, pos: usize, what: &str) -> std::result::Result<(), String> {
    if KNOWN_ENCODINGS.contains(&e) {
        Ok(())
    } else {
        Err(format!("the page at byte {pos} names an unknown {what} encoding ({})", e.0))
    }
}

/// Checks `bytes` (the whole file at `path`) for the columns whose top-level names are in `columns` (all when
/// `None`): footer, row counts, column chunk ranges and every page header. `memory_limit` bounds what the decoded
/// columns may take, estimated from the metadata.
pub fn check(path: &Path, bytes: &[u8], columns: Option<&[String]>, memory_limit: Option<u64>) -> Result<()> {
    let corrupt =
        |column: Option<&str>, what: String| Error::input(path, column, format!("corrupt Parquet file: {what}"));
    let meta = footer(bytes).map_err(|w| corrupt(None, w))?;
    let footer_start = bytes.len() - 8 - footer_len(bytes).unwrap_or(0);
    if meta.num_rows < 0 {
        return Err(corrupt(None, format!("the footer claims {} rows", meta.num_rows)));
    }
    let mut rows = 0i64;
    let mut estimate = 0u64;
    let mut largest: Option<(String, u64)> = None;
    for (g, group) in meta.row_groups.iter().enumerate() {
        if group.num_rows < 0 {
            return Err(corrupt(None, format!("row group {g} claims {} rows", group.num_rows)));
        }
        rows = rows.saturating_add(group.num_rows);
        for chunk in &group.columns {
            let Some(cm) = &chunk.meta_data else {
                return Err(corrupt(None, format!("a column chunk of row group {g} has no metadata")));
            };
            let name = cm.path_in_schema.first().map(String::as_str).unwrap_or("?");
            if columns.is_some_and(|cols| !cols.iter().any(|c| c == name)) {
                continue;
            }
            let column = cm.path_in_schema.join(".");
            // Every row stores at least one value (null or an empty list included) in every column.
            if cm.num_values < group.num_rows {
                return Err(corrupt(
                    Some(&column),
                    format!("row group {g} has {} rows but this column {} values", group.num_rows, cm.num_values),
                ));
            }
            pages(bytes, footer_start, cm).map_err(|w| corrupt(Some(&column), format!("row group {g}: {w}")))?;
            let bytes_needed = (cm.num_values as u64)
                .saturating_mul(BYTES_PER_VALUE)
                .saturating_add(cm.total_uncompressed_size.max(0) as u64);
            estimate = estimate.saturating_add(bytes_needed);
            if largest.as_ref().is_none_or(|(_, b)| bytes_needed > *b) {
                largest = Some((column, bytes_needed));
            }
        }
    }
    if rows != meta.num_rows {
        return Err(corrupt(None, format!("the footer claims {} rows, its row groups {rows}", meta.num_rows)));
    }
    if let (Some(limit), Some((column, _))) = (memory_limit, largest) {
        if estimate > limit {
            return Err(Error::input(
                path,
                Some(&column),
                format!(
                    "the file's metadata claims columns of about {} once decoded, more than the {} this job may use \
                     (largest column shown; a corrupt file, or set job.max_memory on a larger machine)",
                    crate::runtime::memory::human(estimate),
                    crate::runtime::memory::human(limit)
                ),
            ));
        }
    }
    Ok(())
}

fn footer_len(bytes: &[u8]) -> Option<usize> {
    let n = bytes.len();
    let tail = bytes.get(n.checked_sub(8)?..)?;
    let len = i32::from_le_bytes(tail[..4].try_into().ok()?);
    usize::try_from(len).ok()
}

/// Parses the footer: `<metadata> <4-byte length> PAR1` after a leading `PAR1`.
fn footer(bytes: &[u8]) -> std::result::Result<FileMetaData, String> {
    let n = bytes.len();
    if n < 12 || &bytes[..4] != b"PAR1" || &bytes[n - 4..] != b"PAR1" {
        return Err("no PAR1 magic at its start and end (not a Parquet file, or truncated)".into());
    }
    let len = footer_len(bytes).ok_or("the footer length is negative")?;
    if len > n - 12 {
        return Err(format!("the footer claims {len} bytes, more than the file holds"));
    }
    let raw = &bytes[n - 8 - len..n - 8];
    // The budget bounds what the decoder may allocate (list counts × 8 B, 2 B per struct, strings); vectors grow only
    // as elements are actually decoded, so a few times the footer's size is plenty.
    let mut prot = TCompactInputProtocol::new(Cursor::new(raw), raw.len().saturating_mul(64).max(1 << 20));
    FileMetaData::read_from_in_protocol(&mut prot).map_err(|e| format!("the footer does not decode ({e})"))
}

/// Walks the page headers of one column chunk and checks every count and size in them.
fn pages(bytes: &[u8], end_of_data: usize, cm: &ColumnMetaData) -> std::result::Result<(), String> {
    let nonneg = |v: i64, what: &str| -> std::result::Result<u64, String> {
        u64::try_from(v).map_err(|_| format!("{what} is {v}"))
    };
    let values = nonneg(cm.num_values, "the column chunk's value count")?;
    let size = nonneg(cm.total_compressed_size, "the column chunk's compressed size")?;
    nonneg(cm.total_uncompressed_size, "the column chunk's uncompressed size")?;
    let start = match cm.dictionary_page_offset {
        Some(d) => nonneg(d, "the dictionary page offset")?,
        None => nonneg(cm.data_page_offset, "the data page offset")?,
    };
    let end = start.checked_add(size).filter(|&e| start >= 4 && e <= end_of_data as u64).ok_or_else(|| {
        format!("the column chunk (bytes {start}..{}) lies outside the file's data", start.saturating_add(size))
    })? as usize;
    let mut pos = start as usize;
    let mut seen = 0u64;
    while seen < values {
        if pos >= end {
            return Err(format!("its pages hold {seen} values, the column chunk claims {values}"));
        }
        let mut cursor = Cursor::new(&bytes[pos..end]);
        let header = {
            let mut prot = TCompactInputProtocol::new(&mut cursor, MAX_HEADER_BYTES);
            PageHeader::read_from_in_protocol(&mut prot)
                .map_err(|e| format!("the page header at byte {pos} does not decode ({e})"))?
        };
        let body = pos + cursor.position() as usize;
        let at = |what: &str, v: i32| format!("the page at byte {pos} claims {v} {what}");
        let compressed = usize::try_from(header.compressed_page_size)
            .map_err(|_| at("compressed bytes", header.compressed_page_size))?;
        usize::try_from(header.uncompressed_page_size)
            .map_err(|_| at("uncompressed bytes", header.uncompressed_page_size))?;
        if compressed > end - body {
            return Err(format!("the page at byte {pos} claims {compressed} bytes, past the end of its column chunk"));
        }
        let count = |v: i32, what: &str| u64::try_from(v).map_err(|_| at(what, v));
        match header.type_ {
            PageType::DICTIONARY_PAGE => {
                let h =
                    header.dictionary_page_header.as_ref().ok_or_else(|| at("a dictionary without its header:", 0))?;
                count(h.num_values, "dictionary values")?;
            }
            PageType::DATA_PAGE => {
                let h = header.data_page_header.as_ref().ok_or_else(|| at("a data page without its header:", 0))?;
                known(h.encoding, pos, "value")?;
                known(h.definition_level_encoding, pos, "definition level")?;
                known(h.repetition_level_encoding, pos, "repetition level")?;
                seen = seen.saturating_add(count(h.num_values, "values")?);
            }
            PageType::DATA_PAGE_V2 => {
                let h = header.data_page_header_v2.as_ref().ok_or_else(|| at("a data page without its header:", 0))?;
                let n = count(h.num_values, "values")?;
                known(h.encoding, pos, "value")?;
                if count(h.num_nulls, "nulls")? > n || count(h.num_rows, "rows")? > n {
                    return Err(format!(
                        "the page at byte {pos} claims {} nulls and {} rows in {n} values",
                        h.num_nulls, h.num_rows
                    ));
                }
                let levels = count(h.definition_levels_byte_length, "definition level bytes")?
                    + count(h.repetition_levels_byte_length, "repetition level bytes")?;
                if levels > compressed as u64 {
                    return Err(format!(
                        "the page at byte {pos} claims {levels} level bytes in a {compressed}-byte page"
                    ));
                }
                seen = seen.saturating_add(n);
            }
            _ => {}
        }
        pos = body + compressed;
    }
    if seen > values {
        return Err(format!("its pages hold {seen} values, the column chunk claims {values}"));
    }
    Ok(())
}
