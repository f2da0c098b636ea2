//! Piecewise-constant power integrated into a cumulative counter, exactly, in integers.
//!
//! Simulated meters (replays, the demo's site meter) are defined by their power as a step
//! function of time. [`IntegratedCounter`] turns that into the counter a real meter would show:
//! `start + floor(∫ P dt)` in mJ, wrapped at the counter's maximum like RAPL's `energy_uj`.

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

#[cfg(test)]
mod tests {
    use super::*;

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
