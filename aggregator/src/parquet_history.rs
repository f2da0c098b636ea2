//! The ledger's history as Parquet, one UTC day at a time: every reading, the site's settled
//! hours and each job's hours on each host, partitioned `TABLE/site=S/date=YYYY-MM-DD/` and
//! written by [`footprint_exporters::parquet`]. The schema is in `docs/PARQUET.md`.
//!
//! With `[parquet] dir` set, the aggregator writes each day once all of it is settled, and keeps
//! a cursor in the ledger (`ledger_state`), so a failure (a full disk, a removed directory) is
//! counted and retried at the next round, and nothing is skipped or written twice;
//! `footprint export parquet` writes any span on demand.

use std::path::{Path, PathBuf};

use footprint_core::units::NANOS_PER_DAY;
use footprint_exporters::parquet::{Column, partition_path, write_table};
use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};

use crate::tables::rollups::{JOB_FIGURES, SITE_FIGURES};
use crate::{Error, Result};

/// `ledger_state` key of the first day not yet written by the background export.
pub const EXPORTED_KEY: &str = "parquet_exported_until_ns";

/// `[parquet]`: the history written as days settle.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ParquetConfig {
    /// Where the tables go; unset (the default): no background export.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// The `site=` partition of every file, so several sites' histories share one tree.
    #[serde(default = "default_site")]
    pub site: String,
    /// Seconds between looks for newly settled days.
    #[serde(default = "default_interval_s")]
    pub interval_s: u64,
}

fn default_site() -> String {
    "site".to_owned()
}

fn default_interval_s() -> u64 {
    300
}

impl Default for ParquetConfig {
    fn default() -> Self {
        Self {
            dir: None,
            site: default_site(),
            interval_s: default_interval_s(),
        }
    }
}

/// What one day's export wrote.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DayExport {
    /// `YYYY-MM-DD`.
    pub date: String,
    pub readings: u64,
    pub site_hours: u64,
    pub job_hours: u64,
    pub bytes: u64,
}

/// What a `site=` partition may be called, in words.
pub const PLAIN_NAME: &str = "must be a plain name (no /, \\ or =, not starting with .)";

/// Whether `site` can name a `site=` directory without escaping the tree.
pub fn is_plain_name(site: &str) -> bool {
    !site.is_empty() && !site.contains(['/', '\\', '=']) && !site.starts_with('.')
}

fn date_of(day_ns: i64) -> String {
    footprint_core::time::format_rfc3339(footprint_core::UnixNanos(day_ns))[..10].to_owned()
}

fn quality_name(code: i64) -> String {
    match code {
        1 => "measured".to_owned(),
        2 => "interpolated".to_owned(),
        3 => "estimated".to_owned(),
        other => format!("code {other}"),
    }
}

fn unit_of(kind: &str) -> &'static str {
    if kind.contains("water") { "mL" } else { "mJ" }
}

