//! `footprint forecast` as its users meet it: from a demo's ledger in every format (the OpenADR
//! one checked against the OpenADR 3.0.1 specification's schema), `footprint forecast backtest` on a real
//! series, and one clear error for each kind of bad input.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

const REAL_SERIES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../exporters/tests/data/gpu_power_biohpc_hourly.csv"
);

fn footprint(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_footprint"))
        .args(args)
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `scripts/check_openadr_report.py` on `file`: whether it passed, and what it printed.
fn check_openadr(file: &Path) -> (bool, String) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/check_openadr_report.py"
    );
    let output = Command::new("python3")
        .arg(script)
        .arg(file)
        .output()
        .unwrap();
    (output.status.success(), text(&output).trim().to_owned())
}

fn success(args: &[&str]) -> String {
    let output = footprint(args);
    assert!(output.status.success(), "{args:?}: {}", text(&output));
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn a_demo_ledger_gives_48_hours_of_ordered_quantiles_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("demo");
    let data = data_dir.to_str().unwrap();
    let demo = success(&[
        "demo",
        "--exit",
        "--hours",
        "100",
        "--hosts",
        "1",
        "--gpus-per-host",
        "2",
        "--speed",
        "1000000",
        "--data-dir",
        data,
    ]);
    // The demo hands over its own forecast, and says where it is.
    let line = demo
        .lines()
        .find(|l| l.starts_with("Load forecast from"))
        .unwrap();
    assert!(line.contains("forecast.json"), "{line}");
    assert!(data_dir.join("forecast.csv").exists());
    let chart = std::fs::read_to_string(data_dir.join("forecast.svg")).unwrap();
    assert!(
        chart.starts_with("<svg") && chart.contains(">now</text>"),
        "{chart}"
    );
    assert_eq!(
        success(&["forecast", "--data-dir", data, "--format", "svg"]),
        chart,
        "the demo's chart and the command's are the same forecast"
    );

    let json: serde_json::Value =
        serde_json::from_str(&success(&["forecast", "--data-dir", data])).unwrap();
    let points = json["points"].as_array().unwrap();
    assert_eq!(points.len(), 192);
    assert_eq!(json["step"], "PT15M");
    assert_eq!(json["unit"], "kW");
    assert_eq!(json["origin"], "2023-11-10T04:00:00Z");
    assert_eq!(points[0]["timestamp"], json["origin"]);
    for (i, point) in points.iter().enumerate() {
        let q = |k: &str| point[k].as_f64().unwrap();
        assert!(0.0 <= q("p10_kw") && q("p10_kw") <= q("p50_kw") && q("p50_kw") <= q("p90_kw"));
        let at = footprint_core::time::parse_rfc3339(point["timestamp"].as_str().unwrap()).unwrap();
        let origin = footprint_core::time::parse_rfc3339(json["origin"].as_str().unwrap()).unwrap();
        assert_eq!(at.0 - origin.0, i as i64 * 900_000_000_000);
    }
    // It names what it is of, its model, its training span and the inputs it could not use.
    assert!(
        json["target"].as_str().unwrap().contains("site meter"),
        "{}",
        json["target"]
    );
    assert_eq!(json["model"]["name"], "analog-quantiles");
    assert_eq!(json["training"]["from"], "2023-11-06T00:00:00Z");
    assert_eq!(json["training"]["to"], json["origin"]);
    assert_eq!(json["inputs_not_used"].as_array().unwrap().len(), 2);
    // 100 hours are too few for a backtest (origins need the model's history and 48 h after
    // them): said, with the reason.
    assert!(json["backtest"].is_null());
    let why = json["backtest_unavailable"].as_str().unwrap();
    assert!(why.contains("no origin could be forecast"), "{why}");

    let csv = success(&["forecast", "--data-dir", data, "--format", "csv"]);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "timestamp,p10_kw,p50_kw,p90_kw");
    assert_eq!(lines.len(), 193);
    for (line, point) in lines[1..].iter().zip(points) {
        let fields: Vec<&str> = line.split(',').collect();
        assert_eq!(fields[0], point["timestamp"]);
        assert_eq!(
            fields[2].parse::<f64>().unwrap(),
            point["p50_kw"].as_f64().unwrap()
        );
    }

    // The OpenADR report, checked against the OpenADR 3.0.1 specification's own `report`
    // schema (and the check shown to catch a report that breaks it).
    let openadr = success(&[
        "forecast",
        "--data-dir",
        data,
        "--format",
        "openadr",
        "--event-id",
        "evt-7",
    ]);
    let report_file = dir.path().join("openadr.json");
    std::fs::write(&report_file, &openadr).unwrap();
    assert_eq!(check_openadr(&report_file), (true, "valid".to_owned()));
    let report: serde_json::Value = serde_json::from_str(&openadr).unwrap();
    assert_eq!(report["objectType"], "REPORT");
    assert_eq!(report["eventID"], "evt-7");
    assert_eq!(
        report["payloadDescriptors"][0]["payloadType"],
        "USAGE_FORECAST"
    );
    assert_eq!(report["payloadDescriptors"][0]["readingType"], "FORECAST");
    assert_eq!(report["payloadDescriptors"][0]["units"], "KW");
    let intervals = report["resources"][0]["intervals"].as_array().unwrap();
    assert_eq!(intervals.len(), 192);
    let first = &intervals[0];
    assert_eq!(first["intervalPeriod"]["start"], points[0]["timestamp"]);
    assert_eq!(first["intervalPeriod"]["duration"], "PT15M");
    assert_eq!(first["payloads"][0]["values"][0], points[0]["p50_kw"]);
    assert_eq!(first["payloads"][1]["type"], "USAGE_FORECAST_P10");
    assert_eq!(first["payloads"][1]["values"][0], points[0]["p10_kw"]);
    assert_eq!(first["payloads"][2]["values"][0], points[0]["p90_kw"]);
    let mut broken = report.clone();
    broken.as_object_mut().unwrap().remove("eventID");
    broken["resources"][0]["intervalPeriod"]["duration"] = "15 minutes".into();
    std::fs::write(&report_file, broken.to_string()).unwrap();
    let (valid, said) = check_openadr(&report_file);
    assert!(!valid, "{said}");
    assert!(said.contains("'eventID' is a required property"), "{said}");
    assert!(
        said.contains("resources/0/intervalPeriod/duration"),
        "{said}"
    );

    // An origin before the ledger has enough history is refused with the reason.
    let early = footprint(&[
        "forecast",
        "--data-dir",
        data,
        "--from",
        "2023-11-07T00:00:00Z",
    ]);
    assert!(!early.status.success());
    assert!(
        text(&early).contains("the model needs at least"),
        "{}",
        text(&early)
    );

    // The aggregator's /metrics carries the forecast at 1, 6, 24 and 48 hours, ordered; and with
    // it every metric the Grafana dashboards query, which Grafana's SDK loads
    // (scripts/check_dashboards.py).
    let (_aggregator, addr) = common::demo_aggregator(
        Path::new(env!("CARGO_BIN_EXE_footprint-aggregator")),
        &data_dir,
        "metrics",
        toml::Table::new(),
        None,
    );
    let (status, exposition) = common::http(&addr, "GET", "/metrics", "");
    assert_eq!(status, 200);
    let quantile = |horizon: &str, q: &str| -> f64 {
        let prefix = format!(
            "footprint_forecast_facility_power_watts{{horizon=\"{horizon}\",quantile=\"{q}\"}} "
        );
        exposition
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("{prefix} missing"))
            .parse()
            .unwrap()
    };
    for horizon in ["1h", "6h", "24h", "48h"] {
        let (p10, p50, p90) = (
            quantile(horizon, "0.1"),
            quantile(horizon, "0.5"),
            quantile(horizon, "0.9"),
        );
        assert!(
            0.0 <= p10 && p10 <= p50 && p50 <= p90,
            "{horizon}: {p10} {p50} {p90}"
        );
    }
    let file = dir.path().join("metrics.txt");
    std::fs::write(&file, &exposition).unwrap();
    let repository = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let checked = Command::new("python3")
        .arg(repository.join("scripts/check_dashboards.py"))
        .arg("--metrics")
        .arg(&file)
        .output()
        .unwrap();
    assert!(checked.status.success(), "dashboards: {}", text(&checked));
}

