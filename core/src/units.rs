//! Integer units. Energy is counted in millijoules and water in millilitres from the edge of the
//! system to the report: no floating point ever touches a ledger figure.

use serde::{Deserialize, Serialize};

/// Nanoseconds per second.
pub const NANOS_PER_SECOND: i64 = 1_000_000_000;
/// Nanoseconds per hour: grid intensity, market matching and the site stage go by the hour.
pub const NANOS_PER_HOUR: i64 = 3_600 * NANOS_PER_SECOND;
/// Nanoseconds per day.
pub const NANOS_PER_DAY: i64 = 24 * NANOS_PER_HOUR;

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

/// Carbon mass in milligrams of CO2 equivalent.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct MilligramsCo2e(pub u64);

/// Carbon intensity of electricity: milligrams CO2e per kWh (g/kWh × 1000).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct MgCo2ePerKwh(pub u64);

impl Millijoules {
    /// Millijoules in one watt-hour.
    pub const PER_WH: u64 = 3_600_000;
    /// Millijoules in one kilowatt-hour.
    pub const PER_KWH: u64 = 1_000 * Self::PER_WH;

    /// Whole kWh for display and reports (never for the books).
    pub fn as_kwh(self) -> f64 {
        self.0 as f64 / Self::PER_KWH as f64
    }

    /// The nearest whole millijoules to `kwh` (a configured or imported amount).
    pub fn from_kwh(kwh: f64) -> Self {
        Self((kwh * Self::PER_KWH as f64).round() as u64)
    }
}

impl MgCo2ePerKwh {
    /// The carbon of `energy` at this intensity, rounded half up to whole milligrams.
    ///
    /// ```
    /// use footprint_core::{MgCo2ePerKwh, MilligramsCo2e, Millijoules};
    /// let one_kwh = Millijoules(Millijoules::PER_KWH);
    /// assert_eq!(MgCo2ePerKwh(400_000).carbon_of(one_kwh), MilligramsCo2e(400_000));
    /// ```
    ///
    /// Energy and intensity are different types, so they cannot be swapped:
    ///
    /// ```compile_fail
    /// use footprint_core::{MgCo2ePerKwh, Millijoules};
    /// let _ = Millijoules(3_600_000_000).carbon_of(MgCo2ePerKwh(400_000));
    /// ```
    pub fn carbon_of(self, energy: Millijoules) -> MilligramsCo2e {
        let per_kwh = u128::from(Millijoules::PER_KWH);
        let wide = u128::from(energy.0) * u128::from(self.0);
        MilligramsCo2e(u64::try_from((wide + per_kwh / 2) / per_kwh).unwrap_or(u64::MAX))
    }
}

/// Addition and sums for the counted quantities; overflow is a bug and panics in debug builds
/// like any integer.
macro_rules! quantity_arithmetic {
    ($($unit:ident),*) => {$(
        impl std::ops::Add for $unit {
            type Output = Self;
            fn add(self, other: Self) -> Self {
                Self(self.0 + other.0)
            }
        }

        impl std::ops::AddAssign for $unit {
            fn add_assign(&mut self, other: Self) {
                self.0 += other.0;
            }
        }

        impl std::iter::Sum for $unit {
            fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
                Self(iter.map(|one| one.0).sum())
            }
        }
    )*};
}

quantity_arithmetic!(Millijoules, Millilitres, MilligramsCo2e);

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
        assert_eq!(Millijoules::from_kwh(1.5), Millijoules(5_400_000_000));
        assert_eq!(Millijoules(5_400_000_000).as_kwh(), 1.5);
    }

    #[test]
    fn carbon_rounds_half_up_to_whole_milligrams() {
        let intensity = MgCo2ePerKwh(400_000);
        assert_eq!(
            intensity.carbon_of(Millijoules(Millijoules::PER_KWH)),
            MilligramsCo2e(400_000)
        );
        // 1 mJ at 400 g/kWh is 1.1e-4 mg: rounds to 0; 4 500 mJ is 0.5 mg: rounds up to 1.
        assert_eq!(intensity.carbon_of(Millijoules(1)), MilligramsCo2e(0));
        assert_eq!(intensity.carbon_of(Millijoules(4_500)), MilligramsCo2e(1));
        assert_eq!(
            MgCo2ePerKwh(u64::MAX).carbon_of(Millijoules(u64::MAX)),
            MilligramsCo2e(u64::MAX)
        );
    }
}
