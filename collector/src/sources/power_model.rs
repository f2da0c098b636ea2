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

/// A coarse energy counter (a PDU's 0.1 kWh register) filled in between its steps with
/// integrated power, so a host's energy shows up second by second instead of in 360 kJ lumps.
///
/// The reported value never leaves the counter's current step `[C, C + step)`: it is the counter
/// plus the power integrated since the counter last moved, capped just below the next step, and
/// it never goes down unless the counter itself falls (a reset, passed on as such). So over any
/// span between two counter moves the energy is exactly the counter's; power only decides *when*
/// within the step it is shown.
#[derive(Clone, Debug)]
pub struct PowerFilledCounter {
    step_mj: u64,
    counter_mj: Option<u64>,
    since_move: SampledPowerCounter,
    reported_mj: u64,
}

impl PowerFilledCounter {
    /// `step_mj`: the counter's resolution (0.1 kWh = 360 000 000 mJ).
    pub fn new(step_mj: u64) -> Self {
        Self {
            step_mj: step_mj.max(1),
            counter_mj: None,
            since_move: SampledPowerCounter::new(),
            reported_mj: 0,
        }
    }

    /// Takes the counter and, where known, the power read at `at_ns`; returns the value to
    /// report and whether it is the counter itself (measured) rather than filled (interpolated).
    pub fn record(&mut self, at_ns: i64, counter_mj: u64, power_mw: Option<u64>) -> (u64, bool) {
        let moved = self.counter_mj != Some(counter_mj);
        if moved {
            self.since_move = SampledPowerCounter::new();
            self.counter_mj = Some(counter_mj);
            // A counter that fell is a reset: follow it down.
            self.reported_mj = if counter_mj < self.reported_mj {
                counter_mj
            } else {
                self.reported_mj.max(counter_mj)
            };
        }
        if let Some(power) = power_mw {
            let filled = self.since_move.record(at_ns, power);
            let cap = counter_mj.saturating_add(self.step_mj - 1);
            self.reported_mj = self
                .reported_mj
                .max(counter_mj.saturating_add(filled).min(cap));
        }
        (self.reported_mj, self.reported_mj == counter_mj)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The filled value stays within the counter's step, never goes down while the counter
        /// does not, and equals the counter whenever power is unknown at a move.
        #[test]
        fn power_fill_stays_within_the_counter_step(
            ticks in proptest::collection::vec((0u64..3, 0u64..3_000_000, any::<bool>()), 1..80),
        ) {
            const STEP: u64 = 360_000_000;
            let mut counter = PowerFilledCounter::new(STEP);
            let mut raw = 19_516 * STEP;
            let mut last = 0;
            for (index, (steps, power, power_known)) in ticks.into_iter().enumerate() {
                raw += steps * STEP;
                let at = index as i64 * 10_000_000_000;
                let (value, exact) = counter.record(at, raw, power_known.then_some(power));
                prop_assert!(value >= raw && value < raw + STEP, "{value} outside [{raw}, +step)");
                prop_assert!(value >= last);
                if steps > 0 && !power_known {
                    prop_assert!(exact && value == raw, "a move without power reports the counter");
                }
                last = value;
            }
        }
    }

    #[test]
    fn power_fills_between_steps_and_a_fall_is_a_reset() {
        const STEP: u64 = 360_000_000;
        let mut counter = PowerFilledCounter::new(STEP);
        assert_eq!(
            counter.record(0, 10 * STEP, Some(163_000)),
            (10 * STEP, true)
        );
        // 163 W for 10 s.
        assert_eq!(
            counter.record(10_000_000_000, 10 * STEP, Some(163_000)),
            (10 * STEP + 1_630_000, false)
        );
        // A long stretch would overshoot the step: held just below the next one.
        assert_eq!(
            counter.record(10_000_000_000_000, 10 * STEP, Some(163_000)),
            (11 * STEP - 1, false)
        );
        assert_eq!(
            counter.record(10_000_000_000_001, 11 * STEP, Some(163_000)),
            (11 * STEP, true)
        );
        assert_eq!(counter.record(10_000_000_000_002, 0, None), (0, true));
    }

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

    const HOUR: i64 = footprint_core::units::NANOS_PER_HOUR;

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
