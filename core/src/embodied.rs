//! Embodied carbon (SCI's M term): each device's manufacturing carbon, amortised over its
//! lifetime and charged to whoever held it, M = TE × (time held / lifetime) × (share held).
//!
//! Amortisation telescopes ([`amortised`]), so the carbon of any run of windows adds up to the
//! carbon of their union exactly, and every device's carbon is split over jobs and idle with
//! nothing lost.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::apportion::apportion;
use crate::attribution::{DeviceKey, Holding, JobKey, MIG_COMPUTE_SLICES};
use crate::units::{MilligramsCo2e, NANOS_PER_SECOND, Span};

/// The device table shipped with Footprint, versioned; see the file for sources.
pub const DEFAULT_TABLE_TOML: &str = include_str!("../data/embodied-devices-v1.toml");

const NANOS_PER_YEAR: u64 = 365 * 24 * 3600 * NANOS_PER_SECOND as u64 + 6 * 3600 * 1_000_000_000;

/// A device model's embodied carbon.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceEntry {
    /// The model as NVML or the config names it (e.g. `NVIDIA H100 80GB HBM3`).
    pub model: String,
    /// `gpu` or `server`.
    pub kind: String,
    /// Cradle-to-gate emissions of one unit, g CO2e.
    pub embodied_g: u64,
    /// Years over which those emissions are amortised.
    pub lifetime_years: u32,
    /// Where the figure is from (a manufacturer's product carbon footprint, with its date).
    pub source: String,
}

impl DeviceEntry {
    pub fn embodied_mg(&self) -> u64 {
        self.embodied_g.saturating_mul(1_000)
    }

    /// Lifetime in nanoseconds (Julian years).
    pub fn lifetime_ns(&self) -> u64 {
        u64::from(self.lifetime_years).saturating_mul(NANOS_PER_YEAR)
    }
}

/// A versioned table of devices.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceTable {
    pub version: u32,
    pub devices: Vec<DeviceEntry>,
}

impl DeviceTable {
    /// The table shipped with Footprint.
    ///
    /// # Errors
    /// Never for the shipped file (a test parses it); the type allows other tables.
    pub fn builtin() -> Result<Self, crate::config::ConfigError> {
        crate::config::parse_toml(DEFAULT_TABLE_TOML)
    }

    /// The entry for a GPU or server `model`: an exact match first, then the longest table model
    /// the name contains ("NVIDIA H100 80GB HBM3" finds "NVIDIA H100"), then `generic-<kind>`.
    pub fn lookup(&self, kind: &str, model: &str) -> Option<&DeviceEntry> {
        let of_kind = || self.devices.iter().filter(move |d| d.kind == kind);
        of_kind()
            .find(|d| d.model == model)
            .or_else(|| {
                of_kind()
                    .filter(|d| !d.model.starts_with("generic-") && model.contains(&d.model))
                    .max_by_key(|d| d.model.len())
            })
            .or_else(|| of_kind().find(|d| d.model == format!("generic-{kind}")))
    }
}

/// The part of `total_mg` that a device's lifetime amortisation puts in `span`: cumulative
/// amortisation since the Unix epoch, differenced, so consecutive spans telescope exactly.
pub fn amortised(total: MilligramsCo2e, lifetime_ns: u64, span: Span) -> MilligramsCo2e {
    if lifetime_ns == 0 {
        return MilligramsCo2e(0);
    }
    let cumulative = |at: i64| -> i128 {
        (i128::from(total.0) * i128::from(at)).div_euclid(i128::from(lifetime_ns))
    };
    MilligramsCo2e((cumulative(span.end.0) - cumulative(span.start.0)).max(0) as u64)
}

/// One host's devices for embodied carbon.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostDevices {
    /// Each GPU with its embodied carbon and lifetime.
    pub gpus: Vec<(DeviceKey, u64, u64)>,
    /// The server (chassis, CPUs, memory, storage): embodied carbon and lifetime.
    pub server: Option<(u64, u64)>,
    /// Logical CPUs of the host; shares the server when it has no GPUs.
    pub cpus: u64,
}

/// Embodied carbon of one window, split.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EmbodiedSplit {
    pub jobs: BTreeMap<JobKey, u64>,
    pub idle_mg: u64,
    pub total_mg: u64,
}

/// Splits the embodied carbon of `host`'s devices in `window` over the jobs holding them: a GPU by
/// time held (a MIG instance by its slices), the server by the jobs' share of the host's GPU time
/// (of its cores × time on a host without GPUs). What nobody held is idle.
pub fn split_embodied(window: Span, host: &HostDevices, holdings: &[Holding]) -> EmbodiedSplit {
    let mut split = EmbodiedSplit::default();
    let len = window.len_ns();
    let slices = u64::from(MIG_COMPUTE_SLICES);
    let mut gpu_weight: BTreeMap<JobKey, u64> = BTreeMap::new();
    for &(device, total_mg, lifetime_ns) in &host.gpus {
        let amount = amortised(MilligramsCo2e(total_mg), lifetime_ns, window).0;
        let mut weights: BTreeMap<JobKey, u64> = BTreeMap::new();
        for holding in holdings {
            let Some(overlap) = holding.span.intersect(&window) else {
                continue;
            };
            let held_slices = if holding.gpus.contains(&device) {
                slices
            } else {
                holding
                    .mig
                    .iter()
                    .filter(|m| m.device == device)
                    .map(|m| u64::from(m.slices))
                    .sum()
            };
            if held_slices > 0 {
                *weights.entry(holding.job).or_default() += overlap.len_ns() * held_slices;
            }
        }
        for (job, weight) in &weights {
            *gpu_weight.entry(*job).or_default() += weight;
        }
        book(&mut split, amount, weights, len * slices);
    }
    if let Some((total_mg, lifetime_ns)) = host.server {
        let amount = amortised(MilligramsCo2e(total_mg), lifetime_ns, window).0;
        let (weights, capacity) = if host.gpus.is_empty() {
            let mut by_cores: BTreeMap<JobKey, u64> = BTreeMap::new();
            for holding in holdings {
                if let Some(overlap) = holding.span.intersect(&window) {
                    *by_cores.entry(holding.job).or_default() +=
                        overlap.len_ns() * holding.cpus.len() as u64;
                }
            }
            (by_cores, len * host.cpus)
        } else {
            (gpu_weight, len * slices * host.gpus.len() as u64)
        };
        book(&mut split, amount, weights, capacity);
    }
    split
}

