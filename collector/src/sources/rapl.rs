//! `type = "rapl"`: CPU package, DRAM, core and uncore energy from the kernel's powercap tree
//! (`/sys/class/powercap/intel-rapl:N[/intel-rapl:N:M]`; AMD hosts expose the same tree).
//!
//! Each zone's `energy_uj` is a µJ counter that wraps after `max_energy_range_uj`. The collector
//! turns it into an mJ counter without losing a microjoule: it adds each µJ step (unwrapped
//! modulo `max_energy_range_uj + 1`) to a running remainder and advances the reported mJ counter
//! by whole millijoules, wrapping it at `floor(max_energy_range_uj / 1000)` — the `counter_max`
//! it announces — so the aggregator's own wrap rule sees exact deltas. Sub-mJ energy waits in
//! the remainder for the next sample. A restarted collector restarts the mJ counter at
//! `floor(energy_uj / 1000)`, which may sit a few mJ (under one per wrap seen) off the old one.
//!
//! Since Linux 5.10 `energy_uj` is readable by root only (CVE-2020-8694, "Platypus"). A zone the
//! collector cannot read is left out with a warning that says so; the other sources carry on.
//! Zones that appear after start (hot-plug) are read from the next start; a zone that disappears
//! simply stops reporting and its next reading, if any, covers the gap.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use footprint_core::UnixNanos;
use footprint_core::config::Problems;
use footprint_proto::v1::{MeterInfo, MeterKind};
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::source::{BuildContext, Sample, Source, SourceSettings, measured_reading};

/// RAPL through powercap.
#[derive(Clone, Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RaplConfig {
    /// The powercap root.
    #[serde(default = "default_root")]
    pub root: PathBuf,
    /// Where CPU topology is read, to know which CPUs each package covers.
    #[serde(default = "default_cpu_root")]
    pub cpu_root: PathBuf,
    /// Meter ids are `PREFIX:package-0`, `PREFIX:package-0:dram`, ….
    #[serde(default = "default_prefix")]
    pub prefix: String,
}

fn default_root() -> PathBuf {
    PathBuf::from("/sys/class/powercap")
}
fn default_cpu_root() -> PathBuf {
    PathBuf::from("/sys/devices/system/cpu")
}
fn default_prefix() -> String {
    "rapl".to_owned()
}

impl RaplConfig {
    /// Finds every readable zone.
    ///
    /// # Errors
    /// A message when the root holds no RAPL zone at all.
    pub fn build(&self) -> Result<RaplSource, String> {
        let zones = discover(&self.root, &self.cpu_root, &self.prefix)?;
        let mut readable = Vec::with_capacity(zones.len());
        for zone in zones {
            match read_u64(&zone.dir.join("energy_uj")) {
                Ok(raw) => readable.push(ZoneCounter::new(zone, raw)),
                Err(error) => warn!(zone = %zone.dir.display(), %error, "RAPL zone left out."),
            }
        }
        if readable.is_empty() {
            return Err(format!(
                "no RAPL zone under {} could be read (energy_uj is root-only since Linux 5.10: run the collector as root or grant read access)",
                self.root.display()
            ));
        }
        Ok(RaplSource { zones: readable })
    }
}

impl SourceSettings for RaplConfig {
    /// The ids are discovered at start; config checks only that two RAPL sources differ.
    fn meter_ids(&self) -> Vec<String> {
        vec![format!("{}:*", self.prefix)]
    }

    fn validate(&self, path: &str, problems: &mut Problems) {
        super::check_prefix(problems, path, &self.prefix);
    }

    fn build_source(&self, _context: &BuildContext<'_>) -> Result<Box<dyn Source>, String> {
        Ok(Box::new(self.build()?))
    }
}

/// One zone as found on disk.
#[derive(Clone, Debug)]
struct Zone {
    dir: PathBuf,
    info: MeterInfo,
    /// `max_energy_range_uj`: the raw counter runs over 0..=this.
    max_uj: u64,
}

fn read_u64(path: &Path) -> Result<u64, String> {
    let text = std::fs::read_to_string(path).map_err(|error| match error.kind() {
        std::io::ErrorKind::PermissionDenied => format!(
            "{}: permission denied (energy_uj is readable by root only since Linux 5.10)",
            path.display()
        ),
        _ => format!("{}: {error}", path.display()),
    })?;
    text.trim()
        .parse()
        .map_err(|_| format!("{}: {:?} is not a counter", path.display(), text.trim()))
}

