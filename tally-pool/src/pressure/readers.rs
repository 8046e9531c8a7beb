//! Reading the OS sources under a root directory (`/` outside tests): cgroup v2 and v1,
//! the rlimits, the system's memory and PSI.
//!
//! Paths are found once, when the monitor starts ([`Readers::new`]); each tick reads the
//! files into one reused buffer, so a tick allocates nothing once the buffer has grown to
//! the largest file. A file that is missing, unreadable or malformed skips its source for
//! that tick ([`Skip`]) and never panics.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::source::{Skip, Slot};
use crate::sys::limits::{self, Rlimit};

/// A cgroup v1 limit at or above this is "unlimited" (the kernel writes
/// `0x7FFF_FFFF_FFFF_F000` for no limit).
const V1_UNLIMITED: u64 = 1 << 60;

/// The files of the cgroup v2 directory whose limit applies.
#[derive(Debug)]
struct V2Files {
    max: PathBuf,
    high: PathBuf,
    current: PathBuf,
    stat: PathBuf,
    events: PathBuf,
}

/// The files of the cgroup v1 memory directory whose limit applies.
#[derive(Debug)]
struct V1Files {
    limit: PathBuf,
    usage: PathBuf,
    stat: PathBuf,
}

/// The cgroup found at start.
#[derive(Debug)]
enum Cgroup {
    /// v2: the directory whose limit applies.
    V2(V2Files),
    /// v1: the directory of the memory controller whose limit applies.
    V1(V1Files),
    /// Found, but no ancestor sets a limit.
    Unlimited(Version),
    /// No memory controller found.
    Absent,
}

/// A cgroup version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

/// The readers of every OS source, with their paths resolved under one root.
#[derive(Debug)]
pub(crate) struct Readers {
    /// Whether `root` is `/`: then the rlimits come from `getrlimit`, else from the
    /// fixture's `proc/self/limits`.
    real: bool,
    cgroup: Cgroup,
    buf: String,
    /// `memory.events` `high` + `max` at the previous tick (cgroup v2).
    last_events: Option<u64>,
    /// `proc/self/status`, `proc/self/limits`, `proc/meminfo`, `proc/pressure/memory`.
    status: PathBuf,
    limits: PathBuf,
    meminfo: PathBuf,
    psi: PathBuf,
}

impl Readers {
    /// Finds the sources under `root`.
    pub(crate) fn new(root: &Path) -> Self {
        let mut buf = String::with_capacity(16 * 1024);
        let cgroup = find_cgroup(root, &mut buf);
        Self {
            real: root == Path::new("/"),
            cgroup,
            buf,
            last_events: None,
            status: root.join("proc/self/status"),
            limits: root.join("proc/self/limits"),
            meminfo: root.join("proc/meminfo"),
            psi: root.join("proc/pressure/memory"),
        }
    }

    /// Reads the cgroup sources into `v2` and `v1`.
    pub(crate) fn read_cgroup(&mut self, v2: &mut Slot, v1: &mut Slot) {
        match &self.cgroup {
            Cgroup::V2(files) => {
                v1.skip(Skip::Absent);
                read_v2(&mut self.buf, &mut self.last_events, files, v2);
            }
            Cgroup::V1(files) => {
                v2.skip(Skip::Absent);
                read_v1(&mut self.buf, files, v1);
            }
            Cgroup::Unlimited(version) => {
                let (unlimited, other) = match version {
                    Version::V2 => (v2, v1),
                    Version::V1 => (v1, v2),
                };
                unlimited.skip(Skip::NoLimit);
                other.skip(Skip::Absent);
            }
            Cgroup::Absent => {
                v2.skip(Skip::Absent);
                v1.skip(Skip::Absent);
            }
        }
    }