/// Splits `amount` by `weights`, with whatever `capacity` the weights leave going to idle.
fn book(split: &mut EmbodiedSplit, amount: u64, weights: BTreeMap<JobKey, u64>, capacity: u64) {
    split.total_mg += amount;
    let held: u64 = weights.values().sum();
    let mut list: Vec<u64> = weights.values().copied().collect();
    list.push(capacity.saturating_sub(held));
    let Some(parts) = apportion(amount, &list) else {
        split.idle_mg += amount;
        return;
    };
    for (job, part) in weights.keys().zip(&parts) {
        if *part > 0 {
            *split.jobs.entry(*job).or_default() += part;
        }
    }
    split.idle_mg += parts.last().copied().unwrap_or(0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::MigInstance;
    use crate::units::UnixNanos;
    use proptest::prelude::*;

    fn span(start: i64, end: i64) -> Span {
        Span::new(UnixNanos(start), UnixNanos(end))
    }

    #[test]
    fn the_shipped_table_parses_and_finds_models_by_name() {
        let table = DeviceTable::builtin().expect("shipped table");
        assert_eq!(table.version, 1);
        let h100 = table.lookup("gpu", "NVIDIA H100 80GB HBM3").expect("h100");
        assert_eq!(h100.model, "NVIDIA H100");
        assert_eq!(
            table
                .lookup("gpu", "Some Future GPU")
                .map(|d| d.model.as_str()),
            Some("generic-gpu")
        );
        assert!(table.devices.iter().all(|d| !d.source.is_empty()));
    }

    #[test]
    fn a_gpu_held_half_the_window_charges_half_its_amortisation() {
        // 7 000 mg over a 7 000 ns lifetime: 1 mg per ns; a 10 ns window holds 10 mg.
        let host = HostDevices {
            gpus: vec![(0, 7_000, 7_000)],
            server: None,
            cpus: 0,
        };
        let holding = Holding {
            job: 1,
            span: span(0, 5),
            gpus: vec![0],
            ..Holding::default()
        };
        let split = split_embodied(span(0, 10), &host, &[holding]);
        assert_eq!(split.jobs[&1], 5);
        assert_eq!(split.idle_mg, 5);
        let mut mig = Holding {
            job: 2,
            span: span(0, 7),
            ..Holding::default()
        };
        mig.mig.push(MigInstance {
            device: 0,
            slices: 2,
        });
        // A 2g instance over a whole 7 ns window: 2/7 of 7 mg.
        let split = split_embodied(span(0, 7), &host, &[mig]);
        assert_eq!(split.jobs[&2], 2);
        assert_eq!(split.idle_mg, 5);
    }

    proptest! {
        #[test]
        fn embodied_split_conserves(
            gpus in prop::collection::vec((0u32..4, 0u64..1u64 << 40, 1u64..1u64 << 60), 0..4),
            server in prop::option::of((0u64..1u64 << 40, 1u64..1u64 << 60)),
            holdings in prop::collection::vec((0u32..4, -50i64..150, 0i64..200, prop::collection::btree_set(0u32..4, 0..3), 0usize..16), 0..6),
            start in -(1i64 << 50)..(1i64 << 60),
            len in 1i64..100_000,
        ) {
            let holdings: Vec<Holding> = holdings
                .into_iter()
                .map(|(job, from, length, gpus, cores)| Holding {
                    job,
                    span: span(start + from, start + from + length),
                    gpus: gpus.into_iter().collect(),
                    mig: Vec::new(),
                    cpus: (0..cores as u32).collect(),
                })
                .collect();
            let host = HostDevices { gpus, server, cpus: 16 };
            let window = span(start, start + len);
            let split = split_embodied(window, &host, &holdings);
            let expected: u64 = host.gpus.iter().map(|g| amortised(MilligramsCo2e(g.1), g.2, window).0).sum::<u64>()
                + server.map_or(0, |(mg, life)| amortised(MilligramsCo2e(mg), life, window).0);
            prop_assert_eq!(split.total_mg, expected);
            prop_assert_eq!(split.jobs.values().sum::<u64>() + split.idle_mg, expected);
        }

        #[test]
        fn amortisation_telescopes(total in 0u64..1u64 << 50, life in 1u64..1u64 << 62, a in -(1i64 << 60)..(1i64 << 60), b in 0i64..1i64 << 40, c in 0i64..1i64 << 40) {
            let whole = amortised(MilligramsCo2e(total), life, span(a, a + b + c));
            let parts = amortised(MilligramsCo2e(total), life, span(a, a + b)) + amortised(MilligramsCo2e(total), life, span(a + b, a + b + c));
            prop_assert_eq!(whole, parts);
        }
    }
}
