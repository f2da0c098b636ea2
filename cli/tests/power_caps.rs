//! GPU power caps end to end, real processes: an aggregator and two collectors whose NVML is the
//! stand-in `libnvidia-ml` (the real nvml-wrapper path). A cap posted to the aggregator reaches
//! a collector, is set on the GPU within its range, acknowledged and recorded; it comes back off
//! when released, when its lease runs out, and — for a collector killed while capping — when
//! that collector starts again. Without permission it is a dry run, said in the record.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn build_fake_nvml(dir: &Path) -> PathBuf {
    let source =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../collector/tests/fake_nvml/libnvidia-ml.c");
    let library = dir.join("libnvidia-ml.so.1");
    let status = Command::new("gcc")
        .args(["-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o"])
        .arg(&library)
        .arg(&source)
        .status()
        .expect("gcc builds the stand-in NVML");
    assert!(status.success());
    library
}

/// The stand-in's state for host `name` at `elapsed_ms`: two GPUs (limit 700 W, settable
/// 200–700 W) drawing 300 W each, their energy counters advancing with time, and process 4242 of
/// job `train-capped` on GPU 0.
fn nvml_state(name: &str, elapsed_ms: u64) -> String {
    let gpu = |uuid: String| {
        format!(
            "gpu|NVIDIA H100 80GB HBM3|{uuid}|{}|300000|700000|200000|700000|0\n",
            1_000 + elapsed_ms * 300
        )
    };
    gpu(format!("GPU-{name}-0"))
        + &gpu(format!("GPU-{name}-1"))
        + &format!("proc|0|4242|90|{elapsed_ms}\n")
}

/// A host: its stand-in NVML, and the process of its job.
fn host_dir(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    let process = dir.join("proc/4242");
    std::fs::create_dir_all(&process).unwrap();
    std::fs::write(process.join("environ"), "FOOTPRINT_JOB=train-capped\0").unwrap();
    std::fs::write(process.join("cmdline"), "python\0train.py\0").unwrap();
    std::fs::write(process.join("cgroup"), "0::/\n").unwrap();
    build_fake_nvml(&dir);
    std::fs::write(dir.join("nvml-state"), nvml_state(name, 0)).unwrap();
    dir
}

/// Keeps host `name`'s energy counters running until the returned flag is set.
fn run_counters(dir: &Path, name: &str) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (flag, dir, name) = (stop.clone(), dir.to_path_buf(), name.to_owned());
    std::thread::spawn(move || {
        let started = Instant::now();
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            let state = nvml_state(&name, started.elapsed().as_millis() as u64);
            // Written aside and renamed, so the stand-in never reads half a file.
            std::fs::write(dir.join("nvml-state.new"), state).unwrap();
            std::fs::rename(dir.join("nvml-state.new"), dir.join("nvml-state")).unwrap();
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    stop
}

fn start_collector(dir: &Path, name: &str, grpc: &str) -> Running {
    let config = dir.join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "collector_id = \"{name}\"\nhost = \"{name}\"\naggregator = \"http://{grpc}\"\n\
             sample_interval_ms = 500\nsamples_per_batch = 1\nflush_timeout_s = 5\n\
             spool_dir = {:?}\n[[sources]]\ntype = \"nvml\"\nlibrary = {:?}\nproc_root = {:?}\n",
            dir.join("spool"),
            dir.join("libnvidia-ml.so.1"),
            dir.join("proc")
        ),
    )
    .unwrap();
    Running(
        Command::new(env!("CARGO_BIN_EXE_footprint-collector"))
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// The limit NVML enforces on `uuid` now, W (700 until one was set).
fn enforced_w(dir: &Path, uuid: &str) -> u32 {
    std::fs::read_to_string(dir.join("nvml-limits"))
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                let (id, mw) = line.split_once('|')?;
                (id == uuid).then(|| mw.parse::<u32>().ok()).flatten()
            })
        })
        .map_or(700, |mw| mw / 1_000)
}

fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("");
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

