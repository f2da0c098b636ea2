//! `type = "replay"`: a simulated host whose GPUs draw the power of a recorded trace while a job
//! holds them, and whose RAPL packages draw an idle power plus a power per held core.
//!
//! The meters are counters integrated exactly from those step functions
//! ([`IntegratedCounter`]), so a replay exercises the same path as real hardware: wraparound of
//! the RAPL counters included. The jobs are announced as allocations when they start and end.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use footprint_core::UnixNanos;
use footprint_core::config::Problems;
use footprint_core::units::NANOS_PER_HOUR as HOUR_NS;
use footprint_proto::v1::{Allocation, Job, JobKind, MeterInfo, MeterKind};
use serde::{Deserialize, Serialize};

use super::power_model::{IntegratedCounter, PowerStep};
use crate::config::load_trace;
use crate::cpulist::parse_cpulist;
use crate::source::{BuildContext, Sample, Source, SourceSettings, measured_reading};
use crate::trace::EMBEDDED_TRACE_NAME;
use footprint_core::time::parse_rfc3339;

/// A simulated host replaying recorded GPU power.
#[derive(Clone, Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayConfig {
    /// CSV trace (columns `hour_start_local,host,gpu_power_avg_w`). Default: the embedded
    /// Cornell BioHPC trace of Nov–Dec 2024 (`collector/traces/README.md`).
    #[serde(default)]
    pub trace: Option<PathBuf>,
    /// Number of GPUs; they are named `gpu0` … `gpuN-1`.
    pub gpus: u32,
    /// Logical CPUs of the host.
    #[serde(default = "default_cpus")]
    pub cpus: u32,
    /// CPU packages (sockets); each covers an equal, contiguous share of the CPUs.
    #[serde(default = "default_cpu_packages")]
    pub cpu_packages: u32,
    /// Power of a GPU no job holds, W.
    #[serde(default = "default_gpu_idle_w")]
    pub gpu_idle_w: f64,
    /// Power of a CPU package with no core held, W.
    #[serde(default = "default_cpu_idle_w")]
    pub cpu_idle_w: f64,
    /// Extra package power per held core, W.
    #[serde(default = "default_cpu_core_w")]
    pub cpu_core_w: f64,
    /// Power of a package's DRAM with no core held, W.
    #[serde(default = "default_dram_idle_w")]
    pub dram_idle_w: f64,
    /// Extra DRAM power per held core, W.
    #[serde(default = "default_dram_core_w")]
    pub dram_core_w: f64,
    /// Value at which the RAPL counters wrap to zero, mJ (RAPL's `max_energy_range_uj` / 1000).
    #[serde(default = "default_rapl_counter_max_mj")]
    pub rapl_counter_max_mj: u64,
    /// Counter value at the clock's start, mJ, so that counters do not start at zero.
    #[serde(default)]
    pub counter_start_mj: u64,
    /// GPU model as NVML would name it; the aggregator looks up embodied carbon by it.
    #[serde(default = "default_gpu_model")]
    pub gpu_model: String,
    /// A simulated PDU outlet meter (`outlet`) seeing the whole host: omit for a host without.
    #[serde(default)]
    pub outlet: Option<ReplayOutletConfig>,
    /// Jobs holding this host's devices.
    #[serde(default)]
    pub jobs: Vec<ReplayJobConfig>,
}

/// The simulated outlet: components' power through the power supply, plus what no component
/// meter sees (fans, NICs, disks, BMC).
#[derive(Clone, Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayOutletConfig {
    /// Power-supply efficiency, 0.5–1.
    #[serde(default = "default_psu_efficiency")]
    pub psu_efficiency: f64,
    /// Power of everything besides GPUs, CPU packages and DRAM, W.
    #[serde(default = "default_unmetered_w")]
    pub unmetered_w: f64,
}

fn default_gpu_model() -> String {
    "NVIDIA H100 80GB HBM3".to_owned()
}
fn default_psu_efficiency() -> f64 {
    0.94
}
fn default_unmetered_w() -> f64 {
    180.0
}

