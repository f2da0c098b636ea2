//! Turning two samples of a cumulative counter into the amount it grew.
//!
//! Counters beat instantaneous power: the delta between two samples is exact however long the
//! interval, so no energy is lost to slow sampling. Three things make deltas hard, and each has
//! a rule here:
//! - **wraparound**: RAPL's `energy_uj` wraps to zero after `max_energy_range_uj`. A fall that a
//!   wrap explains within the meter's power limit is a wrap.
//! - **reset**: a driver reload or a replaced meter restarts the counter from zero. A fall to a
//!   value the meter could have reached from zero since the previous sample is a reset: the
//!   counter's new value is counted, what happened before the reset is a gap.
//! - **anything else** that falls, or grows faster than the meter's power limit, is refused; the
//!   previous sample stays the baseline.

use crate::units::{NANOS_PER_SECOND, UnixNanos};

/// One sample of a cumulative counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CounterSample {
    pub value: u64,
    pub at: UnixNanos,
}

/// What is known about a counter's range and the largest plausible growth rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CounterLimits {
    /// Largest value before the counter wraps to zero; `u64::MAX` when it never wraps.
    pub max_value: u64,
    /// Largest plausible growth per second, in the counter's unit (mJ/s is mW).
    pub max_rate_per_second: u64,
    /// The counter's smallest step (0 and 1: every unit). A coarse counter shows energy a step
    /// at a time, so between two close samples it may move a whole step while only a little was
    /// used: growth up to the rate limit plus one step less one unit is plausible.
    pub resolution: u64,
}

/// How a counter moved between two samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CounterStep {
    /// It grew by `delta`.
    Advanced { delta: u64 },
    /// It wrapped past `max_value` and grew by `delta` in all.
    Wrapped { delta: u64 },
    /// It restarted from zero somewhere in the interval: `since_reset` was counted after the
    /// restart; whatever was counted between the previous sample and the restart is unknown.
    Reset { since_reset: u64 },
}

impl CounterStep {
    /// The amount to book for the interval.
    pub fn delta(&self) -> u64 {
        match *self {
            CounterStep::Advanced { delta } | CounterStep::Wrapped { delta } => delta,
            CounterStep::Reset { since_reset } => since_reset,
        }
    }
}

/// Why a sample cannot follow the previous one; [`CounterError::field`] names the field at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CounterError {
    #[error("{at} is not after the previous reading at {previous}")]
    NotAfterPrevious { previous: i64, at: i64 },
    #[error("{value} is above the counter's maximum {max}")]
    AboveMaximum { value: u64, max: u64 },
    #[error("counter went backwards from {previous} to {value} (not a wrap, not a reset)")]
    WentBackwards { previous: u64, value: u64 },
    #[error("grew by {delta} in {elapsed_ns} ns, more than the limit of {limit_per_second}/s")]
    ImplausibleRate {
        delta: u64,
        elapsed_ns: u64,
        limit_per_second: u64,
    },
}

impl CounterError {
    /// The reading's field at fault.
    pub fn field(&self) -> &'static str {
        match self {
            CounterError::NotAfterPrevious { .. } => "timestamp_ns",
            _ => "value",
        }
    }

    /// A short label for metrics, e.g. `went_backwards`.
    pub fn code(&self) -> &'static str {
        match self {
            CounterError::NotAfterPrevious { .. } => "not_after_previous",
            CounterError::AboveMaximum { .. } => "above_maximum",
            CounterError::WentBackwards { .. } => "went_backwards",
            CounterError::ImplausibleRate { .. } => "implausible_rate",
        }
    }
}

/// Classifies the move from `previous` to `current`.
///
/// # Errors
/// A [`CounterError`] when `current` cannot follow `previous`; the caller keeps `previous` as the
/// baseline for the next sample.
pub fn step(
    previous: CounterSample,
    current: CounterSample,
    limits: CounterLimits,
) -> Result<CounterStep, CounterError> {
    if current.at <= previous.at {
        return Err(CounterError::NotAfterPrevious {
            previous: previous.at.0,
            at: current.at.0,
        });
    }
    if current.value > limits.max_value {
        return Err(CounterError::AboveMaximum {
            value: current.value,
            max: limits.max_value,
        });
    }
    let elapsed_ns = (current.at.0 - previous.at.0) as u64;
    let allowed = allowed_growth(limits.max_rate_per_second, elapsed_ns)
        + u128::from(limits.resolution.saturating_sub(1));
    let implausible = |delta| CounterError::ImplausibleRate {
        delta,
        elapsed_ns,
        limit_per_second: limits.max_rate_per_second,
    };
    if current.value >= previous.value {
        let delta = current.value - previous.value;
        return if u128::from(delta) <= allowed {
            Ok(CounterStep::Advanced { delta })
        } else {
            Err(implausible(delta))
        };
    }
    if limits.max_value < u64::MAX && previous.value <= limits.max_value {
        // (max - previous) counts up to the maximum, +1 for the step to zero, + current after it.
        let wrapped = u128::from(limits.max_value - previous.value) + 1 + u128::from(current.value);
        if wrapped <= allowed {
            return Ok(CounterStep::Wrapped {
                delta: wrapped as u64,
            });
        }
    }
    if u128::from(current.value) <= allowed {
        return Ok(CounterStep::Reset {
            since_reset: current.value,
        });
    }
    Err(CounterError::WentBackwards {
        previous: previous.value,
        value: current.value,
    })
}

