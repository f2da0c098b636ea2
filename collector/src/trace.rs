//! Recorded GPU power traces: hourly mean power per host, as in the Cornell BioHPC exports
//! (`traces/README.md`). Rows of one host are played as consecutive hours.

use std::collections::BTreeMap;

/// The trace the `replay` source uses when its config names none.
pub const EMBEDDED_TRACE: &str = include_str!("../traces/biohpc_gpu_power_2024_nov_dec.csv");
/// Name of the embedded trace, as it appears in reading methods.
pub const EMBEDDED_TRACE_NAME: &str = "biohpc_gpu_power_2024_nov_dec.csv (Cornell BioHPC)";

/// One hour of a host's trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceHour {
    /// `hour_start_local` as written in the file.
    pub label: String,
    /// Mean GPU power over the hour, milliwatts (the file's watts × 1000, rounded).
    pub power_mw: u64,
}

/// Hourly power per host.
#[derive(Clone, Debug, Default)]
pub struct PowerTrace {
    hosts: BTreeMap<String, Vec<TraceHour>>,
}

impl PowerTrace {
    /// Parses a CSV with columns `hour_start_local`, `host`, `gpu_power_avg_w` (others ignored).
    ///
    /// # Errors
    /// A message naming the line and column of the first bad row.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut lines = text.lines().enumerate();
        let (_, header) = lines.next().ok_or("trace is empty")?;
        let columns: Vec<&str> = header.split(',').map(str::trim).collect();
        let find = |name: &str| {
            columns
                .iter()
                .position(|c| *c == name)
                .ok_or(format!("trace header has no column {name:?}"))
        };
        let (label_at, host_at, power_at) = (
            find("hour_start_local")?,
            find("host")?,
            find("gpu_power_avg_w")?,
        );
        let mut hosts: BTreeMap<String, Vec<TraceHour>> = BTreeMap::new();
        for (index, line) in lines {
            if line.trim().is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split(',').collect();
            let field = |at: usize, name: &str| {
                fields
                    .get(at)
                    .map(|f| f.trim())
                    .ok_or(format!("line {}: missing column {name}", index + 1))
            };
            let watts: f64 = field(power_at, "gpu_power_avg_w")?
                .parse()
                .map_err(|e| format!("line {}: gpu_power_avg_w: {e}", index + 1))?;
            if !(0.0..=5_000.0).contains(&watts) {
                return Err(format!(
                    "line {}: gpu_power_avg_w: {watts} W is outside 0..5000",
                    index + 1
                ));
            }
            hosts
                .entry(field(host_at, "host")?.to_owned())
                .or_default()
                .push(TraceHour {
                    label: field(label_at, "hour_start_local")?.to_owned(),
                    power_mw: (watts * 1000.0).round() as u64,
                });
        }
        Ok(Self { hosts })
    }

    pub fn embedded() -> Self {
        // The embedded file is checked by a test; an empty trace only makes replays fail cleanly.
        Self::parse(EMBEDDED_TRACE).unwrap_or_default()
    }

    pub fn hours(&self, host: &str) -> Option<&[TraceHour]> {
        self.hosts.get(host).map(Vec::as_slice)
    }

    pub fn host_names(&self) -> impl Iterator<Item = &str> {
        self.hosts.keys().map(String::as_str)
    }

    /// Index of the row of `host` whose label is `label`.
    pub fn row_of(&self, host: &str, label: &str) -> Option<usize> {
        self.hours(host)?.iter().position(|h| h.label == label)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_trace_has_both_hosts_in_full() {
        let trace = PowerTrace::parse(EMBEDDED_TRACE).expect("embedded trace parses");
        let h100 = trace.hours("cbsugpu08").expect("cbsugpu08");
        assert_eq!(h100.len(), 1462);
        assert_eq!(h100[0].label, "2024-11-01T00:00:00");
        assert!(trace.hours("cbsugpu05").is_some_and(|h| h.len() > 1400));
        assert!(h100.iter().any(|h| h.power_mw > 340_000));
    }

    #[test]
    fn bad_rows_are_named() {
        let error = PowerTrace::parse("hour_start_local,host,gpu_power_avg_w\n2024,a,lots\n")
            .expect_err("not a number");
        assert!(error.starts_with("line 2: gpu_power_avg_w"), "{error}");
        assert!(PowerTrace::parse("a,b\n").is_err());
    }
}
