//! The kernel's cpulist format (`0-3,8,10-11`), as in `cpuset.cpus` and `/sys/devices/system/cpu/*`.

/// Parses a cpulist into sorted, de-duplicated CPU numbers. An empty string is no CPUs.
///
/// # Errors
/// A message naming the bad element.
pub fn parse_cpulist(text: &str) -> Result<Vec<u32>, String> {
    let mut cpus = Vec::new();
    for element in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let parse = |part: &str| {
            part.trim()
                .parse::<u32>()
                .map_err(|_| format!("{element:?} is not a CPU number or range"))
        };
        match element.split_once('-') {
            Some((low, high)) => {
                let (low, high) = (parse(low)?, parse(high)?);
                if low > high || high - low > 65_536 {
                    return Err(format!("{element:?} is not an ascending range"));
                }
                cpus.extend(low..=high);
            }
            None => cpus.push(parse(element)?),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ranges_and_singles() {
        assert_eq!(
            parse_cpulist("0-3,8, 10-11").unwrap(),
            vec![0, 1, 2, 3, 8, 10, 11]
        );
        assert_eq!(parse_cpulist("").unwrap(), Vec::<u32>::new());
        assert!(parse_cpulist("3-1").is_err());
        assert!(parse_cpulist("a").is_err());
    }
}
