//! How well each meter covered a span: its readings, the time between readings at most
//! `max_sample_gap_s` apart, its gaps (longer intervals, whose energy is exact but placed by
//! interpolation), and the wraps and resets its counter went through.

use footprint_core::Span;
use footprint_exporters::report::inputs::MeterQuality;
use rusqlite::Connection;

use crate::Result;
use crate::tables::series;

/// `readings.step`: the low bits say how the counter moved, bit 8 flags a gap.
const STEP_WRAPPED: i64 = 1;
const STEP_RESET: i64 = 2;
const STEP_GAP: i64 = 8;

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

/// Every energy and water meter's coverage of `span`, ordered by host and meter. Silence longer
/// than `max_gap_ns` at the span's start or end counts as a gap.
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
        // The first and last instant the meter's intervals reached in the span.
        let mut reached: Option<(i64, i64)> = None;
        for reading in series::readings_in(connection, id, span)? {
            let inside = reading.ts_ns >= span.start.0 && reading.ts_ns < span.end.0;
            let step = reading.step.unwrap_or(0);
            if inside {
                quality.readings += 1;
                quality.first_reading_ns.get_or_insert(reading.ts_ns);
                quality.last_reading_ns = Some(reading.ts_ns);
                match step & 7 {
                    STEP_WRAPPED => quality.wraps += 1,
                    STEP_RESET => quality.resets += 1,
                    _ => {}
                }
            }
            let Some(from) = reading.from_ns else {
                continue;
            };
            let (start, end) = (from.max(span.start.0), reading.ts_ns.min(span.end.0));
            if end <= start {
                continue;
            }
            reached = Some(reached.map_or((start, end), |(first, _)| (first, end)));
            if step & STEP_GAP != 0 {
                quality.gaps.push((start, end));
            } else {
                quality.covered_ns += end - start;
            }
        }
        // Silence at either end of the span is a gap too: no interval reached it.
        let lead_end = reached.map_or(span.end.0, |(first, _)| first);
        if lead_end - span.start.0 > max_gap_ns {
            quality.gaps.insert(0, (span.start.0, lead_end));
        }
        if let Some((_, last)) = reached
            && span.end.0 - last > max_gap_ns
        {
            quality.gaps.push((last, span.end.0));
        }
        found.push(quality);
    }
    Ok(found)
}
