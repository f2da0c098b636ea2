//! The collector's wall clock. Times are parsed and written by `footprint_core::time`.

use footprint_core::UnixNanos;

/// The wall clock, as Unix nanoseconds.
pub fn wall_clock_now() -> UnixNanos {
    i64::try_from(jiff::Timestamp::now().as_nanosecond())
        .map(UnixNanos)
        .unwrap_or(UnixNanos(i64::MAX))
}
