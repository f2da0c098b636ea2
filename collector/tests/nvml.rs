//! The NVML source through the real `nvml-wrapper`, against a stand-in `libnvidia-ml.so.1`
//! (`tests/fake_nvml/`, built here with gcc) so CI runs the code path a GPU host runs. The test
//! named `nvml_on_a_real_gpu` runs against the driver's own library where there is one:
//! `cargo test -p footprint-collector --test nvml -- --ignored nvml`.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod peers;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use footprint_collector::source::Source;
use footprint_collector::sources::nvml::{NvmlConfig, PowerLimits};
use footprint_core::UnixNanos;
use footprint_proto::v1::{Allocation, MeterKind, MigInstance, Quality};

const SECOND: i64 = 1_000_000_000;
/// 2026-01-01T00:00:00Z
const T0: i64 = 1_767_225_600 * SECOND;

/// Builds the stand-in library once per test run.
fn fake_library() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        peers::build_fake_nvml(&Path::new(env!("CARGO_TARGET_TMPDIR")).join("fake-nvml"))
    })
}

/// A host: its own copy of the stand-in NVML (whose GPUs are read from `nvml-state` beside it)
/// and a `/proc` tree.
struct FakeHost {
    dir: tempfile::TempDir,
}

impl FakeHost {
    fn new(state: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(fake_library(), dir.path().join("libnvidia-ml.so.1")).unwrap();
        std::fs::create_dir(dir.path().join("proc")).unwrap();
        let host = Self { dir };
        host.set_state(state);
        host
    }

    fn set_state(&self, state: &str) {
        std::fs::write(self.dir.path().join("nvml-state"), state).unwrap();
    }

    fn process(&self, pid: u32, job: &str) {
        let dir = self.dir.path().join("proc").join(pid.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("environ"), format!("FOOTPRINT_JOB={job}\0")).unwrap();
        std::fs::write(dir.join("cmdline"), "python\0train.py\0").unwrap();
        std::fs::write(dir.join("cgroup"), "0::/\n").unwrap();
    }

    fn config(&self) -> NvmlConfig {
        toml::from_str(&format!(
            "library = {:?}\nproc_root = {:?}",
            self.dir.path().join("libnvidia-ml.so.1"),
            self.dir.path().join("proc")
        ))
        .unwrap()
    }
}

/// Power caps through the real wrapper: set within range, seen by NVML, restored when the lease
/// runs out and, after a kill, by the next process before anything else; a dry run without
/// permission.
#[tokio::test]
async fn power_caps_are_set_through_nvml_and_always_restored() {
    use footprint_collector::power_cap::{Capper, Outcome};
    let host = FakeHost::new(
        &(gpu_line("GPU-aaaa", 5_000, 300_000, false)
            + &gpu_line("GPU-bbbb", 9_000, 100_000, false)),
    );
    let state = host.dir.path().join("power-caps.json");
    let limits_file = host.dir.path().join("nvml-limits");
    let enforced = |uuid: &str| -> Option<u32> {
        std::fs::read_to_string(&limits_file)
            .ok()?
            .lines()
            .find_map(|line| {
                let (id, mw) = line.split_once('|')?;
                (id == uuid).then(|| mw.parse::<u32>().ok()).flatten()
            })
    };
    {
        let source = host.config().build("node1").unwrap();
        let (mut capper, restored) = Capper::open(source.limiter(), &state);
        assert!(restored.is_empty());
        assert_eq!(
            capper.apply("gpu0", 350, T0 + 60 * SECOND),
            Outcome::Applied {
                from_w: 700,
                to_w: 350,
                clamped: None
            }
        );
        assert_eq!(enforced("GPU-aaaa"), Some(350_000));
        // Below the range: clamped to its floor, and said.
        assert!(matches!(
            capper.apply("gpu1", 50, T0 + 60 * SECOND),
            Outcome::Applied {
                to_w: 200,
                clamped: Some(_),
                ..
            }
        ));
        assert_eq!(enforced("GPU-bbbb"), Some(200_000));
        // The lease of gpu0 runs out; gpu1 is renewed and stays.
        capper.apply("gpu1", 250, T0 + 120 * SECOND);
        let back = capper.expire(T0 + 90 * SECOND);
        assert_eq!(
            back.iter().map(|r| r.device.as_str()).collect::<Vec<_>>(),
            ["gpu0"]
        );
        assert_eq!(enforced("GPU-aaaa"), Some(700_000));
        assert_eq!(enforced("GPU-bbbb"), Some(250_000));
        // Killed while capping: the state file holds gpu1's previous limit.
        std::mem::forget(capper);
    }
    let source = host.config().build("node1").unwrap();
    let (capper, restored) = Capper::open(source.limiter(), &state);
    assert_eq!(restored.len(), 1);
    assert_eq!(
        (
            restored[0].device.as_str(),
            restored[0].to_w,
            restored[0].error.clone()
        ),
        ("gpu1", 700, None)
    );
    assert_eq!(enforced("GPU-bbbb"), Some(700_000));
    drop(capper);

    // Without permission (a process that is not root): nothing changes, and it says so.
    std::fs::write(host.dir.path().join("nvml-readonly"), "").unwrap();
    let (mut capper, _) = Capper::open(source.limiter(), &state);
    let outcome = capper.apply("gpu0", 300, T0 + 60 * SECOND);
    assert!(
        matches!(&outcome, Outcome::DryRun(why) if why.contains("needs root")),
        "{outcome:?}"
    );
    assert_eq!(enforced("GPU-aaaa"), Some(700_000));
    assert!(
        matches!(capper.apply("gpu7", 300, T0), Outcome::Refused(why) if why.contains("no GPU gpu7"))
    );
}

