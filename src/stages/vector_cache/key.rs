//! The cache key: everything that changes a document's vector besides its text. Two runs share cached vectors only
//! when every part is equal; a change of any part (the model's files, pooling, `max_tokens`, precision, the backend
//! or its device, embjob's encoder revision) gives another key, so its vectors are simply not found.

use sha2::{Digest, Sha256};

use crate::backend::{BackendKind, BackendReport};
use crate::data::fingerprint::fingerprint;
use crate::error::Result;
use crate::plan::ContextualPlan;

/// embjob's revision of the encoder's arithmetic: raised whenever a change to the encoder, its kernels or its
/// pooling can change a vector's bits, so that no vector of an earlier revision is read.
pub const ENCODER_REVISION: u32 = 1;

/// A cache key: its SHA-256 (hex, written in every cached row) and the parts it was made of (`key.json`).
#[derive(Debug, Clone)]
pub struct CacheKey {
    pub id: String,
    pub parts: serde_json::Value,
}

impl CacheKey {
    /// The key of `plan`'s vectors computed on `report`'s backend in `precision`: reads the model's three files.
    pub fn of(plan: &ContextualPlan, report: &BackendReport, precision: &serde_json::Value) -> Result<CacheKey> {
        let folder = &plan.folder;
        let mut files = serde_json::Map::new();
        for path in [folder.weights_file(), folder.dir.join("config.json"), folder.tokenizer_file()] {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            files.insert(name, fingerprint(&path)?.sha256.into());
        }
        let e = &plan.encode;
        let parts = serde_json::json!({
            "encoder_revision": ENCODER_REVISION,
            "model_files_sha256": files,
            "pooling": format!("{:?}", e.pooling),
            "normalize": e.normalize,
            "max_tokens": e.max_tokens,
            "truncate": e.truncate,
            "precision": precision,
            "backend": report.used,
            "device": device(report),
        });
        Ok(CacheKey::from_parts(parts))
    }

    /// The key of given parts.
    pub fn from_parts(parts: serde_json::Value) -> CacheKey {
        let bytes = serde_json::to_vec(&parts).unwrap_or_default();
        CacheKey { id: hex(&Sha256::digest(&bytes)), parts }
    }

    /// The key's folder name in the cache: the first 16 hex digits of its id.
    pub fn folder_name(&self) -> &str {
        &self.id[..16]
    }
}

/// What the vectors' bits can depend on besides the backend: the GPU adapter and its driver, or the CPU's
/// architecture and the vector instructions the CPU kernels choose between.
fn device(report: &BackendReport) -> serde_json::Value {
    match (report.used, &report.adapter) {
        (BackendKind::Gpu, Some(a)) => serde_json::json!({
            "adapter": a.name, "backend": a.backend, "driver": a.driver, "driver_info": a.driver_info,
        }),
        _ => serde_json::json!({ "arch": std::env::consts::ARCH, "simd": cpu_features() }),
    }
}

#[cfg(target_arch = "x86_64")]
fn cpu_features() -> Vec<&'static str> {
    let mut f = Vec::new();
    if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bw") {
        f.push("avx512");
    }
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        f.push("avx2+fma");
    }
    f
}

#[cfg(not(target_arch = "x86_64"))]
fn cpu_features() -> Vec<&'static str> {
    Vec::new()
}

/// Bytes as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// A SHA-256 digest from its 64 hex digits (either case), if that is what `s` is.
pub fn unhex32(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let val = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (val(b[2 * i])? << 4) | val(b[2 * i + 1])?;
    }
    Some(out)
}
