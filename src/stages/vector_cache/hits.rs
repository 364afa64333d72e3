//! Cached vectors read back for the rows that use them: a segment's row group at a time
//! ([`SEGMENT_ROW_GROUP`] rows), the last one read of each segment kept, so a run whose rows come in the order they
//! were cached reads every row group once.

use std::collections::HashMap;

use super::store::Segment;
use crate::data::cache_segments::{read_segment_vectors, SEGMENT_ROW_GROUP};
use crate::error::{Error, Result};

pub struct HitReader {
    paths: Vec<std::path::PathBuf>,
    dim: usize,
    /// Per segment: the row group held and its vectors.
    held: HashMap<u32, (usize, Vec<f32>)>,
    /// Row groups read so far.
    pub groups_read: usize,
}

impl HitReader {
    pub fn new(segments: &[(Segment, bool)], dim: usize) -> HitReader {
        HitReader {
            paths: segments.iter().map(|(s, _)| s.path.clone()).collect(),
            dim,
            held: HashMap::new(),
            groups_read: 0,
        }
    }

    /// Row `index` of segment `segment`'s vector.
    pub fn vector(&mut self, segment: u32, index: u32) -> Result<&[f32]> {
        let group = index as usize / SEGMENT_ROW_GROUP;
        let path = self.paths.get(segment as usize).ok_or_else(|| Error::Internal("no such cache segment".into()))?;
        let stale = self.held.get(&segment).is_none_or(|(g, _)| *g != group);
        if stale {
            let (dim, values) = read_segment_vectors(path, group * SEGMENT_ROW_GROUP, SEGMENT_ROW_GROUP)?;
            if dim != self.dim {
                return Err(Error::input(path, Some("vector"), format!("vectors of {dim} values, not {}", self.dim)));
            }
            self.held.insert(segment, (group, values));
            self.groups_read += 1;
        }
        let (_, values) = &self.held[&segment];
        let at = (index as usize % SEGMENT_ROW_GROUP) * self.dim;
        values
            .get(at..at + self.dim)
            .ok_or_else(|| Error::input(path, None, format!("row {index} is past the end of the segment")))
    }
}