const H100: &str = "NVIDIA H100 80GB HBM3";

fn gpu_line(uuid: &str, energy_mj: i64, power_mw: u32, mig: bool) -> String {
    format!(
        "gpu|{H100}|{uuid}|{energy_mj}|{power_mw}|700000|200000|700000|{}\n",
        u8::from(mig)
    )
}

/// An allocation as (job, GPUs, MIG instances, start, end).
type Held = (String, Vec<String>, Vec<MigInstance>, i64, i64);

fn held(allocations: &[Allocation]) -> Vec<Held> {
    allocations
        .iter()
        .map(|a| {
            (
                a.job.as_ref().unwrap().id.clone(),
                a.gpus.clone(),
                a.mig.clone(),
                a.start_ns,
                a.end_ns,
            )
        })
        .collect()
}

#[tokio::test]
async fn energy_counters_models_and_power_limits_come_through_the_real_wrapper() {
    let host = FakeHost::new(
        &(gpu_line("GPU-aaaa", 5_000, 300_000, false)
            + &gpu_line("GPU-bbbb", 9_000, 100_000, false)),
    );
    let mut source = host.config().build("node1").unwrap();
    let meters = source.meters();
    assert_eq!(
        meters
            .iter()
            .map(|m| (m.meter_id.as_str(), m.device.as_str(), m.model.as_str()))
            .collect::<Vec<_>>(),
        [("gpu0", "gpu0", H100), ("gpu1", "gpu1", H100)]
    );
    assert!(meters.iter().all(|m| m.kind == MeterKind::GpuEnergy as i32));
    assert!(
        meters[0]
            .method
            .contains("power limit 700 W (settable 200–700 W)"),
        "{}",
        meters[0].method
    );
    assert!(meters[1].method.contains("GPU-bbbb"));
    let limits = PowerLimits {
        enforced_w: 700,
        min_w: 200,
        max_w: 700,
    };
    assert_eq!(
        source.power_limits(),
        [("gpu0".into(), Some(limits)), ("gpu1".into(), Some(limits))]
    );

    let first = source.sample(UnixNanos(T0)).await.unwrap();
    host.set_state(
        &(gpu_line("GPU-aaaa", 3_005_000, 300_000, false)
            + &gpu_line("GPU-bbbb", 1_009_000, 100_000, false)),
    );
    let second = source.sample(UnixNanos(T0 + 10 * SECOND)).await.unwrap();
    let values = |sample: &footprint_collector::source::Sample| {
        sample
            .readings
            .iter()
            .map(|r| (r.meter_id.clone(), r.value, r.quality))
            .collect::<Vec<_>>()
    };
    let measured = Quality::Measured as i32;
    assert_eq!(
        values(&first),
        [
            ("gpu0".into(), 5_000, measured),
            ("gpu1".into(), 9_000, measured)
        ]
    );
    assert_eq!(
        values(&second),
        [
            ("gpu0".into(), 3_005_000, measured),
            ("gpu1".into(), 1_009_000, measured)
        ]
    );
    assert!(first.allocations.is_empty() && first.meters.is_empty());
}

#[tokio::test]
async fn a_gpu_without_an_energy_counter_has_its_power_integrated_and_flagged() {
    let host = FakeHost::new(&gpu_line("GPU-old", -1, 100_000, false));
    let mut source = host.config().build("node1").unwrap();
    assert!(source.meters()[0].method.contains("integrated"));
    let first = source.sample(UnixNanos(T0)).await.unwrap();
    host.set_state(&gpu_line("GPU-old", -1, 300_000, false));
    let second = source.sample(UnixNanos(T0 + 10 * SECOND)).await.unwrap();
    // 100 W rising to 300 W over 10 s: 2 000 J by the trapezoid rule.
    assert_eq!(
        (first.readings[0].value, second.readings[0].value),
        (0, 2_000_000)
    );
    assert_eq!(second.readings[0].quality, Quality::Interpolated as i32);
}

