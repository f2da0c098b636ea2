//! RFC 3339 timestamps in config, as nanoseconds since the epoch.

use footprint_core::UnixNanos;

/// Parses `2024-11-01T00:00:00Z` (any RFC 3339 offset) into Unix nanoseconds.
///
/// # Errors
/// A message saying why the text is not a timestamp.
pub fn parse_timestamp(text: &str) -> Result<UnixNanos, String> {
    let timestamp: jiff::Timestamp = text
        .parse()
        .map_err(|error| format!("{text:?} is not an RFC 3339 timestamp: {error}"))?;
    i64::try_from(timestamp.as_nanosecond())
        .map(UnixNanos)
        .map_err(|_| format!("{text:?} is out of range"))
}

/// Formats Unix nanoseconds as RFC 3339 in UTC.
pub fn format_timestamp(at: UnixNanos) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(at.0))
        .map(|t| t.to_string())
        .unwrap_or_else(|_| format!("{}ns", at.0))
}

/// The wall clock, as Unix nanoseconds.
pub fn wall_clock_now() -> UnixNanos {
    i64::try_from(jiff::Timestamp::now().as_nanosecond())
        .map(UnixNanos)
        .unwrap_or(UnixNanos(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_utc() {
        let at = parse_timestamp("2024-11-01T00:00:10Z").unwrap();
        assert_eq!(at.0, 1_730_419_210_000_000_000);
        assert_eq!(format_timestamp(at), "2024-11-01T00:00:10Z");
        assert!(parse_timestamp("yesterday").is_err());
    }
}
