//! Exact integer apportionment: split an integer total in proportion to integer weights so that
//! the parts add up to the total exactly. This is what makes conservation hold to the millijoule.

/// Splits `total` in proportion to `weights` by the largest-remainder method (Hamilton).
///
/// Every part is `floor(total * w / Σw)` plus at most one unit; the units left over go to the
/// largest remainders, ties to the lower index, so the result is deterministic. The parts add up
/// to `total` exactly. Returns `None` when every weight is zero (there is nothing to split by).
pub fn apportion(total: u64, weights: &[u64]) -> Option<Vec<u64>> {
    let weight_sum: u128 = weights.iter().map(|&w| u128::from(w)).sum();
    if weight_sum == 0 {
        return None;
    }
    let total_wide = u128::from(total);
    let mut parts = Vec::with_capacity(weights.len());
    let mut remainders = Vec::with_capacity(weights.len());
    let mut assigned: u128 = 0;
    for (index, &weight) in weights.iter().enumerate() {
        let scaled = total_wide * u128::from(weight);
        let part = scaled / weight_sum;
        assigned += part;
        // `part <= total`, so it fits in u64.
        parts.push(part as u64);
        remainders.push((scaled % weight_sum, index));
    }
    let mut left = (total_wide - assigned) as usize;
    if left > 0 {
        // Largest remainder first; ties by index for determinism.
        remainders.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        for &(_, index) in remainders.iter() {
            if left == 0 {
                break;
            }
            parts[index] += 1;
            left -= 1;
        }
    }
    Some(parts)
}

/// Splits `total` evenly into `count` parts (the first ones get the odd units).
pub fn split_evenly(total: u64, count: usize) -> Vec<u64> {
    if count == 0 {
        return Vec::new();
    }
    let count_u64 = count as u64;
    let base = total / count_u64;
    let extra = (total % count_u64) as usize;
    (0..count)
        .map(|index| base + u64::from(index < extra))
        .collect()
}

/// Fixed-point scale of carried fractions: 2^32 parts of a unit.
const CARRY_ONE: i128 = 1 << 32;

/// Apportions a run of totals (one per window) over accounts that recur from one window to the
/// next, carrying each account's rounding forward. Plain largest remainder, applied window by
/// window, shortchanges an account whose share is a fraction of a unit every time (a job drawing
/// 0.3 mL of water per window would get nothing, window after window); with the carry its
/// cumulative share never strays a unit from exact, and each window still adds up to its total.
#[derive(Clone, Debug, Default)]
pub struct CarriedApportioner<K: Ord + Clone> {
    /// Exact share minus what was given, per account, in 1/2^32 units.
    carried: std::collections::BTreeMap<K, i128>,
}

impl<K: Ord + Clone> CarriedApportioner<K> {
    pub fn new() -> Self {
        Self {
            carried: std::collections::BTreeMap::new(),
        }
    }