/// A job that holds GPUs and cores from `start` to `end`, its GPUs drawing the power of the
/// trace of `trace_host` from the hour labelled `trace_start` on (cycling at the trace's end).
#[derive(Clone, Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayJobConfig {
    /// Job id, unique across the site (a job on several hosts uses the same id on each).
    pub id: String,
    /// The job's name.
    #[serde(default)]
    pub name: String,
    /// The user it runs for.
    #[serde(default)]
    pub user: String,
    /// The project (account, namespace) it is charged to.
    #[serde(default)]
    pub project: String,
    /// `training`, `inference` or `other`.
    #[serde(default = "default_kind")]
    pub kind: String,
    /// Model name, e.g. `llama-3-8b`.
    #[serde(default)]
    pub model: String,
    /// Indices of the GPUs held.
    #[serde(default)]
    pub gpus: Vec<u32>,
    /// CPUs held, as a cpulist (`0-7,16`).
    #[serde(default)]
    pub cpus: String,
    /// RFC 3339 start.
    pub start: String,
    /// RFC 3339 end (exclusive).
    pub end: String,
    /// Host of the trace whose power the job's GPUs draw.
    pub trace_host: String,
    /// `hour_start_local` label of the trace row the job starts at.
    pub trace_start: String,
    /// What the job produces (`1k tokens`, `request`, `training run`); empty: none reported.
    #[serde(default)]
    pub functional_unit: String,
    /// Functional units produced per hour; the total is announced when the job ends.
    #[serde(default)]
    pub units_per_hour: u64,
}

fn default_cpus() -> u32 {
    64
}
fn default_cpu_packages() -> u32 {
    2
}
fn default_gpu_idle_w() -> f64 {
    60.0
}
fn default_cpu_idle_w() -> f64 {
    45.0
}
fn default_cpu_core_w() -> f64 {
    3.5
}
fn default_dram_idle_w() -> f64 {
    6.0
}
fn default_dram_core_w() -> f64 {
    0.4
}
fn default_rapl_counter_max_mj() -> u64 {
    // A typical Xeon's max_energy_range_uj, 262 143 328 850 µJ.
    262_143_328
}
fn default_kind() -> String {
    "other".to_owned()
}

fn watts_to_mw(watts: f64) -> u64 {
    (watts * 1000.0).round().max(0.0) as u64
}

impl ReplayConfig {
    /// Builds the running source. `origin` is where the counters start integrating.
    ///
    /// # Errors
    /// A message when the trace cannot be loaded or a job names what is not there (the config's
    /// `validate` reports the same with key paths).
    pub fn build(&self, origin: UnixNanos) -> Result<ReplaySource, String> {
        let model = Arc::new(ReplayHostModel::new(self)?);
        Ok(ReplaySource::new(model, origin, self))
    }
}

