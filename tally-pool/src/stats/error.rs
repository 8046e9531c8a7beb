//! The statistics' one error type.

/// What can go wrong in the statistics: starting the sampler, or reading a report back.
/// Building a report never fails: what cannot be read is reported as `null`.
///
/// ```
/// use std::time::Duration;
/// use tally_pool::stats::{self, StatsError};
///
/// let err = stats::start_sampler(Duration::ZERO).unwrap_err();
/// assert!(matches!(err, StatsError::ZeroInterval));
/// assert!(err.to_string().contains("above zero"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StatsError {
    /// [`start_sampler`](super::start_sampler) was called while a sampler runs.
    #[error("a stats sampler is already running; drop its SamplerGuard before starting another")]
    SamplerRunning,
    /// [`start_sampler`](super::start_sampler) was given a zero interval.
    #[error("the sampling interval must be above zero; pass for example one second")]
    ZeroInterval,
    /// The OS refused to start the sampler thread.
    #[error("could not start the stats sampler thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// [`MemoryReport::from_json`](super::MemoryReport::from_json) was given something
    /// that is not a report of this schema.
    #[error("not a tally-pool memory report: {0}")]
    Json(#[source] serde_json::Error),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn messages_say_what_to_do() {
        assert!(StatsError::SamplerRunning
            .to_string()
            .contains("drop its SamplerGuard"));
        let io = std::io::Error::other("no threads");
        let spawn = StatsError::Spawn(io);
        assert!(spawn.to_string().contains("no threads"));
        assert!(spawn.source().is_some());
        let json = serde_json::from_str::<u32>("x").unwrap_err();
        let err = StatsError::Json(json);
        assert!(err
            .to_string()
            .starts_with("not a tally-pool memory report: "));
    }
}
