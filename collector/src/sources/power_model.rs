//! Piecewise-constant power integrated into a cumulative counter, exactly, in integers.
//!
//! Simulated meters (replays, the demo's site meter) are defined by their power as a step
//! function of time. [`IntegratedCounter`] turns that into the counter a real meter would show:
//! `start + floor(∫ P dt)` in mJ, wrapped at the counter's maximum like RAPL's `energy_uj`.
//!
//! Real meters that only give instantaneous power (NVML on GPUs without an energy counter, IPMI
//! DCMI) are integrated by [`SampledPowerCounter`] instead: the trapezoid rule between samples,
//! also exact in integers, its readings flagged interpolated.

/// Power in milliwatts from `at` until `until` (exclusive), when it may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PowerStep {
    pub power_mw: u64,
    pub until_ns: i64,
}

/// The integral of a power step function since an origin, as a counter.
#[derive(Clone, Debug)]
pub struct IntegratedCounter {
    start_mj: u64,
    max_value: u64,
    last_ns: i64,
    /// Energy since the origin in mW·ns (1 mJ = 10^9 mW·ns): no rounding until read out.
    accumulated_mw_ns: u128,
}

const MW_NS_PER_MJ: u128 = 1_000_000_000;

impl IntegratedCounter {
    pub fn new(origin_ns: i64, start_mj: u64, max_value: u64) -> Self {
        Self {
            start_mj,
            max_value,
            last_ns: origin_ns,
            accumulated_mw_ns: 0,
        }
    }

    /// Integrates `power` from the last instant to `to_ns` and returns the counter value there.
    /// Calls with a `to_ns` before the last one return the counter unchanged.
    pub fn advance(&mut self, to_ns: i64, power: impl Fn(i64) -> PowerStep) -> u64 {
        while self.last_ns < to_ns {
            let step = power(self.last_ns);
            // A step must move time forward; guard against a model that says otherwise.
            let until = step.until_ns.clamp(self.last_ns + 1, to_ns);
            self.accumulated_mw_ns += u128::from(step.power_mw) * (until - self.last_ns) as u128;
            self.last_ns = until;
        }
        self.value()
    }

    /// Energy since the origin, mJ (not wrapped).
    pub fn total_mj(&self) -> u128 {
        self.accumulated_mw_ns / MW_NS_PER_MJ
    }

    pub fn value(&self) -> u64 {
        let unwrapped = u128::from(self.start_mj) + self.total_mj();
        (unwrapped % (u128::from(self.max_value) + 1)) as u64
    }
}

/// Power read at instants, integrated by the trapezoid rule into an mJ counter that starts at 0
/// with the first sample and never wraps. No energy is lost to rounding: the sub-mJ part stays
/// in the accumulator.
#[derive(Clone, Debug, Default)]
pub struct SampledPowerCounter {
    last: Option<(i64, u64)>,
    /// Twice the energy since the first sample, in mW·ns (the trapezoid's halving is deferred).
    accumulated_2mw_ns: u128,
}

impl SampledPowerCounter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the power read at `at_ns` and returns the counter there. A sample at or before the
    /// previous one changes nothing.
    pub fn record(&mut self, at_ns: i64, power_mw: u64) -> u64 {
        match self.last {
            Some((previous_ns, _)) if at_ns <= previous_ns => return self.value(),
            Some((previous_ns, previous_mw)) => {
                let elapsed = (at_ns - previous_ns) as u128;
                self.accumulated_2mw_ns +=
                    (u128::from(previous_mw) + u128::from(power_mw)) * elapsed;
            }
            None => {}
        }
        self.last = Some((at_ns, power_mw));
        self.value()
    }

    /// mJ since the first sample.
    pub fn value(&self) -> u64 {
        u64::try_from(self.accumulated_2mw_ns / (2 * MW_NS_PER_MJ)).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the sampling, the counter is the floor of the exact trapezoid integral and
        /// never goes down.
        #[test]
        fn sampled_power_integrates_exactly(
            samples in proptest::collection::vec((1i64..5_000_000_000, 0u64..2_000_000), 1..60),
        ) {
            let mut counter = SampledPowerCounter::new();
            let mut at = 1_700_000_000_000_000_000i64;
            let mut exact_2mw_ns = 0u128;
            let mut previous: Option<u64> = None;
            let mut last_value = 0;
            for (step, power) in samples {
                if let Some(p) = previous {
                    exact_2mw_ns += u128::from(p + power) * step as u128;
                }
                if previous.is_some() {
                    at += step;
                }
                let value = counter.record(at, power);
                prop_assert!(value >= last_value);
                prop_assert_eq!(u128::from(value), exact_2mw_ns / 2_000_000_000);
                last_value = value;
                previous = Some(power);
                // A repeated instant changes nothing.
                prop_assert_eq!(counter.record(at, power + 1), value);
            }
        }
    }

    #[test]
    fn a_ramp_integrates_to_its_trapezoid() {
        // 100 W rising to 300 W over 10 s: 2 000 J.
        let mut counter = SampledPowerCounter::new();
        assert_eq!(counter.record(0, 100_000), 0);
        assert_eq!(counter.record(10_000_000_000, 300_000), 2_000_000);
    }

    const HOUR: i64 = 3_600_000_000_000;

    #[test]
    fn steps_integrate_exactly() {
        // 100 W for an hour, then 300 W: after 1.5 h, 100 Wh + 150 Wh = 250 Wh = 900 000 000 mJ.
        let power = |at: i64| {
            if at < HOUR {
                PowerStep {
                    power_mw: 100_000,
                    until_ns: HOUR,
                }
            } else {
                PowerStep {
                    power_mw: 300_000,
                    until_ns: i64::MAX,
                }
            }
        };
        let mut counter = IntegratedCounter::new(0, 5, u64::MAX);
        assert_eq!(counter.advance(HOUR / 2, power), 5 + 180_000_000);
        assert_eq!(counter.advance(HOUR + HOUR / 2, power), 5 + 900_000_000);
    }

    #[test]
    fn counter_wraps_at_its_maximum() {
        let mut counter = IntegratedCounter::new(0, 990, 999);
        // 1 W for 20 s = 20 000 mJ; 990 + 20 000 = 20 990 → 20 990 mod 1000 = 990.
        let value = counter.advance(20_000_000_000, |_| PowerStep {
            power_mw: 1_000,
            until_ns: i64::MAX,
        });
        assert_eq!(value, 990);
        assert_eq!(counter.total_mj(), 20_000);
    }
}
