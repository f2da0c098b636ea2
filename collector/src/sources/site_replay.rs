//! `type = "site_replay"`: a simulated facility energy meter and, optionally, a water meter. The
//! energy meter sees the IT load of the hosts it is given (their replay models, at the wall),
//! times the hour's PUE (cooling, UPS and distribution losses rise in the afternoon heat), plus a
//! constant base load; the water meter sees the IT load times the hour's WUE (evaporative
//! cooling drinks more in the heat).

use async_trait::async_trait;
use footprint_core::UnixNanos;
use footprint_core::config::Problems;
use footprint_core::units::{NANOS_PER_DAY as DAY_NS, NANOS_PER_HOUR as HOUR_NS};
use footprint_proto::v1::{MeterInfo, MeterKind};
use serde::{Deserialize, Serialize};

use super::power_model::{IntegratedCounter, PowerStep};
use super::replay::{ReplayConfig, ReplayHostModel};
use crate::source::{BuildContext, Sample, Source, SourceSettings, measured_reading};

/// A simulated facility meter.
#[derive(Clone, Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteReplayConfig {
    /// Id of the facility meter.
    #[serde(default = "default_meter_id")]
    pub meter_id: String,
    /// Power drawn whatever the IT load (lighting, offices, standby losses), W.
    #[serde(default = "default_base_w")]
    pub base_w: f64,
    /// PUE for each hour of the day, UTC, 24 values ≥ 1.
    #[serde(default = "default_pue_by_hour")]
    pub pue_by_hour: Vec<f64>,
    /// Counter value at the clock's start, mJ.
    #[serde(default)]
    pub counter_start_mj: u64,
    /// Id of the water meter; omit for a site without one.
    #[serde(default)]
    pub water_meter_id: Option<String>,
    /// Water drawn per kWh of IT energy for each hour of the day, UTC, L/kWh (24 values).
    #[serde(default = "default_wue_by_hour")]
    pub wue_by_hour: Vec<f64>,
    /// The hosts behind this meter, configured as their own replay sources are.
    pub hosts: Vec<ReplayConfig>,
}

fn default_meter_id() -> String {
    "site-main".to_owned()
}
fn default_base_w() -> f64 {
    2_500.0
}
fn default_pue_by_hour() -> Vec<f64> {
    vec![
        1.12, 1.115, 1.11, 1.11, 1.115, 1.12, 1.13, 1.15, 1.18, 1.21, 1.24, 1.27, 1.29, 1.30, 1.30,
        1.29, 1.27, 1.24, 1.21, 1.18, 1.16, 1.14, 1.13, 1.125,
    ]
}

fn default_wue_by_hour() -> Vec<f64> {
    vec![
        0.9, 0.85, 0.8, 0.8, 0.85, 0.9, 1.0, 1.2, 1.4, 1.7, 2.0, 2.3, 2.5, 2.6, 2.6, 2.5, 2.3, 2.0,
        1.7, 1.4, 1.2, 1.1, 1.0, 0.95,
    ]
}

impl SiteReplayConfig {
    /// # Errors
    /// A message when a host's model cannot be built.
    pub fn build(&self, origin: UnixNanos) -> Result<SiteReplaySource, String> {
        let hosts = self
            .hosts
            .iter()
            .map(ReplayHostModel::new)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SiteReplaySource {
            info: MeterInfo {
                meter_id: self.meter_id.clone(),
                kind: MeterKind::SiteEnergy as i32,
                device: "site".to_owned(),
                counter_max: 0,
                cpus: Vec::new(),
                method: "simulated facility meter: IT load × hourly PUE + base load, integrated"
                    .to_owned(),
                model: String::new(),
                job: String::new(),
                resolution: 0,
            },
            water: self.water_meter_id.as_ref().map(|id| {
                (
                    MeterInfo {
                        meter_id: id.clone(),
                        kind: MeterKind::SiteWater as i32,
                        device: "site".to_owned(),
                        counter_max: 0,
                        cpus: Vec::new(),
                        method: "simulated water meter (mL): IT load × hourly WUE, integrated"
                            .to_owned(),
                        model: String::new(),
                        job: String::new(),
                        resolution: 0,
                    },
                    IntegratedCounter::new(origin.0, 0, u64::MAX),
                )
            }),
            wue_milli: self
                .wue_by_hour
                .iter()
                .map(|w| (w * 1000.0).round() as u64)
                .collect(),
            hosts,
            pue_milli: self
                .pue_by_hour
                .iter()
                .map(|p| (p * 1000.0).round() as u64)
                .collect(),
            base_mw: (self.base_w * 1000.0).round() as u64,
            counter: IntegratedCounter::new(origin.0, self.counter_start_mj, u64::MAX),
        })
    }
}

impl SourceSettings for SiteReplayConfig {
    fn meter_ids(&self) -> Vec<String> {
        vec![self.meter_id.clone()]
    }

