//! The InfluxDB 2 exporter against a real VictoriaMetrics (Debian `victoria-metrics`, which
//! takes InfluxDB 2's write API) on loopback: the settled hours written while the database was
//! down, then refusing the token (401, the reason in the log and counted), arrive once it takes
//! them; the values and timestamps read back equal the ledger's exactly; restarting the database
//! and the aggregator sends nothing twice. (VictoriaMetrics answers 204 once it has the points in
//! memory; it is stopped with SIGTERM, as its service is, so that it flushes them.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn http(addr: &str, method: &str, path: &str) -> (u16, String) {
    common::http(addr, method, path, "")
}

fn victoria_metrics(storage: &Path, addr: &str, auth: bool) -> common::Running {
    let mut command = Command::new("victoria-metrics");
    command
        .arg(format!("-storageDataPath={}", storage.display()))
        .arg(format!("-httpListenAddr={addr}"))
        .arg("-retentionPeriod=100y");
    if auth {
        command.args(["-httpAuth.username=grafana", "-httpAuth.password=secret"]);
    }
    let running = common::Running(
        command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("victoria-metrics (Debian package victoria-metrics)"),
    );
    wait_for("VictoriaMetrics to listen", || {
        http(addr, "GET", "/health").0 != 0
    });
    running
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "waited too long for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn aggregator(data: &Path, influx: &str, log: &Path) -> (common::Running, String) {
    let token = data.join("influx-token");
    std::fs::write(&token, "not-a-real-token\n").unwrap();
    let settings: toml::Table = toml::from_str(&format!(
        "url = \"http://{influx}\"\norg = \"footprint\"\nbucket = \"demo\"\nsite = \"demo\"\n\
         interval_s = 1\ntoken_file = {:?}\n",
        token.to_str().unwrap()
    ))
    .unwrap();
    common::demo_aggregator(
        Path::new(env!("CARGO_BIN_EXE_footprint-aggregator")),
        data,
        "influxdb",
        settings,
        Some(log),
    )
}

fn failures(addr: &str) -> u64 {
    let (_, metrics) = http(addr, "GET", "/metrics");
    metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("footprint_aggregator_exports_failed_total{reason=\"influxdb\"} ")
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Every series of `metric` in VictoriaMetrics: (values, timestamps in ms).
fn exported(vm: &str, metric: &str) -> Vec<(Vec<f64>, Vec<i64>)> {
    http(vm, "POST", "/internal/force_flush");
    let (_, body) = http(vm, "GET", &format!("/api/v1/export?match[]={metric}"));
    body.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let series: serde_json::Value = serde_json::from_str(line).unwrap();
            let values = series["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            let times = series["timestamps"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_i64().unwrap())
                .collect();
            (values, times)
        })
        .collect()
}

/// A demo of `hours` simulated hours into `data`, as fast as it goes.
fn demo(data: &Path, hours: &str) {
    let output = Command::new(env!("CARGO_BIN_EXE_footprint"))
        .args([
            "demo",
            "--exit",
            "--hours",
            hours,
            "--speed",
            "1000000",
            "--data-dir",
        ])
        .arg(data)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
}

fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

