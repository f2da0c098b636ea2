//! The Slurm source: on fixture trees laid out as Slurm and the kernel lay them out (hook files,
//! cgroup v2 and v1), and against a real slurmctld + slurmd on loopback with the prolog and
//! epilog of `deploy/slurm/`: a job submitted with `--gres=gpu:1` is seen holding that GPU and
//! released when it ends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod peers;

use std::path::Path;
use std::time::{Duration, Instant};

use footprint_collector::source::{Sample, Source};
use footprint_collector::sources::slurm::SlurmConfig;
use footprint_core::UnixNanos;
use footprint_proto::v1::{Allocation, MeterKind};

const SECOND: i64 = 1_000_000_000;
/// 2026-01-01T00:00:00Z, in seconds.
const T0_S: i64 = 1_767_225_600;

fn config(hooks: &Path, cgroup: &Path, proc_root: &Path) -> SlurmConfig {
    toml::from_str(&format!(
        "hook_dir = {hooks:?}\ncgroup_root = {cgroup:?}\nproc_root = {proc_root:?}\nkeep_ended_s = 60"
    ))
    .unwrap()
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn held(allocation: &Allocation) -> (String, Vec<String>, Vec<u32>, i64, i64) {
    (
        allocation.job.as_ref().unwrap().id.clone(),
        allocation.gpus.clone(),
        allocation.cpus.clone(),
        allocation.start_ns,
        allocation.end_ns,
    )
}

#[tokio::test]
async fn hook_files_and_cgroups_give_holdings_and_cpu_time() {
    let root = tempfile::tempdir().unwrap();
    let (hooks, cgroup, proc_root) = (
        root.path().join("hooks"),
        root.path().join("cgroup"),
        root.path().join("proc"),
    );
    std::fs::create_dir_all(&proc_root).unwrap();
    // Job 41 on cgroup v2, job 42 on cgroup v1.
    write(
        &hooks.join("41.job"),
        &format!("job_id=41\nuser=ada\naccount=ml\ngpus=0-1\nstart_s={T0_S}\n"),
    );
    write(
        &hooks.join("42.job"),
        &format!("job_id=42\nuser=bob\ngpus=2\nstart_s={}\n", T0_S + 5),
    );
    let v2 = cgroup.join("system.slice/slurmstepd.scope/job_41");
    write(
        &v2.join("cpu.stat"),
        "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n",
    );
    write(&v2.join("cpuset.cpus.effective"), "0-3\n");
    write(
        &cgroup.join("cpuacct/slurm/uid_1001/job_42/cpuacct.usage"),
        "750000000\n",
    );
    write(
        &cgroup.join("cpuset/slurm/uid_1001/job_42/cpuset.cpus"),
        "8,10\n",
    );
    let mut source = config(&hooks, &cgroup, &proc_root).build("node1").unwrap();

    let at = UnixNanos((T0_S + 10) * SECOND);
    let first = source.sample(at).await.unwrap();
    let mut allocations: Vec<_> = first.allocations.iter().map(held).collect();
    allocations.sort();
    assert_eq!(
        allocations,
        [
            (
                "41".into(),
                vec!["gpu0".into(), "gpu1".into()],
                vec![0, 1, 2, 3],
                T0_S * SECOND,
                0
            ),
            (
                "42".into(),
                vec!["gpu2".into()],
                vec![8, 10],
                (T0_S + 5) * SECOND,
                0
            )
        ]
    );
    let job = first
        .allocations
        .iter()
        .find(|a| a.job.as_ref().unwrap().id == "41")
        .unwrap();
    let job = job.job.as_ref().unwrap();
    assert_eq!(
        (
            job.scheduler.as_str(),
            job.user.as_str(),
            job.project.as_str()
        ),
        ("slurm", "ada", "ml")
    );
    let mut meters: Vec<(String, i32, String)> = first
        .meters
        .iter()
        .map(|m| (m.meter_id.clone(), m.kind, m.job.clone()))
        .collect();
    meters.sort();
    let cpu_time = MeterKind::JobCpuTime as i32;
    assert_eq!(
        meters,
        [
            ("slurm:cpu:41".into(), cpu_time, "41".into()),
            ("slurm:cpu:42".into(), cpu_time, "42".into())
        ]
    );
    let mut values: Vec<(String, u64)> = first
        .readings
        .iter()
        .map(|r| (r.meter_id_text().into_owned(), r.value))
        .collect();
    values.sort();
    assert_eq!(
        values,
        [
            ("slurm:cpu:41".into(), 2_500_000_000),
            ("slurm:cpu:42".into(), 750_000_000)
        ]
    );

    // Nothing changed: no allocation again, no meter announced again, time still read.
    let second = source.sample(UnixNanos(at.0 + SECOND)).await.unwrap();
    assert!(second.allocations.is_empty() && second.meters.is_empty());
    assert_eq!(second.readings.len(), 2);

    // The epilog ends job 41; its end is the hook's instant.
    write(
        &hooks.join("41.job"),
        &format!(
            "job_id=41\nuser=ada\naccount=ml\ngpus=0-1\nstart_s={T0_S}\nend_s={}\n",
            T0_S + 11
        ),
    );
    let third = source.sample(UnixNanos(at.0 + 2 * SECOND)).await.unwrap();
    let ended: Vec<_> = third.allocations.iter().map(held).collect();
    assert_eq!(
        ended,
        [(
            "41".into(),
            vec!["gpu0".into(), "gpu1".into()],
            vec![0, 1, 2, 3],
            T0_S * SECOND,
            (T0_S + 11) * SECOND
        )]
    );
    // Reported once; the file goes after keep_ended_s.
    let fourth = source.sample(UnixNanos(at.0 + 3 * SECOND)).await.unwrap();
    assert!(fourth.allocations.is_empty());
    assert!(hooks.join("41.job").exists());
    source
        .sample(UnixNanos((T0_S + 11 + 61) * SECOND))
        .await
        .unwrap();
    assert!(!hooks.join("41.job").exists());
    assert!(hooks.join("42.job").exists());
}

#[tokio::test]
async fn a_bad_hook_file_is_skipped_and_the_rest_read() {
    let root = tempfile::tempdir().unwrap();
    let hooks = root.path().join("hooks");
    write(&hooks.join("7.job"), "job_id=seven\nstart_s=1\n");
    write(
        &hooks.join("8.job"),
        &format!("job_id=8\ngpus=0\nstart_s={T0_S}\n"),
    );
    let mut source = config(&hooks, &root.path().join("none"), &root.path().join("none"))
        .build("n")
        .unwrap();
    let sample = source.sample(UnixNanos((T0_S + 1) * SECOND)).await.unwrap();
    assert_eq!(sample.allocations.len(), 1);
    assert_eq!(sample.allocations[0].job.as_ref().unwrap().id, "8");
}

/// Samples until `done` says so, or panics after `limit`.
async fn sample_until(
    source: &mut dyn Source,
    limit: Duration,
    mut done: impl FnMut(&Sample) -> bool,
) {
    let start = Instant::now();
    loop {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i64;
        let sample = source.sample(UnixNanos(now)).await.unwrap();
        if done(&sample) {
            return;
        }
        assert!(start.elapsed() < limit, "timed out");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn a_real_slurm_job_holds_its_gpu_until_it_ends() {
    if !peers::is_root_user() {
        eprintln!("SKIPPED: a real slurmd needs root (CI runs as root)");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let hooks = root.path().join("hooks");
    let cluster = peers::SlurmCluster::start(&hooks);
    let mut source = config(&hooks, &root.path().join("no-cgroup"), Path::new("/proc"))
        .build("node")
        .unwrap();
    // Burns some CPU, then sleeps, so its CPU time is visible and it runs for a few seconds.
    let id = cluster.sbatch(&[
        "--gres=gpu:1",
        "--wrap",
        "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 3",
    ]);

    let mut started = None;
    let mut cpu_meter = false;
    sample_until(&mut source, Duration::from_secs(60), |sample| {
        cpu_meter |= sample
            .meters
            .iter()
            .any(|m| m.meter_id == format!("slurm:cpu:{id}"));
        for allocation in &sample.allocations {
            if allocation.job.as_ref().unwrap().id != id {
                continue;
            }
            if allocation.end_ns == 0 {
                assert_eq!(allocation.gpus, ["gpu0"]);
                assert_eq!(allocation.job.as_ref().unwrap().user, "root");
                started = Some(allocation.start_ns);
            } else {
                assert_eq!(
                    Some(allocation.start_ns),
                    started,
                    "ends the holding it started"
                );
                assert!(allocation.end_ns >= allocation.start_ns);
                return true;
            }
        }
        false
    })
    .await;
    assert!(started.is_some(), "the job was seen running");
    assert!(cpu_meter, "its CPU time was counted from its processes");
    drop(cluster);
}
