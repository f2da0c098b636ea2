//! How well each meter covered a span: its readings, the time between readings at most
//! `max_sample_gap_s` apart, its gaps (longer intervals, whose energy is exact but placed by
//! interpolation), and the wraps and resets its counter went through.
//!
//! Closed days are read from their summaries (`tables::meter_days`); only the rest of the span,
//! and the closed days that hold a gap (to list it), are decoded. A span is whole hours.

use footprint_core::Span;
use footprint_core::units::{NANOS_PER_DAY, NANOS_PER_HOUR};
use footprint_exporters::report::inputs::MeterQuality;
use rusqlite::Connection;

use crate::Result;
use crate::codec::{MeterRole, Movement, Step};
use crate::tables::chunk::StoredReading;
use crate::tables::meter_days::{self, Summary};
use crate::tables::series;

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
    // The meters that measure energy or water: usage counters and inspection-only meters are
    // left out.
    let measures = |kind: i32| {
        matches!(
            MeterRole::of_code(kind),
            MeterRole::HostEnergy(_) | MeterRole::SiteEnergy | MeterRole::SiteWater
        )
    };
    let meters: Vec<(i64, String, String, i32, String)> = connection
        .prepare(
            "SELECT m.id, c.host, m.meter_id, m.kind, m.method FROM meters m
             JOIN collectors c ON c.id = m.collector ORDER BY c.host, m.meter_id",
        )?
        .query_map([], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?
        .into_iter()
        .filter(|meter| measures(meter.3))
        .collect();
    // The span's whole UTC days, which closed days may summarise.
    let first_day = span.start.0.div_euclid(NANOS_PER_DAY) * NANOS_PER_DAY
        + if span.start.0.rem_euclid(NANOS_PER_DAY) == 0 {
            0
        } else {
            NANOS_PER_DAY
        };
    let end_day = span.end.0.div_euclid(NANOS_PER_DAY) * NANOS_PER_DAY;
    let mut found = Vec::with_capacity(meters.len());
    for (id, host, meter_id, kind, method) in meters {
        let mut quality = MeterQuality {
            host,
            meter_id,
            kind: kind_name(kind),
            method,
            ..MeterQuality::default()
        };
        let closed = if first_day < end_day {
            meter_days::closed_days(connection, id, first_day, end_day)?
        } else {
            Vec::new()
        };
        // Everything else is read from the readings: the span outside closed days, and the
        // hour after it (whose first interval may reach back into the span).
        let mut open_from = span.start.0;
        for (day, summary) in &closed {
            add_day(connection, &mut quality, id, *day, summary, span)?;
            add_readings(connection, &mut quality, id, open_from, *day, span)?;
            open_from = day + NANOS_PER_DAY;
        }
        add_readings(
            connection,
            &mut quality,
            id,
            open_from,
            span.end.0 + NANOS_PER_HOUR,
            span,
        )?;
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

/// A closed day inside the span, from its summary: its counts, covered time and the part of its
/// first interval that reaches back into the span; its gaps read from its readings.
fn add_day(
    connection: &Connection,
    quality: &mut MeterQuality,
    meter: i64,
    day: i64,
    summary: &Summary,
    span: Span,
) -> Result<()> {
    quality.readings += summary.readings;
    quality.covered_ns += summary.covered_ns;
    quality.wraps += summary.wraps;
    quality.resets += summary.resets;
    if summary.readings > 0 {
        quality.first_reading_ns = Some(
            quality
                .first_reading_ns
                .map_or(summary.first_ns, |f| f.min(summary.first_ns)),
        );
        quality.last_reading_ns = Some(
            quality
                .last_reading_ns
                .map_or(summary.last_ns, |l| l.max(summary.last_ns)),
        );
    }
    if let Some(from) = summary.spill_from_ns
        && day > span.start.0
    {
        quality.covered_ns += day - from.max(span.start.0);
    }
    if summary.gaps > 0 {
        for reading in series::taken_in(connection, meter, day, day + NANOS_PER_DAY)? {
            add_reading(quality, &reading, span, false);
        }
    }
    Ok(())
}

/// The readings of `meter` taken in `[start, end)` (whole hours), wherever they are stored.
fn add_readings(
    connection: &Connection,
    quality: &mut MeterQuality,
    meter: i64,
    start: i64,
    end: i64,
    span: Span,
) -> Result<()> {
    if start >= end {
        return Ok(());
    }
    for reading in &series::taken_in(connection, meter, start, end)? {
        add_reading(quality, reading, span, true);
    }
    Ok(())
}

/// Adds one reading: counted if it falls in `span`, its interval's part in `span` covered or a
/// gap. `counted` is false for readings of packed hours, whose counts come from the summary.
fn add_reading(quality: &mut MeterQuality, reading: &StoredReading, span: Span, counted: bool) {
    let inside = reading.ts_ns >= span.start.0 && reading.ts_ns < span.end.0;
    let step = Step::decode(reading.step.unwrap_or(0));
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
        match step.movement {
            Movement::Wrapped => quality.wraps += 1,
            Movement::Reset => quality.resets += 1,
            Movement::Advanced => {}
        }
    }
    let Some(from) = reading.from_ns else {
        return;
    };
    let (start, end) = (from.max(span.start.0), reading.ts_ns.min(span.end.0));
    if end <= start {
        return;
    }
    if step.gap {
        quality.gaps.push((start, end));
    } else if counted {
        quality.covered_ns += end - start;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use footprint_core::UnixNanos;

    use super::*;
    use crate::tables::{schema, series};

    const MINUTE: i64 = 60_000_000_000;

    /// Three days of a meter read every ten minutes, silent for two hours on the second day,
    /// packed hour by hour as compaction does: the middle day closes, and its summary (with the
    /// interval reaching back into the first day) gives what its readings give.
    #[test]
    fn a_closed_day_counts_what_its_readings_count() {
        let dir = tempfile::tempdir().unwrap();
        let connection = schema::open(&dir.path().join("ledger.sqlite")).unwrap();
        connection
            .execute_batch(
                "INSERT INTO collectors (id, name, host, software_version) VALUES (1, 'h', 'h', 't');
                 INSERT INTO meters (id, collector, meter_id, kind, device, counter_max, cpus, method)
                   VALUES (1, 1, 'gpu0', 1, 'gpu0', 0, '', 'test');",
            )
            .unwrap();
        let start = 19_000 * NANOS_PER_DAY;
        let silent = (start + NANOS_PER_DAY + 5 * NANOS_PER_HOUR)
            ..(start + NANOS_PER_DAY + 7 * NANOS_PER_HOUR);
        let mut readings = Vec::new();
        let mut previous: Option<i64> = None;
        for step in 0..3 * 24 * 6 {
            let at = start + step * 10 * MINUTE + MINUTE;
            if silent.contains(&at) {
                continue;
            }
            readings.push(StoredReading {
                ts_ns: at,
                value: step,
                quality: 1,
                method: None,
                from_ns: previous,
                delta: previous.map(|_| 1),
                // A gap when the meter was silent; a wrap now and then.
                step: previous.map(|p| {
                    Step {
                        movement: if step % 50 == 0 {
                            Movement::Wrapped
                        } else {
                            Movement::Advanced
                        },
                        gap: at - p > 30 * MINUTE,
                        compacted: false,
                    }
                    .encode()
                }),
            });
            previous = Some(at);
        }
        series::append_readings(&connection, 1, &readings).unwrap();
        let mut hour = start;
        while hour < start + 3 * NANOS_PER_DAY {
            series::compact_hour(&connection, 1, hour).unwrap();
            hour += NANOS_PER_HOUR;
        }
        let closed: Vec<i64> =
            meter_days::closed_days(&connection, 1, start, start + 3 * NANOS_PER_DAY)
                .unwrap()
                .into_iter()
                .map(|(day, _)| day)
                .collect();
        assert_eq!(
            closed,
            vec![start, start + NANOS_PER_DAY],
            "the last day has nothing after it"
        );
        for (from, to) in [(0, 72), (24, 48), (23, 49), (30, 44), (1, 47)] {
            let span = Span::new(
                UnixNanos(start + from * NANOS_PER_HOUR),
                UnixNanos(start + to * NANOS_PER_HOUR),
            );
            let fast = meter_coverage(&connection, span, 30 * MINUTE)
                .unwrap()
                .remove(0);
            // Every reading decoded, as `series` reads them.
            let mut slow = MeterQuality {
                host: "h".into(),
                meter_id: "gpu0".into(),
                kind: kind_name(1),
                method: "test".into(),
                ..MeterQuality::default()
            };
            let wide = Span::new(
                UnixNanos(span.start.0 - 1),
                UnixNanos(span.end.0 + NANOS_PER_HOUR),
            );
            for reading in series::readings_in(&connection, 1, wide).unwrap() {
                add_reading(&mut slow, &reading, span, true);
            }
            assert_eq!(
                (
                    fast.readings,
                    fast.covered_ns,
                    fast.wraps,
                    fast.first_reading_ns,
                    fast.last_reading_ns
                ),
                (
                    slow.readings,
                    slow.covered_ns,
                    slow.wraps,
                    slow.first_reading_ns,
                    slow.last_reading_ns
                ),
                "hours {from}..{to}"
            );
            slow.gaps.sort_unstable();
            let inner: Vec<_> = fast
                .gaps
                .iter()
                .filter(|gap| gap.0 > span.start.0 && gap.1 < span.end.0)
                .copied()
                .collect();
            let slow_inner: Vec<_> = slow
                .gaps
                .iter()
                .filter(|gap| gap.0 > span.start.0 && gap.1 < span.end.0)
                .copied()
                .collect();
            assert_eq!(inner, slow_inner, "hours {from}..{to}");
        }
    }
}
