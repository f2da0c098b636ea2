//! `type = "process"`: jobs that are plain processes, on hosts without a scheduler — a process
//! labelled `FOOTPRINT_JOB=<id>` in its environment (with the optional `FOOTPRINT_JOB_KIND`,
//! `FOOTPRINT_MODEL`, … labels of [`crate::process_jobs`]), or one whose command line contains
//! a configured string (job `process:<host>:<pid>`, named by its command line).
//!
//! A job holds the host from the first tick one of its processes is seen to the first tick none
//! is; its CPU time (user + system of its processes, summed, never decreasing) is a
//! `JOB_CPU_TIME` usage counter that splits the CPU packages by use. GPU holdings of such jobs
//! come from the NVML source's `process_allocations`; the two sources' allocations would name the
//! same job, so only one of them may report allocations.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use async_trait::async_trait;
use footprint_core::UnixNanos;
use footprint_core::config::Problems;
use footprint_proto::v1::{MeterInfo, MeterKind};
use serde::{Deserialize, Serialize};

use crate::holdings::{Held, Holdings};
use crate::process_usage::{ProcessScan, Tracked};
use crate::source::{BuildContext, Sample, Source, SourceSettings, measured_reading};

/// Plain processes as jobs.
#[derive(Clone, Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessConfig {
    /// Where processes are read.
    #[serde(default = "default_proc_root")]
    pub proc_root: PathBuf,
    /// Unlabelled processes whose command line contains one of these are jobs too.
    #[serde(default)]
    pub commands: Vec<String>,
    /// Report each job as holding the host while its processes run. Off when the NVML source's
    /// `process_allocations` reports them with their GPUs.
    #[serde(default = "default_true")]
    pub allocations: bool,
}

fn default_proc_root() -> PathBuf {
    PathBuf::from("/proc")
}
fn default_true() -> bool {
    true
}

impl ProcessConfig {
    pub fn build(&self, host: &str) -> ProcessSource {
        ProcessSource {
            scan: ProcessScan::new(
                &self.proc_root,
                host,
                Tracked::Labelled {
                    commands: self.commands.clone(),
                },
            ),
            allocations: self.allocations,
            holdings: Holdings::default(),
            announced: BTreeSet::new(),
        }
    }
}

impl SourceSettings for ProcessConfig {
    fn meter_ids(&self) -> Vec<String> {
        vec!["process:cpu:*".to_owned()]
    }

    fn validate(&self, path: &str, problems: &mut Problems) {
        problems.check(
            self.commands.iter().all(|c| !c.trim().is_empty()),
            format!("{path}.commands"),
            "an empty string would match every process",
        );
    }

    fn build_source(&self, context: &BuildContext<'_>) -> Result<Box<dyn Source>, String> {
        Ok(Box::new(self.build(context.host)))
    }
}

/// The running `process` source.
#[derive(Debug)]
pub struct ProcessSource {
    scan: ProcessScan,
    allocations: bool,
    holdings: Holdings,
    /// Jobs whose CPU-time counter has been announced.
    announced: BTreeSet<String>,
}

fn cpu_meter_id(job: &str) -> String {
    format!("process:cpu:{job}")
}

#[async_trait]
impl Source for ProcessSource {
    fn name(&self) -> &str {
        "process"
    }

    fn meters(&self) -> Vec<MeterInfo> {
        Vec::new()
    }

