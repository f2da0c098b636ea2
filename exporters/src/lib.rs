//! Footprint's outputs. Each exporter is one file and reads what the `Query` API returns
//! (`footprint.v1` messages), so it works the same against a local ledger or a remote aggregator.

pub mod chart;
pub mod intensity;
pub mod summary;
pub mod table;

/// Errors of the exporters.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("summary: {0}")]
    Summary(String),
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
