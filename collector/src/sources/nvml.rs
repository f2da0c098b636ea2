//! `type = "nvml"`: NVIDIA GPUs through NVML (`libnvidia-ml.so.1`, loaded at run time, so a host
//! without a GPU or driver runs the collector and is told NVML is absent).
//!
//! - **Energy**: the board's total-energy counter (`nvmlDeviceGetTotalEnergyConsumption`, mJ
//!   since the driver loaded, Volta and later) is each GPU's meter. Where a GPU has no such
//!   counter, its power draw is integrated between samples by the trapezoid rule and the
//!   readings are flagged interpolated.
//! - **Who holds what**: the compute processes of each GPU (of each MIG instance in MIG mode),
//!   mapped to jobs by [`ProcessJobs`], are reported as allocations when `process_allocations`
//!   is on; a job on a MIG instance holds that instance's share of the GPU's seven slices.
//! - **Sharing**: per-process SM utilisation (`nvmlDeviceGetProcessUtilization`) × elapsed time
//!   accumulates a busy-time counter per job and GPU (meter kind `GPU_JOB_BUSY`, announced when
//!   the job first appears), so the aggregator splits a shared GPU by measured use. NVML gives no
//!   per-process utilisation in MIG mode; MIG instances are split by slices instead.
//! - **Power limit**: the enforced limit and its allowed range are read at start and written into
//!   each meter's method (setting them comes with power capping).

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use footprint_core::UnixNanos;
use footprint_core::config::Problems;
use footprint_proto::v1::{Job, MeterInfo, MeterKind, Quality, Reading};
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{Device, Nvml};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::holdings::{Held, Holdings};
use crate::process_jobs::ProcessJobs;
use crate::source::{BuildContext, Sample, Source, SourceSettings, measured_reading};
use crate::sources::power_model::SampledPowerCounter;

/// NVIDIA GPUs through NVML.
#[derive(Clone, Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NvmlConfig {
    /// The NVML library to load. Default: the driver's `libnvidia-ml.so.1` from the dynamic
    /// loader's search path.
    #[serde(default)]
    pub library: Option<PathBuf>,
    /// GPU `N` is meter `PREFIX` + `N` (`gpu0`, `gpu1`, …).
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// How allocations name a GPU: `index` (the meter id, `gpu0`; Slurm numbers GPUs so) or
    /// `uuid` (`GPU-…`; Kubernetes' NVIDIA device plugin names them so).
    #[serde(default)]
    pub device_names: DeviceNames,
    /// Report the jobs of the GPUs' compute processes as holding those GPUs. Turn off when a
    /// scheduler source (Slurm, Kubernetes) reports who holds what on this host.
    #[serde(default = "default_true")]
    pub process_allocations: bool,
    /// Count each job's busy time on each GPU from per-process utilisation, to split a GPU
    /// shared by several jobs by measured use.
    #[serde(default = "default_true")]
    pub busy_time: bool,
    /// Where processes are looked up to find their job.
    #[serde(default = "default_proc_root")]
    pub proc_root: PathBuf,
}

/// How allocations name a GPU.
#[derive(
    Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum DeviceNames {
    #[default]
    Index,
    Uuid,
}

fn default_prefix() -> String {
    "gpu".to_owned()
}
fn default_true() -> bool {
    true
}
fn default_proc_root() -> PathBuf {
    PathBuf::from("/proc")
}

/// A GPU's power limit and the range it may be set within, W.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PowerLimits {
    pub enforced_w: u32,
    pub min_w: u32,
    pub max_w: u32,
}