    async fn sample(&mut self, at: UnixNanos) -> Result<Sample, String> {
        let mut sample = Sample::default();
        let mut running = BTreeMap::new();
        let mut ended = Vec::new();
        for (id, job) in self.scan.scan() {
            if self.announced.insert(id.clone()) {
                sample.meters.push(MeterInfo {
                    meter_id: cpu_meter_id(id),
                    kind: MeterKind::JobCpuTime as i32,
                    method:
                        "CPU time of the job's processes (/proc/PID/stat utime + stime), summed"
                            .into(),
                    job: id.clone(),
                    ..MeterInfo::default()
                });
            }
            sample
                .readings
                .push(measured_reading(&cpu_meter_id(id), job.cpu_ns, at));
            if job.running {
                running.insert(id.clone(), Held::new(job.job.clone()));
            } else {
                ended.push(id.clone());
            }
        }
        // A job holds the host while any of its processes runs.
        if self.allocations {
            sample.allocations = self.holdings.update(running, at);
        }
        for id in ended {
            self.scan.forget(&id);
            self.announced.remove(&id);
        }
        Ok(sample)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_process(root: &std::path::Path, pid: u32, environ: &str, cmdline: &str, ticks: u64) {
        let dir = root.join(pid.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("environ"), environ).unwrap();
        std::fs::write(dir.join("cmdline"), cmdline).unwrap();
        std::fs::write(dir.join("cgroup"), "0::/\n").unwrap();
        std::fs::write(
            dir.join("stat"),
            format!("{pid} (p) S 1 1 1 0 -1 0 0 0 0 0 {ticks} 0 0 0 20 0 1 0 77 1 1\n"),
        )
        .unwrap();
    }

    #[tokio::test]
    async fn labelled_and_matching_processes_are_jobs_from_first_to_last_sight() {
        let root = tempfile::tempdir().unwrap();
        write_process(
            root.path(),
            10,
            "FOOTPRINT_JOB=ft-1\0FOOTPRINT_JOB_KIND=training\0",
            "python\0ft.py\0",
            300,
        );
        write_process(root.path(), 11, "", "vllm\0serve\0", 50);
        write_process(root.path(), 12, "", "sshd\0", 999);
        let config: ProcessConfig = toml::from_str(&format!(
            "proc_root = {:?}\ncommands = [\"vllm\"]",
            root.path()
        ))
        .unwrap();
        let mut source = config.build("h");
        let first = source.sample(UnixNanos(1_000)).await.unwrap();
        let jobs: Vec<(String, i64, i64)> = first
            .allocations
            .iter()
            .map(|a| (a.job.as_ref().unwrap().id.clone(), a.start_ns, a.end_ns))
            .collect();
        assert_eq!(
            jobs,
            [("ft-1".into(), 1_000, 0), ("process:h:11".into(), 1_000, 0)]
        );
        assert_eq!(
            first.allocations[0].job.as_ref().unwrap().kind,
            footprint_proto::v1::JobKind::Training as i32
        );
        let cpu: Vec<(String, u64)> = first
            .readings
            .iter()
            .map(|r| (r.meter_id_text().into_owned(), r.value))
            .collect();
        assert_eq!(
            cpu,
            [
                ("process:cpu:ft-1".into(), 3_000_000_000),
                ("process:cpu:process:h:11".into(), 500_000_000)
            ]
        );
        assert_eq!(first.meters.len(), 2);

        std::fs::remove_dir_all(root.path().join("11")).unwrap();
        let second = source.sample(UnixNanos(2_000)).await.unwrap();
        let ended: Vec<(String, i64, i64)> = second
            .allocations
            .iter()
            .map(|a| (a.job.as_ref().unwrap().id.clone(), a.start_ns, a.end_ns))
            .collect();
        assert_eq!(ended, [("process:h:11".into(), 1_000, 2_000)]);
    }

    #[test]
    fn process_and_nvml_allocations_together_are_refused() {
        use footprint_core::config::ConfigFile;
        let error = crate::config::CollectorConfig::from_toml(
            "host = 'h'\n[[sources]]\ntype = 'nvml'\n[[sources]]\ntype = 'process'\n",
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("sources[1].allocations"), "{error}");
        assert!(crate::config::CollectorConfig::from_toml(
            "host = 'h'\n[[sources]]\ntype = 'nvml'\n[[sources]]\ntype = 'process'\nallocations = false\n",
        )
        .is_ok());
    }
}
