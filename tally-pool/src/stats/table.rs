//! `Display` for [`MemoryReport`]: a table for people, in the spirit of `mi_stats_print`.
//! One row per component, then the totals, the findings and the leak suspects.
//!
//! Names are printed with control characters, line separators and bidirectional
//! controls escaped and cut to [`NAME_WIDTH`]
//! characters, so any name keeps the table on its lines.

use std::fmt::{self, Display, Formatter};

use super::report::{format_bytes, ComponentReport, MemoryClasses, MemoryReport};

/// Characters of a name shown in the table.
const NAME_WIDTH: usize = 24;

impl Display for MemoryReport {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let p = &self.process;
        let rss = p.rss_bytes.map_or_else(|| "?".to_owned(), format_bytes);
        let limit = p
            .limit_bytes
            .map_or_else(|| "none".to_owned(), format_bytes);
        writeln!(
            f,
            "tally-pool memory at {}  pid {}  rss {rss}  limit {limit}  health {}/100",
            self.generated_at, p.pid, self.health.score
        )?;
        if let Some(pressure) = &self.pressure {
            let utilisation = pressure
                .utilisation
                .map_or_else(|| "?".to_owned(), |u| format!("{:.0} %", u * 100.0));
            writeln!(
                f,
                "pressure {} at {utilisation} from {} for {:.0} s",
                printable(&pressure.level, NAME_WIDTH),
                printable(&pressure.source, NAME_WIDTH),
                pressure.since_secs
            )?;
            if let Some(r) = &pressure.last_reclamation {
                writeln!(
                    f,
                    "  last reclamation at {}: {} of {} reclaimable in {:.3} ms, {:.0} s ago",
                    printable(&r.level, NAME_WIDTH),
                    format_bytes(r.reclaimed_bytes),
                    format_bytes(r.reclaimable_bytes),
                    r.duration_secs * 1e3,
                    r.ago_secs
                )?;
            }
        }
        writeln!(
            f,
            "{:>5}  {:<NAME_WIDTH$}  {:<9}  {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}  {:>10} {:>12} {:>9}",
            "id", "name", "kind", "live", "cached", "free", "fresh", "metadata", "mapped",
            "released", "objects", "acquires", "exhausted"
        )?;
        for c in &self.components {
            row(f, c)?;
        }
        write!(f, "{:>5}  {:<NAME_WIDTH$}  {:<9}  ", "", "total", "")?;
        classes(f, &self.totals)?;
        writeln!(f)?;
        if !self.health.findings.is_empty() {
            writeln!(f, "findings:")?;
        }
        for finding in &self.health.findings {
            let who = finding
                .component
                .as_deref()
                .map_or_else(|| "process".to_owned(), |name| printable(name, NAME_WIDTH));
            writeln!(
                f,
                "  [{}] {} {who}: {}",
                finding.severity,
                finding.code,
                printable(&finding.message, usize::MAX)
            )?;
            writeln!(
                f,
                "      -> {}",
                printable(&finding.recommendation, usize::MAX)
            )?;
        }
        if !self.leaks.is_empty() {
            writeln!(f, "leak suspects:")?;
        }
        for leak in &self.leaks {
            writeln!(
                f,
                "  {}: +{}/min over {:.0} s, {} live values",
                printable(&leak.component, NAME_WIDTH),
                format_bytes(leak.growth_bytes_per_min.max(0.0) as u64),
                leak.window_secs,
                leak.live_objects
            )?;
            for site in &leak.sites {
                writeln!(
                    f,
                    "      {} ({} live)",
                    printable(&site.location, usize::MAX),
                    site.live
                )?;
            }
        }
        Ok(())
    }
}

fn row(f: &mut Formatter<'_>, c: &ComponentReport) -> fmt::Result {
    write!(
        f,
        "{:>5}  {:<NAME_WIDTH$}  {:<9}  ",
        c.id.get(),
        printable(&c.name, NAME_WIDTH),
        c.kind.as_str()
    )?;
    classes(f, &c.memory)?;
    writeln!(
        f,
        "  {:>10} {:>12} {:>9}",
        c.live_objects, c.counters.acquires, c.counters.exhausted
    )
}

fn classes(f: &mut Formatter<'_>, m: &MemoryClasses) -> fmt::Result {
    let cells = [
        m.live_bytes,
        m.cached_bytes,
        m.free_bytes,
        m.fresh_bytes,
        m.metadata_bytes,
        m.mapped_bytes,
        m.released_bytes,
    ];
    for (i, bytes) in cells.into_iter().enumerate() {
        let sep = if i == 0 { "" } else { " " };
        write!(f, "{sep}{:>10}", format_bytes(bytes))?;
    }
    Ok(())
}

/// `text` with control characters, line separators and bidirectional controls escaped
/// (`\n`, `\u{0}`, `\u{2028}`, …), cut to `width` characters
/// with a trailing `…` when longer.
fn printable(text: &str, width: usize) -> String {
    let escaped: String = text
        .chars()
        .flat_map(|c| {
            let hostile = breaks_row(c);
            let escape = hostile.then(|| c.escape_default());
            let plain = (!hostile).then_some(c);
            escape.into_iter().flatten().chain(plain)
        })
        .collect();
    if escaped.chars().count() <= width {
        return escaped;
    }
    let mut cut: String = escaped.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Whether `c` would break a row or reorder it on screen: a control character, the
/// Unicode line and paragraph separators (mandatory line breaks), or a bidirectional
/// embedding, override or isolate.
fn breaks_row(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_and_cuts() {
        assert_eq!(printable("orders", 24), "orders");
        assert_eq!(printable("a\nb\"c", 24), "a\\nb\"c");
        assert_eq!(printable("\u{0}", 24), "\\u{0}");
        let long = "x".repeat(100);
        let cut = printable(&long, 24);
        assert_eq!(cut.chars().count(), 24);
        assert!(cut.ends_with('…'));
        assert_eq!(printable(&long, usize::MAX), long);
        assert_eq!(printable("ééé", 24), "ééé");
        // Unicode's mandatory line breaks would split the row for readers that honour
        // them; bidirectional overrides and isolates would reorder the rest of it.
        let hostile = "a\u{2028}b\u{2029}c\u{202e}d\u{2068}e";
        assert_eq!(
            printable(hostile, 48),
            r"a\u{2028}b\u{2029}c\u{202e}d\u{2068}e"
        );
        assert_eq!(printable("\u{202a}\u{2069}", 48), r"\u{202a}\u{2069}");
        assert_eq!(printable("\u{2027}\u{2065}", 48), "\u{2027}\u{2065}");
    }
}