    /// Splits `total` over `weights`: the parts add up to `total`, an account of weight 0 gets
    /// nothing. `None` when every weight is 0.
    pub fn apportion(&mut self, total: u64, weights: &[(K, u64)]) -> Option<Vec<u64>> {
        let weight_sum: u128 = weights.iter().map(|(_, w)| u128::from(*w)).sum();
        if weight_sum == 0 {
            return None;
        }
        // What each account is owed: this window's exact share plus what earlier windows owe it.
        let wanted: Vec<i128> = weights
            .iter()
            .map(|(key, weight)| {
                if *weight == 0 {
                    return 0;
                }
                let exact = (u128::from(total) * u128::from(*weight) * CARRY_ONE as u128
                    / weight_sum) as i128;
                exact + self.carried.get(key).copied().unwrap_or(0)
            })
            .collect();
        let mut parts: Vec<u64> = wanted
            .iter()
            .map(|w| (w.max(&0) / CARRY_ONE) as u64)
            .collect();
        let given: u64 = parts.iter().sum();
        // Rank accounts by what the floor left them owed; settle the difference with the window's
        // total there (most owed first when adding, least owed first when taking).
        let mut order: Vec<usize> = (0..weights.len()).filter(|i| weights[*i].1 > 0).collect();
        order.sort_by_key(|&i| {
            (
                std::cmp::Reverse(wanted[i] - parts[i] as i128 * CARRY_ONE),
                i,
            )
        });
        if given < total {
            let mut left = total - given;
            while left > 0 {
                for &index in &order {
                    if left == 0 {
                        break;
                    }
                    parts[index] += 1;
                    left -= 1;
                }
            }
        } else {
            let mut excess = given - total;
            while excess > 0 {
                for &index in order.iter().rev() {
                    if excess == 0 {
                        break;
                    }
                    if parts[index] > 0 {
                        parts[index] -= 1;
                        excess -= 1;
                    }
                }
            }
        }
        for ((key, weight), (want, part)) in weights.iter().zip(wanted.iter().zip(&parts)) {
            if *weight > 0 {
                self.carried
                    .insert(key.clone(), want - i128::from(*part) * CARRY_ONE);
            }
        }
        Some(parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn splits_by_weight_with_largest_remainder() {
        assert_eq!(apportion(10, &[1, 1, 1]), Some(vec![4, 3, 3]));
        assert_eq!(apportion(100, &[3, 1]), Some(vec![75, 25]));
        assert_eq!(apportion(7, &[0, 5]), Some(vec![0, 7]));
        assert_eq!(apportion(7, &[0, 0]), None);
    }

    #[test]
    fn even_split_puts_odd_units_first() {
        assert_eq!(split_evenly(10, 3), vec![4, 3, 3]);
        assert_eq!(split_evenly(0, 2), vec![0, 0]);
        assert!(split_evenly(5, 0).is_empty());
    }

    #[test]
    fn carried_shares_reach_small_accounts() {
        // 0.3 of a unit per window: plain largest remainder gives the small account nothing.
        let mut carried = CarriedApportioner::new();
        let mut small = 0;
        for _ in 0..10 {
            let parts = carried
                .apportion(10, &[("big", 97), ("small", 3)])
                .expect("weights");
            assert_eq!(parts.iter().sum::<u64>(), 10);
            assert_eq!(apportion(10, &[97, 3]), Some(vec![10, 0]));
            small += parts[1];
        }
        assert_eq!(small, 3);
    }

    proptest! {
        /// Every window adds up; no account is ever more than two units from its exact
        /// cumulative share; weight-0 accounts get nothing.
        #[test]
        fn carried_apportionment_is_exact_per_window_and_fair_over_time(
            windows in prop::collection::vec(
                (0u64..10_000, prop::collection::vec(0u64..1_000, 5)),
                1..40,
            ),
        ) {
            let mut carried = CarriedApportioner::new();
            let mut given = [0u64; 5];
            let mut exact = [0f64; 5];
            for (total, weights) in &windows {
                let keyed: Vec<(usize, u64)> = weights.iter().copied().enumerate().collect();
                let sum: u64 = weights.iter().sum();
                match carried.apportion(*total, &keyed) {
                    Some(parts) => {
                        prop_assert_eq!(parts.iter().sum::<u64>(), *total);
                        for (index, part) in parts.iter().enumerate() {
                            if weights[index] == 0 {
                                prop_assert_eq!(*part, 0);
                            }
                            given[index] += part;
                            exact[index] += *total as f64 * weights[index] as f64 / sum as f64;
                        }
                    }
                    None => prop_assert_eq!(sum, 0),
                }
            }
            for index in 0..5 {
                prop_assert!((given[index] as f64 - exact[index]).abs() < 2.0, "{given:?} {exact:?}");
            }
        }

        #[test]
        fn parts_add_up_to_the_total(total in any::<u64>(), weights in prop::collection::vec(any::<u64>(), 1..20)) {
            if let Some(parts) = apportion(total, &weights) {
                let sum: u128 = parts.iter().map(|&p| u128::from(p)).sum();
                prop_assert_eq!(sum, u128::from(total));
                for (part, weight) in parts.iter().zip(&weights) {
                    if *weight == 0 {
                        prop_assert_eq!(*part, 0);
                    }
                }
            } else {
                prop_assert!(weights.iter().all(|&w| w == 0));
            }
        }

        #[test]
        fn each_part_is_within_one_unit_of_its_exact_share(total in 0u64..1_000_000_000_000, weights in prop::collection::vec(0u64..1_000_000, 1..20)) {
            if let Some(parts) = apportion(total, &weights) {
                let weight_sum: u128 = weights.iter().map(|&w| u128::from(w)).sum();
                for (part, weight) in parts.iter().zip(&weights) {
                    let floor = u128::from(total) * u128::from(*weight) / weight_sum;
                    prop_assert!(u128::from(*part) == floor || u128::from(*part) == floor + 1);
                }
            }
        }

        #[test]
        fn even_split_adds_up(total in any::<u64>(), count in 1usize..64) {
            let parts = split_evenly(total, count);
            prop_assert_eq!(parts.iter().map(|&p| u128::from(p)).sum::<u128>(), u128::from(total));
            let max = parts.iter().max().copied().unwrap_or(0);
            let min = parts.iter().min().copied().unwrap_or(0);
            prop_assert!(max - min <= 1);
        }
    }
}
