//! Instants as people write them: RFC 3339 text in and out, and the UTC calendar year. The one
//! place the system parses or formats a time (config, feeds, command-line arguments, tables).

use crate::units::{Span, UnixNanos};

/// Parses an RFC 3339 time (`2024-11-01T00:00:00Z`, any offset) into ns since the epoch. A date
/// and time without an offset (`2024-11-01T00:00:00`, as some grid feeds write them) is UTC.
///
/// # Errors
/// A message naming the text and saying why it is not such a time.
pub fn parse_rfc3339(text: &str) -> Result<UnixNanos, String> {
    let text = text.trim();
    let timestamp: jiff::Timestamp = match text.parse() {
        Ok(timestamp) => timestamp,
        Err(_) => text
            .parse::<jiff::civil::DateTime>()
            .and_then(|civil| jiff::tz::TimeZone::UTC.to_timestamp(civil))
            .map_err(|e| format!("{text:?} is not an RFC 3339 time: {e}"))?,
    };
    i64::try_from(timestamp.as_nanosecond())
        .map(UnixNanos)
        .map_err(|_| format!("{text:?} is out of range"))
}

/// Parses a time that may carry an offset (an instant, as [`parse_rfc3339`]) or not (a wall-clock
/// reading, as local-time exports write them, placed on a UTC clock without shifting it). The
/// flag says whether the text had an offset.
///
/// # Errors
/// As [`parse_rfc3339`].
pub fn parse_instant_or_wall_clock(text: &str) -> Result<(UnixNanos, bool), String> {
    let has_offset = text.trim().parse::<jiff::Timestamp>().is_ok();
    parse_rfc3339(text).map(|at| (at, has_offset))
}

/// `at` as RFC 3339 in UTC (`2023-11-06T10:00:00Z`; a fraction of a second only when there is
/// one). An instant beyond jiff's range is written as its nanoseconds.
pub fn format_rfc3339(at: UnixNanos) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(at.0))
        .map(|t| t.to_string())
        .unwrap_or_else(|_| format!("{}ns", at.0))
}

/// The UTC calendar year holding `at`: `[1 January 00:00, next 1 January 00:00)`, in ns. The
/// year is what annual instruments (guarantees of origin) and annual reports count in.
pub fn utc_year_of(at: UnixNanos) -> Span {
    let start_of = |year: i16| -> i64 {
        jiff::tz::TimeZone::UTC
            .to_timestamp(jiff::civil::date(year, 1, 1).at(0, 0, 0, 0))
            .map_or(0, |timestamp| timestamp.as_nanosecond() as i64)
    };
    let year = jiff::Timestamp::from_nanosecond(i128::from(at.0)).map_or(1970, |t| {
        t.to_zoned_datetime(jiff::tz::TimeZone::UTC).year()
    });
    Span::new(UnixNanos(start_of(year)), UnixNanos(start_of(year + 1)))
}

/// The UTC calendar month holding `at`: `[the 1st 00:00, the next month's 1st 00:00)`, in ns.
pub fn utc_month_of(at: UnixNanos) -> Span {
    let start_of = |year: i16, month: i8| -> i64 {
        jiff::tz::TimeZone::UTC
            .to_timestamp(jiff::civil::date(year, month, 1).at(0, 0, 0, 0))
            .map_or(0, |timestamp| timestamp.as_nanosecond() as i64)
    };
    let (year, month) = jiff::Timestamp::from_nanosecond(i128::from(at.0)).map_or((1970, 1), |t| {
        let zoned = t.to_zoned_datetime(jiff::tz::TimeZone::UTC);
        (zoned.year(), zoned.month())
    });
    let next = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    Span::new(
        UnixNanos(start_of(year, month)),
        UnixNanos(start_of(next.0, next.1)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::NANOS_PER_SECOND;

    #[test]
    fn rfc3339_round_trips_and_reads_offsets_and_bare_utc() {
        let at = parse_rfc3339("2024-11-01T00:00:10Z").unwrap();
        assert_eq!(at.0, 1_730_419_210 * NANOS_PER_SECOND);
        assert_eq!(format_rfc3339(at), "2024-11-01T00:00:10Z");
        assert_eq!(parse_rfc3339("2024-11-01T01:00:10+01:00"), Ok(at));
        assert_eq!(parse_rfc3339(" 2024-11-01T00:00:10 "), Ok(at));
        assert_eq!(
            format_rfc3339(UnixNanos(at.0 + 500_000_000)),
            "2024-11-01T00:00:10.5Z"
        );
        let error = parse_rfc3339("yesterday").unwrap_err();
        assert!(error.contains("\"yesterday\""), "{error}");
    }

    #[test]
    fn a_month_runs_from_its_first_to_the_next_first() {
        let at = |text: &str| parse_rfc3339(text).unwrap_or(UnixNanos(0));
        let february = utc_month_of(at("2024-02-29T23:59:59Z"));
        assert_eq!(february.start, at("2024-02-01T00:00:00Z"));
        assert_eq!(february.end, at("2024-03-01T00:00:00Z"));
        let december = utc_month_of(at("2023-12-01T00:00:00Z"));
        assert_eq!(december.start, at("2023-12-01T00:00:00Z"));
        assert_eq!(december.end, at("2024-01-01T00:00:00Z"));
    }

    #[test]
    fn a_year_runs_from_new_year_to_new_year() {
        // 2024-02-29T12:00Z lies in the leap year 2024: 366 days.
        let year = utc_year_of(UnixNanos(1_709_208_000 * NANOS_PER_SECOND));
        assert_eq!(year.start, UnixNanos(1_704_067_200 * NANOS_PER_SECOND));
        assert_eq!(year.len_ns(), 366 * 86_400 * NANOS_PER_SECOND as u64);
    }
}
