//! Memory plans: what the heavy stages will allocate, stated before they run and checked against `job.max_memory`,
//! so a run that cannot fit stops at once with the tensor that does not fit instead of failing half-way.

use crate::error::{Error, Result};

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

/// `elems` values of `width` bytes (saturating).
pub fn item(what: String, elems: u64, width: u64) -> Item {
    Item { what, bytes: elems.saturating_mul(width) }
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

/// Peak resident memory of this process so far, in MB (Linux; 0 elsewhere).
pub fn peak_rss_mb() -> f64 {
    status_mb("VmHWM:")
}

/// Resident memory of this process now, in MB (Linux; 0 elsewhere).
pub fn rss_mb() -> f64 {
    status_mb("VmRSS:")
}

/// A field of /proc/self/status given in kB, in MB.
fn status_mb(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
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
