//! Which grid intensity priced each hour, and where it came from: the feed row of the hour, or
//! the gap rule between (or beside) its neighbours, with the feeds those rows were imported from,
//! and for a settled hour the figure its location-based carbon was priced with.

use footprint_core::carbon;
use footprint_core::time::format_rfc3339;
use footprint_core::units::NANOS_PER_HOUR;
use footprint_core::{MgCo2ePerKwh, Quality, Span, UnixNanos};
use rusqlite::{Connection, OptionalExtension, params};

use crate::codec::quality_from_code;
use crate::settings::{self, FeedRecord};
use crate::{Error, Result};

/// Most hours one answer lists (over eleven years).
pub const MAX_HOURS: i64 = 100_000;

/// An imported feed, as `feeds` records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedInfo {
    pub file: String,
    pub sha256: String,
    pub layout: String,
    /// `starting` or `ending`; empty for hours imported before feeds were recorded.
    pub hour_convention: String,
}

/// One hour of a zone's grid intensity as the ledger prices it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntensityUsed {
    pub hour_ns: i64,
    /// With its quality; `None` when no feed covers the zone.
    pub intensity: Option<(MgCo2ePerKwh, Quality)>,
    /// How it was obtained, in words.
    pub method: String,
    /// The feeds of the rows it came from.
    pub feeds: Vec<FeedInfo>,
    /// For an hour the site has settled: what its location-based carbon was priced with.
    pub priced: Option<MgCo2ePerKwh>,
}

/// A stored row: its hour, value, quality, and feed (the `feeds` row, or the source text of
/// hours imported before feeds were recorded).
pub(crate) type Row = (i64, MgCo2ePerKwh, Quality, Option<i64>, String);

/// The zone's stored rows the gap rule prices the hour at `hour_ns` from: the row at or before
/// it, and — unless that is the hour's own — the first row after it.
///
/// # Errors
/// A database error.
pub(crate) fn rows_around(
    connection: &Connection,
    zone: &str,
    hour_ns: i64,
) -> Result<(Option<Row>, Option<Row>)> {
    let near = |sql: &str| -> Result<Option<Row>> {
        Ok(connection
            .prepare_cached(sql)?
            .query_row(params![zone, hour_ns], |row| {
                Ok((
                    row.get(0)?,
                    MgCo2ePerKwh(row.get::<_, i64>(1)? as u64),
                    quality_from_code(row.get(2)?),
                    row.get(3)?,
                    row.get(4)?,
                ))
            })
            .optional()?)
    };
    let before = near(
        "SELECT hour_ns, mg_per_kwh, quality, feed, source FROM intensity
         WHERE zone = ?1 AND hour_ns <= ?2 ORDER BY hour_ns DESC LIMIT 1",
    )?;
    let after = match &before {
        Some((at, ..)) if *at == hour_ns => None,
        _ => near(
            "SELECT hour_ns, mg_per_kwh, quality, feed, source FROM intensity
             WHERE zone = ?1 AND hour_ns > ?2 ORDER BY hour_ns LIMIT 1",
        )?,
    };
    Ok((before, after))
}

/// Imports an intensity file ([`settings::import_file`]) and, where it changed the figure of
/// hours stored before, reopens the settled hours they price — from the first hour after the
/// zone's previous row, since the gap rule fills the hours between from the changed one — so the
/// site stage prices them again and records each hour whose figures change, naming the feed.
///
/// # Errors
/// As [`settings::import_file`].
pub fn import(
    connection: &Connection,
    path: &std::path::Path,
    convention: Option<carbon::HourConvention>,
    now_ns: i64,
) -> Result<(carbon::Feed, FeedRecord)> {
    let (feed, record) = settings::import_file(connection, path, convention, now_ns)?;
    if let Some((zone, first)) = &record.first_changed {
        let previous: Option<i64> = connection.query_row(
            "SELECT MAX(hour_ns) FROM intensity WHERE zone = ?1 AND hour_ns < ?2",
            params![zone, first],
            |row| row.get(0),
        )?;
        let from = match previous {
            Some(previous) => previous + NANOS_PER_HOUR,
            None => connection
                .query_row("SELECT MIN(start_ns) FROM site_windows", [], |row| {
                    row.get::<_, Option<i64>>(0)
                })?
                .unwrap_or(*first)
                .min(*first),
        };
        let reason = format!(
            "intensity feed {} (sha256 {}) changed {} hour(s) of {zone}",
            record.file,
            &record.sha256[..12],
            record.changed_hours
        );
        super::site::reopen(connection, UnixNanos(from), &reason)?;
    }
    Ok((feed, record))
}

