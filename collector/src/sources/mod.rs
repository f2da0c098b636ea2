//! Sources, one file each: a config struct implementing
//! [`SourceSettings`](crate::source::SourceSettings) and the source it builds. A new meter is a new
//! file here (and its `mod` line below) plus one line in the registry,
//! [`SourceConfig`](crate::config::SourceConfig), which `footprint-collector --help` lists.

pub mod ipmi;
pub mod kubernetes;
pub mod modbus;
pub mod nvml;
pub mod power_model;
pub mod process;
pub mod rapl;
pub mod replay;
pub mod site_replay;
pub mod slurm;
pub mod snmp;
pub mod synthetic;

use std::time::Duration;

use footprint_core::config::Problems;

/// Runs one exchange with a device for at most `timeout`. On an error the caller drops its
/// connection, so that a late answer is never taken for the next request's.
pub(crate) async fn within<T>(
    peer: &str,
    timeout: Duration,
    exchange: impl Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "{peer}: no answer within {} ms (a gap; the next reading covers it)",
                timeout.as_millis()
            ))
        })
}

/// A meter-id prefix: non-empty and without the `:` that separates its parts.
pub(crate) fn check_prefix(problems: &mut Problems, path: &str, prefix: &str) {
    problems.check(
        !prefix.trim().is_empty() && !prefix.contains(':'),
        format!("{path}.prefix"),
        "must be non-empty and without ':'",
    );
}

/// A device timeout: long enough to be answered, short enough not to stall a tick for long.
pub(crate) fn check_timeout_ms(problems: &mut Problems, path: &str, timeout_ms: u64) {
    problems.check(
        (1..=60_000).contains(&timeout_ms),
        format!("{path}.timeout_ms"),
        "must be between 1 and 60000",
    );
}
