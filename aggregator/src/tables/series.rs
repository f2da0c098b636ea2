//! A meter's laid-out readings, wherever they live: in `reading_chunks` (runs of consecutive
//! readings within one UTC hour: plain as ingest laid them out, or the hour packed whole by
//! compaction, [`chunk`]) or as `readings` rows (one per reading, where a late reading was placed
//! among its neighbours). A reading lives in exactly one of the two. Everything that reads
//! readings back goes through here, after settling what is still staged (`tables::staged`).

use footprint_core::Span;
use footprint_core::units::NANOS_PER_HOUR;
use rusqlite::{Connection, OptionalExtension, params};

use super::chunk::{self, StoredReading};
use crate::{Error, Result};

/// The UTC hour holding `ts_ns`.
pub fn hour_of(ts_ns: i64) -> i64 {
    ts_ns.div_euclid(NANOS_PER_HOUR) * NANOS_PER_HOUR
}

fn decode(meter: i64, first_ns: i64, data: &[u8]) -> Result<Vec<StoredReading>> {
    chunk::decode(data).map_err(|error| {
        Error::Server(format!(
            "reading_chunks of meter {meter} from {first_ns}: {error}"
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
    // A meter's chunks do not overlap, so the first that can hold a reading after `range.start`
    // is the last one starting at or before it; from there they come in time order.
    let mut chunks = connection.prepare_cached(
        "SELECT first_ns, from_ns, data FROM reading_chunks
         WHERE meter = ?1 AND first_ns >= IFNULL(
             (SELECT MAX(first_ns) FROM reading_chunks WHERE meter = ?1 AND first_ns <= ?2), ?2)
         ORDER BY first_ns",
    )?;
    let mut rows = chunks.query(params![meter, range.start.0])?;
    let mut unpacked = false;
    while let Some(row) = rows.next()? {
        let (first_ns, from_ns): (i64, i64) = (row.get(0)?, row.get(1)?);
        if from_ns >= range.end.0 {
            break;
        }
        readings.extend(
            decode(
                meter,
                first_ns,
                row.get_ref(2)?.as_blob().map_err(rusqlite::Error::from)?,
            )?
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

/// Every reading of `meter` taken in `[start, end)` (whole hours), wherever it is stored — chunks
/// of either kind and rows — in time order. (Unlike [`readings_in`], nothing outside the range:
/// not the reading that closes the interval reaching into it.)
///
/// # Errors
/// A database error, or a chunk that does not decode.
pub fn taken_in(
    connection: &Connection,
    meter: i64,
    start: i64,
    end: i64,
) -> Result<Vec<StoredReading>> {
    let mut readings = Vec::new();
    let mut statement = connection.prepare_cached(
        "SELECT first_ns, data FROM reading_chunks WHERE meter = ?1 AND first_ns >= ?2 AND first_ns < ?3",
    )?;
    let mut rows = statement.query(params![meter, start, end])?;
    while let Some(row) = rows.next()? {
        readings.extend(decode(meter, row.get(0)?, &row.get::<_, Vec<u8>>(1)?)?);
    }
    drop(rows);
    let rows = connection
        .prepare_cached(
            "SELECT ts_ns, value, quality, method, from_ns, delta, step FROM readings
             WHERE meter = ?1 AND ts_ns >= ?2 AND ts_ns < ?3",
        )?
        .query_map(params![meter, start, end], row_reading)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    readings.extend(rows);
    readings.sort_by_key(|reading| reading.ts_ns);
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
            "SELECT first_ns, last_ns, data FROM reading_chunks WHERE meter = ?1 ORDER BY first_ns DESC LIMIT 1",
        )?
        .query_row([meter], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .optional()?;
    match (row, chunk) {
        (Some(row), Some((_, last_ns, _))) if row.0 > last_ns => Ok(Some(row)),
        (row, None) => Ok(row),
        (_, Some((first_ns, _, data))) => Ok(decode(meter, first_ns, &data)?
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

/// The hour of the oldest reading of `meter` that is not packed yet (a row, or in a plain chunk).
///
/// # Errors
/// A database error.
pub fn oldest_unpacked_hour(connection: &Connection, meter: i64) -> Result<Option<i64>> {
    let first: Option<i64> = connection
        .prepare_cached(
            "SELECT MIN(first) FROM (SELECT MIN(ts_ns) AS first FROM readings WHERE meter = ?1
             UNION ALL SELECT MIN(hour_ns) FROM unpacked_hours WHERE meter = ?1)",
        )?
        .query_row([meter], |row| row.get(0))?;
    Ok(first.map(hour_of))
}

/// Stores `readings` of `meter` (in time order, all after its last stored reading) as plain
/// chunks, one per UTC hour they reach into.
///
/// # Errors
/// A database error.
pub fn append_readings(
    connection: &Connection,
    meter: i64,
    readings: &[StoredReading],
) -> Result<()> {
    for run in readings.chunk_by(|a, b| hour_of(a.ts_ns) == hour_of(b.ts_ns)) {
        insert_chunk(connection, meter, run, false, &chunk::encode_raw(run))?;
        // Mostly there already: a lookup, no write.
        connection
            .prepare_cached(
                "INSERT OR IGNORE INTO unpacked_hours (meter, hour_ns) VALUES (?1, ?2)",
            )?
            .execute(params![meter, hour_of(run[0].ts_ns)])?;
    }
    Ok(())
}

fn insert_chunk(
    connection: &Connection,
    meter: i64,
    readings: &[StoredReading],
    packed: bool,
    data: &[u8],
) -> Result<()> {
    let (Some(first), Some(last)) = (readings.first(), readings.last()) else {
        return Ok(());
    };
    connection
        .prepare_cached(
            "INSERT INTO reading_chunks (meter, first_ns, from_ns, last_ns, readings, packed, data)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            meter,
            first.ts_ns,
            first.from_ns.unwrap_or(first.ts_ns).min(first.ts_ns),
            last.ts_ns,
            readings.len() as i64,
            packed,
            data
        ])?;
    Ok(())
}

/// Packs everything of `meter` in the hour at `hour_ns` (rows and plain chunks, with the packed
/// chunk already there if a late reading was stored beside it) into one packed chunk. Returns
/// the readings that were not packed before.
///
/// # Errors
/// A database error, or a chunk that does not decode.
pub fn compact_hour(connection: &Connection, meter: i64, hour_ns: i64) -> Result<u64> {
    let end = hour_ns + NANOS_PER_HOUR;
    forget_unpacked_hour(connection, meter, hour_ns)?;
    let mut readings: Vec<StoredReading> = connection
        .prepare_cached(
            "SELECT ts_ns, value, quality, method, from_ns, delta, step FROM readings
             WHERE meter = ?1 AND ts_ns >= ?2 AND ts_ns < ?3 ORDER BY ts_ns",
        )?
        .query_map(params![meter, hour_ns, end], row_reading)?
        .collect::<rusqlite::Result<_>>()?;
    let chunks: Vec<(i64, bool, Vec<u8>)> = connection
        .prepare_cached(
            "SELECT first_ns, packed, data FROM reading_chunks
             WHERE meter = ?1 AND first_ns >= ?2 AND first_ns < ?3",
        )?
        .query_map(params![meter, hour_ns, end], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut newly = readings.len() as u64;
    if newly == 0 && chunks.iter().all(|(_, packed, _)| *packed) {
        return Ok(0);
    }
    for (first_ns, packed, data) in chunks {
        let decoded = decode(meter, first_ns, &data)?;
        if !packed {
            newly += decoded.len() as u64;
        }
        readings.extend(decoded);
    }
    readings.sort_by_key(|r| r.ts_ns);
    let data = chunk::encode(&readings)
        .map_err(|error| Error::Server(format!("packing meter {meter}: {error}")))?;
    connection
        .prepare_cached(
            "DELETE FROM reading_chunks WHERE meter = ?1 AND first_ns >= ?2 AND first_ns < ?3",
        )?
        .execute(params![meter, hour_ns, end])?;
    insert_chunk(connection, meter, &readings, true, &data)?;
    connection
        .prepare_cached("DELETE FROM readings WHERE meter = ?1 AND ts_ns >= ?2 AND ts_ns < ?3")?
        .execute(params![meter, hour_ns, end])?;
    super::meter_days::open_day(connection, meter, hour_ns)?;
    super::meter_days::close_day(connection, meter, hour_ns)?;
    Ok(newly)
}

/// The hour at `hour_ns` no longer has plain chunks of `meter`.
fn forget_unpacked_hour(connection: &Connection, meter: i64, hour_ns: i64) -> Result<()> {
    connection
        .prepare_cached("DELETE FROM unpacked_hours WHERE meter = ?1 AND hour_ns = ?2")?
        .execute(params![meter, hour_ns])?;
    Ok(())
}

/// Unpacks the chunks of `meter` in the hour at `hour_ns` back into rows, so that a late reading
/// can be placed among them. Returns whether there were any.
///
/// # Errors
/// A database error, or a chunk that does not decode.
pub fn expand_hour(connection: &Connection, meter: i64, hour_ns: i64) -> Result<bool> {
    let chunks: Vec<(i64, Vec<u8>)> = connection
        .prepare_cached(
            "DELETE FROM reading_chunks WHERE meter = ?1 AND first_ns >= ?2 AND first_ns < ?3
             RETURNING first_ns, data",
        )?
        .query_map(params![meter, hour_ns, hour_ns + NANOS_PER_HOUR], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    // Rows now: `oldest_unpacked_hour` finds them there.
    forget_unpacked_hour(connection, meter, hour_ns)?;
    super::meter_days::open_day(connection, meter, hour_ns)?;
    let mut insert = connection.prepare_cached(
        "INSERT INTO readings (meter, ts_ns, value, quality, method, from_ns, delta, step)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for (first_ns, data) in &chunks {
        for r in decode(meter, *first_ns, data)? {
            insert.execute(params![
                meter, r.ts_ns, r.value, r.quality, r.method, r.from_ns, r.delta, r.step
            ])?;
        }
    }
    Ok(!chunks.is_empty())
}

/// Makes the readings around `at` rows: the hour holding `at`, and the hours of the chunks
/// holding the readings just before and just after it. Returns the earliest hour unpacked, if
/// any.
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
    let chunk_after: Option<i64> = connection
        .prepare_cached(
            "SELECT first_ns FROM reading_chunks WHERE meter = ?1 AND first_ns >= ?2 ORDER BY first_ns LIMIT 1",
        )?
        .query_row(params![meter, hour + NANOS_PER_HOUR], |row| row.get(0))
        .optional()?;
    if let Some(first_ns) = chunk_after
        && row_after.is_none_or(|row| first_ns < row)
        && expand_hour(connection, meter, hour_of(first_ns))?
    {
        note(hour_of(first_ns));
    }
    let row_before: Option<i64> = connection
        .prepare_cached(
            "SELECT ts_ns FROM readings WHERE meter = ?1 AND ts_ns < ?2 ORDER BY ts_ns DESC LIMIT 1",
        )?
        .query_row(params![meter, at], |row| row.get(0))
        .optional()?;
    let chunk_before: Option<(i64, i64)> = connection
        .prepare_cached(
            "SELECT first_ns, last_ns FROM reading_chunks WHERE meter = ?1 AND first_ns < ?2 ORDER BY first_ns DESC LIMIT 1",
        )?
        .query_row(params![meter, hour], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    if let Some((first_ns, last_ns)) = chunk_before
        && row_before.is_none_or(|row| last_ns > row)
        && expand_hour(connection, meter, hour_of(first_ns))?
    {
        note(hour_of(first_ns));
    }
    Ok(expanded)
}