#[tokio::test]
async fn processes_become_allocations_and_busy_time_splits_a_shared_gpu() {
    let host = FakeHost::new("");
    host.process(100, "train-a");
    host.process(200, "serve-b");
    let state = |ts: u64, with_b: bool| {
        let mut s = gpu_line("GPU-aaaa", 0, 300_000, false) + &gpu_line("GPU-bbbb", 0, 0, false);
        s += &format!("proc|0|100|75|{ts}\n");
        if with_b {
            s += &format!("proc|0|200|25|{ts}\n");
        }
        s
    };
    host.set_state(&state(1, true));
    let mut source = host.config().build("node1").unwrap();

    let first = source.sample(UnixNanos(T0)).await.unwrap();
    let announced: Vec<(&str, &str, &str, i32)> = first
        .meters
        .iter()
        .map(|m| {
            (
                m.meter_id.as_str(),
                m.device.as_str(),
                m.job.as_str(),
                m.kind,
            )
        })
        .collect();
    let busy = MeterKind::GpuJobBusy as i32;
    assert_eq!(
        announced,
        [
            ("gpu0:busy:serve-b", "gpu0", "serve-b", busy),
            ("gpu0:busy:train-a", "gpu0", "train-a", busy)
        ]
    );
    let gpu0 = vec!["gpu0".to_owned()];
    assert_eq!(
        held(&first.allocations),
        [
            ("serve-b".into(), gpu0.clone(), vec![], T0, 0),
            ("train-a".into(), gpu0.clone(), vec![], T0, 0)
        ]
    );
    assert_eq!(
        first.allocations[1].job.as_ref().unwrap().name,
        "python train.py"
    );

    host.set_state(&state(2, true));
    let second = source.sample(UnixNanos(T0 + 10 * SECOND)).await.unwrap();
    assert!(second.meters.is_empty(), "announced once");
    assert!(second.allocations.is_empty(), "nothing changed");
    let busy_values: Vec<(String, u64)> = second
        .readings
        .iter()
        .map(|r| (r.meter_id_text().into_owned(), r.value))
        .filter(|(id, _)| id.contains(":busy:"))
        .collect();
    // 10 s at 25 % and 75 %.
    assert_eq!(
        busy_values,
        [
            ("gpu0:busy:serve-b".to_owned(), 2_500_000_000),
            ("gpu0:busy:train-a".to_owned(), 7_500_000_000)
        ]
    );

    // serve-b's process exits: its holding ends at this tick.
    host.set_state(&state(3, false));
    let third = source.sample(UnixNanos(T0 + 20 * SECOND)).await.unwrap();
    assert_eq!(
        held(&third.allocations),
        [("serve-b".into(), gpu0, vec![], T0, T0 + 20 * SECOND)]
    );
}

#[tokio::test]
async fn jobs_on_mig_instances_hold_their_slices() {
    let host = FakeHost::new(
        &(gpu_line("GPU-mig", 0, 300_000, true)
            + "mig|0|1|3\nmig|0|2|4\nproc|0|100|0|0|0\nproc|0|200|0|0|1\n"),
    );
    host.process(100, "small");
    host.process(200, "large");
    let mut source = host.config().build("node1").unwrap();
    assert!(
        source.meters()[0]
            .method
            .contains("MIG on, instances of [3, 4] slices")
    );
    let sample = source.sample(UnixNanos(T0)).await.unwrap();
    let slices = |n: u32| {
        vec![MigInstance {
            device: "gpu0".into(),
            slices: n,
        }]
    };
    assert_eq!(
        held(&sample.allocations),
        [
            ("large".into(), vec![], slices(4), T0, 0),
            ("small".into(), vec![], slices(3), T0, 0)
        ]
    );
    assert!(
        sample.meters.is_empty(),
        "no per-process utilisation in MIG mode"
    );
}

