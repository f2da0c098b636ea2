//! Parquet history read back as data teams read it — pyarrow and DuckDB
//! (`scripts/check_parquet.py`) — and compared with the ledger exactly: the schema, the rows
//! (every reading), the sums of the site's and the jobs' figures; written on demand
//! (`footprint export parquet`) and by the aggregator as days settle, with a failed write
//! counted and nothing skipped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn footprint(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_footprint"))
        .args(args)
        .output()
        .unwrap()
}

fn json_of(output: &Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn read_back(dir: &Path) -> serde_json::Value {
    let repository = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    json_of(
        &Command::new("python3")
            .arg(repository.join("scripts/check_parquet.py"))
            .arg(dir)
            .output()
            .unwrap(),
    )
}

fn sum_of(jobs: &[serde_json::Value], key: &str) -> i64 {
    jobs.iter().map(|job| job[key].as_i64().unwrap()).sum()
}

#[test]
fn the_history_reads_back_in_pyarrow_and_duckdb_equal_to_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let data_dir = data.to_str().unwrap();
    let output = footprint(&[
        "demo",
        "--exit",
        "--hours",
        "30",
        "--speed",
        "1000000",
        "--data-dir",
        data_dir,
    ]);
    assert!(output.status.success(), "{output:?}");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("summary.json")).unwrap()).unwrap();
    let stats = json_of(&footprint(&[
        "ledger",
        "stats",
        "--json",
        "--data-dir",
        data_dir,
    ]));

    let out = dir.path().join("history");
    let out_dir = out.to_str().unwrap();
    let export = |site: &str| {
        footprint(&[
            "export",
            "parquet",
            "--data-dir",
            data_dir,
            "--out",
            out_dir,
            "--site",
            site,
            "--from",
            "2023-11-06T00:00:00Z",
            "--to",
            "2023-11-08T00:00:00Z",
        ])
    };
    let exported = export("demo");
    assert!(exported.status.success(), "{exported:?}");
    for date in ["2023-11-06", "2023-11-07"] {
        assert!(
            out.join(format!("readings/site=demo/date={date}/part-0.parquet"))
                .exists()
        );
    }
    let tables = read_back(&out);

    // Every reading, as the ledger counts them; pyarrow and DuckDB agree on every table.
    for table in ["readings", "site_hours", "job_hours"] {
        assert_eq!(tables[table]["duckdb_agrees"], true, "{table}: {tables}");
    }
    assert_eq!(tables["readings"]["rows"], stats["readings"]);
    let schema = &tables["readings"]["schema"];
    assert_eq!(schema["ts"], "timestamp[ns, tz=UTC]");
    assert_eq!(schema["value"], "int64");
    assert_eq!(schema["meter_id"], "string");
    assert_eq!(schema["quality"], "string");
    assert_eq!(schema["site"], "string", "the partition is a column");
    assert_eq!(
        tables["job_hours"]["schema"]["hour"],
        "timestamp[ns, tz=UTC]"
    );

    // The settled hours: the site's and the jobs' figures sum to the run's summary exactly.
    let first = stats["first_settled_hour_ns"].as_i64().unwrap();
    let last = stats["last_settled_hour_ns"].as_i64().unwrap();
    assert_eq!(
        tables["site_hours"]["rows"].as_i64().unwrap(),
        (last - first) / 3_600_000_000_000 + 1
    );
    let site = &tables["site_hours"]["sums"];
    assert_eq!(site["facility_mj"], summary["site"]["measured_mj"]);
    assert_eq!(site["it_mj"], summary["site"]["it_mj"]);
    assert_eq!(site["water_ml"], summary["site"]["water_ml"]);
    assert_eq!(
        site["co2e_location_mg"],
        summary["site"]["co2e_location_mg"]
    );
    assert_eq!(site["co2e_market_mg"], summary["site"]["co2e_market_mg"]);
    let jobs = summary["jobs"].as_array().unwrap();
    let job = &tables["job_hours"]["sums"];
    for (ours, theirs) in [
        ("gpu_mj", "gpu_energy_mj"),
        ("cpu_mj", "cpu_energy_mj"),
        ("dram_mj", "dram_energy_mj"),
        ("remainder_mj", "remainder_mj"),
        ("overhead_mj", "overhead_mj"),
        ("water_ml", "water_ml"),
        ("co2e_location_mg", "co2e_location_mg"),
        ("co2e_market_mg", "co2e_market_mg"),
        ("embodied_mg", "co2e_embodied_mg"),
    ] {
        assert_eq!(job[ours].as_i64().unwrap(), sum_of(jobs, theirs), "{ours}");
    }

    // Exported again: the days are replaced, not doubled.
    assert!(export("demo").status.success());
    assert_eq!(read_back(&out)["readings"]["rows"], stats["readings"]);

    // A path that cannot be a directory: a clear error naming it.
    let blocked = dir.path().join("a-file");
    std::fs::write(&blocked, "x").unwrap();
    let refused = footprint(&[
        "export",
        "parquet",
        "--data-dir",
        data_dir,
        "--out",
        blocked.to_str().unwrap(),
    ]);
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("a-file"), "{message}");

    // The aggregator writes each day once it is wholly settled. A directory it cannot write: the
    // failure is counted, the cursor stays, and the day is written once the directory is right:
    // 6 November, not the 7th (six hours of it).
    let (running, addr) = aggregator(&data, &blocked);
    let waited = std::time::Instant::now();
    let zero = "footprint_aggregator_exports_failed_total{reason=\"parquet\"} 0";
    loop {
        let metrics = scrape(&addr);
        if !metrics.contains(zero) {
            assert!(
                metrics.contains("footprint_aggregator_exports_failed_total{reason=\"parquet\"}")
            );
            break;
        }
        assert!(
            waited.elapsed() < std::time::Duration::from_secs(30),
            "{metrics}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    drop(running);
    let background = dir.path().join("background");
    let (_running, addr) = aggregator(&data, &background);
    let day = background.join("job_hours/site=demo/date=2023-11-06/part-0.parquet");
    let waited = std::time::Instant::now();
    while !day.exists() && waited.elapsed() < std::time::Duration::from_secs(30) {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(day.exists(), "the settled day was not written");
    assert!(
        !background
            .join("job_hours/site=demo/date=2023-11-07")
            .exists()
    );
    assert!(scrape(&addr).contains(zero));
}

/// The demo's aggregator again, writing Parquet to `parquet` every second; its HTTP address.
fn aggregator(data: &Path, parquet: &Path) -> (common::Running, String) {
    let mut settings = toml::Table::new();
    settings.insert("dir".into(), parquet.to_str().unwrap().into());
    settings.insert("site".into(), "demo".into());
    settings.insert("interval_s".into(), toml::Value::Integer(1));
    common::demo_aggregator(
        Path::new(env!("CARGO_BIN_EXE_footprint-aggregator")),
        data,
        "parquet",
        settings,
        None,
    )
}

fn scrape(addr: &str) -> String {
    common::http(addr, "GET", "/metrics", "").1
}
