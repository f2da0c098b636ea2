//! `type = "slurm"`: which Slurm job holds which GPUs and CPUs on this node, and each job's CPU
//! time.
//!
//! - **Jobs and GPUs** come from the prolog/epilog hooks in `deploy/slurm/`: the prolog leaves
//!   `<job id>.job` in `hook_dir` with the job's user, account, partition, GRES GPU indices and
//!   start; the epilog appends its end. Files left by jobs that ended while the collector was
//!   down are still reported (start and end), and removed `keep_ended_s` after the end.
//! - **CPUs and CPU time** come from the job's cgroup when Slurm confines jobs with one (cgroup v2
//!   `…/job_<id>/cpuset.cpus.effective` and `cpu.stat`, or Slurm 26.05's SLUID-named directory
//!   recognised by the job's processes in it; v1 `cpuset/…/job_<id>/cpuset.cpus` and
//!   `cpuacct/…/job_<id>/cpuacct.usage`), else from the job's processes (`SLURM_JOB_ID` in their
//!   environment or a `job_<id>` cgroup path) under `/proc`. CPU time is a `JOB_CPU_TIME` usage
//!   counter, announced when the job appears, which splits a shared CPU package by use.
//! - **Labels**: `FOOTPRINT_JOB_KIND`, `FOOTPRINT_MODEL`, … in the job's environment refine it.
//!
//! GPU index N is device `gpu_prefix` + N: Slurm numbers GPUs by their `/dev/nvidiaN` minor,
//! which matches NVML's index on hosts where both follow PCI bus order (set
//! `CUDA_DEVICE_ORDER=PCI_BUS_ID`-style ordering in gres.conf when they differ).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use footprint_core::UnixNanos;
use footprint_core::config::Problems;
use footprint_proto::v1::{Allocation, Job, MeterInfo, MeterKind, Quality, Reading};
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::cpulist::parse_cpulist;
use crate::process_usage::{ProcessScan, Tracked as TrackedProcesses};
use crate::source::{BuildContext, Sample, Source, SourceSettings, measured_reading};

/// Slurm jobs on this node.
#[derive(Clone, Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SlurmConfig {
    /// Where `deploy/slurm/footprint-prolog.sh` and `-epilog.sh` leave one file per job (their
    /// `FOOTPRINT_SLURM_DIR`).
    #[serde(default = "default_hook_dir")]
    pub hook_dir: PathBuf,
    /// The cgroup root, for each job's CPUs and CPU time.
    #[serde(default = "default_cgroup_root")]
    pub cgroup_root: PathBuf,
    /// Where processes are looked up (CPU time and labels when a job has no cgroup).
    #[serde(default = "default_proc_root")]
    pub proc_root: PathBuf,
    /// GPU index N is device PREFIX + N, as the NVML source names it.
    #[serde(default = "default_gpu_prefix")]
    pub gpu_prefix: String,
    /// An ended job's file is removed this long after its end, s.
    #[serde(default = "default_keep_ended_s")]
    pub keep_ended_s: u64,
}

fn default_hook_dir() -> PathBuf {
    PathBuf::from("/run/footprint/slurm")
}
fn default_cgroup_root() -> PathBuf {
    PathBuf::from("/sys/fs/cgroup")
}
fn default_proc_root() -> PathBuf {
    PathBuf::from("/proc")
}
fn default_gpu_prefix() -> String {
    "gpu".to_owned()
}
fn default_keep_ended_s() -> u64 {
    3_600
}

impl SlurmConfig {
    pub fn build(&self, host: &str) -> Result<SlurmSource, String> {
        Ok(SlurmSource {
            processes: ProcessScan::new(&self.proc_root, host, TrackedProcesses::SlurmJobs),
            process_jobs: crate::process_jobs::ProcessJobs::new(&self.proc_root, host),
            config: self.clone(),
            jobs: BTreeMap::new(),
        })
    }
}

