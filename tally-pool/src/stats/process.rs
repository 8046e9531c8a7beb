//! What a report says about the process and the moment, read from the OS: the pid, the
//! resident set, the tightest cgroup memory limit, and the time as RFC 3339.
//!
//! Each report reads `/proc/self/statm`, `/proc/self/cgroup` and a few small cgroup files;
//! anything unreadable is reported as `None` (`null`), never as an error.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::report::ProcessSection;

/// Where cgroup hierarchies are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Limits at or above this are "no limit": cgroup v1 writes `LONG_MAX` rounded down to a
/// page (`9223372036854771712`) when unlimited.
const UNLIMITED: u64 = 1 << 62;

/// The process section of a report, read now.
pub(crate) fn read() -> ProcessSection {
    let proc_cgroup = fs::read_to_string("/proc/self/cgroup").ok();
    ProcessSection {
        pid: std::process::id(),
        rss_bytes: rss_bytes(),
        limit_bytes: proc_cgroup
            .as_deref()
            .and_then(|text| cgroup_limit(Path::new(CGROUP_ROOT), text)),
    }
}

/// Resident pages (the second field of `/proc/self/statm`) × the page size.
fn rss_bytes() -> Option<u64> {
    let statm = fs::read_to_string("/proc/self/statm").ok()?;
    parse_statm(&statm, page_size()?)
}

fn parse_statm(statm: &str, page_size: u64) -> Option<u64> {
    let pages: u64 = statm.split_ascii_whitespace().nth(1)?.parse().ok()?;
    pages.checked_mul(page_size)
}

#[cfg(unix)]
fn page_size() -> Option<u64> {
    // SAFETY: `sysconf` has no preconditions: it reads a system constant and returns -1
    // for an unknown name, which `try_from` turns into `None`.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|&size| size > 0)
}

#[cfg(not(unix))]
fn page_size() -> Option<u64> {
    None
}

/// The tightest memory limit over the cgroups `proc_cgroup` (the text of
/// `/proc/self/cgroup`) names and their ancestors, under the hierarchies mounted at
/// `root`: v2 `memory.max` (under `root` or `root/unified` on hybrid systems) and v1
/// `memory.limit_in_bytes` (under `root/memory`). Paths that do not exist (a cgroup
/// namespace hides the outer levels) are skipped; `max`, unlimited and unreadable values
/// count as no limit.
fn cgroup_limit(root: &Path, proc_cgroup: &str) -> Option<u64> {
    limit_files(root, proc_cgroup)
        .iter()
        .filter_map(|file| fs::read_to_string(file).ok())
        .filter_map(|text| parse_limit(&text))
        .min()
}

/// Every file that may hold a memory limit on this process, innermost first.
fn limit_files(root: &Path, proc_cgroup: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for line in proc_cgroup.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(hierarchy), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let relative = Path::new(path.trim_start_matches('/'));
        let (bases, file) = if hierarchy == "0" && controllers.is_empty() {
            (vec![root.to_path_buf(), root.join("unified")], "memory.max")
        } else if controllers.split(',').any(|c| c == "memory") {
            (vec![root.join("memory")], "memory.limit_in_bytes")
        } else {
            continue;
        };
        for base in bases {
            files.extend(relative.ancestors().map(|dir| base.join(dir).join(file)));
        }
    }
    files
}

/// A limit file's value: bytes, or `None` for `max`, unlimited or garbage.
fn parse_limit(text: &str) -> Option<u64> {
    text.trim()
        .parse::<u64>()
        .ok()
        .filter(|&bytes| bytes < UNLIMITED)
}

