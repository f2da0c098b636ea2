//! The disclosure report made from the ledger: what [`footprint_exporters::report`] needs, read
//! on a read-only connection with the config the aggregator stored at its last start, so that
//! `footprint report` and `footprint report verify` make the same bytes from the same ledger.
//! `inputs.rs` gathers the report's figures ([`report_inputs`]), `verify.rs` checks a report against
//! the ledger ([`verify()`]).

mod inputs;
mod verify;

use std::path::Path;

use footprint_core::config::ConfigFile as _;
use footprint_core::time::{format_rfc3339, utc_year_of};
use footprint_core::units::NANOS_PER_HOUR;
use footprint_core::{Span, UnixNanos};
use footprint_exporters::report::signing::{self, SignedReport};
use footprint_exporters::report::{self, Context, Format, ReportInputs};
use rusqlite::{Connection, OptionalExtension};

pub use inputs::report_inputs;
pub use verify::{Verification, VerifyOptions, verify};

use crate::config::AggregatorConfig;
use crate::ledger;
use crate::tables::schema;
use crate::{Error, Result};

/// What to report.
#[derive(Clone, Debug, Default)]
pub struct ReportRequest {
    /// `[from, to)` in ns, on the hour; both 0: the calendar year of the latest settled data.
    pub from_ns: i64,
    pub to_ns: i64,
    /// Refuse a period with hours not settled yet.
    pub require_settled: bool,
    /// The key to sign with; `None`: `disclosure.signing_key` of the stored config, if set.
    pub signing_key: Option<std::path::PathBuf>,
    /// Make the report unsigned even where a key is configured.
    pub unsigned: bool,
}

/// The config the aggregator last started with, as the ledger stored it.
///
/// # Errors
/// The ledger holds none yet, or it no longer parses.
pub fn stored_config(connection: &Connection) -> Result<AggregatorConfig> {
    let text: String = connection
        .query_row("SELECT toml FROM aggregator_config", [], |row| row.get(0))
        .optional()?
        .ok_or_else(|| {
            Error::Server(
                "the ledger holds no aggregator config yet: start the aggregator on it once (it records the config it builds with)"
                    .into(),
            )
        })?;
    Ok(AggregatorConfig::from_toml(&text)?)
}

/// The period a request names, checked.
///
/// # Errors
/// [`Error::BadRequest`] naming `from`/`to`: inverted, empty, off the hour, or no settled hour.
pub fn period_of(connection: &Connection, from_ns: i64, to_ns: i64) -> Result<Span> {
    let settled = ledger::settled_span(connection)?;
    let (from, to) = if from_ns == 0 && to_ns == 0 {
        let Some(settled) = settled else {
            return Err(Error::BadRequest(
                "from: the ledger has no settled hour yet, so there is no year to report".into(),
            ));
        };
        let year = utc_year_of(UnixNanos(settled.end.0 - 1));
        (year.start.0, year.end.0)
    } else {
        (from_ns, to_ns)
    };
    if to <= from {
        return Err(Error::BadRequest(format!(
            "to: {} is not after from ({}): the period is empty or inverted",
            format_rfc3339(UnixNanos(to)),
            format_rfc3339(UnixNanos(from))
        )));
    }
    for (name, at) in [("from", from), ("to", to)] {
        if at.rem_euclid(NANOS_PER_HOUR) != 0 {
            return Err(Error::BadRequest(format!(
                "{name}: {} is not on the hour: a report covers whole hours",
                format_rfc3339(UnixNanos(at))
            )));
        }
    }
    let overlaps = settled.is_some_and(|span| span.start.0 < to && from < span.end.0);
    if !overlaps {
        return Err(Error::BadRequest(format!(
            "from: no settled hour between {} and {}{}",
            format_rfc3339(UnixNanos(from)),
            format_rfc3339(UnixNanos(to)),
            settled.map_or_else(
                || " (the ledger has settled nothing yet)".to_owned(),
                |span| format!(
                    " (the ledger has settled {} to {})",
                    format_rfc3339(span.start),
                    format_rfc3339(span.end)
                )
            )
        )));
    }
    Ok(Span::new(UnixNanos(from), UnixNanos(to)))
}

/// The report of `inputs`, not yet signed.
pub fn build(inputs: &ReportInputs, config: &AggregatorConfig) -> report::Report {
    report::build(
        inputs,
        &Context {
            window_ns: i64::from(config.window_seconds) * 1_000_000_000,
            job_method: ledger::JOB_METHOD.to_owned(),
        },
    )
}

/// The signing key a request asks for: its own, else the config's; none when unsigned.
///
/// # Errors
/// The key is missing or unreadable ([`Error::BadRequest`] naming it).
fn signing_key(
    request: &ReportRequest,
    config: &AggregatorConfig,
) -> Result<Option<signing::SigningKey>> {
    if request.unsigned {
        return Ok(None);
    }
    let Some(path) = request
        .signing_key
        .clone()
        .or_else(|| config.disclosure.signing_key.clone())
    else {
        return Ok(None);
    };
    signing::load_signing_key(&path)
        .map(Some)
        .map_err(|error| Error::BadRequest(format!("signing_key: {error}")))
}

/// Makes the signed report the request asks for from the ledger at `path`.
///
/// # Errors
/// [`Error::BadRequest`] naming the parameter (period, key); a database error.
pub fn make_report(path: &Path, request: &ReportRequest) -> Result<SignedReport> {
    let connection = schema::open_reader(path)?;
    let config = stored_config(&connection)?;
    let span = period_of(&connection, request.from_ns, request.to_ns)?;
    let inputs = report_inputs(&connection, &config, span)?;
    let body = build(&inputs, &config);
    if request.require_settled && body.period.status != "final" {
        return Err(Error::BadRequest(format!(
            "require_settled: the period is provisional: {}",
            body.period.notice
        )));
    }
    let key = signing_key(request, &config)?;
    signing::sign(body, &inputs, key.as_ref()).map_err(|error| Error::Server(error.to_string()))
}

/// `report` in `format`.
///
/// # Errors
/// The CSV archive could not be written.
pub fn render(report: &SignedReport, format: Format) -> Result<Vec<u8>> {
    report::render(report, format).map_err(|error| Error::Server(error.to_string()))
}