impl SourceSettings for ReplayConfig {
    fn meter_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = (0..self.gpus).map(|i| format!("gpu{i}")).collect();
        for package in 0..self.cpu_packages {
            ids.push(format!("rapl:package-{package}"));
            ids.push(format!("rapl:package-{package}:dram"));
        }
        ids
    }

    fn validate(&self, path: &str, problems: &mut Problems) {
        problems.check(self.gpus <= 1024, format!("{path}.gpus"), "at most 1024");
        problems.check(
            self.cpu_packages >= 1 && self.cpu_packages <= self.cpus.max(1),
            format!("{path}.cpu_packages"),
            "must be between 1 and `cpus`",
        );
        for (key, watts) in [
            ("gpu_idle_w", self.gpu_idle_w),
            ("cpu_idle_w", self.cpu_idle_w),
            ("cpu_core_w", self.cpu_core_w),
            ("dram_idle_w", self.dram_idle_w),
            ("dram_core_w", self.dram_core_w),
        ] {
            problems.check(
                watts.is_finite() && (0.0..=5_000.0).contains(&watts),
                format!("{path}.{key}"),
                format!("{watts} W is outside 0..5000"),
            );
        }
        problems.check(
            self.rapl_counter_max_mj > 0,
            format!("{path}.rapl_counter_max_mj"),
            "must be above 0",
        );
        if let Some(outlet) = &self.outlet {
            problems.check(
                outlet.psu_efficiency.is_finite() && (0.5..=1.0).contains(&outlet.psu_efficiency),
                format!("{path}.outlet.psu_efficiency"),
                format!("{} is outside 0.5..1", outlet.psu_efficiency),
            );
            problems.check(
                outlet.unmetered_w.is_finite() && (0.0..=5_000.0).contains(&outlet.unmetered_w),
                format!("{path}.outlet.unmetered_w"),
                format!("{} W is outside 0..5000", outlet.unmetered_w),
            );
        }
        let trace = match load_trace(self.trace.as_ref()) {
            Ok(trace) => Some(trace),
            Err(message) => {
                problems.add(format!("{path}.trace"), message);
                None
            }
        };
        let mut spans_by_gpu: Vec<Vec<(UnixNanos, UnixNanos, usize)>> =
            vec![Vec::new(); self.gpus as usize];
        for (index, job) in self.jobs.iter().enumerate() {
            let at = format!("{path}.jobs[{index}]");
            problems.check(
                !job.id.trim().is_empty(),
                format!("{at}.id"),
                "must not be empty",
            );
            problems.check(
                JobKind::from_short_name(&job.kind).is_some(),
                format!("{at}.kind"),
                format!("{:?} is not training, inference or other", job.kind),
            );
            match parse_cpulist(&job.cpus) {
                Ok(cpus) => problems.check(
                    cpus.iter().all(|&c| c < self.cpus),
                    format!("{at}.cpus"),
                    format!("names a CPU at or above cpus = {}", self.cpus),
                ),
                Err(message) => problems.add(format!("{at}.cpus"), message),
            }
            let start =
                parse_rfc3339(&job.start).map_err(|m| problems.add(format!("{at}.start"), m));
            let end = parse_rfc3339(&job.end).map_err(|m| problems.add(format!("{at}.end"), m));
            if let (Ok(start), Ok(end)) = (start, end) {
                if end <= start {
                    problems.add(format!("{at}.end"), "must be after start");
                }
                for &gpu in &job.gpus {
                    match spans_by_gpu.get_mut(gpu as usize) {
                        Some(spans) => spans.push((start, end, index)),
                        None => problems.add(
                            format!("{at}.gpus"),
                            format!("gpu {gpu} is not below gpus = {}", self.gpus),
                        ),
                    }
                }
            }
            if let Some(trace) = &trace {
                if trace.hours(&job.trace_host).is_none() {
                    let known: Vec<&str> = trace.host_names().collect();
                    problems.add(
                        format!("{at}.trace_host"),
                        format!(
                            "{:?} is not in the trace (it has {known:?})",
                            job.trace_host
                        ),
                    );
                } else if trace.row_of(&job.trace_host, &job.trace_start).is_none() {
                    problems.add(
                        format!("{at}.trace_start"),
                        format!(
                            "no row labelled {:?} for host {:?}",
                            job.trace_start, job.trace_host
                        ),
                    );
                }
            }
        }
        for (gpu, spans) in spans_by_gpu.iter_mut().enumerate() {
            spans.sort();
            for pair in spans.windows(2) {
                if pair[1].0 < pair[0].1 {
                    problems.add(
                        format!("{path}.jobs[{}].gpus", pair[1].2),
                        format!(
                            "gpu {gpu} is already held by jobs[{}] at that time",
                            pair[0].2
                        ),
                    );
                }
            }
        }
    }

    fn build_source(&self, context: &BuildContext<'_>) -> Result<Box<dyn Source>, String> {
        Ok(Box::new(self.build(context.origin)?))
    }
}

/// A job as the model plays it.
#[derive(Clone, Debug)]
struct PlannedJob {
    job: Job,
    gpus: Vec<usize>,
    cpus: Vec<u32>,
    start_ns: i64,
    end_ns: i64,
    trace_rows: Arc<[u64]>,
    first_row: usize,
    units_per_hour: u64,
}

impl PlannedJob {
    fn active_at(&self, at: i64) -> bool {
        self.start_ns <= at && at < self.end_ns
    }
}

/// The power of every meter of a simulated host as a step function of time.
#[derive(Clone, Debug)]
pub struct ReplayHostModel {
    gpu_count: usize,
    package_cpus: Vec<Vec<u32>>,
    jobs: Vec<PlannedJob>,
    gpu_idle_mw: u64,
    cpu_idle_mw: u64,
    cpu_core_mw: u64,
    dram_idle_mw: u64,
    dram_core_mw: u64,
    trace_name: String,
    gpu_model: String,
    /// Outlet: PSU efficiency in thousandths, unmetered power in mW.
    outlet: Option<(u64, u64)>,
}

