//! Footprint's outputs. The run summary, tables and chart read what the `Query` API returns
//! (`footprint.v1` messages), so they work the same against a local ledger or a remote
//! aggregator; the disclosure report ([`report`]) is made from [`report::ReportInputs`], which
//! the aggregator fills from its ledger.

pub mod chart;
pub mod forecast;
pub mod intensity;
pub mod line_protocol;
pub mod parquet;
pub mod report;
pub mod summary;
pub mod table;

/// Errors of the exporters.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("summary: {0}")]
    Summary(String),
    #[error("report: {0}")]
    Report(String),
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
