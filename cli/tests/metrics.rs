//! `/metrics` of an aggregator holding the demo's ledger: `promtool check metrics` (Debian
//! `prometheus`) passes on it; the ledger's figures are there with their units; job series are
//! bounded by `metrics.max_job_series` and retire `metrics.job_series_retention_s` after a job
//! ends. (The dashboards are checked against a longer demo's `/metrics`, which has a forecast:
//! `cli/tests/forecast.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

fn demo(dir: &Path) {
    let output = Command::new(env!("CARGO_BIN_EXE_footprint"))
        .args(["demo", "--hours", "12", "--speed", "1000000", "--exit"])
        .arg("--data-dir")
        .arg(dir)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
}

/// The demo's aggregator started again on its ledger, with `[metrics]` set as given; its HTTP
/// address.
fn aggregator(dir: &Path, retention_s: u64, max_jobs: usize) -> (common::Running, String) {
    let settings: toml::Table = toml::from_str(&format!(
        "job_series_retention_s = {retention_s}\nmax_job_series = {max_jobs}\n"
    ))
    .unwrap();
    common::demo_aggregator(
        Path::new(env!("CARGO_BIN_EXE_footprint-aggregator")),
        dir,
        "metrics",
        settings,
        None,
    )
}

fn scrape(addr: &str, accept: &str) -> String {
    let (status, body) = common::http(addr, "GET", "/metrics", &format!("Accept: {accept}\r\n"));
    assert_eq!(status, 200);
    body
}

fn promtool(exposition: &str) -> std::process::Output {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn samples<'a>(exposition: &'a str, family: &str) -> Vec<&'a str> {
    exposition
        .lines()
        .filter(|line| {
            line.strip_prefix(family)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .collect()
}

fn value(sample: &str) -> f64 {
    sample.rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn the_exposition_passes_promtool_and_bounds_job_series() {
    let dir = tempfile::tempdir().unwrap();
    demo(dir.path());
    let (_aggregator, addr) = aggregator(dir.path(), 365 * 86_400, 1_000);
    let text = scrape(&addr, "*/*");
    let checked = promtool(&text);
    assert!(
        checked.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    // Prometheus asks for OpenMetrics and gets it, ending in # EOF, with units.
    let openmetrics = scrape(
        &addr,
        "application/openmetrics-text;version=1.0.0,*/*;q=0.1",
    );
    assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");
    assert!(openmetrics.contains("# UNIT footprint_facility_energy_joules joules"));

    // The ledger's figures, with base units, every family described.
    for family in [
        "footprint_facility_power_watts",
        "footprint_pue_ratio",
        "footprint_wue_litres_per_kilowatt_hour",
        "footprint_facility_energy_joules_total",
        "footprint_water_litres_total",
        "footprint_carbon_grams_total",
        "footprint_grid_carbon_intensity_grams_per_kilowatt_hour",
        "footprint_host_power_watts",
        "footprint_job_energy_joules_total",
        "footprint_job_water_litres_total",
        "footprint_job_carbon_grams_total",
        "footprint_collector_last_batch_age_seconds",
        "footprint_aggregator_ack_latency_seconds",
    ] {
        assert!(
            text.contains(&format!("# HELP {family} ")),
            "no HELP for {family}"
        );
    }
    let pue = value(samples(&text, "footprint_pue_ratio")[0]);
    assert!((1.0..3.0).contains(&pue), "{pue}");
    // Hosts carry their hall and rack, so halls and racks are a sum by.
    assert!(
        text.contains(
            "footprint_host_power_watts{host=\"gpu-node-01\",hall=\"hall-1\",rack=\"rack-01\"}"
        ),
        "{text}"
    );
    let jobs = samples(&text, "footprint_job_energy_joules_total");
    let all = jobs.len();
    assert!(all >= 3, "{jobs:?}");
    assert_eq!(value(samples(&text, "footprint_job_series")[0]), all as f64);
    assert_eq!(
        value(samples(&text, "footprint_job_series_dropped")[0]),
        0.0
    );
    drop(_aggregator);

    // Capped: two jobs' series, the rest counted as dropped.
    let (_aggregator, addr) = aggregator(dir.path(), 365 * 86_400, 2);
    let text = scrape(&addr, "*/*");
    assert_eq!(samples(&text, "footprint_job_energy_joules_total").len(), 2);
    assert_eq!(
        value(samples(&text, "footprint_job_series_dropped")[0]),
        (all - 2) as f64
    );
    // 3 series per job for carbon (location, market, embodied).
    assert_eq!(samples(&text, "footprint_job_carbon_grams_total").len(), 6);
    drop(_aggregator);

    // Retired: with no retention, only the jobs still running at the ledger's newest window.
    let (_aggregator, addr) = aggregator(dir.path(), 0, 1_000);
    let text = scrape(&addr, "*/*");
    let running = samples(&text, "footprint_job_energy_joules_total").len();
    assert!(running < all, "{running} of {all}");
    assert!(promtool(&text).status.success());
}
