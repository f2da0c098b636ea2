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

    proptest! {
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