#[tokio::test]
async fn gpus_can_be_named_by_uuid_as_kubernetes_names_them() {
    let host = FakeHost::new(&(gpu_line("GPU-aaaa", 0, 300_000, false) + "proc|0|100|50|1\n"));
    host.process(100, "pod-job");
    let mut config = host.config();
    config.device_names = footprint_collector::sources::nvml::DeviceNames::Uuid;
    let mut source = config.build("node1").unwrap();
    let meter = &source.meters()[0];
    assert_eq!(
        (meter.meter_id.as_str(), meter.device.as_str()),
        ("gpu0", "GPU-aaaa")
    );
    let sample = source.sample(UnixNanos(T0)).await.unwrap();
    assert_eq!(sample.allocations[0].gpus, ["GPU-aaaa"]);
    assert_eq!(sample.meters[0].device, "GPU-aaaa");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 24, ..Default::default() })]

    /// The board's energy counter goes through the real wrapper unchanged, so the aggregator's
    /// rule decides: samples missed (up to a minute of a 700 W GPU between two taken) lose
    /// nothing, and a driver reload (the counter restarts from zero) loses only what the GPU
    /// used between the last sample and the reload. The counter starts where a GPU some hours
    /// after its driver loaded would be, so a reload always shows as a fall.
    #[test]
    fn the_energy_counter_books_exactly_across_gaps_and_a_driver_reload(
        start_mj in 1_000_000_000i64..1_000_000_000_000,
        steps in proptest::collection::vec((0i64..=700, 1i64..=60, proptest::bool::weighted(0.7)), 1..30),
        reload_at in 0usize..40,
        used_before_reload in 0i64..=100,
    ) {
        let host = FakeHost::new(&gpu_line("GPU-aaaa", start_mj, 300_000, false));
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let mut source = host.config().build("node1").unwrap();
        let mut read = |at: i64| runtime.block_on(source.sample(UnixNanos(at))).unwrap().readings[0].value;
        let mut readings = vec![(T0, read(T0))];
        let (mut at, mut counter, mut expected) = (T0, start_mj, 0u128);
        let mut reloaded_since_sample = false;
        for (index, (watts, seconds, sampled)) in steps.into_iter().enumerate() {
            let used = watts * 1_000 * seconds;
            at += seconds * SECOND;
            if index == reload_at {
                // The part used before the reload is never seen.
                counter = used * (100 - used_before_reload) / 100;
                reloaded_since_sample = true;
            } else {
                counter += used;
            }
            if sampled {
                host.set_state(&gpu_line("GPU-aaaa", counter, 300_000, false));
                let value = read(at);
                proptest::prop_assert_eq!(value, counter as u64);
                let previous = readings.last().unwrap().1;
                expected += if reloaded_since_sample {
                    u128::from(value)
                } else {
                    u128::from(value - previous)
                };
                reloaded_since_sample = false;
                readings.push((at, value));
            }
        }
        // The aggregator's default GPU limit (5 kW), a counter that never wraps.
        let limits = footprint_core::counter::CounterLimits {
            max_value: u64::MAX,
            max_rate_per_second: 5_000_000,
            resolution: 0,
        };
        let booked = peers::booked_total(&readings, limits).map_err(proptest::test_runner::TestCaseError::fail)?;
        proptest::prop_assert_eq!(booked, expected);
    }
}

#[test]
fn a_host_without_nvml_is_told_so() {
    let config: NvmlConfig =
        toml::from_str(r#"library = "/nonexistent/libnvidia-ml.so.1""#).unwrap();
    let error = config.build("node1").unwrap_err();
    assert!(error.contains("NVML is absent"), "{error}");
}

/// Runs on a host with an NVIDIA GPU and driver; prints what it saw for BENCHMARKS.md.
#[tokio::test]
#[ignore = "needs an NVIDIA GPU: cargo test -p footprint-collector --test nvml -- --ignored nvml"]
async fn nvml_on_a_real_gpu() {
    let config: NvmlConfig = toml::from_str("").unwrap();
    let mut source = config.build(&hostname()).unwrap();
    for meter in source.meters() {
        println!("{} {} — {}", meter.meter_id, meter.model, meter.method);
    }
    for (device, limits) in source.power_limits() {
        println!("{device}: {limits:?}");
        assert!(limits.is_some_and(|l| l.min_w <= l.enforced_w && l.enforced_w <= l.max_w));
    }
    let start = std::time::Instant::now();
    let first = source.sample(UnixNanos(T0)).await.unwrap();
    let read_cost = start.elapsed();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let second = source.sample(UnixNanos(T0 + 2 * SECOND)).await.unwrap();
    let energy = |sample: &footprint_collector::source::Sample| {
        sample
            .readings
            .iter()
            .filter(|r| !r.meter_id_text().contains(":busy:"))
            .cloned()
            .collect::<Vec<_>>()
    };
    for (a, b) in energy(&first).iter().zip(&energy(&second)) {
        let watts = (b.value - a.value) as f64 / 2_000.0;
        println!(
            "{}: {} -> {} mJ over 2 s ({watts:.1} W mean)",
            a.meter_id_text(),
            a.value,
            b.value
        );
        assert!(b.value > a.value, "an idle GPU still draws power");
    }
    println!("one sample of every GPU took {read_cost:?}");
    println!("allocations: {:?}", second.allocations);
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "gpu-host".into())
}