    /// Reads `RLIMIT_AS` against `VmSize` and `RLIMIT_DATA` against `VmData`; keeps the
    /// one closer to its limit.
    pub(crate) fn read_rlimit(&mut self, slot: &mut Slot) {
        let (as_limit, data_limit) = if self.real {
            (
                limits::soft_limit(Rlimit::AddressSpace),
                limits::soft_limit(Rlimit::Data),
            )
        } else {
            match read_file(&mut self.buf, &self.limits, "limits") {
                Ok(text) => match (
                    limit_line(text, "Max address space"),
                    limit_line(text, "Max data size"),
                ) {
                    (Ok(a), Ok(d)) => (a, d),
                    _ => return slot.skip(Skip::Malformed("limits")),
                },
                Err(skip) => return slot.skip(skip),
            }
        };
        if as_limit.is_none() && data_limit.is_none() {
            return slot.skip(Skip::NoLimit);
        }
        let text = match read_file(&mut self.buf, &self.status, "status") {
            Ok(text) => text,
            Err(skip) => return slot.skip(skip),
        };
        let mut best: Option<(u64, u64)> = None;
        for (limit, key) in [(as_limit, "VmSize:"), (data_limit, "VmData:")] {
            let Some(limit) = limit else { continue };
            let Some(kib) = field(text, key) else {
                return slot.skip(Skip::Malformed("status"));
            };
            let used = kib.saturating_mul(1024);
            let ratio = |(used, limit): (u64, u64)| used as f64 / limit.max(1) as f64;
            if best.is_none_or(|b| ratio(b) < ratio((used, limit))) {
                best = Some((used, limit));
            }
        }
        match best {
            Some((used, limit)) => slot.read(used, limit),
            None => slot.skip(Skip::NoLimit),
        }
    }

    /// Reads `1 - MemAvailable / MemTotal` as used and total bytes.
    pub(crate) fn read_system(&mut self, slot: &mut Slot) {
        let text = match read_file(&mut self.buf, &self.meminfo, "meminfo") {
            Ok(text) => text,
            Err(skip) => return slot.skip(skip),
        };
        match (field(text, "MemTotal:"), field(text, "MemAvailable:")) {
            (Some(total), Some(available)) if total > 0 => slot.read(
                total.saturating_sub(available).saturating_mul(1024),
                total.saturating_mul(1024),
            ),
            _ => slot.skip(Skip::Malformed("meminfo")),
        }
    }

    /// Reads PSI `some avg10`; escalates when it is above `threshold` (percent).
    pub(crate) fn read_psi(&mut self, slot: &mut Slot, threshold: f64) {
        let text = match read_file(&mut self.buf, &self.psi, "pressure/memory") {
            Ok(text) => text,
            Err(skip) => return slot.skip(skip),
        };
        match psi_some_avg10(text) {
            Some(avg10) => {
                *slot = Slot::new(slot.kind);
                slot.skipped = None;
                slot.signal = Some(avg10);
                slot.escalate = avg10 > threshold;
            }
            None => slot.skip(Skip::Malformed("pressure/memory")),
        }
    }
}

fn read_v2(buf: &mut String, last_events: &mut Option<u64>, files: &V2Files, slot: &mut Slot) {
    let max = read_limit_v2(buf, &files.max, "memory.max");
    let high = read_limit_v2(buf, &files.high, "memory.high");
    let limit = match (max, high) {
        (Err(skip), _) | (_, Err(skip)) => return slot.skip(skip),
        (Ok(Some(a)), Ok(Some(b))) => a.min(b),
        (Ok(Some(a)), Ok(None)) | (Ok(None), Ok(Some(a))) => a,
        (Ok(None), Ok(None)) => return slot.skip(Skip::NoLimit),
    };
    let current = match read_number(buf, &files.current, "memory.current") {
        Ok(n) => n,
        Err(skip) => return slot.skip(skip),
    };
    let inactive = match read_key(buf, &files.stat, "memory.stat", "inactive_file") {
        Ok(n) => n,
        Err(skip) => return slot.skip(skip),
    };
    slot.read(current.saturating_sub(inactive), limit);
    // Events are an escalation signal; a missing or malformed file leaves the ratio.
    let events = read_file(buf, &files.events, "memory.events")
        .ok()
        .and_then(|text| Some(field(text, "high")?.saturating_add(field(text, "max")?)));
    slot.signal = None;
    slot.escalate = false;
    if let Some(events) = events {
        let new = last_events.map_or(0, |last| events.saturating_sub(last));
        *last_events = Some(events);
        slot.signal = Some(new as f64);
        slot.escalate = new > 0;
    }
}

fn read_v1(buf: &mut String, files: &V1Files, slot: &mut Slot) {
    let limit = match read_number(buf, &files.limit, "memory.limit_in_bytes") {
        Ok(n) if n >= V1_UNLIMITED => return slot.skip(Skip::NoLimit),
        Ok(n) => n,
        Err(skip) => return slot.skip(skip),
    };
    let usage = match read_number(buf, &files.usage, "memory.usage_in_bytes") {
        Ok(n) => n,
        Err(skip) => return slot.skip(skip),
    };
    let inactive = match read_file(buf, &files.stat, "memory.stat") {
        Ok(text) => {
            match field(text, "total_inactive_file").or_else(|| field(text, "inactive_file")) {
                Some(n) => n,
                None => return slot.skip(Skip::Malformed("memory.stat")),
            }
        }
        Err(skip) => return slot.skip(skip),
    };
    slot.read(usage.saturating_sub(inactive), limit);
}

