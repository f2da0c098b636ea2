//! Which job a process works for, from what the kernel shows of it under `/proc`.
//!
//! In order, the first that answers:
//! 1. a `FOOTPRINT_JOB` label in the process's environment (scheduler `process`), with the
//!    optional labels `FOOTPRINT_JOB_NAME`, `FOOTPRINT_JOB_KIND` (`training`, `inference`,
//!    `other`), `FOOTPRINT_MODEL`, `FOOTPRINT_PROJECT` and `FOOTPRINT_FUNCTIONAL_UNIT`;
//! 2. `SLURM_JOB_ID` in the environment (scheduler `slurm`; name, user and account from
//!    `SLURM_JOB_NAME`, `SLURM_JOB_USER`, `SLURM_JOB_ACCOUNT`);
//! 3. the process's cgroup: a `…/job_<id>/…` path is a Slurm job, a `…/kubepods…/pod<uid>…`
//!    path a Kubernetes pod;
//! 4. else the process itself: job `process:<host>:<pid>`, named by its command line.
//!
//! The labels of (1) also refine (2) and (3): a Slurm job may say it is inference for a model.
//! Another user's environment is readable by root only; without it the cgroup and the command
//! line still answer.

use std::path::{Path, PathBuf};

use footprint_proto::v1::{Job, JobKind};

/// Reads processes' job from a `/proc` tree (configurable for tests).
#[derive(Clone, Debug)]
pub struct ProcessJobs {
    proc_root: PathBuf,
    host: String,
}

/// Longest command line kept as a job name.
const MAX_NAME_CHARS: usize = 200;

impl ProcessJobs {
    pub fn new(proc_root: impl Into<PathBuf>, host: impl Into<String>) -> Self {
        Self {
            proc_root: proc_root.into(),
            host: host.into(),
        }
    }

    /// The job `pid` works for; `None` when the process is gone.
    pub fn job_of(&self, pid: u32) -> Option<Job> {
        let dir = self.proc_root.join(pid.to_string());
        let environment = read_environment(&dir);
        let label = |key: &str| {
            environment
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
                .filter(|v| !v.trim().is_empty())
        };
        let mut job = if let Some(id) = label("FOOTPRINT_JOB") {
            Job {
                id,
                scheduler: "process".into(),
                user: label("USER").unwrap_or_default(),
                ..Job::default()
            }
        } else if let Some(id) = label("SLURM_JOB_ID") {
            Job {
                id,
                scheduler: "slurm".into(),
                name: label("SLURM_JOB_NAME").unwrap_or_default(),
                user: label("SLURM_JOB_USER").unwrap_or_default(),
                project: label("SLURM_JOB_ACCOUNT").unwrap_or_default(),
                ..Job::default()
            }
        } else if let Some(job) = std::fs::read_to_string(dir.join("cgroup"))
            .ok()
            .and_then(|text| job_of_cgroup(&text))
        {
            job
        } else {
            let command = read_command_line(&dir)?;
            Job {
                id: format!("process:{}:{pid}", self.host),
                scheduler: "process".into(),
                name: command,
                ..Job::default()
            }
        };
        if let Some(name) = label("FOOTPRINT_JOB_NAME") {
            job.name = name;
        }
        if job.name.is_empty() {
            job.name = read_command_line(&dir).unwrap_or_default();
        }
        if let Some(kind) = label("FOOTPRINT_JOB_KIND").and_then(|k| JobKind::from_short_name(&k)) {
            job.kind = kind as i32;
        }
        if let Some(model) = label("FOOTPRINT_MODEL") {
            job.model = model;
        }
        if let Some(project) = label("FOOTPRINT_PROJECT") {
            job.project = project;
        }
        if let Some(unit) = label("FOOTPRINT_FUNCTIONAL_UNIT") {
            job.functional_unit = unit;
        }
        Some(job)
    }
}

fn read_environment(dir: &Path) -> Vec<(String, String)> {
    let Ok(bytes) = std::fs::read(dir.join("environ")) else {
        return Vec::new();
    };
    bytes
        .split(|b| *b == 0)
        .filter_map(|entry| {
            let entry = String::from_utf8_lossy(entry);
            let (key, value) = entry.split_once('=')?;
            Some((key.to_owned(), value.to_owned()))
        })
        .collect()
}

