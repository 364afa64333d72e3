//! The encoder cache: document vectors kept by the SHA-256 of their text under a key of everything else that
//! changes them ([`key`]), so a nightly run encodes only what changed. In parts:
//!
//! * `key.rs`: the key and its parts (`key.json`);
//! * `store.rs`: a key's folder, its lock, its segments checked against their checksums;
//! * `rows.rs`: each row's source (encoded, cached, a duplicate of an earlier row);
//! * `hits.rs`: cached vectors read back a row group at a time;
//! * `publish.rs`: a run's new vectors staged, brought in before the commit, published after it;
//! * `maintain.rs`: expiry and compaction.
//!
//! Layout: `<cache_dir>/<first 16 hex digits of the key>/{key.json, .lock, seg-<sha256>.parquet, …}`.

mod hits;
mod key;
mod maintain;
mod publish;
mod rows;
mod store;

pub use hits::HitReader;
pub use key::{CacheKey, ENCODER_REVISION};
pub use maintain::{maintain, MAX_SEGMENTS};
pub use publish::{Incoming, NewSegment, StagedSegment, STAGED_FILE};
pub use rows::{plan_rows, text_digest, RowPlan, Source};
pub use store::{touch, CacheStore, Segment};