/// The longest file a reader takes: the files read are a few KiB at most (`memory.stat`,
/// `/proc/self/status`); anything longer is not one of them.
const MAX_FILE: u64 = 64 * 1024;

/// The whole of `path` in `buf`. Only a regular file is read (the kernel's `/proc` and
/// `/sys` files are), opened without blocking and read up to [`MAX_FILE`] bytes, so that
/// a FIFO, a device or a huge file under the configured root skips its source instead of
/// stalling the monitor or filling its memory.
fn read_file<'b>(buf: &'b mut String, path: &Path, name: &'static str) -> Result<&'b str, Skip> {
    use std::os::unix::fs::OpenOptionsExt;
    buf.clear();
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Skip::Absent,
            _ => Skip::Unreadable(name),
        })?;
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return Err(Skip::Unreadable(name));
    }
    file.take(MAX_FILE + 1)
        .read_to_string(buf)
        .map_err(|_| Skip::Unreadable(name))?;
    if buf.len() as u64 > MAX_FILE {
        buf.clear();
        buf.shrink_to(MAX_FILE as usize);
        return Err(Skip::Malformed(name));
    }
    Ok(buf.as_str())
}

/// A file that holds one number.
fn read_number(buf: &mut String, path: &Path, name: &'static str) -> Result<u64, Skip> {
    read_file(buf, path, name)?
        .trim()
        .parse()
        .map_err(|_| Skip::Malformed(name))
}

/// A cgroup v2 limit file: a number, or `max` for none.
fn read_limit_v2(buf: &mut String, path: &Path, name: &'static str) -> Result<Option<u64>, Skip> {
    match read_file(buf, path, name) {
        Err(Skip::Absent) => Ok(None),
        Err(skip) => Err(skip),
        Ok(text) => match text.trim() {
            "max" => Ok(None),
            number => number.parse().map(Some).map_err(|_| Skip::Malformed(name)),
        },
    }
}

/// The number after `key` in `path` (a `key value` file such as `memory.stat`).
fn read_key(buf: &mut String, path: &Path, name: &'static str, key: &str) -> Result<u64, Skip> {
    field(read_file(buf, path, name)?, key).ok_or(Skip::Malformed(name))
}

/// The first number on the line that starts with `key` followed by whitespace (or, for
/// keys ending in `:`, directly): `VmSize:  1234 kB` gives 1234, `inactive_file 5` gives 5.
pub(crate) fn field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?;
        if !key.ends_with(':') && !rest.starts_with([' ', '\t']) {
            return None;
        }
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// The soft limit on the `/proc/self/limits` line that starts with `name`: `Ok(None)` for
/// `unlimited`, `Err` when the line is missing or malformed.
fn limit_line(text: &str, name: &str) -> Result<Option<u64>, ()> {
    let line = text
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .ok_or(())?;
    match line.split_whitespace().next().ok_or(())? {
        "unlimited" => Ok(None),
        number => number.parse().map(Some).map_err(|_| ()),
    }
}

/// `avg10` of the `some` line of a PSI file.
pub(crate) fn psi_some_avg10(text: &str) -> Option<f64> {
    let line = text.lines().find_map(|l| l.strip_prefix("some "))?;
    let value = line
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("avg10="))?;
    let value: f64 = value.parse().ok()?;
    value.is_finite().then_some(value)
}

/// Finds the cgroup whose memory limit applies to this process, under `root`.
fn find_cgroup(root: &Path, buf: &mut String) -> Cgroup {
    let Ok(text) = read_file(buf, &root.join("proc/self/cgroup"), "cgroup") else {
        return Cgroup::Absent;
    };
    let mut v1_path = None;
    let mut v2_path = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            v2_path = Some(path.trim_start_matches('/').to_owned());
        } else if controllers.split(',').any(|c| c == "memory") {
            v1_path = Some(path.trim_start_matches('/').to_owned());
        }
    }
    if let Some(rel) = v1_path {
        let mount = root.join("sys/fs/cgroup/memory");
        if mount.join("memory.limit_in_bytes").is_file() {
            return find_v1(&mount, &rel, buf);
        }
    }
    if let Some(rel) = v2_path {
        for mount in [
            root.join("sys/fs/cgroup"),
            root.join("sys/fs/cgroup/unified"),
        ] {
            let leaf = leaf_dir(&mount, &rel);
            if leaf.join("memory.current").is_file() || mount.join("memory.max").is_file() {
                return find_v2(&mount, &leaf, buf);
            }
        }
    }
    Cgroup::Absent
}

