//! `type = "synthetic"`: many GPU energy meters drawing a steady power with a per-meter offset,
//! for load tests and benchmarks (`footprint loadgen`). Counters are integrated exactly, like
//! the replay source's, so the aggregator validates them as it would real ones. Their power
//! limits (700 W, settable 100–700 W) take caps, held in memory, so a load test exercises the
//! power-cap path end to end.

use async_trait::async_trait;
use footprint_core::UnixNanos;
use footprint_core::config::Problems;
use footprint_proto::v1::{MeterInfo, MeterKind};
use serde::{Deserialize, Serialize};

use super::power_model::{IntegratedCounter, PowerStep};
use crate::source::{BuildContext, Sample, Source, SourceSettings, measured_reading};

/// Synthetic GPU meters.
#[derive(Clone, Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SyntheticConfig {
    /// Number of meters, named `synthetic-0` … `synthetic-N-1`.
    pub meters: u32,
    /// Power of meter 0, W; meter i draws `power_w + i mod 50` W.
    #[serde(default = "default_power_w")]
    pub power_w: f64,
}

fn default_power_w() -> f64 {
    300.0
}

impl SyntheticConfig {
    pub fn build(&self, origin: UnixNanos) -> SyntheticSource {
        let base_mw = (self.power_w * 1000.0).round() as u64;
        SyntheticSource {
            meters: (0..self.meters)
                .map(|i| {
                    let info = MeterInfo {
                        meter_id: format!("synthetic-{i}"),
                        kind: MeterKind::GpuEnergy as i32,
                        device: format!("synthetic-{i}"),
                        counter_max: 0,
                        cpus: Vec::new(),
                        method: "synthetic load-test counter: constant power, integrated"
                            .to_owned(),
                        model: String::new(),
                        job: String::new(),
                        resolution: 0,
                    };
                    (
                        info,
                        base_mw + u64::from(i % 50) * 1_000,
                        IntegratedCounter::new(origin.0, 0, u64::MAX),
                    )
                })
                .collect(),
        }
    }
}

impl SourceSettings for SyntheticConfig {
    fn meter_ids(&self) -> Vec<String> {
        (0..self.meters).map(|i| format!("synthetic-{i}")).collect()
    }

    fn validate(&self, path: &str, problems: &mut Problems) {
        problems.check(
            (1..=100_000).contains(&self.meters),
            format!("{path}.meters"),
            "must be between 1 and 100000",
        );
        problems.check(
            self.power_w.is_finite() && (0.0..=4_000.0).contains(&self.power_w),
            format!("{path}.power_w"),
            "must be between 0 and 4000 W",
        );
    }

    fn build_source(&self, context: &BuildContext<'_>) -> Result<Box<dyn Source>, String> {
        Ok(Box::new(self.build(context.origin)))
    }
}

/// The synthetic GPUs' power limits, in memory.
#[derive(Debug)]
struct SyntheticLimits {
    devices: std::collections::BTreeSet<String>,
    set: std::collections::BTreeMap<String, u32>,
}

impl crate::power_cap::PowerLimiter for SyntheticLimits {
    fn limits(
        &mut self,
        device: &str,
    ) -> Result<crate::sources::nvml::PowerLimits, crate::power_cap::LimitError> {
        if !self.devices.contains(device) {
            return Err(crate::power_cap::LimitError::Unknown(format!(
                "no GPU {device}"
            )));
        }
        Ok(crate::sources::nvml::PowerLimits {
            enforced_w: self.set.get(device).copied().unwrap_or(700),
            min_w: 100,
            max_w: 700,
        })
    }

    fn set(&mut self, device: &str, watts: u32) -> Result<(), crate::power_cap::LimitError> {
        self.limits(device)?;
        self.set.insert(device.to_owned(), watts);
        Ok(())
    }
}

/// The running `synthetic` source.
#[derive(Debug)]
pub struct SyntheticSource {
    meters: Vec<(MeterInfo, u64, IntegratedCounter)>,
}

#[async_trait]
impl Source for SyntheticSource {
    fn name(&self) -> &str {
        "synthetic"
    }

    fn meters(&self) -> Vec<MeterInfo> {
        self.meters
            .iter()
            .map(|(info, _, _)| info.clone())
            .collect()
    }

    fn power_limiter(&self) -> Option<Box<dyn crate::power_cap::PowerLimiter>> {
        Some(Box::new(SyntheticLimits {
            devices: self
                .meters
                .iter()
                .map(|(info, _, _)| info.device.clone())
                .collect(),
            set: std::collections::BTreeMap::new(),
        }))
    }

    async fn sample(&mut self, at: UnixNanos) -> Result<Sample, String> {
        let readings = self
            .meters
            .iter_mut()
            .map(|(info, power_mw, counter)| {
                let power_mw = *power_mw;
                let value = counter.advance(at.0, |_| PowerStep {
                    power_mw,
                    until_ns: i64::MAX,
                });
                measured_reading(&info.meter_id, value, at)
            })
            .collect();
        Ok(Sample {
            readings,
            ..Sample::default()
        })
    }
}
