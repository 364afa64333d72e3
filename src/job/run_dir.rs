//! The output folder: each run writes into a hidden staging folder that becomes `runs/<run_id>` only when complete;
//! `latest` is a symlink switched by an atomic rename. A failed or killed run leaves `latest` and every earlier run
//! untouched; the next run removes what a killed one left behind.
//!
//! ```text
//! <output.dir>/
//!   latest -> runs/20261126T054012123Z
//!   runs/20261126T054012123Z/{vocabulary,bow,metrics}.parquet, run.json, ...
//!   runs/.staging-<run_id>-<pid>/      (only while a run is in progress)
//! ```

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::error::{Error, Result};

pub(crate) const STAGING_PREFIX: &str = ".staging-";

/// A run's staging folder; removed on drop unless committed.
#[derive(Debug)]
pub struct Staging {
    output_dir: PathBuf,
    dir: PathBuf,
    run_id: String,
    committed: bool,
}

impl Staging {
    /// Creates `<output_dir>/runs/.staging-<run_id>-<pid>`, first removing staging folders of dead processes.
    pub fn create(output_dir: &Path) -> Result<Staging> {
        let runs = output_dir.join("runs");
        std::fs::create_dir_all(&runs).map_err(|e| Error::output(&runs, "cannot create the output folder", e))?;
        remove_stale_staging(&runs);
        let run_id = new_run_id(&runs);
        let dir = runs.join(format!("{STAGING_PREFIX}{run_id}-{}", std::process::id()));
        std::fs::create_dir(&dir).map_err(|e| Error::output(&dir, "cannot create the staging folder", e))?;
        Ok(Staging { output_dir: output_dir.to_owned(), dir, run_id, committed: false })
    }

    /// The run's id: a UTC timestamp, unique within the output folder.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The staging folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of an output file inside the staging folder.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Makes the run visible: renames it to `runs/<run_id>`, points `latest` at it, then keeps the newest `keep_runs`
    /// runs. Returns the run's final folder.
    pub fn commit(mut self, keep_runs: usize) -> Result<PathBuf> {
        let runs = self.output_dir.join("runs");
        let final_dir = runs.join(&self.run_id);
        sync_dir(&self.dir);
        std::fs::rename(&self.dir, &final_dir)
            .map_err(|e| Error::output(&final_dir, "cannot move the run into place", e))?;
        self.committed = true;
        sync_dir(&runs);
        switch_latest(&self.output_dir, &self.run_id)?;
        prune(&runs, keep_runs, &self.run_id);
        Ok(final_dir)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Points `<output_dir>/latest` at `runs/<run_id>` with one rename of a fresh symlink over the old one.
fn switch_latest(output_dir: &Path, run_id: &str) -> Result<()> {
    let latest = output_dir.join("latest");
    let tmp = output_dir.join(format!(".latest-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let target = Path::new("runs").join(run_id);
    #[cfg(unix)]
    std::os::unix::fs::symlink(&target, &tmp).map_err(|e| Error::output(&tmp, "cannot create the latest link", e))?;
    #[cfg(not(unix))]
    std::fs::write(&tmp, target.to_string_lossy().as_bytes())
        .map_err(|e| Error::output(&tmp, "cannot create the latest pointer", e))?;
    std::fs::rename(&tmp, &latest).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::output(&latest, "cannot switch latest to the new run", e)
    })?;
    sync_dir(output_dir);
    Ok(())
}

/// The run folders under `runs/`, oldest first (ids sort by time).
pub fn list_runs(runs: &Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(runs)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().is_dir())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

fn prune(runs: &Path, keep_runs: usize, current: &str) {
    let ids = list_runs(runs);
    let excess = ids.len().saturating_sub(keep_runs.max(1));
    for id in ids.iter().take(excess).filter(|id| id.as_str() != current) {
        let _ = std::fs::remove_dir_all(runs.join(id));
    }
}

/// Removes staging folders whose process is gone (a killed run). Only on systems with `/proc`; elsewhere they stay.
pub(crate) fn remove_stale_staging(runs: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(rd) = std::fs::read_dir(runs) else { return };
    for entry in rd.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(STAGING_PREFIX) else { continue };
        let alive = rest
            .rsplit('-')
            .next()
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_some_and(|pid| Path::new("/proc").join(pid.to_string()).exists());
        if !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn new_run_id(runs: &Path) -> String {
    let base = utc_timestamp(SystemTime::now());
    let mut id = base.clone();
    let mut n = 1;
    while runs.join(&id).exists() {
        n += 1;
        id = format!("{base}-{n}");
    }
    id
}

/// `YYYYMMDDTHHMMSSmmmZ` in UTC.
pub fn utc_timestamp(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let (y, mo, da, h, mi, s) = civil(d.as_secs());
    format!("{y:04}{mo:02}{da:02}T{h:02}{mi:02}{s:02}{:03}Z", d.subsec_millis())
}

/// RFC 3339 UTC time with milliseconds.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let (y, mo, da, h, mi, s) = civil(d.as_secs());
    format!("{y:04}-{mo:02}-{da:02}T{h:02}:{mi:02}:{s:02}.{:03}Z", d.subsec_millis())
}

/// Seconds since the epoch to (year, month, day, hour, minute, second), proleptic Gregorian (H. Hinnant's algorithm).
fn civil(secs: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, (rem / 3600) as u32, (rem % 3600 / 60) as u32, (rem % 60) as u32)
}

pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(civil(951_782_400), (2000, 2, 29, 0, 0, 0));
        assert_eq!(civil(1_795_668_012), (2026, 11, 26, 4, 40, 12));
    }
}
