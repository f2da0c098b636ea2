//! A meter's stored readings, wherever they live: recent ones as `readings` rows (one per
//! reading, cheap to append and to place a late reading among), older ones compacted into
//! `reading_chunks` (one meter's UTC hour per row, packed by [`chunk`]). A reading lives in exactly
//! one of the two. Everything that reads readings back goes through here.

use footprint_core::Span;
use footprint_core::units::NANOS_PER_HOUR;
use rusqlite::{Connection, OptionalExtension, params};

use super::chunk::{self, StoredReading};
use crate::{Error, Result};

/// The UTC hour holding `ts_ns`.
pub fn hour_of(ts_ns: i64) -> i64 {
    ts_ns.div_euclid(NANOS_PER_HOUR) * NANOS_PER_HOUR
}

fn decode(meter: i64, hour_ns: i64, data: &[u8]) -> Result<Vec<StoredReading>> {
    chunk::decode(data).map_err(|error| {
        Error::Server(format!(
            "the readings of meter {meter} in the hour at {hour_ns}: {error}"
        ))
    })
}

fn row_reading(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredReading> {
    Ok(StoredReading {
        ts_ns: row.get(0)?,
        value: row.get(1)?,
        quality: row.get(2)?,
        method: row.get(3)?,
        from_ns: row.get(4)?,
        delta: row.get(5)?,
        step: row.get(6)?,
    })
}

/// Readings of `meter` whose interval reaches into `range` (taken after `range.start`, closing an
/// interval that began before `range.end`), and the first-ever reading if it falls in `range`,
/// in time order.
///
/// # Errors
/// A database error, or a chunk that does not decode.
pub fn readings_in(connection: &Connection, meter: i64, range: Span) -> Result<Vec<StoredReading>> {
    let mut readings = Vec::new();
    let mut statement = connection.prepare_cached(
        "SELECT ts_ns, value, quality, method, from_ns, delta, step FROM readings
         WHERE meter = ?1 AND ts_ns > ?2 ORDER BY ts_ns",
    )?;
    let mut rows = statement.query(params![meter, range.start.0])?;
    while let Some(row) = rows.next()? {
        let reading = row_reading(row)?;
        if reading.from_ns.unwrap_or(reading.ts_ns) >= range.end.0 {
            break;
        }
        readings.push(reading);
    }
    drop(rows);
    let mut chunks = connection.prepare_cached(
        "SELECT hour_ns, data FROM reading_chunks
         WHERE meter = ?1 AND hour_ns > ?2 AND from_ns < ?3 ORDER BY hour_ns",
    )?;
    let mut rows = chunks.query(params![
        meter,
        range.start.0.saturating_sub(NANOS_PER_HOUR),
        range.end.0
    ])?;
    let mut unpacked = false;
    while let Some(row) = rows.next()? {
        let hour_ns: i64 = row.get(0)?;
        let data: Vec<u8> = row.get(1)?;
        readings.extend(
            decode(meter, hour_ns, &data)?
                .into_iter()
                .filter(|r| r.ts_ns > range.start.0),
        );
        unpacked = true;
    }
    if unpacked {
        readings.sort_by_key(|r| r.ts_ns);
        if let Some(end) = readings
            .iter()
            .position(|r| r.from_ns.unwrap_or(r.ts_ns) >= range.end.0)
        {
            readings.truncate(end);
        }
    }
    Ok(readings)
}

/// The last reading of `meter`: (time, value).
///
/// # Errors
/// A database error, or a chunk that does not decode.
pub fn last_reading(connection: &Connection, meter: i64) -> Result<Option<(i64, i64)>> {
    let row: Option<(i64, i64)> = connection
        .prepare_cached(
            "SELECT ts_ns, value FROM readings WHERE meter = ?1 ORDER BY ts_ns DESC LIMIT 1",
        )?
        .query_row([meter], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    let chunk: Option<(i64, i64, Vec<u8>)> = connection
        .prepare_cached(
            "SELECT hour_ns, last_ns, data FROM reading_chunks WHERE meter = ?1 ORDER BY hour_ns DESC LIMIT 1",
        )?
        .query_row([meter], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .optional()?;
    match (row, chunk) {
        (Some(row), Some((_, last_ns, _))) if row.0 > last_ns => Ok(Some(row)),
        (row, None) => Ok(row),
        (_, Some((hour_ns, _, data))) => Ok(decode(meter, hour_ns, &data)?
            .last()
            .map(|r| (r.ts_ns, r.value))),
    }
}

/// Time of the last reading of `meter`.
///
/// # Errors
/// A database error.
pub fn last_ts(connection: &Connection, meter: i64) -> Result<Option<i64>> {
    Ok(connection
        .prepare_cached(
            "SELECT MAX(last) FROM (SELECT MAX(ts_ns) AS last FROM readings WHERE meter = ?1
             UNION ALL SELECT MAX(last_ns) FROM reading_chunks WHERE meter = ?1)",
        )?
        .query_row([meter], |row| row.get(0))?)
}

/// Time of the first reading of any of `meters`.
///
/// # Errors
/// A database error.
pub fn first_ts(connection: &Connection, meters: &[i64]) -> Result<Option<i64>> {
    let mut first: Option<i64> = None;
    let mut statement = connection.prepare_cached(
        "SELECT MIN(first) FROM (SELECT MIN(ts_ns) AS first FROM readings WHERE meter = ?1
         UNION ALL SELECT MIN(first_ns) FROM reading_chunks WHERE meter = ?1)",
    )?;
    for meter in meters {
        let meter_first: Option<i64> = statement.query_row([meter], |row| row.get(0))?;
        first = match (first, meter_first) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    Ok(first)
}

/// Packs the rows of `meter` in the hour at `hour_ns` into its chunk (merging with the chunk
/// already there, if a late reading was stored beside it). Returns the readings packed.
///
/// # Errors
/// A database error, or a chunk that does not decode.
pub fn compact_hour(connection: &Connection, meter: i64, hour_ns: i64) -> Result<u64> {
    let end = hour_ns + NANOS_PER_HOUR;
    let mut readings: Vec<StoredReading> = connection
        .prepare_cached(
            "SELECT ts_ns, value, quality, method, from_ns, delta, step FROM readings
             WHERE meter = ?1 AND ts_ns >= ?2 AND ts_ns < ?3 ORDER BY ts_ns",
        )?
        .query_map(params![meter, hour_ns, end], row_reading)?
        .collect::<rusqlite::Result<_>>()?;
    if readings.is_empty() {
        return Ok(0);
    }
    let packed = readings.len() as u64;
    let existing: Option<Vec<u8>> = connection
        .prepare_cached("SELECT data FROM reading_chunks WHERE meter = ?1 AND hour_ns = ?2")?
        .query_row(params![meter, hour_ns], |row| row.get(0))
        .optional()?;
    if let Some(data) = existing {
        readings.extend(decode(meter, hour_ns, &data)?);
        readings.sort_by_key(|r| r.ts_ns);
    }
    let data = chunk::encode(&readings)
        .map_err(|error| Error::Server(format!("packing meter {meter}: {error}")))?;
    let (Some(first), Some(last)) = (readings.first(), readings.last()) else {
        return Ok(0);
    };
    connection
        .prepare_cached(
            "INSERT OR REPLACE INTO reading_chunks (meter, hour_ns, from_ns, first_ns, last_ns, readings, data)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            meter,
            hour_ns,
            first.from_ns.unwrap_or(first.ts_ns).min(first.ts_ns),
            first.ts_ns,
            last.ts_ns,
            readings.len() as i64,
            data
        ])?;
    connection
        .prepare_cached("DELETE FROM readings WHERE meter = ?1 AND ts_ns >= ?2 AND ts_ns < ?3")?
        .execute(params![meter, hour_ns, end])?;
    Ok(packed)
}

/// Unpacks the chunk of `meter` at `hour_ns` back into rows, so that a late reading can be
/// placed among them. Returns whether there was one.
///
/// # Errors
/// A database error, or a chunk that does not decode.
pub fn expand_hour(connection: &Connection, meter: i64, hour_ns: i64) -> Result<bool> {
    let data: Option<Vec<u8>> = connection
        .prepare_cached(
            "DELETE FROM reading_chunks WHERE meter = ?1 AND hour_ns = ?2 RETURNING data",
        )?
        .query_row(params![meter, hour_ns], |row| row.get(0))
        .optional()?;
    let Some(data) = data else {
        return Ok(false);
    };
    let mut insert = connection.prepare_cached(
        "INSERT INTO readings (meter, ts_ns, value, quality, method, from_ns, delta, step)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for r in decode(meter, hour_ns, &data)? {
        insert.execute(params![
            meter, r.ts_ns, r.value, r.quality, r.method, r.from_ns, r.delta, r.step
        ])?;
    }
    Ok(true)
}

/// Makes the readings around `at` rows: the hour holding `at`, and the chunks holding the
/// readings just before and just after it. Returns the earliest hour unpacked, if any.
///
/// # Errors
/// A database error, or a chunk that does not decode.
pub fn expand_around(connection: &Connection, meter: i64, at: i64) -> Result<Option<i64>> {
    let mut expanded: Option<i64> = None;
    let mut note = |hour: i64| expanded = Some(expanded.map_or(hour, |e: i64| e.min(hour)));
    let hour = hour_of(at);
    if expand_hour(connection, meter, hour)? {
        note(hour);
    }
    let row_after: Option<i64> = connection
        .prepare_cached(
            "SELECT ts_ns FROM readings WHERE meter = ?1 AND ts_ns >= ?2 ORDER BY ts_ns LIMIT 1",
        )?
        .query_row(params![meter, at], |row| row.get(0))
        .optional()?;
    let chunk_after: Option<(i64, i64)> = connection
        .prepare_cached(
            "SELECT hour_ns, first_ns FROM reading_chunks WHERE meter = ?1 AND hour_ns > ?2 ORDER BY hour_ns LIMIT 1",
        )?
        .query_row(params![meter, hour], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    if let Some((chunk_hour, first_ns)) = chunk_after
        && row_after.is_none_or(|row| first_ns < row)
        && expand_hour(connection, meter, chunk_hour)?
    {
        note(chunk_hour);
    }
    let row_before: Option<i64> = connection
        .prepare_cached(
            "SELECT ts_ns FROM readings WHERE meter = ?1 AND ts_ns < ?2 ORDER BY ts_ns DESC LIMIT 1",
        )?
        .query_row(params![meter, at], |row| row.get(0))
        .optional()?;
    let chunk_before: Option<(i64, i64)> = connection
        .prepare_cached(
            "SELECT hour_ns, last_ns FROM reading_chunks WHERE meter = ?1 AND hour_ns < ?2 ORDER BY hour_ns DESC LIMIT 1",
        )?
        .query_row(params![meter, hour], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    if let Some((chunk_hour, last_ns)) = chunk_before
        && row_before.is_none_or(|row| last_ns > row)
        && expand_hour(connection, meter, chunk_hour)?
    {
        note(chunk_hour);
    }
    Ok(expanded)
}
