//! A summary of each closed UTC day of a meter's readings (`meter_days`): how many, the first
//! and last, the time their intervals cover inside the day (gaps left out), where the day's first
//! interval starts when that lies in the day before, and the gaps, wraps and resets. A day is
//! closed — summarised — once every hour of it is packed and the meter has read past its end;
//! unpacking any of its hours (late data) opens it again, and it is summarised again when they
//! are packed. How well a meter covered a year is then read from 365 small rows instead of
//! decoding millions of readings; open days are read from the readings themselves.

use footprint_core::units::NANOS_PER_DAY;
use rusqlite::{Connection, OptionalExtension, params};

use super::chunk::StoredReading;
use crate::Result;
use crate::codec::{Movement, Step};

/// What a span of a meter's readings holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub readings: i64,
    pub first_ns: i64,
    pub last_ns: i64,
    /// Time inside the span covered by intervals that are not gaps.
    pub covered_ns: i64,
    /// Where the first interval starts, when it is not a gap and starts before the span: that
    /// part of it covers time before the span.
    pub spill_from_ns: Option<i64>,
    /// Intervals flagged as gaps, whole or in part in the span.
    pub gaps: i64,
    pub wraps: i64,
    pub resets: i64,
}

/// The summary of `readings` (in time order, all taken in `[start, end)`).
pub fn summarise(start: i64, end: i64, readings: &[StoredReading]) -> Summary {
    let mut summary = Summary {
        readings: readings.len() as i64,
        first_ns: readings.first().map_or(start, |r| r.ts_ns),
        last_ns: readings.last().map_or(start, |r| r.ts_ns),
        ..Summary::default()
    };
    for (index, reading) in readings.iter().enumerate() {
        let step = Step::decode(reading.step.unwrap_or(0));
        match step.movement {
            Movement::Wrapped => summary.wraps += 1,
            Movement::Reset => summary.resets += 1,
            Movement::Advanced => {}
        }
        let Some(from) = reading.from_ns else {
            continue;
        };
        if step.gap {
            summary.gaps += 1;
            continue;
        }
        summary.covered_ns += (reading.ts_ns.min(end) - from.max(start)).max(0);
        if index == 0 && from < start {
            summary.spill_from_ns = Some(from);
        }
    }
    summary
}

fn day_of(ts_ns: i64) -> i64 {
    ts_ns.div_euclid(NANOS_PER_DAY) * NANOS_PER_DAY
}

/// The day holding `hour_ns` of `meter` is open again (an hour of it is unpacked or packed anew).
///
/// # Errors
/// A database error.
pub fn open_day(connection: &Connection, meter: i64, hour_ns: i64) -> Result<()> {
    connection
        .prepare_cached("DELETE FROM meter_days WHERE meter = ?1 AND day_ns = ?2")?
        .execute(params![meter, day_of(hour_ns)])?;
    Ok(())
}

/// Summarises the day holding `hour_ns` of `meter` if it can be closed: every reading of it
/// packed, and the meter read past its end. Returns whether it closed.
///
/// # Errors
/// A database error, or a chunk that does not decode.
pub fn close_day(connection: &Connection, meter: i64, hour_ns: i64) -> Result<bool> {
    let day = day_of(hour_ns);
    let end = day + NANOS_PER_DAY;
    let read_past: bool = connection
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM reading_chunks WHERE meter = ?1 AND first_ns >= ?2)
                 OR EXISTS (SELECT 1 FROM readings WHERE meter = ?1 AND ts_ns >= ?2)",
        )?
        .query_row(params![meter, end], |row| row.get(0))?;
    let unpacked: bool = connection
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM unpacked_hours WHERE meter = ?1 AND hour_ns >= ?2 AND hour_ns < ?3)
                 OR EXISTS (SELECT 1 FROM readings WHERE meter = ?1 AND ts_ns >= ?2 AND ts_ns < ?3)",
        )?
        .query_row(params![meter, day, end], |row| row.get(0))?;
    if !read_past || unpacked {
        return Ok(false);
    }
    // Every reading of the day is packed: read them back.
    let readings = super::series::taken_in(connection, meter, day, end)?;
    write(connection, meter, day, &summarise(day, end, &readings))?;
    Ok(true)
}