/// Writes the day starting at `day_ns` (UTC midnight) under `dir` for `site`.
///
/// # Errors
/// [`Error::BadRequest`] for a bad site name; a database error; [`Error::Server`] naming the file
/// that could not be written.
pub fn export_day(
    connection: &Connection,
    dir: &Path,
    site: &str,
    day_ns: i64,
) -> Result<DayExport> {
    if !is_plain_name(site) {
        return Err(Error::BadRequest(format!("site: {site:?} {PLAIN_NAME}")));
    }
    let date = date_of(day_ns);
    let span = footprint_core::Span::new(
        footprint_core::UnixNanos(day_ns),
        footprint_core::UnixNanos(day_ns + NANOS_PER_DAY),
    );
    let write = |table: &str, columns: &[Column]| -> Result<u64> {
        write_table(&partition_path(dir, table, site, &date), columns)
            .map_err(|e| Error::Server(format!("parquet: {e}")))
    };
    let mut export = DayExport {
        date: date.clone(),
        ..DayExport::default()
    };

    // Readings, by meter then time.
    let mut meters = connection.prepare_cached(
        "SELECT m.id, c.name, c.host, m.meter_id, m.kind, m.device FROM meters m
         JOIN collectors c ON c.id = m.collector ORDER BY c.name, m.meter_id, m.id",
    )?;
    let meters: Vec<(i64, String, String, String, i32, String)> = meters
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let names = [
        "collector",
        "host",
        "meter_id",
        "kind",
        "device",
        "unit",
        "quality",
    ];
    let mut text: Vec<Vec<String>> = vec![Vec::new(); names.len()];
    let (mut ts, mut value, mut delta, mut from) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (meter, collector, host, meter_id, kind, device) in &meters {
        let kind = crate::ledger::coverage::kind_name(*kind);
        // `readings_in` gives the readings whose interval ends after its start; one ns earlier
        // takes the reading stamped at midnight itself, which belongs to this day.
        let fetch =
            footprint_core::Span::new(footprint_core::UnixNanos(span.start.0 - 1), span.end);
        for reading in crate::tables::series::readings_in(connection, *meter, fetch)? {
            if reading.ts_ns < span.start.0 || reading.ts_ns >= span.end.0 {
                continue;
            }
            for (column, text_value) in text.iter_mut().zip([
                collector.as_str(),
                host,
                meter_id,
                &kind,
                device,
                unit_of(&kind),
                &quality_name(reading.quality),
            ]) {
                column.push(text_value.to_owned());
            }
            ts.push(Some(reading.ts_ns));
            value.push(Some(reading.value));
            delta.push(reading.delta);
            from.push(reading.from_ns);
        }
    }
    export.readings = ts.len() as u64;
    if !ts.is_empty() {
        let mut columns: Vec<Column> = names
            .iter()
            .zip(text)
            .map(|(name, values)| Column::Text((*name).to_owned(), values))
            .collect();
        columns.push(Column::Time("ts".into(), ts));
        columns.push(Column::Int("value".into(), value));
        columns.push(Column::Int("delta".into(), delta));
        columns.push(Column::Time("from_ts".into(), from));
        export.bytes += write("readings", &columns)?;
    }

    // The site's settled hours, with the market-based inputs of each.
    let market = "load_mj, ppa_mj, ppa_delivered_mj, go_mj, uncovered_mj, uncovered_mg_per_kwh";
    let site_columns: Vec<&str> = SITE_FIGURES.split(", ").chain(market.split(", ")).collect();
    let sql = format!(
        "SELECT r.hour_ns, {}, {} FROM rollup_site r LEFT JOIN site_hours h ON h.hour_ns = r.hour_ns
         WHERE r.hour_ns >= ?1 AND r.hour_ns < ?2 ORDER BY r.hour_ns",
        SITE_FIGURES
            .split(", ")
            .map(|c| format!("r.{c}"))
            .collect::<Vec<_>>()
            .join(", "),
        market
            .split(", ")
            .map(|c| format!("h.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let (hours, figures) = int_rows(connection, &sql, span, site_columns.len())?;
    export.site_hours = hours.len() as u64;
    if !hours.is_empty() {
        let mut columns = vec![Column::Time(
            "hour".into(),
            hours.into_iter().map(Some).collect(),
        )];
        columns.extend(
            site_columns
                .iter()
                .zip(figures)
                .map(|(name, values)| Column::Int((*name).to_owned(), values)),
        );
        export.bytes += write("site_hours", &columns)?;
    }

    // Each job's hours on each host.
    let job_columns: Vec<&str> = JOB_FIGURES.split(", ").collect();
    let sql = format!(
        "SELECT r.hour_ns, c.name, c.host, j.job_id, j.name, j.user, j.project, j.kind, j.model, {}
         FROM rollup_jobs r JOIN jobs j ON j.id = r.job JOIN collectors c ON c.id = r.collector
         WHERE r.hour_ns >= ?1 AND r.hour_ns < ?2 ORDER BY r.hour_ns, j.job_id, c.name",
        job_columns
            .iter()
            .map(|c| format!("r.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut statement = connection.prepare_cached(&sql)?;
    let text_names = [
        "collector",
        "host",
        "job_id",
        "job_name",
        "user",
        "project",
        "kind",
        "model",
    ];
    let mut text: Vec<Vec<String>> = vec![Vec::new(); text_names.len()];
    let mut hours = Vec::new();
    let mut figures: Vec<Figures> = vec![Vec::new(); job_columns.len()];
    let mut rows = statement.query(params![span.start.0, span.end.0])?;
    while let Some(row) = rows.next()? {
        hours.push(Some(row.get::<_, i64>(0)?));
        for (index, column) in text.iter_mut().enumerate() {
            let value = if text_names[index] == "kind" {
                footprint_proto::v1::JobKind::try_from(row.get::<_, i32>(index + 1)?)
                    .map_or_else(|_| "other".to_owned(), |k| k.short_name().to_owned())
            } else {
                row.get::<_, String>(index + 1)?
            };
            column.push(value);
        }
        for (index, column) in figures.iter_mut().enumerate() {
            column.push(row.get(index + 1 + text_names.len())?);
        }
    }
    drop(rows);
    export.job_hours = hours.len() as u64;
    if !hours.is_empty() {
        let mut columns = vec![Column::Time("hour".into(), hours)];
        columns.extend(
            text_names
                .iter()
                .zip(text)
                .map(|(name, values)| Column::Text((*name).to_owned(), values)),
        );
        columns.extend(
            job_columns
                .iter()
                .zip(figures)
                .map(|(name, values)| Column::Int((*name).to_owned(), values)),
        );
        export.bytes += write("job_hours", &columns)?;
    }
    Ok(export)
}

/// One integer column's values, row by row (`None`: null).
type Figures = Vec<Option<i64>>;

/// Rows of `sql` (an instant, then `width` integer columns) over `span`.
fn int_rows(
    connection: &Connection,
    sql: &str,
    span: footprint_core::Span,
    width: usize,
) -> Result<(Vec<i64>, Vec<Figures>)> {
    let mut statement = connection.prepare_cached(sql)?;
    let mut rows = statement.query(params![span.start.0, span.end.0])?;
    let mut times = Vec::new();
    let mut figures = vec![Vec::new(); width];
    while let Some(row) = rows.next()? {
        times.push(row.get(0)?);
        for (index, column) in figures.iter_mut().enumerate() {
            column.push(row.get(1 + index)?);
        }
    }
    Ok((times, figures))
}

/// The UTC days `[from_ns, to_ns)` touches, midnight to midnight.
pub fn days(from_ns: i64, to_ns: i64) -> impl Iterator<Item = i64> {
    let first = from_ns.div_euclid(NANOS_PER_DAY) * NANOS_PER_DAY;
    (0..)
        .map(move |index| first + index * NANOS_PER_DAY)
        .take_while(move |day| *day < to_ns)
}

/// Where the background export has got to, else the first day with a settled hour.
///
/// # Errors
/// A database error.
pub fn cursor(connection: &Connection) -> Result<Option<i64>> {
    let stored = crate::tables::state(connection, EXPORTED_KEY)?;
    if stored.is_some() {
        return Ok(stored);
    }
    let first: Option<i64> =
        connection.query_row("SELECT MIN(hour_ns) FROM rollup_site", [], |r| r.get(0))?;
    Ok(first.map(|hour| hour.div_euclid(NANOS_PER_DAY) * NANOS_PER_DAY))
}

/// Writes every day that is wholly settled and not yet written, moving the cursor past each,
/// every `parquet.interval_s` until `shutdown`.
pub async fn run(
    reader: crate::query::LedgerReader,
    store: crate::store::StoreHandle,
    config: ParquetConfig,
    metrics: std::sync::Arc<crate::metrics::AggregatorMetrics>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let Some(dir) = config.dir.clone() else {
        return;
    };
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(config.interval_s.max(1)));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        loop {
            let (dir, site) = (dir.clone(), config.site.clone());
            let next = reader
                .with(move |connection| {
                    let Some(day) = cursor(connection)? else {
                        return Ok(None);
                    };
                    let settled =
                        crate::ledger::site::settled_until(connection)?.map_or(0, |at| at.0);
                    if day + NANOS_PER_DAY > settled {
                        return Ok(None);
                    }
                    export_day(connection, &dir, &site, day).map(|export| Some((day, export)))
                })
                .await;
            match next {
                Ok(None) => break,
                Ok(Some((day, export))) => {
                    let moved = store
                        .write(move |connection| {
                            Ok(crate::tables::set_state(
                                connection,
                                EXPORTED_KEY,
                                day + NANOS_PER_DAY,
                            )?)
                        })
                        .await;
                    if let Err(error) = moved {
                        tracing::warn!(%error, "Parquet: the export cursor did not move; the day will be written again.");
                        break;
                    }
                    tracing::info!(date = %export.date, readings = export.readings, bytes = export.bytes, "Parquet: day written.");
                }
                Err(error) => {
                    metrics.export_failed("parquet");
                    tracing::warn!(%error, "Parquet export failed; retried at the next round, nothing skipped.");
                    break;
                }
            }
        }
    }
}