impl SourceSettings for SlurmConfig {
    /// Meters appear with jobs; config checks only the prefix.
    fn meter_ids(&self) -> Vec<String> {
        vec!["slurm:cpu:*".to_owned()]
    }

    fn validate(&self, path: &str, problems: &mut Problems) {
        problems.check(
            !self.gpu_prefix.trim().is_empty(),
            format!("{path}.gpu_prefix"),
            "must not be empty",
        );
    }

    fn build_source(&self, context: &BuildContext<'_>) -> Result<Box<dyn Source>, String> {
        Ok(Box::new(self.build(context.host)?))
    }
}

/// A job as its hook file describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HookFile {
    pub job_id: String,
    pub user: String,
    pub account: String,
    pub partition: String,
    pub gpus: Vec<u32>,
    pub start_s: i64,
    pub end_s: Option<i64>,
}

/// Parses a hook file; the reason when it is not one.
pub fn parse_hook_file(text: &str) -> Result<HookFile, String> {
    let mut file = HookFile::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "job_id" => file.job_id = value.to_owned(),
            "user" => file.user = value.to_owned(),
            "account" => file.account = value.to_owned(),
            "partition" => file.partition = value.to_owned(),
            "gpus" => {
                file.gpus = parse_cpulist(value).map_err(|e| format!("gpus: {e}"))?;
            }
            "start_s" => {
                file.start_s = value
                    .parse()
                    .map_err(|_| format!("start_s: {value:?} is not a time"))?;
            }
            "end_s" => {
                file.end_s = Some(
                    value
                        .parse()
                        .map_err(|_| format!("end_s: {value:?} is not a time"))?,
                );
            }
            _ => {}
        }
    }
    if file.job_id.is_empty() || !file.job_id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("job_id: {:?} is not a Slurm job id", file.job_id));
    }
    if file.start_s <= 0 {
        return Err("start_s: missing".into());
    }
    if file.end_s.is_some_and(|end| end < file.start_s) {
        return Err("end_s: before start_s".into());
    }
    Ok(file)
}

/// The job's cgroup directories: (cpuset dir, cpu-time file, whether the time is in µs).
#[derive(Clone, Debug, PartialEq, Eq)]
struct JobCgroup {
    cpuset: PathBuf,
    cpu_time: PathBuf,
    v2: bool,
}

/// Finds the job's cgroup under the cgroup root, v2 first, then v1's cpuset/cpuacct
/// hierarchies. v2 jobs live under `system.slice/slurmstepd.scope/` (or
/// `<node>_slurmstepd.scope/` where slurmd was built for several daemons per node), named
/// `job_<id>` — or, from Slurm 26.05, by the job's SLUID unless cgroup.conf sets
/// `CgroupJobIdPaths=yes`: such a directory is the job's when a process in it works for the job
/// (`owner_of`: by its `SLURM_JOB_ID`, readable by root).
fn find_cgroup(
    root: &Path,
    job_id: &str,
    owner_of: &dyn Fn(u32) -> Option<String>,
) -> Option<JobCgroup> {
    let name = format!("job_{job_id}");
    let v2_job = |dir: PathBuf| JobCgroup {
        cpuset: dir.clone(),
        cpu_time: dir.join("cpu.stat"),
        v2: true,
    };
    let scopes: Vec<PathBuf> = std::fs::read_dir(root.join("system.slice"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .ends_with("slurmstepd.scope")
        })
        .map(|entry| entry.path())
        .collect();
    if let Some(dir) = scopes
        .iter()
        .map(|scope| scope.join(&name))
        .find(|dir| dir.join("cpu.stat").exists())
    {
        return Some(v2_job(dir));
    }
    for scope in &scopes {
        for entry in std::fs::read_dir(scope).into_iter().flatten().flatten() {
            let dir = entry.path();
            let dir_name = entry.file_name().to_string_lossy().into_owned();
            // The job directories; slurmstepd keeps its own in `system`.
            if dir_name.starts_with("job_")
                || dir_name == "system"
                || !dir.join("cpu.stat").exists()
            {
                continue;
            }
            if processes_in(&dir, 4)
                .into_iter()
                .any(|pid| owner_of(pid).as_deref() == Some(job_id))
            {
                return Some(v2_job(dir));
            }
        }
    }
    // v1: <controller>/slurm[_<node>]/uid_<uid>/job_<id>.
    let find = |controller: &str| -> Option<PathBuf> {
        for slurm in std::fs::read_dir(root.join(controller)).ok()?.flatten() {
            if !slurm.file_name().to_string_lossy().starts_with("slurm") {
                continue;
            }
            for uid in std::fs::read_dir(slurm.path()).ok()?.flatten() {
                let candidate = uid.path().join(&name);
                if candidate.is_dir() {
                    return Some(candidate);
                }
            }
        }
        None
    };
    let cpuacct = find("cpuacct").or_else(|| find("cpu,cpuacct"))?;
    Some(JobCgroup {
        cpuset: find("cpuset").unwrap_or_else(|| cpuacct.clone()),
        cpu_time: cpuacct.join("cpuacct.usage"),
        v2: false,
    })
}

