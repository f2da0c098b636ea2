//! The `Source` trait: one kind of meter (or allocation feed) read at each tick.

use async_trait::async_trait;
use footprint_core::UnixNanos;
use footprint_core::config::Problems;
use footprint_proto::v1::{Allocation, MeterInfo, Reading};

/// A counter reading taken at `at`, measured, with the meter's own method.
pub fn measured_reading(meter_id: &str, value: u64, at: UnixNanos) -> Reading {
    Reading {
        meter_id: meter_id.to_owned().into(),
        value,
        timestamp_ns: at.0,
        quality: footprint_proto::v1::Quality::Measured as i32,
        method: String::new(),
    }
}

/// What one source read at one tick.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    /// One reading per meter that could be read; a meter that failed is simply absent (its next
    /// reading covers the gap: counters lose nothing).
    pub readings: Vec<Reading>,
    /// Holdings that started, changed or ended since the previous sample.
    pub allocations: Vec<Allocation>,
    /// Meters seen for the first time, announced before any reading of theirs (a job's usage
    /// counter appears with the job).
    pub meters: Vec<MeterInfo>,
}

/// A reader of meters and/or allocations.
///
/// Guarantees a source gives its caller:
/// - every reading names a meter of `meters()` or one announced in `Sample::meters` of this or
///   an earlier sample;
/// - readings of one meter are in time order across calls;
/// - `sample` never blocks the runtime (blocking reads go through `spawn_blocking`).
#[async_trait]
pub trait Source: Send + std::fmt::Debug {
    /// A short name for logs and probe output, e.g. `replay`.
    fn name(&self) -> &str;

    /// The meters this source reads from the start; more may be announced in samples.
    fn meters(&self) -> Vec<MeterInfo>;

    /// Reads every meter. `at` is the tick's instant; a hardware source stamps readings with the
    /// instant it actually read the counter, a replay uses `at` itself.
    ///
    /// # Errors
    /// A message when nothing could be read; the collector logs it and carries on.
    async fn sample(&mut self, at: UnixNanos) -> Result<Sample, String>;

    /// What sets this source's GPUs' power limits, for a source that can (NVML).
    fn power_limiter(&self) -> Option<Box<dyn crate::power_cap::PowerLimiter>> {
        None
    }
}

/// What a source is built for: the host it reports for, and where simulated sources start.
#[derive(Clone, Copy, Debug)]
pub struct BuildContext<'a> {
    pub host: &'a str,
    pub origin: UnixNanos,
}

/// What every source's config table (`[[sources]]` with its `type`) does: names the meters it
/// will announce, reports every problem in it, and builds the running source. A new source is a
/// file in `sources/` implementing this, and one line in the registry (`config::SourceConfig`).
pub trait SourceSettings {
    /// The ids of the meters this source will announce (at least; more may appear as it runs).
    fn meter_ids(&self) -> Vec<String>;

    /// Adds every problem of this table to `problems`, each under `path` (`sources[2]`).
    fn validate(&self, path: &str, problems: &mut Problems);

    /// The running source.
    ///
    /// # Errors
    /// A message saying why the source cannot run here (a device absent, a file unreadable).
    fn build_source(&self, context: &BuildContext<'_>) -> Result<Box<dyn Source>, String>;
}