/// The most a counter limited to `rate_per_second` can grow in `elapsed_ns`, rounded up.
fn allowed_growth(rate_per_second: u64, elapsed_ns: u64) -> u128 {
    let nanos = NANOS_PER_SECOND as u128;
    (u128::from(rate_per_second) * u128::from(elapsed_ns)).div_ceil(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECOND: i64 = NANOS_PER_SECOND;

    fn sample(value: u64, seconds: i64) -> CounterSample {
        CounterSample {
            value,
            at: UnixNanos(seconds * SECOND),
        }
    }

    fn gpu_limits() -> CounterLimits {
        // 5 kW in mJ/s.
        CounterLimits {
            max_value: u64::MAX,
            max_rate_per_second: 5_000_000,
            resolution: 1,
        }
    }

    #[test]
    fn growth_is_the_difference() {
        let step = step(sample(1_000, 0), sample(301_000, 1), gpu_limits());
        assert_eq!(step, Ok(CounterStep::Advanced { delta: 300_000 }));
    }

    #[test]
    fn rapl_style_wrap_is_counted_across_the_maximum() {
        // RAPL energy_uj wraps at max_energy_range_uj (here in mJ for the test).
        let limits = CounterLimits {
            max_value: 262_143_328,
            max_rate_per_second: 1_000_000,
            resolution: 1,
        };
        let step = step(sample(262_143_000, 0), sample(171, 1), limits);
        // 328 to reach the maximum, 1 to wrap to zero, 171 after.
        assert_eq!(step, Ok(CounterStep::Wrapped { delta: 500 }));
    }

    #[test]
    fn a_coarse_counter_may_move_a_whole_step_at_once() {
        // A PDU's 0.1 kWh register moving one step 1 s after its last move, on a 30 kW outlet.
        let coarse = CounterLimits {
            max_value: u64::MAX,
            max_rate_per_second: 30_000_000,
            resolution: 360_000_000,
        };
        let at = |steps: u64, seconds| sample(steps * 360_000_000, seconds);
        assert_eq!(
            step(at(10, 0), at(11, 1), coarse),
            Ok(CounterStep::Advanced { delta: 360_000_000 })
        );
        // Two steps in a second is still more than 30 kW can explain.
        assert!(step(at(10, 0), at(12, 1), coarse).is_err());
        let fine = CounterLimits {
            resolution: 1,
            ..coarse
        };
        assert!(step(at(10, 0), at(11, 1), fine).is_err());
    }

    #[test]
    fn fall_to_near_zero_is_a_reset() {
        let step = step(sample(9_000_000_000, 0), sample(40_000, 10), gpu_limits());
        assert_eq!(
            step,
            Ok(CounterStep::Reset {
                since_reset: 40_000
            })
        );
    }

    #[test]
    fn fall_that_is_neither_wrap_nor_reset_is_refused() {
        let err = step(
            sample(9_000_000_000, 0),
            sample(8_000_000_000, 10),
            gpu_limits(),
        )
        .expect_err("a counter cannot fall by 1 GJ");
        assert!(matches!(err, CounterError::WentBackwards { .. }));
        assert_eq!(err.field(), "value");
        assert!(err.to_string().starts_with("counter went backwards"));
    }

    #[test]
    fn more_than_five_kilowatts_from_one_gpu_is_refused() {
        // 5 001 W for one second.
        let err = step(sample(0, 0), sample(5_001_000, 1), gpu_limits()).expect_err("too fast");
        assert!(matches!(err, CounterError::ImplausibleRate { .. }));
        assert_eq!(
            step(sample(0, 0), sample(5_000_000, 1), gpu_limits()),
            Ok(CounterStep::Advanced { delta: 5_000_000 })
        );
    }

    #[test]
    fn sample_not_after_previous_is_refused() {
        let err = step(sample(10, 5), sample(20, 5), gpu_limits()).expect_err("same instant");
        assert_eq!(err.field(), "timestamp_ns");
    }

    proptest! {
        /// A wrapping counter sampled at random intervals: the deltas add up to exactly what was
        /// counted, whatever the number of wraps, as long as no interval holds more than one.
        #[test]
        fn deltas_of_a_wrapping_counter_add_up(
            max_value in 1_000u64..10_000_000,
            start in 0u64..10_000_000,
            increments in prop::collection::vec(0u64..1_000, 1..200),
        ) {
            let start = start % (max_value + 1);
            let limits = CounterLimits { max_value, max_rate_per_second: 1_000, resolution: 1 };
            let modulus = u128::from(max_value) + 1;
            let mut previous = sample(start, 0);
            let mut counted: u128 = 0;
            let mut booked: u128 = 0;
            for (index, increment) in increments.iter().enumerate() {
                counted += u128::from(*increment);
                let value = ((u128::from(start) + counted) % modulus) as u64;
                let current = sample(value, index as i64 + 1);
                let moved = step(previous, current, limits);
                prop_assert!(moved.is_ok(), "step refused: {:?}", moved);
                let moved = moved.unwrap();
                prop_assert!(!matches!(moved, CounterStep::Reset { .. }), "a wrap was taken for a reset");
                booked += u128::from(moved.delta());
                previous = current;
            }
            prop_assert_eq!(booked, counted);
        }

        /// A step never books more than the meter's power limit allows, plus one step of its
        /// resolution less one unit.
        #[test]
        fn booked_growth_respects_the_limit(
            previous in any::<u64>(), value in any::<u64>(), seconds in 1i64..1_000, rate in 1u64..10_000_000,
            resolution in prop::sample::select(vec![0u64, 1, 1_000, 360_000_000]),
        ) {
            let limits = CounterLimits { max_value: u64::MAX, max_rate_per_second: rate, resolution };
            if let Ok(moved) = step(sample(previous, 0), sample(value, seconds), limits) {
                let allowed = u128::from(rate) * seconds as u128 + u128::from(resolution.saturating_sub(1));
                prop_assert!(u128::from(moved.delta()) <= allowed);
            }
        }
    }
}