fn write(connection: &Connection, meter: i64, day_ns: i64, summary: &Summary) -> Result<()> {
    connection
        .prepare_cached(
            "INSERT OR REPLACE INTO meter_days (meter, day_ns, readings, first_ns, last_ns,
               covered_ns, spill_from_ns, gaps, wraps, resets)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?
        .execute(params![
            meter,
            day_ns,
            summary.readings,
            summary.first_ns,
            summary.last_ns,
            summary.covered_ns,
            summary.spill_from_ns,
            summary.gaps,
            summary.wraps,
            summary.resets
        ])?;
    Ok(())
}

/// Closes every day a ledger packed before days were summarised; returns how many.
///
/// # Errors
/// A database error, or a chunk that does not decode.
pub fn close_packed_days(connection: &Connection) -> Result<u64> {
    let days: Vec<(i64, i64)> = connection
        .prepare(&format!(
            "SELECT DISTINCT meter, first_ns - ((first_ns % {NANOS_PER_DAY}) + {NANOS_PER_DAY}) % {NANOS_PER_DAY}
             FROM reading_chunks WHERE packed = 1"
        ))?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut closed = 0;
    for (meter, day) in days {
        if close_day(connection, meter, day)? {
            closed += 1;
        }
    }
    Ok(closed)
}

/// The closed days of `meter` in `[start, end)`, with their summaries.
///
/// # Errors
/// A database error.
pub fn closed_days(
    connection: &Connection,
    meter: i64,
    start: i64,
    end: i64,
) -> Result<Vec<(i64, Summary)>> {
    Ok(connection
        .prepare_cached(
            "SELECT day_ns, readings, first_ns, last_ns, covered_ns, spill_from_ns, gaps, wraps, resets
             FROM meter_days WHERE meter = ?1 AND day_ns >= ?2 AND day_ns < ?3 ORDER BY day_ns",
        )?
        .query_map(params![meter, start, end], |row| {
            Ok((
                row.get(0)?,
                Summary {
                    readings: row.get(1)?,
                    first_ns: row.get(2)?,
                    last_ns: row.get(3)?,
                    covered_ns: row.get(4)?,
                    spill_from_ns: row.get(5)?,
                    gaps: row.get(6)?,
                    wraps: row.get(7)?,
                    resets: row.get(8)?,
                },
            ))
        })?
        .collect::<rusqlite::Result<_>>()?)
}

/// Whether `meter` has a closed day at `day_ns`.
///
/// # Errors
/// A database error.
pub fn is_closed(connection: &Connection, meter: i64, day_ns: i64) -> Result<bool> {
    Ok(connection
        .prepare_cached("SELECT 1 FROM meter_days WHERE meter = ?1 AND day_ns = ?2")?
        .query_row(params![meter, day_ns], |_| Ok(()))
        .optional()?
        .is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(ts_s: i64, from_s: Option<i64>, movement: Movement, gap: bool) -> StoredReading {
        StoredReading {
            ts_ns: ts_s * 1_000_000_000,
            from_ns: from_s.map(|s| s * 1_000_000_000),
            step: Some(
                Step {
                    movement,
                    gap,
                    compacted: false,
                }
                .encode(),
            ),
            ..StoredReading::default()
        }
    }

    #[test]
    fn a_span_is_summarised_with_what_spills_into_the_one_before() {
        let (start, end) = (3_600 * 1_000_000_000, 7_200 * 1_000_000_000);
        let summary = summarise(
            start,
            end,
            &[
                reading(3_605, Some(3_590), Movement::Advanced, false),
                reading(3_615, Some(3_605), Movement::Wrapped, false),
                reading(4_015, Some(3_615), Movement::Advanced, true),
                reading(4_025, Some(4_015), Movement::Reset, false),
            ],
        );
        assert_eq!(
            summary,
            Summary {
                readings: 4,
                first_ns: 3_605 * 1_000_000_000,
                last_ns: 4_025 * 1_000_000_000,
                covered_ns: (5 + 10 + 10) * 1_000_000_000,
                spill_from_ns: Some(3_590 * 1_000_000_000),
                gaps: 1,
                wraps: 1,
                resets: 1,
            }
        );
    }
}