fn read_name(dir: &Path) -> Result<String, String> {
    std::fs::read_to_string(dir.join("name"))
        .map(|name| name.trim().to_owned())
        .map_err(|e| format!("{}: {e}", dir.join("name").display()))
}

/// CPUs of each physical package, from `cpuN/topology/physical_package_id`.
fn package_cpus(cpu_root: &Path, package: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(cpu_root) else {
        return Vec::new();
    };
    let mut cpus: Vec<u32> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let cpu: u32 = name.strip_prefix("cpu")?.parse().ok()?;
            let id = read_u64(&entry.path().join("topology/physical_package_id")).ok()?;
            (id == u64::from(package)).then_some(cpu)
        })
        .collect();
    cpus.sort_unstable();
    cpus
}

fn is_rapl_zone(name: &str) -> bool {
    name.split_once(':')
        .is_some_and(|(kind, _)| kind.ends_with("-rapl"))
}

fn discover(root: &Path, cpu_root: &Path, prefix: &str) -> Result<Vec<Zone>, String> {
    let entries = std::fs::read_dir(root).map_err(|e| format!("{}: {e}", root.display()))?;
    let mut packages: Vec<PathBuf> = entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| is_rapl_zone(n) && n.matches(':').count() == 1)
        })
        .collect();
    packages.sort();
    let mut zones = Vec::new();
    for dir in packages {
        let name = read_name(&dir)?;
        // "package-0"; psys and other top-level zones are not a package.
        let Some(package) = name
            .strip_prefix("package-")
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let cpus = package_cpus(cpu_root, package);
        zones.push(zone(
            &dir,
            MeterKind::CpuPackageEnergy,
            &name,
            prefix,
            &cpus,
        )?);
        let mut subzones: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| {
                path.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| is_rapl_zone(n) && n.matches(':').count() == 2)
            })
            .collect();
        subzones.sort();
        for sub in subzones {
            let sub_name = read_name(&sub)?;
            let kind = match sub_name.as_str() {
                "dram" => MeterKind::DramEnergy,
                "core" => MeterKind::CpuCoreEnergy,
                "uncore" => MeterKind::CpuUncoreEnergy,
                _ => continue,
            };
            zones.push(zone(
                &sub,
                kind,
                &format!("{name}:{sub_name}"),
                prefix,
                &cpus,
            )?);
        }
    }
    if zones.is_empty() {
        return Err(format!(
            "no RAPL package zone under {} (is the intel_rapl_msr or rapl driver loaded?)",
            root.display()
        ));
    }
    Ok(zones)
}

fn zone(
    dir: &Path,
    kind: MeterKind,
    name: &str,
    prefix: &str,
    cpus: &[u32],
) -> Result<Zone, String> {
    let max_uj = read_u64(&dir.join("max_energy_range_uj"))?;
    if max_uj < 1_000 {
        return Err(format!(
            "{}: max_energy_range_uj {max_uj} is too small for a counter",
            dir.display()
        ));
    }
    let device = name.split(':').next().unwrap_or(name).to_owned();
    Ok(Zone {
        dir: dir.to_path_buf(),
        info: MeterInfo {
            meter_id: format!("{prefix}:{name}"),
            kind: kind as i32,
            device,
            counter_max: max_uj / 1_000,
            cpus: cpus.to_vec(),
            method: format!(
                "RAPL powercap energy_uj of {} (µJ, unwrapped at max_energy_range_uj, reported in whole mJ)",
                dir.display()
            ),
            model: String::new(),
            job: String::new(),
            resolution: 0,
        },
        max_uj,
    })
}

/// The mJ counter a zone reports, driven by its raw µJ counter.
#[derive(Clone, Debug)]
pub struct MillijouleCounter {
    max_uj: u64,
    last_raw_uj: u64,
    /// µJ counted but not yet reported.
    pending_uj: u64,
    /// The reported counter, in 0..=max_uj / 1000.
    value_mj: u64,
}

impl MillijouleCounter {
    pub fn new(max_uj: u64, raw_uj: u64) -> Self {
        Self {
            max_uj,
            last_raw_uj: raw_uj,
            pending_uj: raw_uj % 1_000,
            value_mj: raw_uj / 1_000,
        }
    }

    /// The largest reported value before it wraps to 0.
    pub fn counter_max(&self) -> u64 {
        self.max_uj / 1_000
    }

