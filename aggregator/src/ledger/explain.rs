//! `footprint explain`: one job's settled hour rebuilt from the readings, window by window, set
//! beside the hour's roll-up. Attribution is deterministic, so the windows sum to the roll-up
//! exactly — whether the hour's window detail is still kept or aged out long ago.
//!
//! The rebuild runs the ledger's own code (window building, the site stage, the roll-up) on a
//! read-only connection: the tables it writes are shadowed by empty `TEMP` tables of the same
//! layout, which SQLite resolves before the ledger's own, so nothing in the ledger changes and
//! the aggregator may keep writing meanwhile.

use std::path::Path;

use footprint_core::units::NANOS_PER_HOUR;
use footprint_core::window::WindowLength;
use footprint_core::{Span, UnixNanos};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use super::JobFigures;
use super::{detail, site};
use crate::settings::LedgerSettings;
use crate::tables::rollups::{self, JOB_FIGURES};
use crate::tables::schema;
use crate::{Error, Result};

/// One rebuilt window of the job on one host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExplainedWindow {
    pub host: String,
    pub start_ns: i64,
    #[serde(flatten)]
    pub figures: JobFigures,
}

/// A job's hour rebuilt from the readings beside its roll-up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Explanation {
    pub job: String,
    pub hour_ns: i64,
    /// Whether the ledger still keeps the hour's window detail (else only its roll-up).
    pub detail_kept: bool,
    /// Site hours settled again after late data, if this one was: how often, and why.
    pub hour_revisions: u64,
    pub hour_revision_reason: String,
    pub windows: Vec<ExplainedWindow>,
    /// The rebuilt windows summed.
    pub windows_sum: JobFigures,
    /// The roll-up the ledger holds for the job's hour.
    pub rolled_up: JobFigures,
    /// `windows_sum == rolled_up`, figure by figure.
    pub matches: bool,
    pub method: &'static str,
}

const METHOD: &str = "the hour's windows built again from the stored readings and allocations with the \
aggregator's stored config (every host, then the site stage: overhead, water, location- and market-based carbon), \
in scratch tables; compared with the roll-up the ledger holds";

/// The tables the rebuild writes, shadowed while it runs.
pub(super) const SHADOWED: [&str; 9] = [
    "window_jobs",
    "window_hosts",
    "site_windows",
    "site_hours",
    "rollup_jobs",
    "rollup_hosts",
    "rollup_jobs_days",
    "rollup_hosts_days",
    "rollup_site",
];

/// Rebuilds job `job_id`'s hour at `hour_ns` in the ledger at `path` from its readings.
///
/// # Errors
/// [`Error::BadRequest`] naming `hour` (not the start of an hour, not settled yet) or `job` (not
/// in the ledger, no windows in that hour); a config the ledger holds that no longer loads; a
/// database error.
pub fn explain(path: &Path, job_id: &str, hour_ns: i64) -> Result<Explanation> {
    let hour_text = footprint_core::time::format_rfc3339(UnixNanos(hour_ns));
    if hour_ns.rem_euclid(NANOS_PER_HOUR) != 0 {
        return Err(Error::BadRequest(format!(
            "hour: {hour_text} is not the start of an hour"
        )));
    }
    let connection = schema::open_reader(path)?;
    let settled = site::settled_until(&connection)?;
    if settled.is_none_or(|until| hour_ns + NANOS_PER_HOUR > until.0) {
        return Err(Error::BadRequest(format!(
            "hour: {hour_text} is not settled yet (settled until {})",
            settled.map_or("nothing".to_owned(), footprint_core::time::format_rfc3339)
        )));
    }
    let job: i64 = connection
        .query_row("SELECT id FROM jobs WHERE job_id = ?1", [job_id], |row| {
            row.get(0)
        })
        .optional()?
        .ok_or_else(|| Error::BadRequest(format!("job: {job_id:?} is not in the ledger")))?;
    let rolled_up = job_hour(&connection, "main", job, hour_ns)?.ok_or_else(|| {
        Error::BadRequest(format!(
            "job: {job_id:?} held nothing in the hour {hour_text}"
        ))
    })?;
    let (hour_revisions, hour_revision_reason): (i64, String) = connection
        .query_row(
            "SELECT revisions, reason FROM hour_revisions WHERE hour_ns = ?1",
            [hour_ns],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?
        .unwrap_or_default();
    let detail_kept = !detail::is_aged(&connection, hour_ns)?;
    let config = crate::report::stored_config(&connection)?;
    let settings = LedgerSettings::from_config(&config)?;
    let window = WindowLength::from_seconds(config.window_seconds).unwrap_or_default();

    shadow(&connection, hour_ns)?;
    let hour = Span::new(UnixNanos(hour_ns), UnixNanos(hour_ns + NANOS_PER_HOUR));
    detail::regenerate(&connection, window, &settings, hour)?;
    site::settle_hour(&connection, &settings, window, hour_ns)?;

    let mut windows = Vec::new();
    let mut statement = connection.prepare(&format!(
        "SELECT c.host, w.start_ns, {JOB_FIGURES} FROM temp.window_jobs w
         JOIN collectors c ON c.id = w.collector WHERE w.job = ?1 ORDER BY w.start_ns, c.host"
    ))?;
    let mut rows = statement.query([job])?;
    let mut windows_sum = JobFigures::default();
    while let Some(row) = rows.next()? {
        let figures = JobFigures::from_row(row, 2)?;
        windows_sum.add(&figures);
        windows.push(ExplainedWindow {
            host: row.get(0)?,
            start_ns: row.get(1)?,
            figures,
        });
    }
    Ok(Explanation {
        job: job_id.to_owned(),
        hour_ns,
        detail_kept,
        hour_revisions: hour_revisions as u64,
        hour_revision_reason,
        windows,
        windows_sum,
        rolled_up,
        matches: windows_sum == rolled_up,
        method: METHOD,
    })
}

/// The job's roll-up of the hour in `schema` (`main`: the ledger's; `temp`: the rebuild's).
fn job_hour(
    connection: &Connection,
    schema: &str,
    job: i64,
    hour_ns: i64,
) -> Result<Option<JobFigures>> {
    Ok(connection.query_row(
        &format!(
            "SELECT COUNT(*), {} FROM {schema}.rollup_jobs WHERE hour_ns = ?1 AND job = ?2",
            rollups::sums(JOB_FIGURES)
        ),
        params![hour_ns, job],
        |row| {
            if row.get::<_, i64>(0)? == 0 {
                return Ok(None);
            }
            JobFigures::from_row(row, 1).map(Some)
        },
    )?)
}

/// Creates an empty `TEMP` table of each table the rebuild writes, with the layout of the
/// ledger's own, and carries over the hour before's market matching (its guarantees-of-origin
/// balance carries into the hour).
pub(super) fn shadow(connection: &Connection, hour_ns: i64) -> Result<()> {
    for table in SHADOWED {
        let sql: String = connection.query_row(
            "SELECT sql FROM main.sqlite_master WHERE type = 'table' AND name = ?1",
            [table],
            |row| row.get(0),
        )?;
        connection.execute_batch(&sql.replacen("CREATE TABLE", "CREATE TEMP TABLE", 1))?;
    }
    connection.execute(
        "INSERT INTO temp.site_hours SELECT * FROM main.site_hours WHERE hour_ns = ?1",
        [hour_ns - NANOS_PER_HOUR],
    )?;
    Ok(())
}
