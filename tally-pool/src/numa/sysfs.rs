//! Reading the Linux node tree (`/sys/devices/system/node`): one `node<N>` directory per
//! online node with `cpulist` ("0-3,8-11"), `distance` ("10 21") and `meminfo`
//! ("Node 0 MemTotal:  9529548 kB"). No system library is needed.

use std::fs;
use std::path::{Path, PathBuf};

use super::error::TopologyError;
use super::node::{Node, MAX_CPU};

/// Where Linux publishes the NUMA nodes.
pub(super) const NODE_ROOT: &str = "/sys/devices/system/node";

/// Reads every `node<N>` directory under `root`: the nodes, and the distance matrix with
/// rows and columns in the order of the returned nodes (ascending id, as the kernel lists
/// them in each `distance` file).
pub(super) fn read(root: &Path) -> Result<(Vec<Node>, Vec<Vec<u32>>), TopologyError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TopologyError::Io { path, source }
    };
    let mut ids = Vec::new();
    for entry in fs::read_dir(root).map_err(io(root))? {
        let entry = entry.map_err(io(root))?;
        let name = entry.file_name();
        if let Some(id) = name.to_str().and_then(node_id) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    if ids.is_empty() {
        return Err(TopologyError::NoNodes);
    }
    let mut nodes = Vec::with_capacity(ids.len());
    let mut distances = Vec::with_capacity(ids.len());
    for id in ids {
        let dir = root.join(format!("node{id}"));
        let path = dir.join("cpulist");
        let text = fs::read_to_string(&path).map_err(io(&path))?;
        let cpus = parse_cpulist(&text)
            .ok_or_else(|| parse_error(path, "a cpulist like `0-3,8-11`", &text))?;

        let path = dir.join("distance");
        let text = fs::read_to_string(&path).map_err(io(&path))?;
        let row = parse_distance_row(&text)
            .ok_or_else(|| parse_error(path, "distances like `10 21`", &text))?;

        // Memory is informative only: a node without a readable meminfo has "unknown".
        let path = dir.join("meminfo");
        let memory = match fs::read_to_string(&path) {
            Ok(text) => parse_meminfo_total(&text).ok_or_else(|| {
                parse_error(path, "a meminfo with `Node N MemTotal: X kB`", &text)
            })?,
            Err(_) => 0,
        };
        nodes.push(Node::new(id, cpus, memory));
        distances.push(row);
    }
    Ok((nodes, distances))
}

fn parse_error(path: PathBuf, expected: &'static str, text: &str) -> TopologyError {
    TopologyError::Parse {
        path,
        expected,
        text: text.chars().take(200).collect(),
    }
}

/// `"node12"` → `Some(12)`; anything else (`"online"`, `"node"`, `"nodeX"`) → `None`.
fn node_id(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("node")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Parses the kernel's CPU list format: comma-separated CPUs and inclusive ranges, such
/// as `"0-3,8-11"` or `"0,2,4"`; surrounding whitespace and a trailing newline are
/// ignored and an empty list (a memory-only node) is valid. Returns the CPUs sorted and
/// without duplicates, or `None` for malformed text, a reversed range or a CPU at or
/// above [`MAX_CPU`](super::MAX_CPU).
///
/// ```
/// use tally_pool::numa::parse_cpulist;
///
/// assert_eq!(parse_cpulist("0-3,8-11\n"), Some(vec![0, 1, 2, 3, 8, 9, 10, 11]));
/// assert_eq!(parse_cpulist("5"), Some(vec![5]));
/// assert_eq!(parse_cpulist("\n"), Some(vec![]));
/// assert_eq!(parse_cpulist("3-1"), None);
/// assert_eq!(parse_cpulist("0-x"), None);
/// ```
pub fn parse_cpulist(text: &str) -> Option<Vec<usize>> {
    let text = text.trim();
    if text.is_empty() {
        return Some(Vec::new());
    }
    // The ranges first, merged, then their CPUs: repeated or overlapping ranges cost no
    // more than the CPUs they name once (at most `MAX_CPU`).
    let mut ranges = Vec::new();
    for part in text.split(',') {
        let part = part.trim();
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (parse_cpu(a)?, parse_cpu(b)?),
            None => {
                let cpu = parse_cpu(part)?;
                (cpu, cpu)
            }
        };
        if first > last {
            return None;
        }
        ranges.push((first, last));
    }
    ranges.sort_unstable();
    let mut cpus: Vec<usize> = Vec::new();
    for (first, last) in ranges {
        // Past the last CPU taken: sorted by their first CPU, a range overlaps only the end.
        let from = cpus.last().map_or(first, |&end| first.max(end + 1));
        cpus.extend(from..=last);
    }
    Some(cpus)
}

fn parse_cpu(text: &str) -> Option<usize> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|&cpu| cpu < MAX_CPU)
}

/// Parses one `distance` file: whitespace-separated positive integers, one per online
/// node in ascending id order.
pub(super) fn parse_distance_row(text: &str) -> Option<Vec<u32>> {
    let row: Vec<u32> = text
        .split_whitespace()
        .map(|d| d.parse().ok())
        .collect::<Option<_>>()?;
    (!row.is_empty()).then_some(row)
}

/// Parses a node `meminfo` file and returns `MemTotal` in bytes.
pub(super) fn parse_meminfo_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.contains("MemTotal:"))?;
    let (_, rest) = line.split_once("MemTotal:")?;
    let mut words = rest.split_whitespace();
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => value.checked_mul(1024),
        None => Some(value),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpulists() {
        assert_eq!(parse_cpulist("0-1\n"), Some(vec![0, 1]));
        assert_eq!(
            parse_cpulist("0-3,8-11"),
            Some(vec![0, 1, 2, 3, 8, 9, 10, 11])
        );
        assert_eq!(parse_cpulist("7,3,3-4"), Some(vec![3, 4, 7]));
        assert_eq!(parse_cpulist(""), Some(vec![]));
        assert_eq!(parse_cpulist(" 2 "), Some(vec![2]));
        for bad in ["-1", "1-", "a", "1,,2", "3-1", "0-3:2/4", "70000", "1 2"] {
            assert_eq!(parse_cpulist(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn distance_rows() {
        assert_eq!(parse_distance_row("10\n"), Some(vec![10]));
        assert_eq!(
            parse_distance_row("10 21 31 31\n"),
            Some(vec![10, 21, 31, 31])
        );
        assert_eq!(parse_distance_row(""), None);
        assert_eq!(parse_distance_row("10 x"), None);
        assert_eq!(parse_distance_row("10 -1"), None);
    }

    #[test]
    fn meminfo() {
        let text = "Node 0 MemTotal:        9529548 kB\nNode 0 MemFree:         7979156 kB\n";
        assert_eq!(parse_meminfo_total(text), Some(9_529_548 * 1024));
        assert_eq!(parse_meminfo_total("Node 3 MemTotal: 12 MB"), None);
        assert_eq!(parse_meminfo_total("Node 0 MemFree: 5 kB"), None);
        assert_eq!(parse_meminfo_total("Node 0 MemTotal: x kB"), None);
    }

    #[test]
    fn node_directory_names() {
        assert_eq!(node_id("node0"), Some(0));
        assert_eq!(node_id("node17"), Some(17));
        for bad in ["node", "online", "nodeX", "node-1", "has_cpu"] {
            assert_eq!(node_id(bad), None, "{bad:?}");
        }
    }
}
