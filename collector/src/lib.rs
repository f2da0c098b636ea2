//! Footprint's per-host collector.
//!
//! [`sources`] read meters (each behind the [`Source`](source::Source) trait) at every tick of a
//! [`clock::Clock`]; the [`daemon`] groups samples into numbered batches; the [`uplink`] streams
//! them to the aggregator and forgets a batch only once the aggregator has acknowledged it as
//! durable.

pub mod clock;
pub mod config;
pub mod cpulist;
pub mod daemon;
pub mod holdings;
pub mod metrics_server;
pub mod power_cap;
pub mod probe;
pub mod process_jobs;
pub mod process_usage;
pub mod source;
pub mod sources;
pub mod spool;
pub mod time;
pub mod trace;
pub mod uplink;

/// Version sent in `Hello`.
pub const SOFTWARE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Everything that can go wrong in the collector.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] footprint_core::config::ConfigError),
    #[error("source {source_name}: {message}")]
    Source {
        source_name: String,
        message: String,
    },
    #[error("uplink: {0}")]
    Uplink(String),
    #[error(transparent)]
    Spool(#[from] spool::SpoolError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
