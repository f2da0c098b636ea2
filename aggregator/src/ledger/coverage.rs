//! How well each meter covered a span: its readings, the time between readings at most
//! `max_sample_gap_s` apart, its gaps (longer intervals, whose energy is exact but placed by
//! interpolation), and the wraps and resets its counter went through.
//!
//! Packed hours are read from their summaries (`tables::meter_hours`); only the hours not packed
//! yet, and the packed hours that hold a gap (to list it), are decoded. A span is whole hours.

use footprint_core::Span;
use footprint_core::units::{NANOS_PER_DAY, NANOS_PER_HOUR};
use footprint_exporters::report::inputs::MeterQuality;
use rusqlite::{Connection, params};

use crate::tables::chunk::{self, StoredReading};
use crate::tables::meter_hours::{STEP_GAP, STEP_RESET, STEP_WRAPPED};
use crate::{Error, Result};

/// Kinds whose counters measure energy or water (usage counters and inspection-only meters
/// are left out).
const MEASURING_KINDS: [i32; 7] = [1, 2, 3, 4, 5, 6, 7];

/// The protocol's name of a meter kind, without its prefix, in lower case (`gpu_energy`).
pub fn kind_name(kind: i32) -> String {
    footprint_proto::v1::MeterKind::try_from(kind)
        .map(|kind| {
            kind.as_str_name()
                .trim_start_matches("METER_KIND_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| format!("kind {kind}"))
}

/// Every energy and water meter's coverage of `span` (whole hours), ordered by host and meter.
/// Silence longer than `max_gap_ns` after the span's start or before its end counts as a gap.
///
/// # Errors
/// A database error, or a chunk that does not decode.
pub fn meter_coverage(
    connection: &Connection,
    span: Span,
    max_gap_ns: i64,
) -> Result<Vec<MeterQuality>> {
    let kinds = MEASURING_KINDS.map(|kind| kind.to_string()).join(", ");
    let meters: Vec<(i64, String, String, i32, String)> = connection
        .prepare(&format!(
            "SELECT m.id, c.host, m.meter_id, m.kind, m.method FROM meters m
             JOIN collectors c ON c.id = m.collector
             WHERE m.kind IN ({kinds}) ORDER BY c.host, m.meter_id"
        ))?
        .query_map([], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut found = Vec::with_capacity(meters.len());
    for (id, host, meter_id, kind, method) in meters {
        let mut quality = MeterQuality {
            host,
            meter_id,
            kind: kind_name(kind),
            method,
            ..MeterQuality::default()
        };
        packed_hours(connection, id, span, &mut quality)?;
        for reading in unpacked_readings(connection, id, span)? {
            add_reading(&mut quality, &reading, span, true);
        }
        quality.gaps.sort_unstable();
        // Silence at either end of the span is a gap too.
        let lead_end = quality.first_reading_ns.unwrap_or(span.end.0);
        let lead_covered = quality
            .gaps
            .first()
            .is_some_and(|gap| gap.0 <= span.start.0);
        if lead_end - span.start.0 > max_gap_ns && !lead_covered {
            quality.gaps.insert(0, (span.start.0, lead_end));
        }
        if let Some(last) = quality.last_reading_ns
            && span.end.0 - last > max_gap_ns
            && quality.gaps.last().is_none_or(|gap| gap.1 < span.end.0)
        {
            quality.gaps.push((last, span.end.0));
        }
        found.push(quality);
    }
    Ok(found)
}

/// Adds one reading: counted if it falls in `span`, its interval's part in `span` covered or a
/// gap. `counted` is false for readings of packed hours, whose counts come from the summary.
fn add_reading(quality: &mut MeterQuality, reading: &StoredReading, span: Span, counted: bool) {
    let inside = reading.ts_ns >= span.start.0 && reading.ts_ns < span.end.0;
    let step = reading.step.unwrap_or(0);
    if inside && counted {
        quality.readings += 1;
        quality.first_reading_ns = Some(
            quality
                .first_reading_ns
                .map_or(reading.ts_ns, |f| f.min(reading.ts_ns)),
        );
        quality.last_reading_ns = Some(
            quality
                .last_reading_ns
                .map_or(reading.ts_ns, |l| l.max(reading.ts_ns)),
        );
        match step & 7 {
            STEP_WRAPPED => quality.wraps += 1,
            STEP_RESET => quality.resets += 1,
            _ => {}
        }
    }
    let Some(from) = reading.from_ns else {
        return;
    };
    let (start, end) = (from.max(span.start.0), reading.ts_ns.min(span.end.0));
    if end <= start {
        return;
    }
    if step & STEP_GAP != 0 {
        quality.gaps.push((start, end));
    } else if counted {
        quality.covered_ns += end - start;
    }
}

/// The packed hours' part, from the summaries: whole UTC days of the span from `meter_days`,
/// the hours around them from `meter_hours` — counts, covered time (each unit's own, plus what
/// the first interval of each unit after the span's start reaches back into it, and that of the
/// hour right after the span), and the gaps of the packed hours that hold one, decoded.
fn packed_hours(
    connection: &Connection,
    meter: i64,
    span: Span,
    quality: &mut MeterQuality,
) -> Result<()> {
    let (from, to) = (span.start.0, span.end.0);
    let first_day = from.div_euclid(NANOS_PER_DAY) * NANOS_PER_DAY
        + if from.rem_euclid(NANOS_PER_DAY) == 0 {
            0
        } else {
            NANOS_PER_DAY
        };
    let end_day = to.div_euclid(NANOS_PER_DAY) * NANOS_PER_DAY;
    // `[days_from, days_to)` read as days (empty when the span holds no whole day).
    let (days_from, days_to) = if first_day < end_day {
        (first_day, end_day)
    } else {
        (0, 0)
    };
    for (table, key, start, end) in [
        ("meter_hours", "hour_ns", from, days_from.max(from).min(to)),
        ("meter_days", "day_ns", days_from, days_to),
        ("meter_hours", "hour_ns", days_to.max(from), to),
    ] {
        if start >= end {
            continue;
        }
        connection
            .prepare_cached(&format!(
                "SELECT COALESCE(SUM(readings), 0), COALESCE(SUM(covered_ns), 0), COALESCE(SUM(wraps), 0),
                        COALESCE(SUM(resets), 0), MIN(first_ns), MAX(last_ns)
                 FROM {table} WHERE meter = ?1 AND {key} >= ?2 AND {key} < ?3"
            ))?
            .query_row(params![meter, start, end], |row| {
                quality.readings += row.get::<_, i64>(0)?;
                quality.covered_ns += row.get::<_, i64>(1)?;
                quality.wraps += row.get::<_, i64>(2)?;
                quality.resets += row.get::<_, i64>(3)?;
                let (first, last): (Option<i64>, Option<i64>) = (row.get(4)?, row.get(5)?);
                quality.first_reading_ns = match (quality.first_reading_ns, first) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                quality.last_reading_ns = quality.last_reading_ns.max(last);
                Ok(())
            })?;
    }
    // The hours read as hours: before the days, and after them up to the hour right after the
    // span (whose first interval may reach back into it). Each is a range of the key.
    let hour_ranges = [
        (from, days_from.max(from).min(to)),
        (days_to.max(from), to + NANOS_PER_HOUR),
    ];
    let mut spill = 0;
    let mut with_gaps: Vec<i64> = Vec::new();
    for (start, end) in hour_ranges.into_iter().filter(|(start, end)| start < end) {
        spill += connection
            .prepare_cached(
                "SELECT COALESCE(SUM(hour_ns - MAX(spill_from_ns, ?4)), 0) FROM meter_hours
                 WHERE meter = ?1 AND hour_ns >= ?2 AND hour_ns < ?3 AND hour_ns > ?4
                   AND spill_from_ns IS NOT NULL",
            )?
            .query_row(params![meter, start, end, from], |row| row.get::<_, i64>(0))?;
        with_gaps.extend(
            connection
                .prepare_cached(
                    "SELECT hour_ns FROM meter_hours
                     WHERE meter = ?1 AND hour_ns >= ?2 AND hour_ns < ?3 AND gaps > 0",
                )?
                .query_map(params![meter, start, end], |row| row.get::<_, i64>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?,
        );
    }
    spill += connection
        .prepare_cached(
            "SELECT COALESCE(SUM(day_ns - MAX(spill_from_ns, ?2)), 0) FROM meter_days
             WHERE meter = ?1 AND day_ns > ?2 AND day_ns >= ?3 AND day_ns < ?4
               AND spill_from_ns IS NOT NULL",
        )?
        .query_row(params![meter, from, days_from, days_to], |row| {
            row.get::<_, i64>(0)
        })?;
    quality.covered_ns += spill;
    // The hours holding a gap inside the days that hold one.
    with_gaps.extend(
        connection
            .prepare_cached(
                "SELECT h.hour_ns FROM meter_days d JOIN meter_hours h
                   ON h.meter = d.meter AND h.hour_ns >= d.day_ns AND h.hour_ns < d.day_ns + 86400000000000
                 WHERE d.meter = ?1 AND d.day_ns >= ?2 AND d.day_ns < ?3 AND d.gaps > 0 AND h.gaps > 0",
            )?
            .query_map(params![meter, days_from, days_to], |row| row.get::<_, i64>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?,
    );
    for hour in with_gaps {
        for reading in chunk_readings(connection, meter, hour, true)? {
            add_reading(quality, &reading, span, false);
        }
    }
    Ok(())
}

/// The readings of `meter` in `span` and the hour after it that no summary covers: plain chunks
/// and rows.
fn unpacked_readings(
    connection: &Connection,
    meter: i64,
    span: Span,
) -> Result<Vec<StoredReading>> {
    let end = span.end.0 + NANOS_PER_HOUR;
    let mut readings = Vec::new();
    let plain: Vec<(i64, Vec<u8>)> = connection
        .prepare_cached(
            "SELECT first_ns, data FROM reading_chunks
             WHERE meter = ?1 AND first_ns >= ?2 AND first_ns < ?3 AND packed = 0",
        )?
        .query_map(params![meter, span.start.0, end], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    for (first_ns, data) in plain {
        readings.extend(decode(meter, first_ns, &data)?);
    }
    let rows = connection
        .prepare_cached(
            "SELECT ts_ns, from_ns, step FROM readings WHERE meter = ?1 AND ts_ns >= ?2 AND ts_ns < ?3",
        )?
        .query_map(params![meter, span.start.0, end], |row| {
            Ok(StoredReading {
                ts_ns: row.get(0)?,
                from_ns: row.get(1)?,
                step: row.get(2)?,
                ..StoredReading::default()
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    readings.extend(rows);
    Ok(readings)
}

/// The readings of the packed chunk of `meter` in the hour at `hour_ns`.
fn chunk_readings(
    connection: &Connection,
    meter: i64,
    hour_ns: i64,
    packed: bool,
) -> Result<Vec<StoredReading>> {
    let chunks: Vec<(i64, Vec<u8>)> = connection
        .prepare_cached(
            "SELECT first_ns, data FROM reading_chunks
             WHERE meter = ?1 AND first_ns >= ?2 AND first_ns < ?3 AND packed = ?4",
        )?
        .query_map(
            params![meter, hour_ns, hour_ns + NANOS_PER_HOUR, packed],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?
        .collect::<rusqlite::Result<_>>()?;
    let mut readings = Vec::new();
    for (first_ns, data) in chunks {
        readings.extend(decode(meter, first_ns, &data)?);
    }
    Ok(readings)
}

fn decode(meter: i64, first_ns: i64, data: &[u8]) -> Result<Vec<StoredReading>> {
    chunk::decode(data).map_err(|error| {
        Error::Server(format!(
            "reading_chunks of meter {meter} from {first_ns}: {error}"
        ))
    })
}