impl NvmlConfig {
    /// Loads NVML and finds every GPU.
    ///
    /// # Errors
    /// A message when NVML cannot be loaded (no driver: "NVML is absent"), or finds no GPU.
    pub fn build(&self, host: &str) -> Result<NvmlSource, String> {
        let mut builder = Nvml::builder();
        if let Some(library) = &self.library {
            builder.lib_path(OsStr::new(library.as_os_str()));
        }
        let nvml = builder.init().map_err(|error| match error {
            NvmlError::LibloadingError(_) | NvmlError::LibraryNotFound => format!(
                "NVML is absent ({}): no NVIDIA driver on this host, or `library` points elsewhere: {error}",
                self.library
                    .as_ref()
                    .map_or("libnvidia-ml.so.1".into(), |p| p.display().to_string())
            ),
            other => format!("NVML failed to start: {other}"),
        })?;
        let count = nvml
            .device_count()
            .map_err(|e| format!("NVML device count: {e}"))?;
        if count == 0 {
            return Err("NVML is present but reports no GPU".into());
        }
        let mut gpus = Vec::with_capacity(count as usize);
        for index in 0..count {
            gpus.push(discover_gpu(&nvml, index, &self.prefix, self.device_names)?);
        }
        Ok(NvmlSource {
            meters: gpus.iter().map(|g| g.info.clone()).collect(),
            inner: Arc::new(Mutex::new(Inner {
                nvml,
                gpus,
                jobs: ProcessJobs::new(&self.proc_root, host),
                process_allocations: self.process_allocations,
                busy_time: self.busy_time,
                holdings: Holdings::default(),
                busy: BTreeMap::new(),
            })),
        })
    }
}

impl SourceSettings for NvmlConfig {
    /// Discovered at start; config checks only that two NVML sources differ.
    fn meter_ids(&self) -> Vec<String> {
        vec![format!("{}*", self.prefix)]
    }

    fn validate(&self, path: &str, problems: &mut Problems) {
        super::check_prefix(problems, path, &self.prefix);
    }

    fn build_source(&self, context: &BuildContext<'_>) -> Result<Box<dyn Source>, String> {
        Ok(Box::new(self.build(context.host)?))
    }
}

/// How a GPU's energy is read.
#[derive(Debug)]
enum Energy {
    Counter,
    /// No energy counter: power integrated between samples.
    Integrated(SampledPowerCounter),
}

#[derive(Debug)]
struct Gpu {
    index: u32,
    info: MeterInfo,
    energy: Energy,
    limits: Option<PowerLimits>,
    /// Slices of each MIG device index; empty when MIG is off.
    mig_slices: Vec<(u32, u32)>,
    /// Newest per-process utilisation sample seen, µs (NVML's clock).
    utilisation_seen_us: u64,
    /// Whether NVML gives per-process utilisation here (not in MIG mode, not on old GPUs).
    utilisation_supported: bool,
    last_at: Option<i64>,
}