    /// Takes a new raw reading; returns the reported value.
    pub fn advance(&mut self, raw_uj: u64) -> u64 {
        let modulus = u128::from(self.max_uj) + 1;
        let step = (u128::from(raw_uj) + modulus - u128::from(self.last_raw_uj)) % modulus;
        self.last_raw_uj = raw_uj;
        let pending = u128::from(self.pending_uj) + step;
        self.pending_uj = (pending % 1_000) as u64;
        let reported_modulus = u128::from(self.counter_max()) + 1;
        self.value_mj = ((u128::from(self.value_mj) + pending / 1_000) % reported_modulus) as u64;
        self.value_mj
    }

    pub fn value(&self) -> u64 {
        self.value_mj
    }
}

#[derive(Debug)]
struct ZoneCounter {
    zone: Zone,
    counter: MillijouleCounter,
}

impl ZoneCounter {
    fn new(zone: Zone, raw: u64) -> Self {
        let counter = MillijouleCounter::new(zone.max_uj, raw);
        Self { zone, counter }
    }
}

/// The running `rapl` source.
#[derive(Debug)]
pub struct RaplSource {
    zones: Vec<ZoneCounter>,
}

#[async_trait]
impl Source for RaplSource {
    fn name(&self) -> &str {
        "rapl"
    }

    fn meters(&self) -> Vec<MeterInfo> {
        self.zones.iter().map(|z| z.zone.info.clone()).collect()
    }

    async fn sample(&mut self, at: UnixNanos) -> Result<Sample, String> {
        let paths: Vec<PathBuf> = self
            .zones
            .iter()
            .map(|z| z.zone.dir.join("energy_uj"))
            .collect();
        let raws = tokio::task::spawn_blocking(move || {
            paths.iter().map(|p| read_u64(p)).collect::<Vec<_>>()
        })
        .await
        .map_err(|e| format!("reading RAPL: {e}"))?;
        let mut sample = Sample::default();
        let mut failures = Vec::new();
        for (zone, raw) in self.zones.iter_mut().zip(raws) {
            match raw {
                Ok(raw) => {
                    let value = zone.counter.advance(raw);
                    sample
                        .readings
                        .push(measured_reading(&zone.zone.info.meter_id, value, at));
                }
                Err(error) => failures.push(error),
            }
        }
        if sample.readings.is_empty() && !failures.is_empty() {
            return Err(failures.join("; "));
        }
        for failure in failures {
            warn!(error = %failure, "RAPL zone not read this time.");
        }
        Ok(sample)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A powercap tree as the kernel lays it out: package 0 with core and dram subzones, package
    /// 1 without dram, a psys zone that is not a package, and CPU topology for 4 CPUs.
    fn fixture(root: &Path) -> (PathBuf, PathBuf) {
        let powercap = root.join("powercap");
        let cpu = root.join("cpu");
        let write_zone = |dir: &Path, name: &str, energy: u64, max: u64| {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join("name"), format!("{name}\n")).unwrap();
            std::fs::write(dir.join("energy_uj"), format!("{energy}\n")).unwrap();
            std::fs::write(dir.join("max_energy_range_uj"), format!("{max}\n")).unwrap();
        };
        let max = 262_143_328_850;
        write_zone(&powercap.join("intel-rapl:0"), "package-0", 1_000_500, max);
        write_zone(
            &powercap.join("intel-rapl:0/intel-rapl:0:0"),
            "core",
            400_000,
            max,
        );
        write_zone(
            &powercap.join("intel-rapl:0/intel-rapl:0:1"),
            "dram",
            70_000,
            65_712_999_613,
        );
        write_zone(&powercap.join("intel-rapl:1"), "package-1", 5_000, max);
        write_zone(&powercap.join("intel-rapl:2"), "psys", 5_000, max);
        for (index, package) in [0, 0, 1, 1].iter().enumerate() {
            let topology = cpu.join(format!("cpu{index}/topology"));
            std::fs::create_dir_all(&topology).unwrap();
            std::fs::write(topology.join("physical_package_id"), format!("{package}\n")).unwrap();
        }
        std::fs::create_dir_all(cpu.join("cpufreq")).unwrap();
        (powercap, cpu)
    }

    fn config(powercap: PathBuf, cpu: PathBuf) -> RaplConfig {
        RaplConfig {
            root: powercap,
            cpu_root: cpu,
            prefix: "rapl".into(),
        }
    }

