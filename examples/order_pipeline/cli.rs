//! The command line of `order_pipeline`, what it turns on in the statistics, and the check
//! that every pool got its values back.

use std::error::Error;
use std::time::Duration;

use tally_pool::stats::{self, LeakConfig, SamplerGuard};
use tally_pool::Pooled;

use crate::Fill;

const USAGE: &str = "usage: order_pipeline [--messages N] [--rate N | --rate max] [--report FILE] \
                     [--prometheus ADDR] [--leak-every N] [--leak-window SECS]";

/// What the command line asked for.
#[derive(Default)]
pub(crate) struct Options {
    pub(crate) messages: u64,
    pub(crate) rate: Option<f64>, // quotes a second; `None`: unpaced
    pub(crate) report: Option<String>,
    pub(crate) prometheus: Option<String>,
    pub(crate) leak_every: u64, // 0: no leak
    pub(crate) leak_window: u64,
}

pub(crate) fn parse_args() -> Result<Options, Box<dyn Error>> {
    let (messages, rate, leak_window) = (500_000, Some(200_000.0), 2);
    let mut o = Options {
        messages,
        rate,
        leak_window,
        ..Options::default()
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_default();
        let number = || match value.replace('_', "").parse::<u64>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("{flag} `{value}`: not a positive number; {USAGE}")),
        };
        match flag.as_str() {
            "--messages" => o.messages = number()?,
            "--rate" if value == "max" => o.rate = None,
            "--rate" => o.rate = Some(number()? as f64),
            "--leak-every" => o.leak_every = number()?,
            "--leak-window" => o.leak_window = number()?,
            "--report" => o.report = Some(value),
            "--prometheus" => o.prometheus = Some(value),
            _ => return Err(format!("unknown argument `{flag}`; {USAGE}").into()),
        }
    }
    Ok(o)
}

/// Starts what the flags ask of the statistics: call sites of fills, the leak detector, the
/// sampler that feeds both, and a Prometheus endpoint that the sampler publishes to.
pub(crate) fn observe(o: &Options) -> Result<Option<SamplerGuard>, Box<dyn Error>> {
    let window = Duration::from_secs(o.leak_window);
    if o.leak_every != 0 {
        Fill::pool().track_sites(16); // remember where 1 fill in 16 was acquired
                                      // Fills are small: a floor of 4 KiB of growth over the window, instead of 1 MiB.
        stats::configure_leaks(LeakConfig::default().window(window).min_growth_bytes(4096));
    }
    if let Some(addr) = &o.prometheus {
        #[cfg(feature = "metrics")]
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr.parse::<std::net::SocketAddr>()?)
            .install()?;
        #[cfg(not(feature = "metrics"))]
        return Err(format!("--prometheus {addr} needs `--features metrics`").into());
    }
    let wanted = o.leak_every != 0 || o.prometheus.is_some();
    Ok(wanted
        .then(|| stats::start_sampler(window / 20))
        .transpose()?)
}

/// Fails if a value or a token of `T`'s pool is still out, but the `forgotten` ones.
pub(crate) fn check_pool<T: Pooled>(forgotten: u64) -> Result<(), Box<dyn Error>> {
    let (pool, live) = (T::pool(), T::pool().stats().live_blocks);
    if live != forgotten || pool.leaked_raw() != 0 {
        return Err(format!("pool `{}`: {live} values out after the run", pool.name()).into());
    }
    Ok(())
}