fn discover_gpu(nvml: &Nvml, index: u32, prefix: &str, names: DeviceNames) -> Result<Gpu, String> {
    let device = nvml
        .device_by_index(index)
        .map_err(|e| format!("NVML GPU {index}: {e}"))?;
    let model = device.name().unwrap_or_default();
    let uuid = device.uuid().unwrap_or_default();
    let energy = match device.total_energy_consumption() {
        Ok(_) => Energy::Counter,
        Err(NvmlError::NotSupported) => {
            warn!(
                gpu = index,
                "No NVML energy counter (pre-Volta GPU): integrating power draw instead; readings are interpolated."
            );
            Energy::Integrated(SampledPowerCounter::new())
        }
        Err(error) => return Err(format!("NVML GPU {index} energy counter: {error}")),
    };
    let limits = device.enforced_power_limit().ok().map(|enforced| {
        let range = device.power_management_limit_constraints().ok();
        PowerLimits {
            enforced_w: enforced / 1_000,
            min_w: range.as_ref().map_or(0, |r| r.min_limit / 1_000),
            max_w: range.as_ref().map_or(0, |r| r.max_limit / 1_000),
        }
    });
    let mig_on = device.mig_mode().is_ok_and(|mode| mode.current == 1);
    let mut mig_slices = Vec::new();
    if mig_on {
        let slots = device.mig_device_count().unwrap_or(0);
        for slot in 0..slots {
            // Unpopulated slots answer NotFound.
            let Ok(mig) = device.mig_device_by_index(slot) else {
                continue;
            };
            if let Ok(attributes) = mig.attributes() {
                mig_slices.push((slot, attributes.gpu_instance_slice_count));
            }
        }
    }
    let meter_id = format!("{prefix}{index}");
    let device_name = match names {
        DeviceNames::Uuid if !uuid.is_empty() => uuid.clone(),
        _ => meter_id.clone(),
    };
    let read = match energy {
        Energy::Counter => "nvmlDeviceGetTotalEnergyConsumption (board energy counter, mJ)",
        Energy::Integrated(_) => {
            "nvmlDeviceGetPowerUsage integrated between samples (trapezoid rule; no energy counter)"
        }
    };
    let limit_text = limits.map_or_else(
        || "power limit unreadable".to_owned(),
        |l| {
            format!(
                "power limit {} W (settable {}–{} W)",
                l.enforced_w, l.min_w, l.max_w
            )
        },
    );
    let mig_text = if mig_on {
        format!(
            "; MIG on, instances of {:?} slices",
            mig_slices.iter().map(|(_, s)| *s).collect::<Vec<_>>()
        )
    } else {
        String::new()
    };
    info!(gpu = %device_name, %model, %uuid, limits = %limit_text, mig = mig_on, "NVML GPU found.");
    Ok(Gpu {
        index,
        info: MeterInfo {
            meter_id,
            kind: MeterKind::GpuEnergy as i32,
            device: device_name,
            counter_max: 0,
            cpus: Vec::new(),
            method: format!("NVML {read} of {model} {uuid}; {limit_text}{mig_text}"),
            model,
            job: String::new(),
            resolution: 0,
        },
        energy,
        limits,
        utilisation_supported: !mig_on,
        mig_slices,
        utilisation_seen_us: 0,
        last_at: None,
    })
}

impl Gpu {
    /// This GPU's energy reading: the counter, or its power integrated where it has none.
    fn energy_reading(&mut self, device: &Device<'_>, at: UnixNanos) -> Result<Reading, String> {
        match &mut self.energy {
            Energy::Counter => device
                .total_energy_consumption()
                .map(|mj| measured_reading(&self.info.meter_id, mj, at))
                .map_err(|error| format!("{} energy: {error}", self.info.meter_id)),
            Energy::Integrated(counter) => device
                .power_usage()
                .map(|mw| Reading {
                    quality: Quality::Interpolated as i32,
                    ..measured_reading(&self.info.meter_id, counter.record(at.0, u64::from(mw)), at)
                })
                .map_err(|error| format!("{} power: {error}", self.info.meter_id)),
        }
    }
}

/// Advances each job's busy-time counter on `gpu` by the mean SM utilisation of its processes
/// since the last tick × the time elapsed, announcing counters of jobs seen for the first time.
fn busy_time(
    busy: &mut BTreeMap<(String, String), u64>,
    gpu: &mut Gpu,
    device: &Device<'_>,
    pids_by_job: &BTreeMap<String, Vec<u32>>,
    at: UnixNanos,
    sample: &mut Sample,
) -> Result<(), String> {
    let device_name = gpu.info.device.clone();
    let utilisation = match device.process_utilization_stats(gpu.utilisation_seen_us) {
        Ok(samples) => samples,
        // No sample since the last call.
        Err(NvmlError::NotFound) => Vec::new(),
        Err(NvmlError::NotSupported) => {
            warn!(gpu = %device_name, "NVML gives no per-process utilisation here: a shared GPU is split evenly.");
            gpu.utilisation_supported = false;
            return Ok(());
        }
        Err(error) => return Err(format!("{device_name} utilisation: {error}")),
    };
    let mut by_pid: HashMap<u32, (u64, u64)> = HashMap::new();
    for point in &utilisation {
        gpu.utilisation_seen_us = gpu.utilisation_seen_us.max(point.timestamp);
        let entry = by_pid.entry(point.pid).or_default();
        entry.0 += u64::from(point.sm_util.min(100));
        entry.1 += 1;
    }
    let elapsed = gpu.last_at.map_or(0, |last| (at.0 - last).max(0) as u64);
    for (job, pids) in pids_by_job {
        // Mean SM utilisation of each process since the last tick, summed over the job's
        // processes, at most 100 %.
        let percent: u64 = pids
            .iter()
            .filter_map(|pid| by_pid.get(pid))
            .map(|(sum, count)| sum / count)
            .sum::<u64>()
            .min(100);
        let key = (device_name.clone(), job.clone());
        let meter_id = format!("{device_name}:busy:{job}");
        if !busy.contains_key(&key) {
            sample.meters.push(MeterInfo {
                meter_id: meter_id.clone(),
                kind: MeterKind::GpuJobBusy as i32,
                device: device_name.clone(),
                method: "NVML nvmlDeviceGetProcessUtilization: mean SM utilisation of the job's processes × elapsed time".into(),
                job: job.clone(),
                ..MeterInfo::default()
            });
        }
        let counter = busy.entry(key).or_insert(0);
        *counter += elapsed * percent / 100;
        sample.readings.push(Reading {
            quality: Quality::Interpolated as i32,
            ..measured_reading(&meter_id, *counter, at)
        });
    }
    Ok(())
}

