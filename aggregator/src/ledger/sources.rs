//! Where a span's figures are read from: its whole UTC days of settled hours from the daily
//! roll-ups (`rollup_*_days`), its other whole settled hours from the hourly ones (`rollup_*`),
//! the hours it cuts and those not settled yet from window detail (`window_*`, `site_windows`).
//! All carry the same figures under the same names, and roll-ups are exact sums of the windows,
//! so any source gives the same answer to the millijoule.

use footprint_core::units::{NANOS_PER_DAY, NANOS_PER_HOUR};
use footprint_core::{Span, UnixNanos};
use rusqlite::Connection;

use super::{detail, site};
use crate::{Error, Result};

/// Where a piece of a span is read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// Whole UTC days of settled hours: `rollup_*_days`.
    Days,
    /// Whole settled hours: `rollup_*`.
    Hours,
    /// Window rows: `window_*`, `site_windows`.
    Detail,
}

/// A span split by source, in pieces that do not overlap (empty ones left out).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Sources {
    pub pieces: Vec<(Source, i64, i64)>,
}

/// The table and the columns one kind of figure is read from, by source (`days`: none where
/// there is no daily table).
pub(crate) struct Tables<'a> {
    pub days: Option<(&'a str, &'a str)>,
    pub hours: (&'a str, &'a str),
    pub detail: (&'a str, &'a str),
}

impl Sources {
    fn push(&mut self, source: Source, from: i64, to: i64) {
        if from < to {
            self.pieces.push((source, from, to));
        }
    }

    /// One `SELECT` per piece joined by `UNION ALL`, with its bounds to bind in order; the
    /// tables are aliased `w`. Days are read as hours where `tables` has no daily table.
    pub fn union(&self, tables: &Tables<'_>) -> (String, Vec<i64>) {
        let mut arms = Vec::new();
        let mut bounds = Vec::new();
        for (source, from, to) in &self.pieces {
            let (table, columns, time) = match (source, tables.days) {
                (Source::Days, Some((table, columns))) => (table, columns, "day_ns"),
                (Source::Days | Source::Hours, _) => (tables.hours.0, tables.hours.1, "hour_ns"),
                (Source::Detail, _) => (tables.detail.0, tables.detail.1, "start_ns"),
            };
            let first = bounds.len() + 1;
            arms.push(format!(
                "SELECT {columns} FROM {table} w WHERE {time} >= ?{first} AND {time} < ?{}",
                first + 1
            ));
            bounds.extend([*from, *to]);
        }
        if arms.is_empty() {
            // Nothing to read: an arm that finds nothing keeps the query's shape.
            arms.push(format!(
                "SELECT {} FROM {} w WHERE 0",
                tables.detail.1, tables.detail.0
            ));
        }
        (arms.join(" UNION ALL "), bounds)
    }
}

fn floor_to(at: i64, step: i64) -> i64 {
    at.div_euclid(step) * step
}

fn ceil_to(at: i64, step: i64) -> i64 {
    floor_to(at.saturating_add(step - 1), step)
}

/// How `span` is read. The hours rolled up are those before both the settled hours' end and
/// the start of window detail (an aged hour reopened by late data keeps its roll-up until it is
/// settled again); whole UTC days of them are read from the daily roll-ups.
///
/// # Errors
/// [`Error::BadRequest`] naming `from` or `to` when the span cuts an hour whose window detail
/// has aged out (only its roll-up remains); a database error.
pub(crate) fn sources(connection: &Connection, span: Span) -> Result<Sources> {
    let settled = site::settled_until(connection)?.map_or(i64::MIN, |UnixNanos(until)| until);
    let detail_from = detail::detail_from(connection)?.unwrap_or(i64::MIN);
    let frontier = settled.max(detail_from);
    let start = ceil_to(span.start.0, NANOS_PER_HOUR);
    let end = floor_to(span.end.0, NANOS_PER_HOUR).min(frontier);
    let mut sources = Sources::default();
    if start >= end {
        if span.start.0 < detail_from {
            return Err(cuts_aged_hour("from", span.start.0));
        }
        sources.push(Source::Detail, span.start.0, span.end.0);
        return Ok(sources);
    }
    if span.start.0 < start && span.start.0 < detail_from {
        return Err(cuts_aged_hour("from", span.start.0));
    }
    if end < span.end.0 && end < detail_from {
        return Err(cuts_aged_hour("to", span.end.0));
    }
    sources.push(Source::Detail, span.start.0, start);
    let (day_start, day_end) = (ceil_to(start, NANOS_PER_DAY), floor_to(end, NANOS_PER_DAY));
    if day_start < day_end {
        sources.push(Source::Hours, start, day_start);
        sources.push(Source::Days, day_start, day_end);
        sources.push(Source::Hours, day_end, end);
    } else {
        sources.push(Source::Hours, start, end);
    }
    sources.push(Source::Detail, end, span.end.0);
    Ok(sources)
}

fn cuts_aged_hour(field: &str, at: i64) -> Error {
    Error::BadRequest(format!(
        "{field}: {} cuts an hour whose window detail has aged out (ledger.window_detail_days); \
         only its hourly roll-up is kept: start and end such a span on the hour",
        footprint_core::time::format_rfc3339(UnixNanos(at))
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_round_inwards() {
        let hour = NANOS_PER_HOUR;
        assert_eq!(ceil_to(0, hour), 0);
        assert_eq!(ceil_to(1, hour), hour);
        assert_eq!(floor_to(hour - 1, hour), 0);
        assert_eq!(floor_to(-1, hour), -hour);
        assert_eq!(ceil_to(i64::MAX, hour), floor_to(i64::MAX, hour));
    }
}
