//! Every settled hour of a span rebuilt from the readings and compared with the roll-ups the
//! ledger holds, figure by figure: what `footprint report verify` does to show that the report's
//! figures follow from the readings, not merely from tables that could have been edited.
//!
//! Each hour is rebuilt as `footprint explain` rebuilds one ([`super::explain`]): the ledger's own
//! code writing into `TEMP` tables that shadow the ledger's, on read-only connections (one per
//! thread; `TEMP` tables belong to their connection).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use footprint_core::units::NANOS_PER_HOUR;
use footprint_core::window::WindowLength;
use footprint_core::{Span, UnixNanos};
use rusqlite::{Connection, params};

use super::explain::{SHADOWED, shadow};
use super::{detail, site};
use crate::settings::LedgerSettings;
use crate::tables::rollups::{HOST_FIGURES, JOB_FIGURES, SITE_FIGURES};
use crate::tables::schema;
use crate::{Error, Result};

/// Differences listed at most.
pub const LISTED: usize = 20;

/// What rebuilding the span's hours found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recheck {
    pub hours: u64,
    /// `hour, host, job: figure is A in the ledger, B from the readings`, at most [`LISTED`].
    pub differences: Vec<String>,
    /// Roll-up rows that differ, all of them.
    pub rows_differing: u64,
}

/// A roll-up table, its key columns and its figures.
struct Compared {
    table: &'static str,
    keys: &'static [&'static str],
    figures: &'static str,
}

const COMPARED: [Compared; 3] = [
    Compared {
        table: "rollup_jobs",
        keys: &["collector", "job"],
        figures: JOB_FIGURES,
    },
    Compared {
        table: "rollup_hosts",
        keys: &["collector"],
        figures: HOST_FIGURES,
    },
    Compared {
        table: "rollup_site",
        keys: &[],
        figures: SITE_FIGURES,
    },
];

/// Rebuilds every settled hour of `span` from the readings of the ledger at `path` and compares,
/// on up to `threads` read-only connections at once (hours are independent: each starts from the
/// ledger's own hour before). `progress` is told the hours done, out of how many, as they go.
///
/// # Errors
/// A database error.
pub fn recheck(
    path: &Path,
    settings: &LedgerSettings,
    window: WindowLength,
    span: Span,
    threads: usize,
    mut progress: impl FnMut(u64, u64),
) -> Result<Recheck> {
    let hours = settled_hours(&schema::open_reader(path)?, span)?;
    let total = hours.len() as u64;
    if hours.is_empty() {
        return Ok(Recheck::default());
    }
    let per_thread = hours.len().div_ceil(threads.max(1));
    let done = AtomicU64::new(0);
    let outcomes: Vec<Result<Recheck>> = std::thread::scope(|scope| {
        let workers: Vec<_> = hours
            .chunks(per_thread)
            .map(|chunk| scope.spawn(|| rebuild(path, settings, window, chunk, &done)))
            .collect();
        while !workers.iter().all(|worker| worker.is_finished()) {
            progress(done.load(Ordering::Relaxed), total);
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        progress(done.load(Ordering::Relaxed), total);
        workers
            .into_iter()
            .map(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|_| Err(Error::Server("a rebuilding thread panicked".into())))
            })
            .collect()
    });
    let mut found = Recheck::default();
    for outcome in outcomes {
        let part = outcome?;
        found.hours += part.hours;
        found.rows_differing += part.rows_differing;
        found.differences.extend(part.differences);
    }
    // Each line starts with its hour (RFC 3339): in time order.
    found.differences.sort();
    found.differences.truncate(LISTED);
    Ok(found)
}

/// The settled hours of `span` that have a roll-up.
fn settled_hours(connection: &Connection, span: Span) -> Result<Vec<i64>> {
    let settled = site::settled_until(connection)?.map_or(i64::MIN, |until| until.0);
    Ok(connection
        .prepare("SELECT hour_ns FROM rollup_site WHERE hour_ns >= ?1 AND hour_ns + ?2 <= ?3 ORDER BY hour_ns")?
        .query_map(
            params![span.start.0, NANOS_PER_HOUR, span.end.0.min(settled)],
            |row| row.get(0),
        )?
        .collect::<rusqlite::Result<_>>()?)
}