#[derive(Debug)]
struct Inner {
    nvml: Nvml,
    gpus: Vec<Gpu>,
    jobs: ProcessJobs,
    process_allocations: bool,
    busy_time: bool,
    holdings: Holdings,
    /// Busy-time counters, ns of a fully busy GPU, by (GPU device, job id).
    busy: BTreeMap<(String, String), u64>,
}

impl Inner {
    fn sample(&mut self, at: UnixNanos) -> Result<Sample, String> {
        let mut sample = Sample::default();
        let mut failures = Vec::new();
        // Job id → what its processes are on now.
        let mut seen: BTreeMap<String, Held> = BTreeMap::new();
        // A process's job is looked up once per tick even if it uses several GPUs.
        let mut pid_jobs: HashMap<u32, Option<Job>> = HashMap::new();
        for gpu in &mut self.gpus {
            let device = match self.nvml.device_by_index(gpu.index) {
                Ok(device) => device,
                Err(error) => {
                    failures.push(format!("{}: {error}", gpu.info.meter_id));
                    continue;
                }
            };
            match gpu.energy_reading(&device, at) {
                Ok(reading) => sample.readings.push(reading),
                Err(error) => failures.push(error),
            }
            let mut job_of = |pid: u32| {
                pid_jobs
                    .entry(pid)
                    .or_insert_with(|| self.jobs.job_of(pid))
                    .clone()
            };
            let device_name = gpu.info.device.clone();
            if gpu.mig_slices.is_empty() {
                let processes = device.running_compute_processes().unwrap_or_else(|error| {
                    failures.push(format!("{device_name} processes: {error}"));
                    Vec::new()
                });
                let mut pids_by_job: BTreeMap<String, Vec<u32>> = BTreeMap::new();
                for process in processes {
                    if let Some(job) = job_of(process.pid) {
                        pids_by_job
                            .entry(job.id.clone())
                            .or_default()
                            .push(process.pid);
                        seen.entry(job.id.clone())
                            .or_insert_with(|| Held::new(job))
                            .gpus
                            .insert(device_name.clone());
                    }
                }
                if self.busy_time && gpu.utilisation_supported {
                    busy_time(&mut self.busy, gpu, &device, &pids_by_job, at, &mut sample)
                        .unwrap_or_else(|error| failures.push(error));
                }
            } else {
                for &(slot, slices) in &gpu.mig_slices {
                    let processes = match device.mig_device_by_index(slot) {
                        Ok(mig) => mig.running_compute_processes().unwrap_or_default(),
                        Err(_) => continue,
                    };
                    for process in processes {
                        if let Some(job) = job_of(process.pid) {
                            let held = &mut seen
                                .entry(job.id.clone())
                                .or_insert_with(|| Held::new(job))
                                .mig;
                            // Two instances of one GPU held by one job add up.
                            let entry = held.entry(device_name.clone()).or_insert(0);
                            *entry = (*entry + slices).min(7);
                        }
                    }
                }
            }
            gpu.last_at = Some(at.0);
        }
        if self.process_allocations {
            sample.allocations = self.holdings.update(seen, at);
        }
        if sample.readings.is_empty() && !failures.is_empty() {
            return Err(failures.join("; "));
        }
        for failure in failures {
            warn!(error = %failure, "NVML read failed this time.");
        }
        Ok(sample)
    }
}