#[test]
fn backtest_writes_every_point_and_prints_the_scores_beside_both_baselines() {
    let dir = tempfile::tempdir().unwrap();
    let points = dir.path().join("points.csv");
    let output = footprint(&[
        "forecast",
        "backtest",
        "--input",
        REAL_SERIES,
        "--time-column",
        "hour_start_local",
        "--value-column",
        "gpu_power_avg_w",
        "--only",
        "host=cbsugpu08",
        "--output",
        points.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", text(&output));
    let scores: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    for key in ["pinball_loss", "mape_p50", "coverage_p10_p90", "seconds"] {
        assert!(scores[key].as_f64().unwrap() > 0.0, "{key}: {scores}");
        for baseline in ["seasonal_naive", "persistence"] {
            assert!(
                scores[baseline][key].is_number(),
                "{baseline}.{key}: {scores}"
            );
        }
    }
    assert_eq!(scores["origins"], 52);
    assert_eq!(scores["series"]["clock"], "wall_clock");
    // Progress went to stderr, ending at the last origin.
    assert!(String::from_utf8_lossy(&output.stderr).contains("origin 52/52"));
    let written = std::fs::read_to_string(&points).unwrap();
    let mut lines = written.lines();
    assert_eq!(lines.next(), Some("origin,timestamp,p10,p50,p90,actual"));
    assert_eq!(
        lines.count() as u64,
        scores["points_scored"].as_u64().unwrap()
    );
    let first = written.lines().nth(1).unwrap();
    assert!(first.starts_with("2024-10-"), "{first}");
}

fn backtest_error(dir: &Path, csv: &str, value_column: &str) -> String {
    let input = dir.join("input.csv");
    std::fs::write(&input, csv).unwrap();
    let output = footprint(&[
        "forecast",
        "backtest",
        "--input",
        input.to_str().unwrap(),
        "--time-column",
        "t",
        "--value-column",
        value_column,
    ]);
    assert!(!output.status.success(), "{csv:?} was accepted");
    text(&output)
}

#[test]
fn bad_input_gets_one_clear_error_naming_the_column_row_or_reason() {
    let dir = tempfile::tempdir().unwrap();
    let hours = |n: usize, value: &str| {
        let mut text = String::from("t,w\n");
        for h in 0..n {
            let day = 1 + h / 24;
            text.push_str(&format!("2024-01-{day:02}T{:02}:00:00Z,{value}\n", h % 24));
        }
        text
    };
    let message = backtest_error(dir.path(), &hours(30, "1"), "watts");
    assert!(
        message.contains("--value-column \"watts\": no such column (the columns are t, w)"),
        "{message}"
    );
    let mut bad = hours(30, "1");
    bad.push_str("2024-01-03T00:00:00Z,lots\n");
    let message = backtest_error(dir.path(), &bad, "w");
    assert!(
        message.contains("row 32, column \"w\": \"lots\" is not a number"),
        "{message}"
    );
    let message = backtest_error(dir.path(), &hours(24 * 5, "1"), "w");
    assert!(
        message.contains("history too short or sparse to fit"),
        "{message}"
    );
    let message = backtest_error(dir.path(), &hours(48, ""), "w");
    assert!(
        message.contains("every value is empty (a series all gaps)"),
        "{message}"
    );
}
