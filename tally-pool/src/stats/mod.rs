//! Memory statistics: every pool, arena, the allocator and user components in one report,
//! with leak suspects and a health score.
//!
//! Every component joins a process-wide registry when it is created (pools do it
//! themselves; track your own memory with a [`Component`]). [`report`] asks each live
//! component for a [`ComponentSnapshot`] and returns a [`MemoryReport`]: print it for a
//! table, or serialise it ([`MemoryReport::to_json`]) for machines. A background sampler
//! ([`start_sampler`]) keeps a short history of live bytes per component, from which
//! leak suspects are found ([`LeakConfig`] documents the rule). A pool that samples the
//! call sites of its acquires ([`Pool::track_sites`](crate::Pool::track_sites),
//! `#[pooled(track_sites = N)]`) lists, for each suspect, the lines holding the most live
//! values and the age of the oldest.
//!
//! ```
//! use std::time::Duration;
//! use tally_pool::stats::{self, Component, MemoryReport};
//!
//! let book = Component::register("order-book"); // a user component, bytes tracked by hand
//! book.add(64 * 1024); // one relaxed atomic, no lock, no allocation
//! book.sub(16 * 1024);
//! let _sampler = stats::start_sampler(Duration::from_secs(1))?; // history for leaks
//! stats::configure_leaks(stats::LeakConfig::default().window(Duration::from_secs(300)));
//! let report: MemoryReport = stats::report(); // every live pool, allocator, arena, component
//! println!("{report}"); // a human table, like mi_stats_print
//! let json: String = report.to_json(); // serde_json, the schema below
//!
//! let value: serde_json::Value = serde_json::from_str(&json).unwrap();
//! let row = value["components"]
//!     .as_array()
//!     .unwrap()
//!     .iter()
//!     .find(|c| c["name"] == "order-book")
//!     .unwrap();
//! assert_eq!(row["live_bytes"], 48 * 1024);
//! assert_eq!(row["kind"], "user");
//! # Ok::<(), stats::StatsError>(())
//! ```
//!
//! # The JSON schema (version [`SCHEMA`] = 1)
//!
//! | field | meaning |
//! |---|---|
//! | `schema` | `1` |
//! | `generated_at` | RFC 3339, UTC, to the second: `"2026-12-04T17:05:09Z"` |
//! | `process` | `pid`; `rss_bytes` (`/proc/self/statm` resident pages × page size, or `null`); `limit_bytes` (the tightest cgroup v2 `memory.max` / v1 `memory.limit_in_bytes` over this process's cgroups and their ancestors, or `null` for none, `max` or unreadable) |
//! | `totals` | the memory classes below, summed over the components |
//! | `components[]` | `id`, `name`, `kind` (`"typed"`, `"block"`, `"allocator"`, `"arena"`, `"user"`), `type_name` (typed pools, else `null`), `object_size`, `live_objects`, the memory classes, `capacity`, `max_capacity`, `acquires`, `releases`, `cross_thread_releases`, `exhausted` (refusals at the cap), `corruptions`, `guard` (pools: `"off"`, `"canary"` or `"full"`; else `null`), `huge_pages` (pools: `"off"`, `"requested"`, `"active"` or `"unavailable: <reason>"`; else `null`), `locked_bytes`, `growths`, `depot_exchanges`, `locality` (`0..=1` or `null`), `nodes[]` (`node`, `live_bytes`, `mapped_bytes`, `local_acquires`, `remote_acquires`, `cross_node_releases`) and, for user components only, `accounting_errors` |
//! | memory classes | `live_bytes` (values in use), `cached_bytes` (free in thread caches), `free_bytes` (free in depots and chunks), `fresh_bytes` (mapped, not yet carved), `metadata_bytes` (headers, registries, generation tables, canaries, padding), `mapped_bytes` (the sum of those five), `released_bytes` (given back to the OS so far) |
//! | `leaks[]` | `component` (name), `component_id`, `growth_bytes_per_min`, `live_objects`, `window_secs`, `oldest_age_secs` (`null` unless sites are tracked), `sites[]` (`location` as `file:line:col`, `live`, `oldest_age_secs`; at most 10, most live first) |
//! | `health` | `score` (0–100) and `findings[]`: `code`, `severity` (`"info"`, `"warning"`, `"critical"`), `component` (name) and `component_id`, or `null` for the process, `message`, `recommendation` |
//! | `pressure` | `null` while no pressure monitor runs; then `level` (`"normal"`, `"moderate"`, `"high"`, `"critical"`), `utilisation`, `source` (the deciding source), `since_secs` (time in level), `last_reclamation` (`level`, `reclaimable_bytes`, `reclaimed_bytes`, `duration_secs`, `ago_secs`, or `null`) ([`PressureSection`]) |
//!
//! How a pool splits what it holds into the memory classes, exactly, is in the
//! [`block` module docs](crate::block#memory-classes).
//!
//! Names are any text; JSON escapes them. Counts never go negative: every sum saturates,
//! and a snapshot taken while other threads work is consistent per component.
//!
//! # Health rules
//!
//! The score starts at 100; each finding subtracts its penalty (the score stays at or
//! above 0), and any corruption caps the score at 20. Rules run on each component's
//! snapshot; "since the last report" compares with the counts the previous [`report`]
//! saw (the registry keeps them per component).
//!
//! | code | severity | penalty | fires when | recommends |
//! |---|---|---|---|---|
//! | `corruption` | critical | 50 | any corruption event (the score is then at most 20) | the guard level that catches it (`Canary`, then `Full`), and where it was last seen |
//! | `exhausted` | critical | 30 | acquires were refused at the cap since the last report | raise `max_capacity` to the peak of live values + 50 % (the peak: the most live values any report or sample saw, [`ComponentSnapshot::peak_live_objects`]) |
//! | `near-cap` | warning | 10 | live values ≥ 90 % of `max_capacity` (not repeated when `exhausted` fires) | the same |
//! | `leak-suspect` | warning | 20 | the component is a leak suspect ([`LeakConfig`]) | the sites holding the most live values, or turning on `track_sites` |
//! | `fragmented` | info | 5 | free + cached + fresh > 50 % of mapped and > 16 MiB, held for ≥ 60 s of sampled history (a single snapshot decides when no sampler runs) | `reclaim()`, and a `capacity` near live + 25 % |
//! | `remote-heavy` | info | 5 | `locality` < 0.9 over ≥ 10,000 acquires | `numa::Placement`, pinning threads |
//! | `cache-misses` | info | 5 | more than one depot exchange (thread-cache miss) per 4 acquires, over ≥ 10,000 acquires (a producer/consumer pair makes about one per 16 with 32-block magazines) | a larger `capacity`, larger batches per thread |
//!
//! # Cost
//!
//! Registering and unregistering take a short lock, never on an acquire or release
//! path. [`report`] takes a snapshot of each component, reads three small `/proc` and
//! cgroup files and copies the sampler's latest conclusions: the leak detector runs in
//! [`sample`], not in the report.

mod assemble;
mod component;
mod error;
mod export;
mod health;
mod history;
mod leaks;
mod process;
pub(crate) mod registry;
mod report;
mod sampler;
mod source;
mod table;

pub use assemble::{prometheus_label, report};
pub use component::Component;
pub use error::StatsError;
pub use history::{configure_leaks, leak_config};
pub use leaks::LeakConfig;
pub(crate) use registry::try_register;
pub use registry::{register, register_static, ComponentId, Kind, Registration};
pub use report::{
    ComponentReport, Finding, HealthSection, LeakReport, MemoryClasses, MemoryReport, NodeReport,
    PressureSection, ProcessSection, ReclamationSection, Severity, SiteReport, SCHEMA,
};
pub use sampler::{sample, sampler_running, start_sampler, SamplerGuard};
pub use source::{ComponentSnapshot, Counters, NodeSnapshot, Site, Source, Urgency};

#[cfg(test)]
#[path = "report_tests.rs"]
pub(crate) mod tests;
