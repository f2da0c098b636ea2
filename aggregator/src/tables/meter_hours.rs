//! A summary of each packed hour of a meter's readings (`meter_hours`), written when the hour is
//! packed and removed when it is unpacked, and the same summed per UTC day (`meter_days`), so
//! that how well a meter covered a year is read from a few hundred small rows per meter instead
//! of decoding millions of readings. An hour that is not packed (recent, or unpacked by late
//! data) has no summary: its readings are read themselves.

use footprint_core::units::{NANOS_PER_DAY, NANOS_PER_HOUR};
use rusqlite::{Connection, params};

use super::chunk::StoredReading;
use crate::Result;

/// `readings.step`: the low bits say how the counter moved, the bit 8 flags a gap.
pub const STEP_WRAPPED: i64 = 1;
pub const STEP_RESET: i64 = 2;
pub const STEP_GAP: i64 = 8;

/// What a packed hour of one meter holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HourSummary {
    pub readings: i64,
    pub first_ns: i64,
    pub last_ns: i64,
    /// Time inside the hour covered by intervals that are not gaps.
    pub covered_ns: i64,
    /// Where the hour's first interval starts, when it is not a gap and starts in an earlier
    /// hour: that part of it covers the hours before.
    pub spill_from_ns: Option<i64>,
    /// Intervals flagged as gaps, whole or in part in the hour.
    pub gaps: i64,
    pub wraps: i64,
    pub resets: i64,
}

/// The summary of `readings`, the readings of the hour at `hour_ns` in time order.
pub fn summarise(hour_ns: i64, readings: &[StoredReading]) -> HourSummary {
    let end = hour_ns + NANOS_PER_HOUR;
    let mut summary = HourSummary {
        readings: readings.len() as i64,
        first_ns: readings.first().map_or(hour_ns, |r| r.ts_ns),
        last_ns: readings.last().map_or(hour_ns, |r| r.ts_ns),
        ..HourSummary::default()
    };
    for (index, reading) in readings.iter().enumerate() {
        let step = reading.step.unwrap_or(0);
        match step & 7 {
            STEP_WRAPPED => summary.wraps += 1,
            STEP_RESET => summary.resets += 1,
            _ => {}
        }
        let Some(from) = reading.from_ns else {
            continue;
        };
        if step & STEP_GAP != 0 {
            summary.gaps += 1;
            continue;
        }
        let (start, stop) = (from.max(hour_ns), reading.ts_ns.min(end));
        summary.covered_ns += (stop - start).max(0);
        if index == 0 && from < hour_ns {
            summary.spill_from_ns = Some(from);
        }
    }
    summary
}

/// Records the summary of the packed hour of `meter` at `hour_ns`.
///
/// # Errors
/// A database error.
pub fn write(
    connection: &Connection,
    meter: i64,
    hour_ns: i64,
    summary: &HourSummary,
) -> Result<()> {
    connection
        .prepare_cached(
            "INSERT OR REPLACE INTO meter_hours (meter, hour_ns, readings, first_ns, last_ns,
               covered_ns, spill_from_ns, gaps, wraps, resets)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?
        .execute(params![
            meter,
            hour_ns,
            summary.readings,
            summary.first_ns,
            summary.last_ns,
            summary.covered_ns,
            summary.spill_from_ns,
            summary.gaps,
            summary.wraps,
            summary.resets
        ])?;
    sum_day(connection, meter, hour_ns)
}

/// The hour of `meter` at `hour_ns` is no longer packed.
///
/// # Errors
/// A database error.
pub fn forget(connection: &Connection, meter: i64, hour_ns: i64) -> Result<()> {
    connection
        .prepare_cached("DELETE FROM meter_hours WHERE meter = ?1 AND hour_ns = ?2")?
        .execute(params![meter, hour_ns])?;
    sum_day(connection, meter, hour_ns)
}

/// What `meter_days` sums for a day, from `meter_hours` (`?1` the meter, `?2` the day): the
/// spill of each hour after the first is time inside the day.
const DAY_SUMS: &str = "SELECT meter, ?2, COUNT(*), SUM(readings), MIN(first_ns), MAX(last_ns),
    SUM(covered_ns) + SUM(CASE WHEN hour_ns > ?2 AND spill_from_ns IS NOT NULL
                               THEN hour_ns - MAX(spill_from_ns, ?2) ELSE 0 END),
    MAX(CASE WHEN hour_ns = ?2 THEN spill_from_ns END), SUM(gaps), SUM(wraps), SUM(resets)
  FROM meter_hours WHERE meter = ?1 AND hour_ns >= ?2 AND hour_ns < ?2 + 86400000000000
  GROUP BY meter";

/// Sums the UTC day holding `hour_ns` of `meter` again.
fn sum_day(connection: &Connection, meter: i64, hour_ns: i64) -> Result<()> {
    let day = hour_ns.div_euclid(NANOS_PER_DAY) * NANOS_PER_DAY;
    connection
        .prepare_cached("DELETE FROM meter_days WHERE meter = ?1 AND day_ns = ?2")?
        .execute(params![meter, day])?;
    connection
        .prepare_cached(&format!("INSERT INTO meter_days {DAY_SUMS}"))?
        .execute(params![meter, day])?;
    Ok(())
}

/// Summarises every packed chunk of a ledger packed before summaries were kept.
///
/// # Errors
/// A database error, or a chunk that does not decode.
pub fn summarise_packed(connection: &Connection) -> Result<u64> {
    let mut statement = connection.prepare(
        "SELECT meter, first_ns, data FROM reading_chunks WHERE packed = 1 ORDER BY meter, first_ns",
    )?;
    let mut rows = statement.query([])?;
    let mut written = 0;
    while let Some(row) = rows.next()? {
        let (meter, first_ns, data): (i64, i64, Vec<u8>) = (row.get(0)?, row.get(1)?, row.get(2)?);
        let readings = super::chunk::decode(&data).map_err(|error| {
            crate::Error::Server(format!(
                "reading_chunks of meter {meter} from {first_ns}: {error}"
            ))
        })?;
        let hour = super::series::hour_of(first_ns);
        write(connection, meter, hour, &summarise(hour, &readings))?;
        written += 1;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(ts_s: i64, from_s: Option<i64>, step: i64) -> StoredReading {
        StoredReading {
            ts_ns: ts_s * 1_000_000_000,
            from_ns: from_s.map(|s| s * 1_000_000_000),
            step: Some(step),
            ..StoredReading::default()
        }
    }

    #[test]
    fn an_hour_is_summarised_with_what_spills_into_the_hour_before() {
        let hour = 3_600 * 1_000_000_000;
        let summary = summarise(
            hour,
            &[
                reading(3_605, Some(3_590), 0),
                reading(3_615, Some(3_605), STEP_WRAPPED),
                reading(4_015, Some(3_615), STEP_GAP),
                reading(4_025, Some(4_015), STEP_RESET),
            ],
        );
        assert_eq!(
            summary,
            HourSummary {
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