    fn validate(&self, path: &str, problems: &mut Problems) {
        problems.check(
            !self.meter_id.trim().is_empty(),
            format!("{path}.meter_id"),
            "must not be empty",
        );
        problems.check(
            self.base_w.is_finite() && self.base_w >= 0.0,
            format!("{path}.base_w"),
            "must be a non-negative number of watts",
        );
        problems.check(
            self.pue_by_hour.len() == 24,
            format!("{path}.pue_by_hour"),
            "needs 24 values, one per hour",
        );
        for (hour, pue) in self.pue_by_hour.iter().enumerate() {
            problems.check(
                pue.is_finite() && (1.0..=5.0).contains(pue),
                format!("{path}.pue_by_hour[{hour}]"),
                format!("{pue} is outside 1..5"),
            );
        }
        problems.check(
            self.wue_by_hour.len() == 24,
            format!("{path}.wue_by_hour"),
            "needs 24 values, one per hour",
        );
        for (hour, wue) in self.wue_by_hour.iter().enumerate() {
            problems.check(
                wue.is_finite() && (0.0..=20.0).contains(wue),
                format!("{path}.wue_by_hour[{hour}]"),
                format!("{wue} is outside 0..20 L/kWh"),
            );
        }
        if let Some(id) = &self.water_meter_id {
            problems.check(
                !id.trim().is_empty() && *id != self.meter_id,
                format!("{path}.water_meter_id"),
                "must be non-empty and differ from meter_id",
            );
        }
        for (index, host) in self.hosts.iter().enumerate() {
            host.validate(&format!("{path}.hosts[{index}]"), problems);
        }
    }

    fn build_source(&self, context: &BuildContext<'_>) -> Result<Box<dyn Source>, String> {
        Ok(Box::new(self.build(context.origin)?))
    }
}

/// The running `site_replay` source.
#[derive(Debug)]
pub struct SiteReplaySource {
    info: MeterInfo,
    hosts: Vec<ReplayHostModel>,
    pue_milli: Vec<u64>,
    base_mw: u64,
    counter: IntegratedCounter,
    water: Option<(MeterInfo, IntegratedCounter)>,
    wue_milli: Vec<u64>,
}

/// The IT load behind the site meter at `at`.
fn it_power(hosts: &[ReplayHostModel], at: i64) -> PowerStep {
    let mut it_mw = 0u64;
    let mut until_ns = i64::MAX;
    for host in hosts {
        let step = host.wall_power(at);
        it_mw += step.power_mw;
        until_ns = until_ns.min(step.until_ns);
    }
    let next_hour = at - at.rem_euclid(HOUR_NS) + HOUR_NS;
    PowerStep {
        power_mw: it_mw,
        until_ns: until_ns.min(next_hour),
    }
}

/// Water flow at `at` in µL/s, so that the integrating counter (which turns mW into mJ) counts
/// microlitres: L/h = kW × L/kWh, hence µL/s = mW × (L/kWh × 1000) / 3 600 000.
fn water_flow(hosts: &[ReplayHostModel], wue_milli: &[u64], at: i64) -> PowerStep {
    let it = it_power(hosts, at);
    let hour = (at.rem_euclid(DAY_NS) / HOUR_NS) as usize;
    let wue = wue_milli.get(hour).copied().unwrap_or(0);
    PowerStep {
        power_mw: it.power_mw * wue / 3_600_000,
        until_ns: it.until_ns,
    }
}

fn site_power(hosts: &[ReplayHostModel], pue_milli: &[u64], base_mw: u64, at: i64) -> PowerStep {
    let it = it_power(hosts, at);
    let hour = (at.rem_euclid(DAY_NS) / HOUR_NS) as usize;
    let pue = pue_milli.get(hour).copied().unwrap_or(1_000);
    PowerStep {
        power_mw: it.power_mw * pue / 1_000 + base_mw,
        until_ns: it.until_ns,
    }
}

#[async_trait]
impl Source for SiteReplaySource {
    fn name(&self) -> &str {
        "site_replay"
    }

    fn meters(&self) -> Vec<MeterInfo> {
        let mut meters = vec![self.info.clone()];
        meters.extend(self.water.as_ref().map(|(info, _)| info.clone()));
        meters
    }

    async fn sample(&mut self, at: UnixNanos) -> Result<Sample, String> {
        let (hosts, pue, base) = (&self.hosts, &self.pue_milli, self.base_mw);
        let value = self
            .counter
            .advance(at.0, |t| site_power(hosts, pue, base, t));
        let mut readings = vec![measured_reading(&self.info.meter_id, value, at)];
        if let Some((info, counter)) = &mut self.water {
            let wue = &self.wue_milli;
            let microlitres = counter.advance(at.0, |t| water_flow(hosts, wue, t));
            readings.push(measured_reading(&info.meter_id, microlitres / 1_000, at));
        }
        Ok(Sample {
            readings,
            ..Sample::default()
        })
    }
}