/// `mount/rel`, or `mount` itself when the process sees only its own cgroup's subtree
/// (a cgroup namespace, where `/proc/self/cgroup` names a path outside the mount, such
/// as `/../../x`). A `rel` with any component but a plain name (`..`, `.`) is such a
/// path: joined, it would lead outside the mount and the configured root.
fn leaf_dir(mount: &Path, rel: &str) -> PathBuf {
    use std::path::Component;
    let plain = Path::new(rel)
        .components()
        .all(|c| matches!(c, Component::Normal(_)));
    let leaf = mount.join(rel);
    if plain && leaf.is_dir() {
        leaf
    } else {
        mount.to_path_buf()
    }
}

/// The directories from `leaf` up to `mount`, nearest first.
fn ancestors<'a>(mount: &'a Path, leaf: &'a Path) -> impl Iterator<Item = &'a Path> {
    leaf.ancestors()
        .take_while(move |dir| dir.starts_with(mount))
}

fn find_v2(mount: &Path, leaf: &Path, buf: &mut String) -> Cgroup {
    for dir in ancestors(mount, leaf) {
        let max = read_limit_v2(buf, &dir.join("memory.max"), "memory.max");
        let high = read_limit_v2(buf, &dir.join("memory.high"), "memory.high");
        // A malformed limit file is reported by the first tick, which reads it again.
        if matches!(max, Ok(Some(_)) | Err(_)) || matches!(high, Ok(Some(_)) | Err(_)) {
            return Cgroup::V2(V2Files {
                max: dir.join("memory.max"),
                high: dir.join("memory.high"),
                current: dir.join("memory.current"),
                stat: dir.join("memory.stat"),
                events: dir.join("memory.events"),
            });
        }
    }
    Cgroup::Unlimited(Version::V2)
}

fn find_v1(mount: &Path, rel: &str, buf: &mut String) -> Cgroup {
    let leaf = leaf_dir(mount, rel);
    for dir in ancestors(mount, &leaf) {
        match read_number(
            buf,
            &dir.join("memory.limit_in_bytes"),
            "memory.limit_in_bytes",
        ) {
            Ok(n) if n >= V1_UNLIMITED => continue,
            Err(Skip::Absent) => continue,
            _ => {
                return Cgroup::V1(V1Files {
                    limit: dir.join("memory.limit_in_bytes"),
                    usage: dir.join("memory.usage_in_bytes"),
                    stat: dir.join("memory.stat"),
                })
            }
        }
    }
    Cgroup::Unlimited(Version::V1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_match_whole_keys() {
        let stat = "inactive_file_x 9\ninactive_file 5\ntotal_inactive_file 7\n";
        assert_eq!(field(stat, "inactive_file"), Some(5));
        assert_eq!(field(stat, "total_inactive_file"), Some(7));
        assert_eq!(field("VmSize:\t  1234 kB\n", "VmSize:"), Some(1234));
        assert_eq!(field("VmSize: lots\n", "VmSize:"), None);
        assert_eq!(field("", "x"), None);
    }

    #[test]
    fn psi_lines_parse() {
        let text = "some avg10=12.50 avg60=1.00 avg300=0.00 total=5\nfull avg10=1.00 avg60=0 avg300=0 total=1\n";
        assert_eq!(psi_some_avg10(text), Some(12.5));
        assert_eq!(psi_some_avg10("some avg10=NaN\n"), None);
        assert_eq!(psi_some_avg10("full avg10=1.00\n"), None);
    }

    #[test]
    fn limit_lines_parse() {
        let text = "Limit                     Soft Limit           Hard Limit           Units\n\
                    Max data size             unlimited            unlimited            bytes\n\
                    Max address space         1073741824           unlimited            bytes\n";
        assert_eq!(limit_line(text, "Max address space"), Ok(Some(1 << 30)));
        assert_eq!(limit_line(text, "Max data size"), Ok(None));
        assert_eq!(limit_line(text, "Max stack size"), Err(()));
    }
}