    #[tokio::test]
    async fn finds_packages_and_subzones_as_the_kernel_lays_them_out() {
        let dir = tempfile::tempdir().unwrap();
        let (powercap, cpu) = fixture(dir.path());
        let mut source = config(powercap.clone(), cpu).build().unwrap();
        let meters = source.meters();
        let summary: Vec<(&str, i32, &str, Vec<u32>, u64)> = meters
            .iter()
            .map(|m| {
                (
                    m.meter_id.as_str(),
                    m.kind,
                    m.device.as_str(),
                    m.cpus.clone(),
                    m.counter_max,
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    "rapl:package-0",
                    MeterKind::CpuPackageEnergy as i32,
                    "package-0",
                    vec![0, 1],
                    262_143_328
                ),
                (
                    "rapl:package-0:core",
                    MeterKind::CpuCoreEnergy as i32,
                    "package-0",
                    vec![0, 1],
                    262_143_328
                ),
                (
                    "rapl:package-0:dram",
                    MeterKind::DramEnergy as i32,
                    "package-0",
                    vec![0, 1],
                    65_712_999
                ),
                (
                    "rapl:package-1",
                    MeterKind::CpuPackageEnergy as i32,
                    "package-1",
                    vec![2, 3],
                    262_143_328
                ),
            ]
        );
        // 1 000 500 µJ reads as 1 000 mJ; 2 500 µJ later it is 1 003 mJ (the 500 carried).
        let first = source.sample(UnixNanos(1)).await.unwrap();
        assert_eq!(first.readings[0].value, 1_000);
        std::fs::write(powercap.join("intel-rapl:0/energy_uj"), "1003000\n").unwrap();
        let second = source.sample(UnixNanos(2)).await.unwrap();
        assert_eq!(second.readings[0].value, 1_003);
        // The DRAM counter wraps: 65 712 999 613 is its last value, so 70 000 → 29 387 µJ more
        // after the wrap is 29 387 + (65 712 999 613 − 70 000) + 1 µJ in all.
        std::fs::write(
            powercap.join("intel-rapl:0/intel-rapl:0:1/energy_uj"),
            "29387\n",
        )
        .unwrap();
        let wrapped = source.sample(UnixNanos(3)).await.unwrap();
        let dram = wrapped
            .readings
            .iter()
            .find(|r| r.meter_id == "rapl:package-0:dram")
            .unwrap();
        let step_uj: u64 = 29_387 + (65_712_999_613 - 70_000) + 1;
        let reported = (dram.value + 65_712_999 + 1 - 70) % (65_712_999 + 1);
        assert_eq!(reported, step_uj / 1_000);
    }

    #[tokio::test]
    async fn a_zone_that_disappears_stops_reporting_and_the_rest_carry_on() {
        let dir = tempfile::tempdir().unwrap();
        let (powercap, cpu) = fixture(dir.path());
        let mut source = config(powercap.clone(), cpu).build().unwrap();
        std::fs::remove_dir_all(powercap.join("intel-rapl:1")).unwrap();
        let sample = source.sample(UnixNanos(1)).await.unwrap();
        assert_eq!(sample.readings.len(), 3);
        assert!(
            sample
                .readings
                .iter()
                .all(|r| r.meter_id != "rapl:package-1")
        );
    }

    #[test]
    fn an_empty_root_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let error = config(dir.path().to_path_buf(), dir.path().to_path_buf())
            .build()
            .unwrap_err();
        assert!(error.contains("no RAPL package zone"), "{error}");
    }

    proptest! {
        /// However the raw µJ counter moves (wrapping any number of times, by steps at least a
        /// millijoule shorter than its range — the reach of a sample interval on any real
        /// package), the reported mJ counter, unwrapped at its own counter_max as the aggregator
        /// does, has advanced by exactly the whole millijoules counted.
        #[test]
        fn reported_millijoules_lose_and_invent_nothing(
            max_uj in 1_000u64..10_000_000,
            start in 0u64..10_000_000,
            steps in prop::collection::vec(0u64..10_000_000, 1..60),
        ) {
            let start = start % (max_uj + 1);
            let mut counter = MillijouleCounter::new(max_uj, start);
            let modulus = counter.counter_max() + 1;
            let (mut raw, mut counted_uj, mut reported_mj) = (start, 0u128, 0u128);
            let mut previous = counter.value();
            for step in steps {
                let step = step % (max_uj - 999);
                raw = ((u128::from(raw) + u128::from(step)) % (u128::from(max_uj) + 1)) as u64;
                counted_uj += u128::from(step);
                let value = counter.advance(raw);
                reported_mj += u128::from((value + modulus - previous) % modulus);
                previous = value;
            }
            prop_assert_eq!(reported_mj, (u128::from(start % 1_000) + counted_uj) / 1_000);
        }
    }
}