/// Every hour of `zone` starting in `span`, as the ledger prices it.
///
/// # Errors
/// [`Error::BadRequest`] for an empty zone or a span of more than [`MAX_HOURS`] hours; a database
/// error.
pub fn intensity_hours(
    connection: &Connection,
    zone: &str,
    span: Span,
) -> Result<Vec<IntensityUsed>> {
    if zone.trim().is_empty() {
        return Err(Error::BadRequest("zone: must name the grid zone".into()));
    }
    // The hours that start inside the span: from the first hour boundary at or after its start.
    let first = span
        .start
        .0
        .saturating_add(NANOS_PER_HOUR - 1)
        .div_euclid(NANOS_PER_HOUR)
        * NANOS_PER_HOUR;
    let hours = (span.end.0.saturating_sub(first).max(0)).saturating_add(NANOS_PER_HOUR - 1)
        / NANOS_PER_HOUR;
    if hours > MAX_HOURS {
        return Err(Error::BadRequest(format!(
            "to: {hours} hours asked for; at most {MAX_HOURS} in one answer"
        )));
    }
    (0..hours)
        .map(|index| hour_used(connection, zone, first + index * NANOS_PER_HOUR))
        .collect()
}

fn hour_used(connection: &Connection, zone: &str, hour_ns: i64) -> Result<IntensityUsed> {
    let (before, after) = rows_around(connection, zone, hour_ns)?;
    let point = |row: &Option<Row>| {
        row.as_ref()
            .map(|(at, mg, quality, ..)| (*at, *mg, *quality))
    };
    let intensity = carbon::fill(hour_ns, point(&before), point(&after));
    let at = |row: &Row| format_rfc3339(UnixNanos(row.0));
    let method = match (&before, &after) {
        (Some(row), _) if row.0 == hour_ns => "the feed's row for this hour".to_owned(),
        (Some(b), Some(a)) => format!("interpolated between the rows of {} and {}", at(b), at(a)),
        (Some(row), None) | (None, Some(row)) => format!("held from the row of {}", at(row)),
        (None, None) => "no feed covers this zone".to_owned(),
    };
    let mut feeds = Vec::new();
    for row in before.iter().chain(after.iter()) {
        let info = feed_info(connection, row)?;
        if !feeds.contains(&info) {
            feeds.push(info);
        }
    }
    let priced: Option<i64> = connection
        .prepare_cached(
            "SELECT intensity_mg_per_kwh FROM site_windows
             WHERE start_ns >= ?1 AND start_ns < ?2 AND intensity_mg_per_kwh IS NOT NULL LIMIT 1",
        )?
        .query_row(params![hour_ns, hour_ns + NANOS_PER_HOUR], |row| row.get(0))
        .optional()?;
    Ok(IntensityUsed {
        hour_ns,
        intensity,
        method,
        feeds,
        priced: priced.map(|mg| MgCo2ePerKwh(mg as u64)),
    })
}

fn feed_info(connection: &Connection, row: &Row) -> Result<FeedInfo> {
    let (_, _, _, feed, source) = row;
    let recorded = match feed {
        Some(id) => connection
            .prepare_cached(
                "SELECT file, sha256, layout, hour_convention FROM feeds WHERE id = ?1",
            )?
            .query_row([id], |row| {
                Ok(FeedInfo {
                    file: row.get(0)?,
                    sha256: row.get(1)?,
                    layout: row.get(2)?,
                    hour_convention: row.get(3)?,
                })
            })
            .optional()?,
        None => None,
    };
    Ok(recorded.unwrap_or_else(|| FeedInfo {
        file: source.clone(),
        sha256: String::new(),
        layout: String::new(),
        hour_convention: String::new(),
    }))
}
