//! Footprint's aggregator.
//!
//! [`ingest`] serves the collectors' `Ingest` streams; every batch goes to the [`store`]'s single
//! writer, which validates readings against each meter's previous one, commits them to SQLite and
//! only then lets the stream acknowledge the batch. After each commit the [`ledger`] builds the
//! windows every meter of a host has reported past, attributing their energy to jobs (with
//! `footprint_core::attribution`). [`query`] and [`http`] read the ledger.

pub mod api;
pub mod auth;
pub mod budget;
pub mod codec;
pub mod config;
pub mod exposition;
pub mod forecast;
pub mod grid;
pub mod http;
pub mod influx;
pub mod ingest;
pub mod ledger;
pub mod limits;
pub mod metrics;
pub mod parquet_history;
pub mod query;
pub mod report;
pub mod server;
pub mod settings;
pub mod store;
pub mod tables;

pub use config::AggregatorConfig;
pub use server::RunningAggregator;

/// Everything that can go wrong in the aggregator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] footprint_core::config::ConfigError),
    #[error("ledger database: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the store's writer has stopped")]
    WriterStopped,
    #[error("collector {collector:?}: {reason}")]
    Collector { collector: String, reason: String },
    #[error("not found: {0}")]
    NotFound(String),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("server: {0}")]
    Server(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The aggregator's clock, in ns since the Unix epoch.
pub(crate) fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
