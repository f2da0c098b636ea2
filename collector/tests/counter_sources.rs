//! Wraparound, reset and gap handling of the counter sources, as property tests: a simulated
//! physical meter (RAPL's µJ register, a Modbus totaliser, a PDU's 0.1 kWh register with its
//! power) is read through the source's own converter, and what the source reports is booked by
//! the aggregator's rule (`footprint_core::counter::step`). Gaps are samples the collector never
//! took (or an agent never answered); each property says what must come out exactly. The NVML
//! counter, which the source passes through unchanged, has its property in `tests/nvml.rs`, run
//! through the real `nvml-wrapper`.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod peers;

use footprint_collector::sources::modbus::{Decimal, RegisterCounter};
use footprint_collector::sources::power_model::PowerFilledCounter;
use footprint_collector::sources::rapl::MillijouleCounter;
use footprint_core::counter::CounterLimits;
use proptest::prelude::*;

const SECOND: i64 = 1_000_000_000;

proptest! {
    /// RAPL: the µJ register wraps any number of times, the collector misses samples (up to 10 s
    /// of a 500 W package between two it takes) and restarts (a fresh mJ counter from the
    /// register). Booked at the aggregator's package limit (2 kW), nothing is refused, and the
    /// energy booked is the whole millijoules counted, off by less than one mJ per restart plus
    /// one per wrap the restarted counter had seen (its mJ range is not a whole multiple of the
    /// register's µJ range).
    #[test]
    fn rapl_wraps_gaps_and_restarts(
        max_uj in 20_000_000_000u64..300_000_000_000,
        start in any::<u64>(),
        steps in prop::collection::vec((1u64..=500, 1i64..=10, 0u64..1_000, prop::bool::weighted(0.1)), 1..80),
    ) {
        let mut raw = start % (max_uj + 1);
        let mut counter = MillijouleCounter::new(max_uj, raw);
        let limits = CounterLimits { max_value: counter.counter_max(), max_rate_per_second: 2_000_000, resolution: 1 };
        let mut readings = vec![(0, counter.value())];
        let (mut at, mut counted_uj) = (0i64, 0u128);
        let (mut wraps_seen, mut tolerance_mj) = (0u128, 0u128);
        for (watts, seconds, jitter_uj, restarted) in steps {
            let advance = watts * 1_000_000 * seconds as u64 + jitter_uj;
            counted_uj += u128::from(advance);
            let unwrapped = u128::from(raw) + u128::from(advance);
            wraps_seen += unwrapped / (u128::from(max_uj) + 1);
            raw = (unwrapped % (u128::from(max_uj) + 1)) as u64;
            at += seconds * SECOND;
            let value = if restarted {
                counter = MillijouleCounter::new(max_uj, raw);
                tolerance_mj += 1 + wraps_seen;
                wraps_seen = 0;
                counter.value()
            } else {
                counter.advance(raw)
            };
            readings.push((at, value));
        }
        let booked = peers::booked_total(&readings, limits).map_err(TestCaseError::fail)?;
        let exact = (u128::from(start % (max_uj + 1) % 1_000) + counted_uj) / 1_000;
        prop_assert!(
            booked.abs_diff(exact) <= tolerance_mj,
            "booked {booked} mJ, counted {exact} mJ, tolerance {tolerance_mj}"
        );
    }

    /// Modbus: a u16 totaliser (1 L a count) wraps, samples are missed (at most a quarter of the
    /// register between two taken), and the meter is replaced by one counting from zero. What
    /// the meter counted between two samples is booked exactly; a replacement loses only what
    /// the old meter counted after its last sample. A replacement shows only as a fall, and a
    /// fall from the register's upper half into its lowest quarter reads as a wrap (a
    /// replacement there looks exactly like one), so replacements are drawn where they can be
    /// told apart.
    #[test]
    fn modbus_wraps_gaps_and_replacements(
        start in 0u64..65_536,
        steps in prop::collection::vec((prop::collection::vec(0u64..4_096, 1..=4), prop::bool::weighted(0.05), 0u64..4_096), 1..150),
    ) {
        const MODULUS: u64 = 1 << 16;
        let mut counter = RegisterCounter::new(1_000, Decimal { digits: 1, exponent: 0 }, Some(1 << 16));
        let mut register = start;
        let mut readings = vec![(0, counter.advance(register))];
        let (mut at, mut expected_ml) = (0i64, 0u128);
        for (counts, replace, counted_by_new_meter) in steps {
            at += counts.len() as i64 * SECOND;
            let counted: u64 = counts.iter().sum();
            if replace && counted_by_new_meter < register && register < MODULUS / 2 {
                register = counted_by_new_meter;
                expected_ml += u128::from(counted_by_new_meter) * 1_000;
            } else {
                register = (register + counted) % MODULUS;
                expected_ml += u128::from(counted) * 1_000;
            }
            readings.push((at, counter.advance(register)));
        }
        let limits = CounterLimits { max_value: u64::MAX, max_rate_per_second: 10_000_000, resolution: counter.resolution() };
        let booked = peers::booked_total(&readings, limits).map_err(TestCaseError::fail)?;
        prop_assert_eq!(booked, expected_ml);
    }

    /// SNMP: a PDU outlet's 0.1 kWh register, filled in with the outlet's power between its
    /// steps; the agent sometimes does not answer (a gap), and once the register is reset to
    /// zero. Booked at the aggregator's host limit (30 kW) with the register's step as the
    /// meter's resolution, nothing is refused (without it, a step shown seconds after the last
    /// — the fill restarts at every move, and a gap leaves it behind — was); between any two
    /// readings where the register itself moved, what is booked is exactly what the register
    /// moved; and the reading after the reset books exactly the register's count since it.
    #[test]
    fn snmp_register_gaps_and_a_reset(
        steps in prop::collection::vec((0u64..=10_000, 1i64..=120, prop::bool::weighted(0.85)), 1..120),
        reset_at in 0usize..150,
    ) {
        const STEP_MJ: u64 = 360_000_000;
        let mut counter = PowerFilledCounter::new(STEP_MJ);
        // A PDU some years in service: 1 951.6 kWh.
        let mut energy_mj = 19_516 * STEP_MJ;
        let register = |energy: u64| energy / STEP_MJ * STEP_MJ;
        let first = counter.record(0, register(energy_mj), Some(0));
        // (at, reported, register when the reported value is the register itself, reset since the previous reading)
        let mut readings = vec![(0, first.0, Some(register(energy_mj)), false)];
        let (mut at, mut reset_pending) = (0i64, false);
        for (index, (watts, seconds, answered)) in steps.into_iter().enumerate() {
            at += seconds * SECOND;
            if index == reset_at {
                energy_mj = 0;
                reset_pending = true;
            }
            energy_mj += watts * 1_000 * seconds as u64;
            if answered {
                let (value, exact) = counter.record(at, register(energy_mj), Some(watts * 1_000));
                readings.push((at, value, exact.then_some(register(energy_mj)), reset_pending));
                reset_pending = false;
            }
        }
        // The source announces its register's step as the meter's resolution.
        let limits = CounterLimits { max_value: u64::MAX, max_rate_per_second: 30_000_000, resolution: STEP_MJ };
        let timed: Vec<(i64, u64)> = readings.iter().map(|&(at, value, ..)| (at, value)).collect();
        // booked_to[i]: what the aggregator booked from the first reading to reading i.
        let booked_to = peers::book_counter(&timed, limits).map_err(TestCaseError::fail)?;
        let mut last_exact: Option<(usize, u64)> = None;
        for (index, &(_, _, exact_register, reset)) in readings.iter().enumerate() {
            if reset {
                prop_assert!(exact_register.is_some(), "a reset is a move of the register");
                let since = booked_to[index] - booked_to[index - 1];
                prop_assert_eq!(Some(since), exact_register.map(u128::from));
                last_exact = None;
            }
            if let Some(register_now) = exact_register {
                if let Some((from, register_then)) = last_exact {
                    prop_assert_eq!(
                        booked_to[index] - booked_to[from],
                        u128::from(register_now - register_then)
                    );
                }
                last_exact = Some((index, register_now));
            }
        }
    }
}
