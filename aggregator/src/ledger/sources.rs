//! Where a span's figures are read from: its whole settled hours from their roll-ups
//! (`rollup_*`), the hours it cuts and those not settled yet from window detail (`window_*`,
//! `site_windows`). Both carry the same figures under the same names, and roll-ups are exact
//! sums of the windows, so either source gives the same answer to the millijoule.

use footprint_core::units::NANOS_PER_HOUR;
use footprint_core::{Span, UnixNanos};
use rusqlite::Connection;

use super::{detail, site};
use crate::{Error, Result};

/// A span split by source: `rolled` (whole hours, read from roll-ups) and up to two pieces of
/// window detail, before and after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sources {
    pub rolled: (i64, i64),
    pub detail_before: (i64, i64),
    pub detail_after: (i64, i64),
}

impl Sources {
    /// The six bounds, as `?1 … ?6` of [`Sources::union`].
    pub fn bounds(&self) -> [i64; 6] {
        [
            self.rolled.0,
            self.rolled.1,
            self.detail_before.0,
            self.detail_before.1,
            self.detail_after.0,
            self.detail_after.1,
        ]
    }

    /// `SELECT {rolled} FROM {rollup} … UNION ALL SELECT {detail} FROM {window} …` over the
    /// three pieces, bound by `?1 … ?6` ([`Sources::bounds`]); `filter` (e.g. `AND job = ?7`)
    /// is added to each arm. The window table is aliased `w`.
    pub fn union(rollup: &str, rolled: &str, window: &str, detail: &str, filter: &str) -> String {
        format!(
            "SELECT {rolled} FROM {rollup} w WHERE hour_ns >= ?1 AND hour_ns < ?2 {filter}
             UNION ALL SELECT {detail} FROM {window} w WHERE start_ns >= ?3 AND start_ns < ?4 {filter}
             UNION ALL SELECT {detail} FROM {window} w WHERE start_ns >= ?5 AND start_ns < ?6 {filter}"
        )
    }
}

fn floor_hour(at: i64) -> i64 {
    at.div_euclid(NANOS_PER_HOUR) * NANOS_PER_HOUR
}

fn ceil_hour(at: i64) -> i64 {
    floor_hour(at.saturating_add(NANOS_PER_HOUR - 1))
}

/// How `span` is read. The hours rolled up are those before both the settled hours' end and
/// the start of window detail (an aged hour reopened by late data keeps its roll-up until it is
/// settled again).
///
/// # Errors
/// [`Error::BadRequest`] naming `from` or `to` when the span cuts an hour whose window detail
/// has aged out (only its roll-up remains); a database error.
pub(crate) fn sources(connection: &Connection, span: Span) -> Result<Sources> {
    let settled = site::settled_until(connection)?.map_or(i64::MIN, |UnixNanos(until)| until);
    let detail_from = detail::detail_from(connection)?.unwrap_or(i64::MIN);
    let frontier = settled.max(detail_from);
    let start = ceil_hour(span.start.0);
    let end = floor_hour(span.end.0).min(frontier);
    if start >= end {
        if span.start.0 < detail_from {
            return Err(cuts_aged_hour("from", span.start.0));
        }
        return Ok(Sources {
            rolled: (0, 0),
            detail_before: (span.start.0, span.end.0),
            detail_after: (0, 0),
        });
    }
    if span.start.0 < start && span.start.0 < detail_from {
        return Err(cuts_aged_hour("from", span.start.0));
    }
    if end < span.end.0 && end < detail_from {
        return Err(cuts_aged_hour("to", span.end.0));
    }
    Ok(Sources {
        rolled: (start, end),
        detail_before: (span.start.0, start),
        detail_after: (end, span.end.0),
    })
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
        assert_eq!(ceil_hour(0), 0);
        assert_eq!(ceil_hour(1), NANOS_PER_HOUR);
        assert_eq!(floor_hour(NANOS_PER_HOUR - 1), 0);
        assert_eq!(floor_hour(-1), -NANOS_PER_HOUR);
        assert_eq!(ceil_hour(i64::MAX), floor_hour(i64::MAX));
    }
}
