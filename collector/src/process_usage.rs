//! CPU time per job from the processes under `/proc`, where a job has no cgroup to ask.
//!
//! Each scan reads every process's `stat` (user + system time) and finds its job with
//! [`ProcessJobs`] (cached per process instance, so a process's environment is read once). A
//! job's CPU time is the sum, over every process instance seen in it, of the last time read —
//! so it never goes down when a process exits, and a reused PID is a new instance (the kernel's
//! start time tells them apart). Time a process spent between the last scan and its exit is not
//! seen; the cgroup path, where there is one, has no such loss.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use footprint_proto::v1::Job;

use crate::process_jobs::ProcessJobs;

/// Kernel clock ticks per second in `/proc/PID/stat` (USER_HZ, 100 on every Linux ABI in use).
const NANOS_PER_TICK: u64 = 10_000_000;

/// One process instance: its PID and the kernel's start time of it.
type Instance = (u32, u64);

/// What the scans know of one job.
#[derive(Clone, Debug)]
pub struct JobCpu {
    pub job: Job,
    /// CPU time of the job's processes, ns, never decreasing.
    pub cpu_ns: u64,
    /// Whether a process of the job was alive at the last scan.
    pub running: bool,
    by_instance: HashMap<Instance, u64>,
}

/// Which processes' jobs a scan keeps (every other process is looked at once and ignored).
#[derive(Clone, Debug)]
pub enum Tracked {
    /// Slurm jobs (`SLURM_JOB_ID`, a `job_<id>` cgroup).
    SlurmJobs,
    /// Jobs labelled `FOOTPRINT_JOB`, and processes whose command line contains one of these.
    Labelled { commands: Vec<String> },
}

impl Tracked {
    fn keeps(&self, job: &Job, command_line: &str) -> bool {
        match self {
            Tracked::SlurmJobs => job.scheduler == "slurm",
            Tracked::Labelled { commands } => {
                (job.scheduler == "process" && !job.id.starts_with("process:"))
                    || commands.iter().any(|c| command_line.contains(c.as_str()))
            }
        }
    }
}

/// Scans `/proc` for processes and their jobs.
#[derive(Debug)]
pub struct ProcessScan {
    proc_root: PathBuf,
    jobs: ProcessJobs,
    tracked: Tracked,
    /// Job of each process instance seen (None: gone before it could be read).
    instances: HashMap<Instance, Option<String>>,
    by_job: BTreeMap<String, JobCpu>,
}

/// CPU time (user + system) a process has used so far, ns; `None` when it is gone.
pub fn cpu_ns(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat).map(|(ticks, _)| ticks * NANOS_PER_TICK)
}

/// A memory field of `/proc/PID/status` (`VmRSS`, `VmHWM`, …), KiB; `None` when absent.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// `(utime + stime in ticks, start time)` from a `/proc/PID/stat` line.
pub fn parse_stat(text: &str) -> Option<(u64, u64)> {
    // The command name is in parentheses and may hold spaces and ')'.
    let after = text.get(text.rfind(')')? + 1..)?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the name: state(3) ppid(4) … utime(14) stime(15) … starttime(22), 1-based overall.
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some((field(14)? + field(15)?, field(22)?))
}

impl ProcessScan {
    pub fn new(proc_root: impl Into<PathBuf>, host: &str, tracked: Tracked) -> Self {
        let proc_root = proc_root.into();
        Self {
            jobs: ProcessJobs::new(&proc_root, host),
            tracked,
            proc_root,
            instances: HashMap::new(),
            by_job: BTreeMap::new(),
        }
    }

