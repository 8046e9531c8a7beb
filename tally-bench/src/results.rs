//! What the benches write: serde_json values, the W6 summaries, the machine's
//! description, and where the JSON goes.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::fatal;
use crate::stats::median;

/// A W5 child's growth ÷ payload and (growth − handle array) ÷ payload.
pub fn memory_ratios(line: &Value) -> Option<(f64, f64)> {
    let get = |key: &str| line.get(key).and_then(Value::as_f64);
    let growth = get("resident_after")? - get("resident_before")?;
    let payload = get("payload_bytes")?;
    Some((
        growth / payload,
        (growth - get("handle_array_bytes")?) / payload,
    ))
}

/// The W6 figures of `peer` in `mode`, each the median over the processes that ran it,
/// with `runs` and the p99.9's range (`p999_min`, `p999_max`); or why it has none.
pub fn latency_summary(lines: &[Value], peer: &str, mode: &str) -> Option<Value> {
    let mine = lines.iter().filter(|l| l["peer"] == peer);
    let mut runs = mine
        .filter(|l| l.get("mode").is_none_or(|m| m == mode))
        .peekable();
    runs.peek()?;
    let runs: Vec<&Value> = runs.collect();
    if let Some(failed) = runs.iter().find(|l| l.get("na").is_some()) {
        return Some(json!({ "peer": peer, "mode": mode, "na": failed["na"] }));
    }
    let of = |key: &str| -> Vec<f64> { runs.iter().filter_map(|r| r[key].as_f64()).collect() };
    let p999 = of("p999");
    let mut summary = json!({
        "peer": peer, "mode": mode, "runs": runs.len(),
        "p999_min": p999.iter().copied().reduce(f64::min),
        "p999_max": p999.iter().copied().reduce(f64::max),
    });
    let keys = "mean p50 p99 p999 p9999 max timer_overhead_p50".split(' ');
    let medians = keys.map(|key| (key.to_owned(), json!(median(&of(key)))));
    if let Value::Object(map) = &mut summary {
        map.extend(medians);
    }
    Some(summary)
}

/// The first line of a command's output, if it runs.
fn command_line(program: &str, args: &[&str]) -> Option<String> {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null());
    let output = command.output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    (output.status.success()).then(|| text.lines().next().unwrap_or("").trim().to_owned())
}

/// The machine and the build the numbers come from.
pub fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let read = |path: &str| Some(std::fs::read_to_string(path).ok()?.trim().to_owned());
    let git =
        command_line("git", &["rev-parse", "--short", "HEAD"]).map(|head| {
            match command_line("git", &["status", "--porcelain", "--untracked-files=no"]) {
                Some(line) if !line.is_empty() => format!("{head} (with uncommitted changes)"),
                _ => head,
            }
        });
    let cpu = (cpuinfo.lines().find(|l| l.starts_with("model name")))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned());
    json!({
        "nproc": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu": cpu,
        "kernel": read("/proc/sys/kernel/osrelease"),
        "transparent_hugepage": read("/sys/kernel/mm/transparent_hugepage/enabled"),
        "rustc": command_line("rustc", &["-V"]),
        "git": git,
        "tsc": crate::timer::use_tsc(),
        "date": command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
    })
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    (SystemTime::now().duration_since(UNIX_EPOCH)).map_or(0, |d| d.as_secs())
}

/// Writes `value` as JSON to `$env` if set, else to `file` in cargo's target directory
/// (`$CARGO_TARGET_DIR`, else the directory above the running binary that holds
/// `CACHEDIR.TAG`, else `target`). When it cannot, prints the JSON, so that a long run is
/// not lost, and stops the run.
pub fn write(env: &str, file: &str, value: &Value) {
    let path = std::env::var_os(env).map(PathBuf::from).unwrap_or_else(|| {
        let exe = std::env::current_exe().ok();
        let mut dirs = exe.iter().flat_map(|exe| exe.ancestors());
        let tagged = dirs.find(|dir| dir.join("CACHEDIR.TAG").is_file());
        let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from);
        let target = target.or(tagged.map(Path::to_path_buf));
        target.unwrap_or_else(|| PathBuf::from("target")).join(file)
    });
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string());
    let written = (text.as_ref().map_err(Clone::clone))
        .and_then(|text| std::fs::write(&path, format!("{text}\n")).map_err(|e| e.to_string()));
    match written {
        Ok(()) => println!("\nwrote {}", path.display()),
        Err(err) => {
            println!("{}", text.unwrap_or_default());
            fatal!("cannot write {}: {err}", path.display())
        }
    }
}
