//! What the collector costs its host: CPU and resident memory of the real `footprint-collector`
//! process sampling every second 8 GPUs (NVML, through the stand-in library), 2 RAPL packages
//! with their DRAM (a powercap fixture tree), one PDU (snmpsim serving the AP8641 recording)
//! and one Modbus water meter (pymodbus), streaming to a real `footprint-aggregator` with a
//! durable spool. Goal: at most 0.5 % of one core and 20 MiB resident.
//!
//! `cargo bench -p footprint-cli --bench collector_cost` (FOOTPRINT_COST_SECONDS sets the
//! measured span, default 60). Prints one JSON line.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../collector/tests/peers/mod.rs"]
mod peers;

use std::path::Path;

use footprint_collector::process_usage::{cpu_ns, status_kib};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rapl_fixture(root: &Path) {
    for package in 0..2u32 {
        let zone = root.join(format!("powercap/intel-rapl:{package}"));
        let dram = zone.join(format!("intel-rapl:{package}:0"));
        std::fs::create_dir_all(&dram).unwrap();
        for (dir, name) in [
            (&zone, format!("package-{package}")),
            (&dram, "dram".into()),
        ] {
            std::fs::write(dir.join("name"), format!("{name}\n")).unwrap();
            std::fs::write(dir.join("energy_uj"), "123456789\n").unwrap();
            std::fs::write(dir.join("max_energy_range_uj"), "262143328850\n").unwrap();
        }
        for core in 0..4 {
            let cpu = package * 4 + core;
            let topology = root.join(format!("cpu/cpu{cpu}/topology"));
            std::fs::create_dir_all(&topology).unwrap();
            std::fs::write(topology.join("physical_package_id"), format!("{package}\n")).unwrap();
        }
    }
}

fn nvml_fixture(dir: &Path) -> std::path::PathBuf {
    let library = peers::build_fake_nvml(&dir.join("nvml"));
    let mut state = String::new();
    for gpu in 0..8 {
        state += &format!(
            "gpu|NVIDIA H100 80GB HBM3|GPU-{gpu:04}|{}|350000|700000|200000|700000|0\n",
            1_000_000 + gpu
        );
        // One training process per GPU, for the job lookup and the busy-time path.
        state += &format!("proc|{gpu}|{}|80|{}\n", 4_000 + gpu, 1 + gpu);
        let process = dir.join(format!("proc/{}", 4_000 + gpu));
        std::fs::create_dir_all(&process).unwrap();
        std::fs::write(
            process.join("environ"),
            format!("FOOTPRINT_JOB=train-{gpu}\0FOOTPRINT_JOB_KIND=training\0"),
        )
        .unwrap();
        std::fs::write(process.join("cmdline"), "python\0train.py\0").unwrap();
        std::fs::write(process.join("cgroup"), "0::/\n").unwrap();
    }
    std::fs::write(dir.join("nvml/nvml-state"), state).unwrap();
    library
}

fn main() {
    let seconds: u64 = std::env::var("FOOTPRINT_COST_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let dir = tempfile::tempdir().unwrap();
    rapl_fixture(dir.path());
    let nvml = nvml_fixture(dir.path());
    let recording =
        std::fs::read_to_string(peers::snmpsim_recordings().join("UPS/apc-8641.snmprec")).unwrap();
    let pdu = peers::snmpsim(&[("apc-8641", recording)]);
    let meter = peers::modbus_meter(&["--litres-per-second", "2"]);

    let grpc = peers::free_port(false);
    let http = peers::free_port(false);
    let aggregator_config = dir.path().join("aggregator.toml");
    std::fs::write(
        &aggregator_config,
        format!(
            "grpc_listen = '127.0.0.1:{grpc}'\nhttp_listen = '127.0.0.1:{http}'\ndata_dir = '{}'\n",
            dir.path().join("ledger").display()
        ),
    )
    .unwrap();
    let _aggregator = Killed(
        Command::new(env!("CARGO_BIN_EXE_footprint-aggregator"))
            .arg("--config")
            .arg(&aggregator_config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let collector_config = dir.path().join("collector.toml");
    std::fs::write(
        &collector_config,
        format!(
            r#"host = "bench-host"
aggregator = "http://127.0.0.1:{grpc}"
sample_interval_ms = 1000
spool_dir = "{spool}"

[[sources]]
type = "nvml"
library = "{nvml}"
proc_root = "{proc}"

[[sources]]
type = "rapl"
root = "{powercap}"
cpu_root = "{cpu}"

[[sources]]
type = "snmp"
agent = "127.0.0.1:{snmp}"
community = "apc-8641"
profile = "apc_rpdu2"
host_outlets = [1]

[[sources]]
type = "modbus"
address = "127.0.0.1:{modbus}"
[[sources.registers]]
name = "water"
kind = "site_water"
address = 0
type = "u32"
unit = "L"
"#,
            spool = dir.path().join("spool").display(),
            nvml = nvml.display(),
            proc = dir.path().join("proc").display(),
            powercap = dir.path().join("powercap").display(),
            cpu = dir.path().join("cpu").display(),
            snmp = pdu.port,
            modbus = meter.port,
        ),
    )
    .unwrap();
    let collector = Killed(
        Command::new(env!("CARGO_BIN_EXE_footprint-collector"))
            .arg("--config")
            .arg(&collector_config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let pid = collector.0.id();
    // Warm up: connect, announce, first batches acknowledged.
    std::thread::sleep(Duration::from_secs(5));
    let cpu_seconds = |pid| cpu_ns(pid).expect("the collector is running") as f64 / 1e9;
    let kib = |field| status_kib(pid, field).expect("the collector is running");
    let cpu_start = cpu_seconds(pid);
    let started = Instant::now();
    let mut peak_rss_kib = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_secs(1));
        peak_rss_kib = peak_rss_kib.max(kib("VmRSS"));
        eprint!("\r{:>3}/{seconds} s", started.elapsed().as_secs());
    }
    eprintln!();
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu_start;
    let percent_of_core = 100.0 * cpu / wall;
    let hwm_kib = kib("VmHWM");
    // The readings must have been accepted, or the cost would be of a collector failing.
    let metrics = http_get(http, "/metrics");
    let counter = |name: &str| -> u64 {
        metrics
            .lines()
            .filter(|line| line.starts_with(name))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let stored = counter("footprint_aggregator_readings_stored_total");
    let rejected = counter("footprint_aggregator_readings_rejected_total");
    assert!(
        stored > 0 && rejected == 0,
        "stored {stored}, rejected {rejected}"
    );
    println!(
        "{{\"gpus\": 8, \"rapl_packages\": 2, \"pdus\": 1, \"modbus_meters\": 1, \"interval_s\": 1, \
\"measured_s\": {wall:.1}, \"cpu_s\": {cpu:.2}, \"percent_of_one_core\": {percent_of_core:.3}, \
\"rss_mib_peak\": {:.1}, \"rss_mib_high_water\": {:.1}, \"readings_stored\": {stored}, \
\"goal\": \"<= 0.5 % of a core, <= 20 MiB\", \"met\": {}}}",
        peak_rss_kib as f64 / 1024.0,
        hwm_kib as f64 / 1024.0,
        percent_of_core <= 0.5 && hwm_kib <= 20 * 1024
    );
}

fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    body
}