/// `time` as RFC 3339 in UTC, to the second: `2026-12-04T17:05:09Z`. Times before the
/// epoch round down to the second before.
pub(crate) fn rfc3339(time: SystemTime) -> String {
    let secs: i64 = match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => {
            let before = before.duration();
            let whole = i64::try_from(before.as_secs()).unwrap_or(i64::MAX);
            let rounded = if before.subsec_nanos() > 0 {
                whole.saturating_add(1)
            } else {
                whole
            };
            rounded.saturating_neg()
        }
    };
    let (days, of_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// The proleptic Gregorian date of `days` since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`): eras of 400 years, years starting in March so the leap day is last.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days.saturating_add(719_468);
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097); // [0, 146096]
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365; // [0, 399]
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100); // [0, 365]
    let month_from_march = (5 * day_of_year + 2) / 153; // [0, 11]
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1; // [1, 31]
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // Both are in range by construction; the fallbacks are never taken.
    (
        year,
        u32::try_from(month).unwrap_or(1),
        u32::try_from(day).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: i64) -> String {
        let time = if secs >= 0 {
            UNIX_EPOCH + Duration::from_secs(secs as u64)
        } else {
            UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
        };
        rfc3339(time)
    }

    #[test]
    fn known_instants() {
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(1_796_403_909), "2026-12-04T17:05:09Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(at(4_107_585_600), "2100-03-01T12:00:00Z");
        assert_eq!(at(253_402_300_799), "9999-12-31T23:59:59Z");
        assert_eq!(at(-1), "1969-12-31T23:59:59Z");
        assert_eq!(at(-2_208_988_800), "1900-01-01T00:00:00Z");
    }

    #[test]
    fn subseconds_are_cut() {
        let t = UNIX_EPOCH + Duration::from_millis(1_796_403_909_999);
        assert_eq!(rfc3339(t), "2026-12-04T17:05:09Z");
        let t = UNIX_EPOCH - Duration::from_millis(1);
        assert_eq!(rfc3339(t), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn now_looks_like_rfc3339() {
        let now = rfc3339(SystemTime::now());
        assert_eq!(now.len(), 20);
        assert!(now.ends_with('Z'));
        assert_eq!(&now[10..11], "T");
    }

    #[test]
    fn statm() {
        assert_eq!(
            parse_statm("1000 250 30 1 0 100 0\n", 4096),
            Some(250 * 4096)
        );
        assert_eq!(parse_statm("1000", 4096), None);
        assert_eq!(parse_statm("a b", 4096), None);
        assert_eq!(parse_statm("1 18446744073709551615", 4096), None);
    }

    #[test]
    fn this_process() {
        let p = read();
        assert_eq!(p.pid, std::process::id());
        if cfg!(target_os = "linux") {
            assert!(p.rss_bytes.is_some_and(|rss| rss > 0));
        }
    }

    #[test]
    fn limit_values() {
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("9223372036854771712\n"), None);
        assert_eq!(parse_limit("1073741824\n"), Some(1 << 30));
        assert_eq!(parse_limit(""), None);
    }

    /// A fake `/sys/fs/cgroup` with the given files.
    fn fake_root(name: &str, files: &[(&str, &str)]) -> PathBuf {
        let root = std::env::temp_dir().join(format!("tally-cgroup-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        for (path, text) in files {
            let file = root.join(path);
            fs::create_dir_all(file.parent().unwrap()).unwrap();
            fs::write(file, text).unwrap();
        }
        root
    }

    #[test]
    fn v2_takes_the_tightest_ancestor() {
        let root = fake_root(
            "v2",
            &[
                ("memory.max", "max\n"),
                ("app/memory.max", "1073741824\n"),
                ("app/worker/memory.max", "max\n"),
            ],
        );
        assert_eq!(cgroup_limit(&root, "0::/app/worker\n"), Some(1 << 30));
        assert_eq!(cgroup_limit(&root, "0::/\n"), None);
        assert_eq!(cgroup_limit(&root, "0::/elsewhere\n"), None);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn v1_and_hybrid() {
        let root = fake_root(
            "v1",
            &[
                ("memory/memory.limit_in_bytes", "9223372036854771712\n"),
                ("memory/job/memory.limit_in_bytes", "536870912\n"),
                ("unified/memory.max", "268435456\n"),
            ],
        );
        let text = "4:memory:/job\n3:cpu,cpuacct:/job\n";
        assert_eq!(cgroup_limit(&root, text), Some(512 << 20));
        let hybrid = "4:memory:/job\n0::/\n";
        assert_eq!(cgroup_limit(&root, hybrid), Some(256 << 20));
        assert_eq!(cgroup_limit(&root, "garbage\n1:cpu:/\n"), None);
        fs::remove_dir_all(root).unwrap();
    }
}
