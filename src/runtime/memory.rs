//! Memory plans: what the heavy stages will allocate, stated before they run and checked against `job.max_memory`,
//! so a run that cannot fit stops at once with the tensor that does not fit instead of failing half-way.

use crate::error::{Error, Result};
use crate::pca::Solver;

/// One planned allocation.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub what: String,
    pub bytes: u64,
}

/// Human-readable size: "6.3 MB".
pub fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.1} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else {
        format!("{:.1} kB", b / 1e3)
    }
}

/// This machine's physical memory (MemTotal of /proc/meminfo), `None` where it cannot be read.
pub fn physical() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

fn item(what: String, elems: u64, width: u64) -> Item {
    Item { what, bytes: elems.saturating_mul(width) }
}

/// The contextual stage's allocations: the encoder's weights, its activations at the batch budget (attention
/// scores live in workgroup memory, one query row at a time: no seq × seq buffer), and the document vectors.
pub fn contextual(
    weights: u64,
    activations: u64,
    documents: usize,
    dim: usize,
    device: crate::backend::BackendKind,
) -> Vec<Item> {
    vec![
        Item { what: format!("encoder weights on {device}"), bytes: weights },
        Item { what: format!("activations at the batch budget on {device}"), bytes: activations },
        item(
            format!("vectors of one window of up to {documents} documents × {dim} × 4 B"),
            (documents * dim) as u64,
            4,
        ),
    ]
}

/// The PCA stage's main allocations for an n×p input, k components.
pub fn pca(n: usize, p: usize, solver: Solver, k: usize, oversamples: usize) -> Vec<Item> {
    let (n, p, k) = (n as u64, p as u64, k as u64);
    match solver {
        Solver::Covariance => vec![item(format!("covariance {p} × {p} × 8 B (and its eigenvectors)"), 2 * p * p, 8)],
        Solver::Gram => vec![item(format!("Gram matrix {n} × {n} × 8 B (and its eigenvectors)"), 2 * n * n, 8)],
        Solver::Lanczos => {
            let lp = crate::linalg::krylov::LanczosParams::for_k(k as usize);
            let (block, cols) = (lp.block as u64, (lp.max_basis + lp.block) as u64);
            let m = n.min(p);
            vec![
                item(format!("Lanczos basis {m} × {cols} × 8 B"), m * cols, 8),
                item(format!("block products ({n} + 4 × {p}) × {block} × 8 B"), (n + 4 * p) * block, 8),
            ]
        }
        Solver::Randomized => {
            let l = k + oversamples as u64;
            vec![item(format!("random ranges ({n} + {p}) × {l} × 8 B, three copies"), 3 * (n + p) * l, 8)]
        }
    }
}

/// The model stage's main allocations: parameters with gradients and Adam moments, and the batch workspace (on the
/// CPU with the full softmax, the blocked output layer's statistics per row and block of items too). With
/// `negatives` (the sampled softmax) the logits cover the batch's candidates (at most negatives + batch) and, on a
/// GPU, the evaluation's rows over all items (see [`crate::recommend::model::eval_rows`]), and the candidates' output columns
/// twice.
pub fn model(
    items: usize,
    dim: usize,
    hidden: usize,
    batch: usize,
    negatives: Option<usize>,
    device: crate::backend::BackendKind,
) -> Vec<Item> {
    let (v, d, h, b) = (items as u64, dim as u64, hidden as u64, batch as u64);
    let pre = if h > 0 { h } else { d };
    let params = v * d + d * h + h + pre * v + v;
    let mut plan = match negatives {
        None => {
            vec![item(format!("parameters, gradients and Adam moments 4 × {params} × 4 B on {device}"), 4 * params, 4)]
        }
        // The sampled softmax's output layer has compact gradients (the candidates' rows).
        Some(_) => {
            let out = pre * v + v;
            vec![item(
                format!(
                    "parameters and Adam moments 3 × {params} × 4 B, gradients of the input side {} × 4 B on {device}",
                    params - out
                ),
                3 * params + (params - out),
                4,
            )]
        }
    };
    match negatives {
        None => {
            plan.push(item(format!("logits {b} × {v} × 4 B on {device}"), b * v, 4));
            if device == crate::backend::BackendKind::Cpu {
                // The blocked output layer's per-row statistics and factors of each block of items.
                let blocks = v.div_ceil(crate::backend::cpu_kernels::OUTPUT_BLOCK as u64);
                plan.push(item(format!("output layer blocks {b} × {blocks} × 16 B on {device}"), b * blocks * 4, 4));
            }
        }
        Some(n) => {
            let c = (n as u64 + b).min(v);
            if device == crate::backend::BackendKind::Cpu {
                plan.push(item(format!("logits {b} × {c} candidates × 4 B on {device}"), b * c, 4));
            } else {
                let rows = crate::recommend::model::eval_rows(items, batch, true, device) as u64;
                plan.push(item(
                    format!("logits max({b} × {c} candidates, {rows} evaluation rows × {v}) × 4 B on {device}"),
                    (b * c).max(rows * v),
                    4,
                ));
            }
            plan.push(item(format!("candidate columns 2 × {pre} × {c} × 4 B on {device}"), 2 * pre * c, 4));
        }
    }
    plan.push(item(format!("activations {b} × ({d} + {h}) × 8 B on {device}"), b * (d + h) * 2, 4));
    plan
}

/// One line stating a plan, e.g. "pca: covariance 240 × 240 × 8 B = 0.9 MB; total 0.9 MB".
pub fn describe(stage: &str, plan: &[Item]) -> String {
    let total: u64 = plan.iter().map(|i| i.bytes).sum();
    let parts: Vec<String> = plan.iter().map(|i| format!("{} = {}", i.what, human(i.bytes))).collect();
    format!("memory plan, {stage}: {}; total {}", parts.join("; "), human(total))
}

/// Refuses a plan over `limit` bytes, naming its largest allocation.
pub fn check(stage: &'static str, plan: &[Item], limit: Option<u64>) -> Result<()> {
    check_against(stage, plan, limit.map(|l| (l, "job.max_memory")))
}

/// [`check`] with this machine's memory as the limit when `job.max_memory` is not set: sizes come from the config
/// and the data, and a plan larger than the machine cannot run (the allocation would abort the process).
pub fn check_or_physical(stage: &'static str, plan: &[Item], limit: Option<u64>) -> Result<()> {
    match limit {
        Some(l) => check_against(stage, plan, Some((l, "job.max_memory"))),
        None => check_against(stage, plan, physical().map(|p| (p, "this machine's memory"))),
    }
}

fn check_against(stage: &'static str, plan: &[Item], limit: Option<(u64, &str)>) -> Result<()> {
    let Some((limit, what)) = limit else { return Ok(()) };
    let total: u64 = plan.iter().map(|i| i.bytes).sum();
    if total > limit {
        let largest =
            plan.iter().max_by_key(|i| i.bytes).map_or(String::new(), |i| format!("{} = {}", i.what, human(i.bytes)));
        return Err(Error::Stage {
            stage,
            message: format!("needs about {} (largest: {largest}), over {what} = {}", human(total), human(limit)),
        });
    }
    Ok(())
}

/// Parses a size: an integer number of bytes, or a number with kB / MB / GB / KiB / MiB / GiB.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: f64 = num.parse().ok()?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let bytes = num * mult;
    (bytes.is_finite() && bytes >= 1.0).then_some(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("2GiB"), Some(2 << 30));
        assert_eq!(parse_size("1.5 MB"), Some(1_500_000));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("0"), None);
    }
}