    /// Reads every process once; returns each job seen so far.
    pub fn scan(&mut self) -> &BTreeMap<String, JobCpu> {
        for job in self.by_job.values_mut() {
            job.running = false;
        }
        let Ok(entries) = std::fs::read_dir(&self.proc_root) else {
            return &self.by_job;
        };
        let mut alive = std::collections::HashSet::new();
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            let Some((ticks, started)) = parse_stat(&stat) else {
                continue;
            };
            let instance = (pid, started);
            alive.insert(instance);
            let job_id = self
                .instances
                .entry(instance)
                .or_insert_with(|| {
                    let job = self.jobs.job_of(pid)?;
                    if !self.tracked.keeps(&job, &job.name) {
                        return None;
                    }
                    let id = job.id.clone();
                    self.by_job.entry(id.clone()).or_insert_with(|| JobCpu {
                        job,
                        cpu_ns: 0,
                        running: true,
                        by_instance: HashMap::new(),
                    });
                    Some(id)
                })
                .clone();
            if let Some(job) = job_id.and_then(|id| self.by_job.get_mut(&id)) {
                let last = job.by_instance.entry(instance).or_insert(0);
                if ticks * NANOS_PER_TICK > *last {
                    job.cpu_ns += ticks * NANOS_PER_TICK - *last;
                    *last = ticks * NANOS_PER_TICK;
                }
                job.running = true;
            }
        }
        // Forget instances that are gone; their time stays in their job's total.
        self.instances
            .retain(|instance, _| alive.contains(instance));
        &self.by_job
    }

    /// Drops an ended job.
    pub fn forget(&mut self, job_id: &str) {
        self.by_job.remove(job_id);
        self.instances
            .retain(|_, job| job.as_deref() != Some(job_id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_process(root: &std::path::Path, pid: u32, job: &str, ticks: (u64, u64), started: u64) {
        let dir = root.join(pid.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("environ"), format!("SLURM_JOB_ID={job}\0")).unwrap();
        std::fs::write(dir.join("cmdline"), "a.out\0").unwrap();
        std::fs::write(
            dir.join("stat"),
            format!(
                "{pid} (a (b) c) S 1 1 1 0 -1 4194560 1 0 0 0 {} {} 0 0 20 0 1 0 {started} 1 1\n",
                ticks.0, ticks.1
            ),
        )
        .unwrap();
    }

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let me = std::process::id();
        assert!(cpu_ns(me).is_some());
        assert!(status_kib(me, "VmRSS").is_some_and(|kib| kib > 0));
        assert_eq!(status_kib(me, "NoSuchField"), None);
    }

    #[test]
    fn stat_lines_parse_even_with_odd_command_names() {
        assert_eq!(
            parse_stat("7 (x) y) R 1 1 1 0 -1 0 0 0 0 0 150 50 0 0 20 0 1 0 4242 0 0"),
            Some((200, 4242))
        );
        for bad in ["", "7 (x", "7 (x) R 1", "(((("] {
            assert_eq!(parse_stat(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_job_keeps_the_time_of_processes_that_exited() {
        let root = tempfile::tempdir().unwrap();
        write_process(root.path(), 100, "7", (100, 50), 1_000);
        write_process(root.path(), 101, "7", (10, 0), 1_001);
        let mut scan = ProcessScan::new(root.path(), "n", Tracked::SlurmJobs);
        assert_eq!(scan.scan()["7"].cpu_ns, 1_600_000_000);
        // 101 exits; 100 runs on; then PID 101 is reused by another process of the job.
        std::fs::remove_dir_all(root.path().join("101")).unwrap();
        write_process(root.path(), 100, "7", (200, 50), 1_000);
        assert_eq!(scan.scan()["7"].cpu_ns, 2_600_000_000);
        write_process(root.path(), 101, "7", (5, 0), 9_999);
        assert_eq!(scan.scan()["7"].cpu_ns, 2_650_000_000);
        std::fs::remove_dir_all(root.path().join("100")).unwrap();
        std::fs::remove_dir_all(root.path().join("101")).unwrap();
        let after = &scan.scan()["7"];
        assert_eq!((after.cpu_ns, after.running), (2_650_000_000, false));
    }

    #[test]
    fn only_the_tracked_jobs_are_kept() {
        let root = tempfile::tempdir().unwrap();
        write_process(root.path(), 100, "7", (1, 0), 1);
        let plain = root.path().join("200");
        std::fs::create_dir_all(&plain).unwrap();
        std::fs::write(plain.join("cmdline"), "vllm\0serve\0").unwrap();
        std::fs::write(
            plain.join("stat"),
            "200 (vllm) S 1 1 1 0 -1 0 0 0 0 0 3 0 0 0 20 0 1 0 5 1 1\n",
        )
        .unwrap();
        let slurm: Vec<String> = ProcessScan::new(root.path(), "n", Tracked::SlurmJobs)
            .scan()
            .keys()
            .cloned()
            .collect();
        assert_eq!(slurm, ["7"]);
        let by_command = Tracked::Labelled {
            commands: vec!["vllm".into()],
        };
        let labelled: Vec<String> = ProcessScan::new(root.path(), "n", by_command)
            .scan()
            .keys()
            .cloned()
            .collect();
        assert_eq!(labelled, ["process:n:200"]);
    }
}