/// The processes of cgroup `dir` and of the cgroups below it, `depth` levels down at most.
fn processes_in(dir: &Path, depth: u32) -> Vec<u32> {
    let mut pids: Vec<u32> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect();
    if depth > 0 {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pids.extend(processes_in(&entry.path(), depth - 1));
            }
        }
    }
    pids
}

fn cgroup_cpu_ns(cgroup: &JobCgroup) -> Option<u64> {
    let text = std::fs::read_to_string(&cgroup.cpu_time).ok()?;
    if cgroup.v2 {
        text.lines()
            .find_map(|line| line.strip_prefix("usage_usec "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|us| us.saturating_mul(1_000))
    } else {
        text.trim().parse().ok()
    }
}

fn cgroup_cpus(cgroup: &JobCgroup) -> Vec<u32> {
    ["cpuset.cpus.effective", "cpuset.cpus"]
        .iter()
        .find_map(|file| {
            let text = std::fs::read_to_string(cgroup.cpuset.join(file)).ok()?;
            parse_cpulist(text.trim()).ok().filter(|c| !c.is_empty())
        })
        .unwrap_or_default()
}

/// What the source has reported of one job.
#[derive(Debug)]
struct Tracked {
    job: Job,
    gpus: Vec<String>,
    cpus: Vec<u32>,
    start_ns: i64,
    ended: bool,
    cpu_meter_announced: bool,
    cpu_ns: u64,
}

/// The running `slurm` source.
#[derive(Debug)]
pub struct SlurmSource {
    config: SlurmConfig,
    processes: ProcessScan,
    /// Which job a process works for, to tell whose a SLUID-named cgroup is.
    process_jobs: crate::process_jobs::ProcessJobs,
    jobs: BTreeMap<String, Tracked>,
}

impl SlurmSource {
    fn read_hook_files(&self) -> Vec<(PathBuf, HookFile)> {
        let Ok(entries) = std::fs::read_dir(&self.config.hook_dir) else {
            return Vec::new();
        };
        let mut files = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("job") {
                continue;
            }
            match std::fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|t| parse_hook_file(&t))
            {
                Ok(file) => files.push((path, file)),
                Err(error) => warn!(file = %path.display(), %error, "Slurm hook file skipped."),
            }
        }
        files
    }
}

fn cpu_meter_id(job_id: &str) -> String {
    format!("slurm:cpu:{job_id}")
}

#[async_trait]
impl Source for SlurmSource {
    fn name(&self) -> &str {
        "slurm"
    }

    fn meters(&self) -> Vec<MeterInfo> {
        Vec::new()
    }