impl ReplayHostModel {
    /// # Errors
    /// A message when the trace cannot be loaded or a job names what is not in it.
    pub fn new(config: &ReplayConfig) -> Result<Self, String> {
        let trace = load_trace(config.trace.as_ref())?;
        let packages = config.cpu_packages.max(1);
        let per_package = config.cpus.div_ceil(packages);
        let package_cpus = (0..packages)
            .map(|p| (p * per_package..((p + 1) * per_package).min(config.cpus)).collect())
            .collect();
        let mut jobs = Vec::with_capacity(config.jobs.len());
        for job in &config.jobs {
            let hours = trace
                .hours(&job.trace_host)
                .ok_or_else(|| format!("trace has no host {:?}", job.trace_host))?;
            let first_row = trace
                .row_of(&job.trace_host, &job.trace_start)
                .ok_or_else(|| format!("trace has no row {:?}", job.trace_start))?;
            jobs.push(PlannedJob {
                job: Job {
                    id: job.id.clone(),
                    scheduler: "replay".to_owned(),
                    name: job.name.clone(),
                    user: job.user.clone(),
                    project: job.project.clone(),
                    kind: JobKind::from_short_name(&job.kind).unwrap_or(JobKind::Other) as i32,
                    model: job.model.clone(),
                    functional_unit: job.functional_unit.clone(),
                    functional_units: 0,
                },
                gpus: job.gpus.iter().map(|&g| g as usize).collect(),
                cpus: parse_cpulist(&job.cpus)?,
                start_ns: parse_rfc3339(&job.start)?.0,
                end_ns: parse_rfc3339(&job.end)?.0,
                trace_rows: hours.iter().map(|h| h.power_mw).collect(),
                first_row,
                units_per_hour: job.units_per_hour,
            });
        }
        Ok(Self {
            gpu_count: config.gpus as usize,
            package_cpus,
            jobs,
            gpu_idle_mw: watts_to_mw(config.gpu_idle_w),
            cpu_idle_mw: watts_to_mw(config.cpu_idle_w),
            cpu_core_mw: watts_to_mw(config.cpu_core_w),
            dram_idle_mw: watts_to_mw(config.dram_idle_w),
            dram_core_mw: watts_to_mw(config.dram_core_w),
            trace_name: config
                .trace
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| EMBEDDED_TRACE_NAME.to_owned()),
            gpu_model: config.gpu_model.clone(),
            outlet: config.outlet.as_ref().map(|outlet| {
                (
                    (outlet.psu_efficiency * 1_000.0).round() as u64,
                    watts_to_mw(outlet.unmetered_w),
                )
            }),
        })
    }

    /// GPU `gpu`'s power at `at`: its job's trace hour, else idle.
    pub fn gpu_power(&self, gpu: usize, at: i64) -> PowerStep {
        let mut next_start = i64::MAX;
        for job in self.jobs.iter().filter(|j| j.gpus.contains(&gpu)) {
            if job.active_at(at) {
                let hour = (at - job.start_ns) / HOUR_NS;
                let row = (job.first_row + hour as usize) % job.trace_rows.len().max(1);
                return PowerStep {
                    power_mw: job.trace_rows.get(row).copied().unwrap_or(self.gpu_idle_mw),
                    until_ns: (job.start_ns + (hour + 1) * HOUR_NS).min(job.end_ns),
                };
            }
            if job.start_ns > at {
                next_start = next_start.min(job.start_ns);
            }
        }
        PowerStep {
            power_mw: self.gpu_idle_mw,
            until_ns: next_start,
        }
    }

    fn cores_held(&self, package: usize, at: i64) -> (u64, i64) {
        let cpus = &self.package_cpus[package];
        let mut held = 0u64;
        let mut next_change = i64::MAX;
        for job in &self.jobs {
            if job.active_at(at) {
                held += job
                    .cpus
                    .iter()
                    .filter(|c| cpus.binary_search(c).is_ok())
                    .count() as u64;
            }
            for boundary in [job.start_ns, job.end_ns] {
                if boundary > at {
                    next_change = next_change.min(boundary);
                }
            }
        }
        (held, next_change)
    }

    /// CPU package `package`'s power at `at`.
    pub fn package_power(&self, package: usize, at: i64) -> PowerStep {
        let (held, until_ns) = self.cores_held(package, at);
        PowerStep {
            power_mw: self.cpu_idle_mw + held * self.cpu_core_mw,
            until_ns,
        }
    }

    /// DRAM of package `package`: its power at `at`.
    pub fn dram_power(&self, package: usize, at: i64) -> PowerStep {
        let (held, until_ns) = self.cores_held(package, at);
        PowerStep {
            power_mw: self.dram_idle_mw + held * self.dram_core_mw,
            until_ns,
        }
    }

    /// The host's total power (every meter) at `at`.
    pub fn total_power(&self, at: i64) -> PowerStep {
        let mut total = PowerStep {
            power_mw: 0,
            until_ns: i64::MAX,
        };
        let mut add = |step: PowerStep| {
            total.power_mw += step.power_mw;
            total.until_ns = total.until_ns.min(step.until_ns);
        };
        for gpu in 0..self.gpu_count {
            add(self.gpu_power(gpu, at));
        }
        for package in 0..self.package_cpus.len() {
            add(self.package_power(package, at));
            add(self.dram_power(package, at));
        }
        total
    }

    /// What the host draws from the wall: its outlet meter's power when it has one, else the
    /// components' power.
    pub fn wall_power(&self, at: i64) -> PowerStep {
        let components = self.total_power(at);
        match self.outlet {
            Some((efficiency_milli, unmetered_mw)) => PowerStep {
                power_mw: (components.power_mw + unmetered_mw) * 1_000 / efficiency_milli.max(1),
                until_ns: components.until_ns,
            },
            None => components,
        }
    }
}