/// Rebuilds `hours` on a connection of its own and compares each with the ledger.
fn rebuild(
    path: &Path,
    settings: &LedgerSettings,
    window: WindowLength,
    hours: &[i64],
    done: &AtomicU64,
) -> Result<Recheck> {
    let connection = schema::open_reader(path)?;
    let mut found = Recheck::default();
    for (index, &hour_ns) in hours.iter().enumerate() {
        if index == 0 {
            shadow(&connection, hour_ns)?;
        } else {
            for table in SHADOWED {
                connection.execute(&format!("DELETE FROM temp.{table}"), [])?;
            }
            connection.execute(
                "INSERT INTO temp.site_hours SELECT * FROM main.site_hours WHERE hour_ns = ?1",
                [hour_ns - NANOS_PER_HOUR],
            )?;
        }
        let hour = Span::new(UnixNanos(hour_ns), UnixNanos(hour_ns + NANOS_PER_HOUR));
        detail::regenerate(&connection, window, settings, hour)?;
        site::settle_hour(&connection, settings, window, hour_ns)?;
        for compared in &COMPARED {
            compare(&connection, compared, hour_ns, &mut found)?;
        }
        found.hours += 1;
        done.fetch_add(1, Ordering::Relaxed);
    }
    Ok(found)
}

/// Lists the rows of `compared` for the hour that differ between the ledger and the rebuild.
fn compare(
    connection: &Connection,
    compared: &Compared,
    hour_ns: i64,
    found: &mut Recheck,
) -> Result<()> {
    let keys = compared.keys.join(", ");
    let key_list = if keys.is_empty() {
        String::new()
    } else {
        format!("{keys}, ")
    };
    let columns = format!("{key_list}{}", compared.figures);
    let table = compared.table;
    // Rows in either that the other lacks (a key missing on one side shows as all zeros there).
    let sql = format!(
        "SELECT {key_list}'ledger', {figures} FROM (
             SELECT {columns} FROM main.{table} WHERE hour_ns = ?1
             EXCEPT SELECT {columns} FROM temp.{table} WHERE hour_ns = ?1)
         UNION ALL
         SELECT {key_list}'readings', {figures} FROM (
             SELECT {columns} FROM temp.{table} WHERE hour_ns = ?1
             EXCEPT SELECT {columns} FROM main.{table} WHERE hour_ns = ?1)
         ORDER BY 1",
        figures = compared.figures
    );
    let names: Vec<&str> = compared.figures.split(", ").collect();
    let width = compared.keys.len();
    let mut statement = connection.prepare(&sql)?;
    let mut rows = statement.query(params![hour_ns])?;
    // (key, side, figures)
    let mut differing: Vec<(Vec<i64>, String, Vec<i64>)> = Vec::new();
    while let Some(row) = rows.next()? {
        let key = (0..width)
            .map(|i| row.get(i))
            .collect::<rusqlite::Result<_>>()?;
        let side: String = row.get(width)?;
        let figures = (0..names.len())
            .map(|i| row.get(width + 1 + i))
            .collect::<rusqlite::Result<_>>()?;
        differing.push((key, side, figures));
    }
    drop(rows);
    let mut keys_seen: Vec<&Vec<i64>> = differing.iter().map(|(key, _, _)| key).collect();
    keys_seen.dedup();
    found.rows_differing += keys_seen.len() as u64;
    for key in keys_seen {
        if found.differences.len() >= LISTED {
            break;
        }
        let side = |name: &str| {
            differing
                .iter()
                .find(|(k, s, _)| k == key && s == name)
                .map(|(_, _, figures)| figures.clone())
        };
        let (ledger, readings) = (side("ledger"), side("readings"));
        let zero = vec![0; names.len()];
        let (a, b) = (
            ledger.as_ref().unwrap_or(&zero),
            readings.as_ref().unwrap_or(&zero),
        );
        let figures: Vec<String> = names
            .iter()
            .zip(a.iter().zip(b))
            .filter(|(_, (a, b))| a != b)
            .map(|(name, (a, b))| format!("{name} is {a} in the ledger, {b} from the readings"))
            .collect();
        found.differences.push(format!(
            "{} {}{}: {}",
            footprint_core::time::format_rfc3339(UnixNanos(hour_ns)),
            table,
            describe(connection, compared.keys, key)?,
            if ledger.is_none() {
                "missing from the ledger".to_owned()
            } else if readings.is_none() {
                "not in what the readings give".to_owned()
            } else {
                figures.join(", ")
            }
        ));
    }
    Ok(())
}

/// ` host gpu-node-01, job train-001` for a key.
fn describe(connection: &Connection, keys: &[&str], values: &[i64]) -> Result<String> {
    let mut text = String::new();
    for (name, value) in keys.iter().zip(values) {
        let (label, shown): (&str, String) = match *name {
            "collector" => (
                "host",
                connection.query_row(
                    "SELECT host FROM collectors WHERE id = ?1",
                    [value],
                    |row| row.get(0),
                )?,
            ),
            "job" => (
                "job",
                connection.query_row("SELECT job_id FROM jobs WHERE id = ?1", [value], |row| {
                    row.get(0)
                })?,
            ),
            other => (other, value.to_string()),
        };
        text.push_str(&format!(", {label} {shown}"));
    }
    Ok(text)
}
