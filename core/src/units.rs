//! Integer units. Energy is counted in millijoules and water in millilitres from the edge of the
//! system to the report: no floating point ever touches a ledger figure.

use serde::{Deserialize, Serialize};

/// Nanoseconds per second.
pub const NANOS_PER_SECOND: i64 = 1_000_000_000;
/// Nanoseconds per hour: grid intensity, market matching and the site stage go by the hour.
pub const NANOS_PER_HOUR: i64 = 3_600 * NANOS_PER_SECOND;

/// Energy in millijoules. 1 kWh = 3 600 000 000 mJ.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Millijoules(pub u64);

/// Water volume in millilitres.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Millilitres(pub u64);

/// A point in time: nanoseconds since the Unix epoch, UTC.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct UnixNanos(pub i64);

impl Millijoules {
    /// Millijoules in one kilowatt-hour.
    pub const PER_KWH: u64 = 3_600_000_000;
}

/// `at` as RFC 3339 in UTC, to the second (`2023-11-06T10:00:00Z`).
pub fn rfc3339(at: UnixNanos) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(at.0))
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| at.0.to_string())
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

/// A half-open span of time `[start, end)`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Span {
    pub start: UnixNanos,
    pub end: UnixNanos,
}

impl Span {
    /// A span from `start` to `end`; an `end` before `start` gives an empty span at `start`.
    pub fn new(start: UnixNanos, end: UnixNanos) -> Self {
        Self {
            start,
            end: end.max(start),
        }
    }

    /// Length in nanoseconds (never negative).
    pub fn len_ns(&self) -> u64 {
        (self.end.0 - self.start.0).max(0) as u64
    }

    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// The part of `self` inside `other`, if any.
    pub fn intersect(&self, other: &Span) -> Option<Span> {
        let start = self.start.max(other.start);
        let end = self.end.min(other.end);
        (start < end).then_some(Span { start, end })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_year_runs_from_new_year_to_new_year() {
        // 2024-02-29T12:00Z lies in the leap year 2024: 366 days.
        let year = utc_year_of(UnixNanos(1_709_208_000 * NANOS_PER_SECOND));
        assert_eq!(year.start, UnixNanos(1_704_067_200 * NANOS_PER_SECOND));
        assert_eq!(year.len_ns(), 366 * 86_400 * NANOS_PER_SECOND as u64);
    }

    #[test]
    fn intersect_of_disjoint_spans_is_none() {
        let a = Span::new(UnixNanos(0), UnixNanos(10));
        let b = Span::new(UnixNanos(10), UnixNanos(20));
        assert_eq!(a.intersect(&b), None);
        let c = Span::new(UnixNanos(5), UnixNanos(15));
        assert_eq!(
            a.intersect(&c),
            Some(Span::new(UnixNanos(5), UnixNanos(10)))
        );
    }

    #[test]
    fn kwh_constant_matches_definition() {
        // 1 kWh = 1000 W * 3600 s = 3.6e6 J = 3.6e9 mJ.
        assert_eq!(Millijoules::PER_KWH, 1000 * 3600 * 1000);
    }
}