/// Waits until `done` holds (polling), or fails saying what was awaited.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The recorded cap changes of `device` on `collector`, as (outcome, to_w).
fn records(http_addr: &str, collector: &str, device: &str) -> Vec<(String, u64)> {
    let (_, caps) = http(http_addr, "GET", "/api/v1/grid/caps", "");
    caps.as_array()
        .unwrap()
        .iter()
        .filter(|c| c["collector"] == collector && c["device"] == device)
        .map(|c| {
            (
                c["outcome"].as_str().unwrap().to_owned(),
                c["to_w"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// An aggregator process with `grid` as its `[grid]` table, on free loopback ports; returns it
/// with its gRPC and HTTP addresses.
fn start_aggregator(root: &Path, grid: &str) -> (Running, String, String) {
    let config = root.join("aggregator.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\ngrpc_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\n[grid]\n{grid}",
            root.join("ledger")
        ),
    )
    .unwrap();
    let mut aggregator = Running(
        Command::new(env!("CARGO_BIN_EXE_footprint-aggregator"))
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(aggregator.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addresses: serde_json::Value = serde_json::from_str(&line).unwrap();
    let grpc = addresses["grpc"].as_str().unwrap().to_owned();
    let web = addresses["http"].as_str().unwrap().to_owned();
    (aggregator, grpc, web)
}

#[test]
fn caps_reach_the_gpus_and_always_come_back_off() {
    let root = tempfile::tempdir().unwrap();
    let (mut aggregator, grpc, web) = start_aggregator(root.path(), "");

    let (a, b) = (host_dir(root.path(), "a"), host_dir(root.path(), "b"));
    let counters = run_counters(&a, "a");
    let _collector_a = start_collector(&a, "a", &grpc);
    let mut collector_b = start_collector(&b, "b", &grpc);
    let cap = |collector: &str, device: &str, watts: u32, lease_s: u32| {
        let body = serde_json::json!({"collector": collector, "device": device, "watts": watts,
                                      "lease_s": lease_s, "reason": "test peak"});
        http(&web, "POST", "/api/v1/grid/caps", &body.to_string())
    };
    // Both collectors connected.
    eventually("both collectors to connect", || {
        cap("a", "gpu0", 400, 600).0 == 202 && cap("b", "gpu0", 150, 600).0 == 202
    });

    // Set, within range (150 W clamped to b's floor of 200 W), acknowledged and recorded.
    eventually("a's gpu0 capped", || enforced_w(&a, "GPU-a-0") == 400);
    eventually("b's gpu0 capped", || enforced_w(&b, "GPU-b-0") == 200);
    eventually("the caps recorded", || {
        records(&web, "a", "gpu0").contains(&("applied".into(), 400))
            && records(&web, "b", "gpu0").contains(&("applied".into(), 200))
    });
    let (_, caps) = http(&web, "GET", "/api/v1/grid/caps", "");
    let clamped = caps
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["collector"] == "b")
        .unwrap();
    assert!(
        clamped["reason"]
            .as_str()
            .unwrap()
            .contains("settable range"),
        "{clamped}"
    );
    assert_eq!(clamped["from_w"], 700);

    // The job on a's gpu0 shows the time it was capped, and its energy and carbon in the
    // windows of that span, once windows are built there.
    let mut job = serde_json::Value::Null;
    eventually("the capped job's windows", || {
        job = http(&web, "GET", "/api/v1/jobs/train-capped/caps", "").1;
        job["windows"].as_u64().unwrap_or(0) >= 1 && job["it_energy_mj"].as_i64().unwrap_or(0) > 0
    });
    assert!(job["capped_gpu_seconds"].as_f64().unwrap() > 0.0, "{job}");
    // The job runs on both hosts (a process on each gpu0): a's span at 400 W, b's at 200 W.
    let span_on = |job: &serde_json::Value, host: &str| {
        job["spans"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["host"] == host)
            .cloned()
            .unwrap()
    };
    assert_eq!(span_on(&job, "a")["device"], "gpu0");
    assert_eq!(span_on(&job, "a")["watts"], 400);
    assert_eq!(span_on(&job, "b")["watts"], 200);
    assert!(span_on(&job, "a")["to"].is_null(), "still capped: {job}");
    assert!(job["energy_mj"].as_i64().unwrap() >= job["it_energy_mj"].as_i64().unwrap());
    assert_eq!(
        http(&web, "GET", "/api/v1/jobs/no-such-job/caps", "").0,
        404
    );

    // Released: the previous limit is back, and recorded.
    let release = serde_json::json!({"collector": "a", "device": "gpu0", "release": true});
    assert_eq!(
        http(&web, "POST", "/api/v1/grid/caps", &release.to_string()).0,
        202
    );
    eventually("a's gpu0 restored", || enforced_w(&a, "GPU-a-0") == 700);
    eventually("the restore recorded", || {
        records(&web, "a", "gpu0").contains(&("restored".into(), 700))
    });
    let (_, job) = http(&web, "GET", "/api/v1/jobs/train-capped/caps", "");
    assert!(
        span_on(&job, "a")["to"].is_string(),
        "the span ended: {job}"
    );
    counters.store(true, std::sync::atomic::Ordering::Relaxed);

    // A short lease runs out on its own.
    assert_eq!(cap("a", "gpu1", 300, 2).0, 202);
    eventually("a's gpu1 capped", || enforced_w(&a, "GPU-a-1") == 300);
    eventually("a's gpu1 restored at the lease's end", || {
        enforced_w(&a, "GPU-a-1") == 700
    });

    // Killed while capping: the next start restores first, and says so.
    assert_eq!(cap("b", "gpu1", 350, 600).0, 202);
    eventually("b's gpu1 capped", || enforced_w(&b, "GPU-b-1") == 350);
    collector_b.0.kill().unwrap();
    collector_b.0.wait().unwrap();
    assert_eq!(
        enforced_w(&b, "GPU-b-1"),
        350,
        "a SIGKILL restores nothing by itself"
    );
    let _collector_b = start_collector(&b, "b", &grpc);
    eventually("b's GPUs restored at its start", || {
        enforced_w(&b, "GPU-b-1") == 700 && enforced_w(&b, "GPU-b-0") == 700
    });
    eventually("the restore at start recorded", || {
        let (_, caps) = http(&web, "GET", "/api/v1/grid/caps", "");
        caps.as_array().unwrap().iter().any(|c| {
            c["collector"] == "b"
                && c["outcome"] == "restored"
                && c["reason"].as_str().unwrap().contains("previous run")
        })
    });

    // Without permission: a dry run, recorded as such, nothing changed.
    std::fs::write(a.join("nvml-readonly"), "").unwrap();
    assert_eq!(cap("a", "gpu1", 300, 600).0, 202);
    eventually("the dry run recorded", || {
        records(&web, "a", "gpu1")
            .iter()
            .any(|(o, _)| o == "dry_run")
    });
    assert_eq!(enforced_w(&a, "GPU-a-1"), 700);

    // Refused before anything is sent: no such collector, a cap without a lease.
    assert_eq!(cap("nobody", "gpu0", 300, 60).0, 404);
    assert_eq!(cap("a", "gpu0", 300, 0).0, 400);

    // The aggregator SIGKILLed while a cap holds: nobody renews it, and its lease ends it.
    std::fs::remove_file(a.join("nvml-readonly")).unwrap();
    assert_eq!(cap("a", "gpu0", 450, 3).0, 202);
    eventually("a's gpu0 capped again", || enforced_w(&a, "GPU-a-0") == 450);
    aggregator.0.kill().unwrap();
    aggregator.0.wait().unwrap();
    let killed = Instant::now();
    eventually("a's gpu0 restored with no aggregator", || {
        enforced_w(&a, "GPU-a-0") == 700
    });
    assert!(
        killed.elapsed() < Duration::from_secs(10),
        "{:?}",
        killed.elapsed()
    );
}

/// With `grid.cap_gpus` on, an event's capacity limit becomes caps by itself: the budget left for
/// the GPUs jobs hold, shared among them, renewed under a lease; cancelling the event releases
/// them.
#[test]
fn an_events_capacity_limit_caps_the_gpus_jobs_hold_until_it_ends() {
    let root = tempfile::tempdir().unwrap();
    let (_aggregator, grpc, web) = start_aggregator(
        root.path(),
        "cap_gpus = true\ncap_interval_s = 1\ncap_lease_s = 5\n",
    );
    let host = host_dir(root.path(), "p");
    let counters = run_counters(&host, "p");
    let _collector = start_collector(&host, "p", &grpc);
    // The site's draw is known once its windows are built: 600 W, both GPUs at 300 W.
    let mut last = serde_json::Value::Null;
    let started = Instant::now();
    while !last["facility_power_kw"]
        .as_f64()
        .is_some_and(|kw| kw > 0.5)
    {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "no site draw: {last}"
        );
        std::thread::sleep(Duration::from_millis(200));
        last = http(&web, "GET", "/api/v1/grid/signal?location=none", "").1;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let start = footprint_core::time::format_rfc3339(footprint_core::UnixNanos(
        now.as_nanos() as i64 - 60_000_000_000,
    ));
    // 0.5 kW for the site: the rest of the site (gpu1, held by no job) draws about 0.3 kW,
    // which leaves gpu0 (held by the job) about 0.2 kW — its minimum, or a little above it as
    // the measured draws wander.
    let event = serde_json::json!({
        "id": "limit-1", "programID": "dr",
        "intervalPeriod": {"start": start, "duration": "PT1H"},
        "intervals": [{"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [0.5]}]}]
    });
    assert_eq!(
        http(&web, "POST", "/api/v1/grid/events", &event.to_string()).0,
        201
    );
    eventually("gpu0 capped by the plan", || {
        enforced_w(&host, "GPU-p-0") < 700
    });
    let capped_w = enforced_w(&host, "GPU-p-0");
    assert!((200..700).contains(&capped_w), "{capped_w}");
    assert_eq!(
        enforced_w(&host, "GPU-p-1"),
        700,
        "a GPU no job holds is not capped"
    );
    let (_, caps) = http(&web, "GET", "/api/v1/grid/caps", "");
    let applied = caps
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["outcome"] == "applied")
        .unwrap();
    assert!(
        applied["reason"]
            .as_str()
            .unwrap()
            .contains("event limit-1"),
        "{applied}"
    );
    // Renewed while the event holds: still capped after more than a lease.
    std::thread::sleep(Duration::from_secs(6));
    assert!(
        enforced_w(&host, "GPU-p-0") < 700,
        "still capped after a lease"
    );
    // The event cancelled: the plan releases the cap.
    assert_eq!(
        http(&web, "DELETE", "/api/v1/grid/events/limit-1", "").0,
        204
    );
    eventually("gpu0 released", || enforced_w(&host, "GPU-p-0") == 700);
    counters.store(true, std::sync::atomic::Ordering::Relaxed);
}