/// Which meter of the model a counter follows.
#[derive(Clone, Copy, Debug)]
enum ModelMeter {
    Gpu(usize),
    Package(usize),
    Dram(usize),
    Outlet,
}

/// The running `replay` source.
#[derive(Debug)]
pub struct ReplaySource {
    model: Arc<ReplayHostModel>,
    meters: Vec<(MeterInfo, ModelMeter, IntegratedCounter)>,
    /// Per job: (start announced, end announced).
    announced: Vec<(bool, bool)>,
}

impl ReplaySource {
    fn new(model: Arc<ReplayHostModel>, origin: UnixNanos, config: &ReplayConfig) -> Self {
        let gpu_method = format!(
            "simulated NVML energy counter: hourly mean GPU power of {} held constant and integrated",
            model.trace_name
        );
        let rapl_method = "simulated RAPL counter: idle power plus power per held core, integrated";
        let mut meters = Vec::new();
        for gpu in 0..model.gpu_count {
            meters.push((
                MeterInfo {
                    meter_id: format!("gpu{gpu}"),
                    kind: MeterKind::GpuEnergy as i32,
                    device: format!("gpu{gpu}"),
                    counter_max: 0,
                    cpus: Vec::new(),
                    method: gpu_method.clone(),
                    model: model.gpu_model.clone(),
                    job: String::new(),
                    resolution: 0,
                },
                ModelMeter::Gpu(gpu),
                IntegratedCounter::new(origin.0, config.counter_start_mj, u64::MAX),
            ));
        }
        let rapl_max = config.rapl_counter_max_mj;
        for (package, cpus) in model.package_cpus.iter().enumerate() {
            for (suffix, kind, which) in [
                (
                    "",
                    MeterKind::CpuPackageEnergy,
                    ModelMeter::Package(package),
                ),
                (":dram", MeterKind::DramEnergy, ModelMeter::Dram(package)),
            ] {
                meters.push((
                    MeterInfo {
                        meter_id: format!("rapl:package-{package}{suffix}"),
                        kind: kind as i32,
                        device: format!("package-{package}"),
                        counter_max: rapl_max,
                        cpus: cpus.clone(),
                        method: rapl_method.to_owned(),
                        model: String::new(),
                        job: String::new(),
                        resolution: 0,
                    },
                    which,
                    IntegratedCounter::new(
                        origin.0,
                        config.counter_start_mj % (rapl_max + 1),
                        rapl_max,
                    ),
                ));
            }
        }
        if model.outlet.is_some() {
            meters.push((
                MeterInfo {
                    meter_id: "outlet".to_owned(),
                    kind: MeterKind::OutletEnergy as i32,
                    device: "outlet".to_owned(),
                    counter_max: 0,
                    cpus: Vec::new(),
                    method: "simulated PDU outlet energy counter: components through the PSU plus unmetered parts, integrated".to_owned(),
                    model: String::new(),
                    job: String::new(),
                    resolution: 0,
                },
                ModelMeter::Outlet,
                IntegratedCounter::new(origin.0, config.counter_start_mj, u64::MAX),
            ));
        }
        let announced = vec![(false, false); model.jobs.len()];
        Self {
            model,
            meters,
            announced,
        }
    }
}

#[async_trait]
impl Source for ReplaySource {
    fn name(&self) -> &str {
        "replay"
    }

    fn meters(&self) -> Vec<MeterInfo> {
        self.meters
            .iter()
            .map(|(info, _, _)| info.clone())
            .collect()
    }