/// The command line with its arguments joined by spaces, or `[comm]` for a kernel thread or a
/// process whose command line is empty; `None` when the process is gone.
fn read_command_line(dir: &Path) -> Option<String> {
    let bytes = std::fs::read(dir.join("cmdline")).ok()?;
    let words: Vec<String> = bytes
        .split(|b| *b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    let line = if words.is_empty() {
        let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
        format!("[{}]", comm.trim())
    } else {
        words.join(" ")
    };
    Some(line.chars().take(MAX_NAME_CHARS).collect())
}

/// A Slurm job or Kubernetes pod named by a `/proc/PID/cgroup` file (v1 or v2).
fn job_of_cgroup(text: &str) -> Option<Job> {
    for line in text.lines() {
        // "hierarchy-id:controllers:path"; the path may itself contain ':'.
        let Some(path) = line.splitn(3, ':').nth(2) else {
            continue;
        };
        for part in path.split('/') {
            if let Some(id) = part.strip_prefix("job_")
                && !id.is_empty()
                && id.bytes().all(|b| b.is_ascii_digit())
            {
                return Some(Job {
                    id: id.to_owned(),
                    scheduler: "slurm".into(),
                    ..Job::default()
                });
            }
        }
        if path.contains("kubepods") {
            // cgroupfs: ".../pod<uid>/<container>"; systemd: "kubepods-burstable-pod<uid>.slice",
            // with the uid's '-' written as '_'.
            let pod = path.split('/').find_map(|part| {
                // "kubepods" itself contains "pod": the pod's is the last.
                let start = part.rfind("pod")? + 3;
                let uid = part[start..].trim_end_matches(".slice").replace('_', "-");
                (uid.len() == 36).then_some(uid)
            });
            if let Some(uid) = pod {
                return Some(Job {
                    id: format!("pod:{uid}"),
                    scheduler: "kubernetes".into(),
                    ..Job::default()
                });
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(root: &Path, pid: u32, environment: &[&str], cgroup: &str, cmdline: &[&str]) {
        let dir = root.join(pid.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        let mut environ = environment.join("\0").into_bytes();
        environ.push(0);
        std::fs::write(dir.join("environ"), environ).unwrap();
        std::fs::write(dir.join("cgroup"), cgroup).unwrap();
        let mut line = cmdline.join("\0").into_bytes();
        line.push(0);
        std::fs::write(dir.join("cmdline"), line).unwrap();
        std::fs::write(dir.join("comm"), "python\n").unwrap();
    }

    #[test]
    fn labels_then_slurm_then_cgroup_then_the_command_line() {
        let root = tempfile::tempdir().unwrap();
        let plain_cgroup = "0::/user.slice/user-1000.slice/session-3.scope\n";
        process(
            root.path(),
            10,
            &[
                "USER=ada",
                "FOOTPRINT_JOB=llama-ft-7",
                "FOOTPRINT_JOB_KIND=training",
                "FOOTPRINT_MODEL=llama-3-8b",
                "FOOTPRINT_FUNCTIONAL_UNIT=1k tokens",
            ],
            plain_cgroup,
            &["python", "train.py"],
        );
        process(
            root.path(),
            11,
            &[
                "SLURM_JOB_ID=4242",
                "SLURM_JOB_USER=bob",
                "SLURM_JOB_NAME=serve",
                "FOOTPRINT_JOB_KIND=inference",
            ],
            plain_cgroup,
            &["vllm", "serve"],
        );
        process(
            root.path(),
            12,
            &[],
            "4:freezer:/slurm_node1/uid_1000/job_977/step_batch\n",
            &["bash", "job.sh"],
        );
        process(
            root.path(),
            13,
            &[],
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f4a6c1e_2b7d_4c1a_9e0b_5d3f8a1b2c3d.slice/cri-containerd-ab.scope\n",
            &["python", "serve.py"],
        );
        process(
            root.path(),
            14,
            &[],
            plain_cgroup,
            &["python", "-c", "work()"],
        );
        let jobs = ProcessJobs::new(root.path(), "node1");

        let labelled = jobs.job_of(10).unwrap();
        assert_eq!(
            (
                labelled.id.as_str(),
                labelled.scheduler.as_str(),
                labelled.user.as_str()
            ),
            ("llama-ft-7", "process", "ada")
        );
        assert_eq!(labelled.kind, JobKind::Training as i32);
        assert_eq!(labelled.model, "llama-3-8b");
        assert_eq!(labelled.functional_unit, "1k tokens");
        assert_eq!(labelled.name, "python train.py");

        let slurm = jobs.job_of(11).unwrap();
        assert_eq!(
            (
                slurm.id.as_str(),
                slurm.scheduler.as_str(),
                slurm.user.as_str(),
                slurm.name.as_str()
            ),
            ("4242", "slurm", "bob", "serve")
        );
        assert_eq!(slurm.kind, JobKind::Inference as i32);

        let cgroup = jobs.job_of(12).unwrap();
        assert_eq!(
            (cgroup.id.as_str(), cgroup.scheduler.as_str()),
            ("977", "slurm")
        );

        let pod = jobs.job_of(13).unwrap();
        assert_eq!(pod.id, "pod:0f4a6c1e-2b7d-4c1a-9e0b-5d3f8a1b2c3d");
        assert_eq!(pod.scheduler, "kubernetes");

        let plain = jobs.job_of(14).unwrap();
        assert_eq!(plain.id, "process:node1:14");
        assert_eq!(plain.name, "python -c work()");

        assert_eq!(jobs.job_of(99), None, "a process that is gone has no job");
    }

    #[test]
    fn an_unreadable_environment_falls_back_to_the_cgroup() {
        let root = tempfile::tempdir().unwrap();
        process(
            root.path(),
            20,
            &[],
            "0::/system.slice/slurmstepd.scope/job_31/step_0/user/task_0\n",
            &["a.out"],
        );
        std::fs::remove_file(root.path().join("20/environ")).unwrap();
        let job = ProcessJobs::new(root.path(), "n").job_of(20).unwrap();
        assert_eq!((job.id.as_str(), job.scheduler.as_str()), ("31", "slurm"));
    }

    #[test]
    fn arbitrary_cgroup_text_never_panics() {
        for text in [
            "",
            ":",
            "::",
            "0::/job_",
            "0::/kubepods/pod",
            "x:y:/a/job_12x/b",
            "\u{0}",
        ] {
            let _ = job_of_cgroup(text);
        }
        assert_eq!(job_of_cgroup("x:y:/a/job_12x/b"), None);
    }
}