    async fn sample(&mut self, at: UnixNanos) -> Result<Sample, String> {
        let mut sample = Sample::default();
        let mut live = Vec::new();
        let keep_ns = i64::try_from(self.config.keep_ended_s)
            .unwrap_or(i64::MAX / 2)
            .saturating_mul(1_000_000_000);
        for (path, hook) in self.read_hook_files() {
            if !self.jobs.get(&hook.job_id).is_some_and(|t| t.ended) {
                live.push(hook);
                continue;
            }
            // Reported already; the file goes once it is old enough.
            if hook
                .end_s
                .is_some_and(|end| at.0.saturating_sub(end.saturating_mul(1_000_000_000)) > keep_ns)
            {
                if let Err(error) = std::fs::remove_file(&path) {
                    warn!(file = %path.display(), %error, "Ended Slurm job's hook file not removed.");
                }
                self.jobs.remove(&hook.job_id);
                self.processes.forget(&hook.job_id);
            }
        }
        if live.is_empty() {
            // No job running here: nothing to look up under /proc.
            return Ok(sample);
        }
        let processes = self.processes.scan();
        for hook in live {
            let process_jobs = &self.process_jobs;
            let owner_of = |pid: u32| {
                process_jobs
                    .job_of(pid)
                    .filter(|job| job.scheduler == "slurm")
                    .map(|job| job.id)
            };
            let cgroup = find_cgroup(&self.config.cgroup_root, &hook.job_id, &owner_of);
            let from_processes = processes.get(&hook.job_id);
            let mut job = from_processes.map(|p| p.job.clone()).unwrap_or_default();
            job.id.clone_from(&hook.job_id);
            job.scheduler = "slurm".into();
            if !hook.user.is_empty() {
                job.user.clone_from(&hook.user);
            }
            if !hook.account.is_empty() {
                job.project.clone_from(&hook.account);
            }
            if job.name.is_empty() {
                job.name = format!("slurm job {}", hook.job_id);
            }
            let gpus: Vec<String> = hook
                .gpus
                .iter()
                .map(|index| format!("{}{index}", self.config.gpu_prefix))
                .collect();
            let cpus = cgroup.as_ref().map(cgroup_cpus).unwrap_or_default();
            let cpu_ns = cgroup
                .as_ref()
                .and_then(cgroup_cpu_ns)
                .or_else(|| from_processes.map(|p| p.cpu_ns));
            let start_ns = hook.start_s.saturating_mul(1_000_000_000);
            let end_ns = hook.end_s.map(|s| s.saturating_mul(1_000_000_000));
            let is_new = !self.jobs.contains_key(&hook.job_id);
            let tracked = self
                .jobs
                .entry(hook.job_id.clone())
                .or_insert_with(|| Tracked {
                    job: job.clone(),
                    gpus: gpus.clone(),
                    cpus: cpus.clone(),
                    start_ns,
                    ended: false,
                    cpu_meter_announced: false,
                    cpu_ns: 0,
                });
            let changed = tracked.job != job
                || tracked.gpus != gpus
                || (!cpus.is_empty() && tracked.cpus != cpus);
            if let Some(cpu_ns) = cpu_ns {
                if !tracked.cpu_meter_announced {
                    sample.meters.push(MeterInfo {
                        meter_id: cpu_meter_id(&hook.job_id),
                        kind: MeterKind::JobCpuTime as i32,
                        method: if cgroup.is_some() {
                            "Slurm job cgroup CPU time (cpu.stat usage_usec / cpuacct.usage)".into()
                        } else {
                            "CPU time of the Slurm job's processes (/proc/PID/stat), summed".into()
                        },
                        job: hook.job_id.clone(),
                        ..MeterInfo::default()
                    });
                    tracked.cpu_meter_announced = true;
                }
                // A cgroup counter restarting (job requeued) must not run the counter back.
                tracked.cpu_ns = tracked.cpu_ns.max(cpu_ns);
                let stamp = end_ns.map_or(at, UnixNanos);
                sample.readings.push(Reading {
                    quality: if cgroup.is_some() {
                        Quality::Measured
                    } else {
                        Quality::Interpolated
                    } as i32,
                    ..measured_reading(&cpu_meter_id(&hook.job_id), tracked.cpu_ns, stamp.min(at))
                });
            }
            if is_new || changed || end_ns.is_some() {
                tracked.job = job;
                tracked.gpus = gpus;
                if !cpus.is_empty() {
                    tracked.cpus = cpus;
                }
                tracked.ended = end_ns.is_some();
                sample.allocations.push(Allocation {
                    job: Some(tracked.job.clone()),
                    gpus: tracked.gpus.clone(),
                    cpus: tracked.cpus.clone(),
                    start_ns: tracked.start_ns,
                    end_ns: end_ns.unwrap_or(0),
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

    #[test]
    fn job_cgroups_are_found_in_every_layout_slurm_writes() {
        let root = tempfile::tempdir().unwrap();
        let proc_root = tempfile::tempdir().unwrap();
        let make = |dir: &Path| {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join("cpu.stat"), "usage_usec 1500\n").unwrap();
            std::fs::write(dir.join("cpuset.cpus.effective"), "0-3\n").unwrap();
        };
        // Slurm before 26.05 (or CgroupJobIdPaths=yes): job_<id>; built for several slurmd per
        // node: a node-named scope.
        let classic = root
            .path()
            .join("system.slice/node1_slurmstepd.scope/job_7");
        make(&classic);
        // Slurm 26.05: the job's SLUID, its processes in the step cgroups below.
        let sluid = root
            .path()
            .join("system.slice/slurmstepd.scope/s5K1KKYAYG5D00");
        make(&sluid);
        std::fs::create_dir_all(sluid.join("step_0/user/task_0")).unwrap();
        std::fs::write(sluid.join("step_0/user/task_0/cgroup.procs"), "4242\n").unwrap();
        std::fs::create_dir_all(proc_root.path().join("4242")).unwrap();
        std::fs::write(
            proc_root.path().join("4242/environ"),
            "SLURM_JOB_ID=42\0SLURM_JOB_USER=ada\0",
        )
        .unwrap();
        let jobs = crate::process_jobs::ProcessJobs::new(proc_root.path(), "node1");
        let owner_of = |pid: u32| jobs.job_of(pid).map(|job| job.id);

        let found = find_cgroup(root.path(), "7", &owner_of).unwrap();
        assert_eq!(found.cpuset, classic);
        assert!(found.v2);
        let found = find_cgroup(root.path(), "42", &owner_of).unwrap();
        assert_eq!(found.cpuset, sluid);
        assert_eq!(cgroup_cpu_ns(&found), Some(1_500_000));
        assert_eq!(cgroup_cpus(&found), [0, 1, 2, 3]);
        // A job with no cgroup here: none (its processes answer instead).
        assert!(find_cgroup(root.path(), "43", &owner_of).is_none());
    }

    #[test]
    fn hook_files_parse_or_say_why() {
        let file = parse_hook_file(
            "job_id=42\nuser=ada\naccount=ml\npartition=gpu\ngpus=0,2-3\nstart_s=1767225600\n",
        )
        .unwrap();
        assert_eq!(file.gpus, [0, 2, 3]);
        assert_eq!((file.start_s, file.end_s), (1_767_225_600, None));
        let ended = parse_hook_file("job_id=42\ngpus=\nstart_s=10\nend_s=20\n").unwrap();
        assert_eq!((ended.gpus.len(), ended.end_s), (0, Some(20)));
        for (text, field) in [
            ("job_id=4x\nstart_s=1", "job_id"),
            ("job_id=4\n", "start_s"),
            ("job_id=4\nstart_s=9\nend_s=3", "end_s"),
            ("job_id=4\nstart_s=9\ngpus=a", "gpus"),
        ] {
            let error = parse_hook_file(text).unwrap_err();
            assert!(error.starts_with(field), "{text:?}: {error}");
        }
    }
}