    async fn sample(&mut self, at: UnixNanos) -> Result<Sample, String> {
        let model = Arc::clone(&self.model);
        let mut sample = Sample::default();
        for (info, which, counter) in &mut self.meters {
            let value = match *which {
                ModelMeter::Gpu(gpu) => counter.advance(at.0, |t| model.gpu_power(gpu, t)),
                ModelMeter::Package(p) => counter.advance(at.0, |t| model.package_power(p, t)),
                ModelMeter::Dram(p) => counter.advance(at.0, |t| model.dram_power(p, t)),
                ModelMeter::Outlet => counter.advance(at.0, |t| model.wall_power(t)),
            };
            sample
                .readings
                .push(measured_reading(&info.meter_id, value, at));
        }
        for (job, announced) in model.jobs.iter().zip(&mut self.announced) {
            let starts = !announced.0 && at.0 >= job.start_ns;
            let ends = !announced.1 && at.0 >= job.end_ns;
            if starts || ends {
                announced.0 = true;
                announced.1 |= ends;
                let mut announced_job = job.job.clone();
                if announced.1 {
                    let hours_ns = u128::try_from(job.end_ns - job.start_ns).unwrap_or(0);
                    announced_job.functional_units =
                        (u128::from(job.units_per_hour) * hours_ns / HOUR_NS as u128) as u64;
                }
                sample.allocations.push(Allocation {
                    job: Some(announced_job),
                    gpus: job.gpus.iter().map(|g| format!("gpu{g}")).collect(),
                    cpus: job.cpus.clone(),
                    start_ns: job.start_ns,
                    end_ns: if announced.1 { job.end_ns } else { 0 },
                    mig: Vec::new(),
                });
            }
        }
        Ok(sample)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use footprint_core::config::ConfigFile;
    use footprint_core::time::parse_rfc3339;

    fn config() -> ReplayConfig {
        crate::config::CollectorConfig::from_toml(
            r#"
            host = "h"
            [[sources]]
            type = "replay"
            gpus = 2
            cpus = 8
            cpu_packages = 2
            [[sources.jobs]]
            id = "train-1"
            kind = "training"
            gpus = [1]
            cpus = "0-1"
            start = "2024-11-01T00:30:00Z"
            end = "2024-11-01T02:30:00Z"
            trace_host = "cbsugpu08"
            trace_start = "2024-12-01T00:00:00"
            "#,
        )
        .map(|c| match c.sources.into_iter().next() {
            Some(crate::config::SourceConfig::Replay(r)) => r,
            other => panic!("unexpected {other:?}"),
        })
        .expect("valid")
    }

    #[tokio::test]
    async fn gpu_counter_follows_the_trace_while_held_and_idles_otherwise() {
        let config = config();
        let origin = parse_rfc3339("2024-11-01T00:00:00Z").unwrap();
        let mut source = config.build(origin).unwrap();
        let trace = crate::trace::PowerTrace::embedded();
        let rows = trace.hours("cbsugpu08").unwrap();
        let first = trace.row_of("cbsugpu08", "2024-12-01T00:00:00").unwrap();
        let at = parse_rfc3339("2024-11-01T01:30:00Z").unwrap();
        let sample = source.sample(at).await.unwrap();
        let gpu1 = sample
            .readings
            .iter()
            .find(|r| r.meter_id == "gpu1")
            .unwrap();
        // 30 min idle (60 W) then the trace's first hour in full: energy in mJ = mW × s.
        let expected = 60_000 * 1_800 + rows[first].power_mw * 3_600;
        assert_eq!(gpu1.value, expected);
        let gpu0 = sample
            .readings
            .iter()
            .find(|r| r.meter_id == "gpu0")
            .unwrap();
        assert_eq!(gpu0.value, 60_000 * 5_400);
        assert_eq!(sample.allocations.len(), 1);
        assert_eq!(sample.allocations[0].end_ns, 0);
        let later = source
            .sample(parse_rfc3339("2024-11-01T03:00:00Z").unwrap())
            .await
            .unwrap();
        assert_eq!(later.allocations.len(), 1);
        assert_eq!(
            later.allocations[0].end_ns,
            parse_rfc3339("2024-11-01T02:30:00Z").unwrap().0
        );
    }

    #[test]
    fn overlapping_jobs_on_one_gpu_are_refused_with_the_path() {
        let mut config = config();
        let mut second = config.jobs[0].clone();
        second.id = "other".to_owned();
        config.jobs.push(second);
        let mut problems = Problems::default();
        config.validate("sources[0]", &mut problems);
        let text = problems.finish().expect_err("overlap").to_string();
        assert!(text.contains("sources[0].jobs[1].gpus"), "{text}");
    }
}
