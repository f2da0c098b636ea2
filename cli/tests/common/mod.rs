//! What the end-to-end tests share: the trace integrated independently of the collector's code,
//! the jobs they replay, and collector configs.

// Not every test file uses every helper.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod proxy;

use std::path::Path;
use std::process::Child;

pub const SECOND_NS: i64 = 1_000_000_000;
/// 2024-11-04T00:00:00Z
pub const T0: i64 = 1_730_678_400 * SECOND_NS;
pub const HOURS: i64 = 2;

/// Kills the process when the test ends, whatever happens.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Hourly power of a trace host in mW, parsed here with nothing from the collector crate.
pub fn trace_rows(host: &str) -> Vec<(String, u128)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../collector/traces/biohpc_gpu_power_2024_nov_dec.csv");
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            (fields[1] == host).then(|| {
                (
                    fields[0].to_owned(),
                    (fields[2].parse::<f64>().unwrap() * 1000.0).round() as u128,
                )
            })
        })
        .collect()
}

/// A job in the test's own terms.
pub struct PlannedJob {
    pub id: &'static str,
    pub start_s: i64,
    pub end_s: i64,
    pub trace_host: &'static str,
    pub trace_start: &'static str,
}

/// Energy in mJ of a GPU over `[T0 + from_s, T0 + to_s)`: the job's trace hours while it runs, the
/// idle power otherwise. Every duration is whole seconds, so mW × s is exact in mJ.
pub fn gpu_energy_mj(job: Option<&PlannedJob>, idle_mw: u128, from_s: i64, to_s: i64) -> u128 {
    let rows = job
        .map(|job| trace_rows(job.trace_host))
        .unwrap_or_default();
    let first = job.map_or(0, |job| {
        rows.iter()
            .position(|(label, _)| label == job.trace_start)
            .unwrap()
    });
    let mut energy = 0u128;
    for second in from_s..to_s {
        energy += match job {
            Some(job) if (job.start_s..job.end_s).contains(&second) => {
                rows[first + ((second - job.start_s) / 3600) as usize].1
            }
            _ => idle_mw,
        };
    }
    energy
}

pub fn collector_config(
    host: &str,
    endpoint: &str,
    extra: &str,
    clock_extra: &str,
    speed: f64,
    body: &str,
) -> String {
    format!(
        r#"
host = "{host}"
aggregator = "{endpoint}"
sample_interval_ms = 5000
samples_per_batch = 6
flush_timeout_s = 120
{extra}

[clock]
start = "2024-11-04T00:00:00Z"
speed = {speed:.1}
stop_at = "2024-11-04T02:00:00Z"
{clock_extra}

[[sources]]
type = "replay"
cpus = 8
cpu_packages = 2
gpu_idle_w = 50.0
cpu_idle_w = 40.0
cpu_core_w = 5.0
dram_idle_w = 4.0
dram_core_w = 0.5
# Small and starting just below the maximum, so the RAPL counters wrap many times.
rapl_counter_max_mj = 20000000
counter_start_mj = 19990000
{body}
"#
    )
}

pub const TRAIN: PlannedJob = PlannedJob {
    id: "dist-train",
    start_s: 600,
    end_s: 6000,
    trace_host: "cbsugpu08",
    trace_start: "2024-12-02T00:00:00",
};
pub const INFER: PlannedJob = PlannedJob {
    id: "infer-a",
    start_s: 0,
    end_s: 7200,
    trace_host: "cbsugpu05",
    trace_start: "2024-11-20T06:00:00",
};

pub fn job_table(job: &PlannedJob, gpus: &str, cpus: &str, kind: &str) -> String {
    let at = |s: i64| {
        let minutes = s / 60;
        format!("2024-11-04T{:02}:{:02}:00Z", minutes / 60, minutes % 60)
    };
    format!(
        "[[sources.jobs]]\nid = \"{}\"\nkind = \"{kind}\"\ngpus = {gpus}\ncpus = \"{cpus}\"\nstart = \"{}\"\nend = \"{}\"\ntrace_host = \"{}\"\ntrace_start = \"{}\"\n",
        job.id,
        at(job.start_s),
        at(job.end_s),
        job.trace_host,
        job.trace_start
    )
}

/// Energy in mJ of a RAPL package/DRAM meter over `[T0 + from_s, T0 + to_s)`:
/// `idle + per_core × held cores`, integrated.
pub fn cpu_energy_mj(
    idle_mw: u128,
    core_mw: u128,
    holdings: &[(i64, i64, u128)],
    from_s: i64,
    to_s: i64,
) -> u128 {
    (from_s..to_s)
        .map(|second| {
            idle_mw
                + core_mw
                    * holdings
                        .iter()
                        .filter(|(s, e, _)| (*s..*e).contains(&second))
                        .map(|(_, _, n)| n)
                        .sum::<u128>()
        })
        .sum()
}

/// `footprint-aggregator --config CONFIG` with its stderr to `stderr`; the addresses it printed
/// (`{"grpc": …, "http": …}`).
pub fn start_aggregator(
    binary: &Path,
    config: &Path,
    stderr: std::process::Stdio,
) -> (Running, serde_json::Value) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(binary)
        .arg("--config")
        .arg(config)
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addresses = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    (Running(child), addresses)
}

/// The demo's aggregator (the config the demo wrote in `data/config/aggregator.toml`) started
/// again on its ledger with `[section]` set to `settings`; its stderr to `stderr` (null when
/// `None`); its HTTP address.
pub fn demo_aggregator(
    binary: &Path,
    data: &Path,
    section: &str,
    settings: toml::Table,
    stderr: Option<&Path>,
) -> (Running, String) {
    let text = std::fs::read_to_string(data.join("config/aggregator.toml")).unwrap();
    let mut config: toml::Table = text.parse().unwrap();
    config.insert(section.into(), toml::Value::Table(settings));
    let path = data.join(format!("config/{section}-test.toml"));
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    let stderr = stderr.map_or_else(std::process::Stdio::null, |file| {
        std::fs::File::create(file).unwrap().into()
    });
    let (running, addresses) = start_aggregator(binary, &path, stderr);
    (running, addresses["http"].as_str().unwrap().to_owned())
}

/// An HTTP/1.0 request (no chunked answers): its status (0 when nothing answers) and body.
pub fn http(addr: &str, method: &str, path: &str, headers: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return (0, String::new());
    };
    let request =
        format!("{method} {path} HTTP/1.0\r\nHost: x\r\nContent-Length: 0\r\n{headers}\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}