/// The running `nvml` source.
#[derive(Debug)]
pub struct NvmlSource {
    meters: Vec<MeterInfo>,
    inner: Arc<Mutex<Inner>>,
}

/// Sets this host's GPU power limits through NVML ([`crate::power_cap::PowerLimiter`]), GPUs
/// named as the source names them (`device`).
#[derive(Debug, Clone)]
pub struct NvmlLimiter {
    inner: Arc<Mutex<Inner>>,
}

impl NvmlLimiter {
    fn with_device<T>(
        &self,
        device: &str,
        act: impl FnOnce(&mut nvml_wrapper::Device<'_>) -> Result<T, NvmlError>,
    ) -> Result<T, crate::power_cap::LimitError> {
        use crate::power_cap::LimitError;
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let index = inner
            .gpus
            .iter()
            .find(|g| g.info.device == device)
            .map(|g| g.index)
            .ok_or_else(|| LimitError::Unknown(format!("no GPU {device} on this host")))?;
        let mut handle = inner
            .nvml
            .device_by_index(index)
            .map_err(|e| LimitError::Failed(format!("NVML GPU {index}: {e}")))?;
        act(&mut handle).map_err(|error| match error {
            NvmlError::NoPermission => LimitError::NoPermission(format!(
                "no permission to set {device}'s power limit (needs root or CAP_SYS_ADMIN): dry run"
            )),
            NvmlError::NotSupported => {
                LimitError::Unknown(format!("{device}'s power limit is not settable"))
            }
            other => LimitError::Failed(format!("NVML on {device}: {other}")),
        })
    }
}

impl crate::power_cap::PowerLimiter for NvmlLimiter {
    fn limits(&mut self, device: &str) -> Result<PowerLimits, crate::power_cap::LimitError> {
        self.with_device(device, |handle| {
            let enforced = handle.enforced_power_limit()?;
            let range = handle.power_management_limit_constraints()?;
            Ok(PowerLimits {
                enforced_w: enforced / 1_000,
                min_w: range.min_limit.div_ceil(1_000),
                max_w: range.max_limit / 1_000,
            })
        })
    }

    fn set(&mut self, device: &str, watts: u32) -> Result<(), crate::power_cap::LimitError> {
        self.with_device(device, |handle| {
            handle.set_power_management_limit(watts.saturating_mul(1_000))
        })
    }
}

impl NvmlSource {
    /// What sets this source's GPUs' power limits.
    pub fn limiter(&self) -> NvmlLimiter {
        NvmlLimiter {
            inner: Arc::clone(&self.inner),
        }
    }

    /// Each GPU's power limit and settable range, where NVML gives them.
    pub fn power_limits(&self) -> Vec<(String, Option<PowerLimits>)> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner
            .gpus
            .iter()
            .map(|g| (g.info.device.clone(), g.limits))
            .collect()
    }
}

#[async_trait]
impl Source for NvmlSource {
    fn name(&self) -> &str {
        "nvml"
    }

    fn meters(&self) -> Vec<MeterInfo> {
        self.meters.clone()
    }

    fn power_limiter(&self) -> Option<Box<dyn crate::power_cap::PowerLimiter>> {
        Some(Box::new(self.limiter()))
    }

    async fn sample(&mut self, at: UnixNanos) -> Result<Sample, String> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            inner
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .sample(at)
        })
        .await
        .map_err(|e| format!("reading NVML: {e}"))?
    }
}