#[test]
fn settled_hours_reach_victoria_metrics_exactly_once_across_outages() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    demo(&data, "12");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("summary.json")).unwrap()).unwrap();
    let vm = free_addr();
    let storage = dir.path().join("vm");
    let log = dir.path().join("aggregator.log");

    // The database is down: each try fails, is counted, and nothing moves.
    let (running, addr) = aggregator(&data, &vm, &log);
    wait_for("a failed export", || failures(&addr) >= 2);

    // It refuses the token: 401, said in words.
    let refusing = victoria_metrics(&storage, &vm, true);
    let before = failures(&addr);
    wait_for("a refused token", || {
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("the token was refused")
    });
    assert!(failures(&addr) > before);
    drop(refusing);

    // It takes them: every settled hour arrives.
    let vm_running = victoria_metrics(&storage, &vm, false);
    wait_for("12 settled hours in VictoriaMetrics", || {
        exported(&vm, "footprint_site_facility_mj")
            .first()
            .is_some_and(|(values, _)| values.len() == 12)
    });

    // Values and timestamps equal the ledger's, exactly.
    let (_, facility) = http(&addr, "GET", "/api/v1/facility?step_s=3600");
    let facility: serde_json::Value = serde_json::from_str(&facility).unwrap();
    let hours: Vec<(i64, f64)> = facility["windows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["start_ns"].as_i64().unwrap() / 1_000_000,
                h["energy_mj"]["site"].as_i64().unwrap() as f64,
            )
        })
        .collect();
    let series = exported(&vm, "footprint_site_facility_mj");
    assert_eq!(series.len(), 1);
    let (values, times) = &series[0];
    let theirs: Vec<(i64, f64)> = times.iter().copied().zip(values.iter().copied()).collect();
    assert_eq!(theirs, hours);
    let job_total = |metric: &str| -> f64 {
        exported(&vm, metric)
            .iter()
            .flat_map(|(values, _)| values.iter())
            .sum()
    };
    let summed = |key: &str| -> f64 {
        summary["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j[key].as_i64().unwrap() as f64)
            .sum()
    };
    let gpu = job_total("footprint_job_gpu_mj");
    assert_eq!(gpu, summed("gpu_energy_mj"));
    assert_eq!(
        job_total("footprint_job_co2e_location_mg"),
        summed("co2e_location_mg")
    );

    // The database (stopped as its service would be, SIGTERM, so it flushes) and the
    // aggregator restarted: nothing is sent again.
    drop(running);
    let mut vm_running = vm_running;
    let status = Command::new("kill")
        .args(["-TERM", &vm_running.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    vm_running.0.wait().unwrap();
    let _vm_running = victoria_metrics(&storage, &vm, false);
    let (_running, addr) = aggregator(&data, &vm, &log);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(failures(&addr), 0);
    let series = exported(&vm, "footprint_site_facility_mj");
    assert_eq!(series[0].0.len(), 12, "hours doubled");
    assert_eq!(job_total("footprint_job_gpu_mj"), gpu);
}

/// `GET https://{addr}{path}` with curl, trusting `ca`: the body.
fn https_get(addr: &str, path: &str, ca: &Path) -> String {
    let output = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "20", "--cacert"])
        .arg(ca)
        .arg(format!("https://{addr}{path}"))
        .output()
        .expect("curl");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn settled_hours_reach_victoria_metrics_over_tls_and_an_untrusted_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    demo(&data, "3");
    // VictoriaMetrics serves a certificate for 127.0.0.1 from a CA of `footprint certs init`.
    let pki = dir.path().join("pki");
    let other = dir.path().join("other");
    for out in [&pki, &other] {
        let made = Command::new(env!("CARGO_BIN_EXE_footprint"))
            .args([
                "certs",
                "init",
                "--hosts",
                "unused",
                "--aggregator-names",
                "127.0.0.1",
            ])
            .arg("--out")
            .arg(out)
            .output()
            .unwrap();
        assert!(made.status.success(), "{made:?}");
    }
    let vm = free_addr();
    let _vm = common::Running(
        Command::new("victoria-metrics")
            .arg(format!(
                "-storageDataPath={}",
                dir.path().join("vm").display()
            ))
            .arg(format!("-httpListenAddr={vm}"))
            .arg("-retentionPeriod=100y")
            .arg("-tls")
            .arg(format!(
                "-tlsCertFile={}",
                pki.join("aggregator.pem").display()
            ))
            .arg(format!(
                "-tlsKeyFile={}",
                pki.join("aggregator-key.pem").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("victoria-metrics (Debian package victoria-metrics)"),
    );
    let ca = pki.join("ca.pem");
    wait_for("VictoriaMetrics to listen over TLS", || {
        https_get(&vm, "/health", &ca).contains("OK")
    });

    let start = |ca_file: &Path, log: &Path| {
        let settings: toml::Table = toml::from_str(&format!(
            "url = \"https://{vm}\"\nca_file = {:?}\norg = \"footprint\"\nbucket = \"demo\"\n\
             interval_s = 1\n",
            ca_file.to_str().unwrap()
        ))
        .unwrap();
        common::demo_aggregator(
            Path::new(env!("CARGO_BIN_EXE_footprint-aggregator")),
            &data,
            "influxdb",
            settings,
            Some(log),
        )
    };
    // Trusting another CA: every try fails at the handshake, is counted, and nothing is sent.
    let log = dir.path().join("untrusting.log");
    let (untrusting, addr) = start(&other.join("ca.pem"), &log);
    wait_for("a refused certificate", || failures(&addr) >= 2);
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(said.contains("TLS with"), "{said}");
    drop(untrusting);

    let log = dir.path().join("trusting.log");
    let (_trusting, _) = start(&ca, &log);
    wait_for("3 settled hours in VictoriaMetrics over TLS", || {
        https_get(&vm, "/internal/force_flush", &ca);
        https_get(
            &vm,
            "/api/v1/export?match[]=footprint_site_facility_mj",
            &ca,
        )
        .lines()
        .next()
        .and_then(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .is_some_and(|series| series["values"].as_array().is_some_and(|v| v.len() == 3))
    });
}
