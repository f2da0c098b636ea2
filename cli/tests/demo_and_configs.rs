//! The README's main command, `footprint demo`, and the example configs in `deploy/`.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

fn repository() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn demo_writes_a_summary_whose_books_balance_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("demo");
    let output = Command::new(env!("CARGO_BIN_EXE_footprint"))
        .args([
            "demo",
            "--exit",
            "--hours",
            "3",
            "--seed",
            "7",
            "--speed",
            "1000000",
            "--data-dir",
        ])
        .arg(&data_dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("site (measured)"), "{stdout}");
    // The demo's last line hands over `explain` for its largest job: run as printed, the hour
    // rebuilt from the readings equals its roll-up; and `ledger stats` counts what the ledger holds.
    let printed: Vec<&str> = stdout
        .lines()
        .find_map(|line| line.split_once("footprint explain "))
        .map(|(_, args)| args.split_whitespace().collect())
        .unwrap_or_else(|| panic!("no explain command printed: {stdout}"));
    let value_of = |flag: &str| {
        let at = printed.iter().position(|arg| *arg == flag).unwrap();
        printed[at + 1]
    };
    let args = [
        "explain",
        "--json",
        "--job",
        value_of("--job"),
        "--hour",
        value_of("--hour"),
        "--data-dir",
    ];
    let explained: serde_json::Value = serde_json::from_str(&footprint(&args, &data_dir)).unwrap();
    assert_eq!(explained["matches"], true, "{explained}");
    assert!(
        !explained["windows"].as_array().unwrap().is_empty(),
        "{explained}"
    );
    let stats: serde_json::Value = serde_json::from_str(&footprint(
        &["ledger", "stats", "--json", "--data-dir"],
        &data_dir,
    ))
    .unwrap();
    assert_eq!(stats["hosts"], 4, "{stats}");
    assert!(stats["gpu_days"].as_f64().unwrap() > 0.0, "{stats}");

    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data_dir.join("summary.json")).unwrap()).unwrap();
    let measured = summary["site"]["measured_mj"].as_i64().unwrap();
    let idle = summary["idle_mj"].as_i64().unwrap();
    let unattributed = summary["unattributed_mj"].as_i64().unwrap();
    let jobs: Vec<&serde_json::Value> = summary["jobs"].as_array().unwrap().iter().collect();
    let jobs_total: i64 = jobs.iter().map(|j| j["energy_mj"].as_i64().unwrap()).sum();
    assert!(jobs.len() >= 3 && measured > 0, "{summary}");
    assert_eq!(jobs_total + idle + unattributed, measured, "{summary}");
    // The facility meter sees the IT load times a PUE above 1: the overhead is shared out.
    assert!(
        summary["site"]["overhead_mj"].as_i64().unwrap() > 0,
        "{summary}"
    );
    assert!(summary["site"]["it_mj"].as_i64().unwrap() < measured);
    // Water and each carbon method balance exactly too, and every one is really there.
    for key in [
        "water_ml",
        "co2e_location_mg",
        "co2e_market_mg",
        "co2e_embodied_mg",
    ] {
        let site = summary["site"][key].as_i64().unwrap();
        let jobs_sum: i64 = jobs.iter().map(|j| j[key].as_i64().unwrap()).sum();
        let idle = summary[format!("idle_{key}")].as_i64().unwrap();
        let unattributed = summary[format!("unattributed_{key}")].as_i64().unwrap();
        assert!(site > 0 && jobs_sum > 0, "{key}: {summary}");
        assert_eq!(jobs_sum + idle + unattributed, site, "{key}: {summary}");
    }
    // The demo site buys wind and solar power: market-based carbon differs from location-based,
    // and some of each hour's load is matched by supply in the same hour.
    assert_ne!(
        summary["site"]["co2e_market_mg"],
        summary["site"]["co2e_location_mg"]
    );
    assert!(summary["site"]["hourly_cfe_share"].as_f64().unwrap() > 0.0);
    // What market-based was computed from: every mJ of the load is matched by PPA supply of the
    // same hour, covered by certificates, or left to the residual mix, whose source is named.
    let market = &summary["site"]["market"];
    let mj = |key: &str| market[key].as_u64().unwrap();
    assert_eq!(
        mj("ppa_matched_mj") + mj("go_used_mj") + mj("uncovered_mj"),
        summary["site"]["measured_mj"].as_u64().unwrap(),
        "{market}"
    );
    assert_eq!(
        mj("ppa_forfeited_mj"),
        mj("ppa_delivered_mj") - mj("ppa_matched_mj")
    );
    assert!(mj("go_used_mj") > 0 && mj("uncovered_mj") > 0, "{market}");
    assert_eq!(market["residual_mix"]["g_per_kwh"], 600.0, "{market}");
    assert_eq!(market["residual_mix"]["year"], 2023, "{market}");
    assert!(
        market["residual_mix"]["source"]
            .as_str()
            .unwrap()
            .contains("illustrative"),
        "{market}"
    );
    assert!(
        jobs.iter()
            .all(|j| j["sci_mg_per_unit"].as_f64().unwrap() > 0.0)
    );
    assert!(
        jobs.iter().any(|j| j["kind"] == "training")
            && jobs.iter().any(|j| j["kind"] == "inference")
    );
    // Nothing outside DATA_DIR: the ledger, the generated configs and the summary are all there.
    assert!(
        data_dir.join("footprint.sqlite").exists()
            && data_dir.join("config/site-meter.toml").exists()
    );

    // The ledger answers the jobs command afterwards, as JSON, with the same totals.
    let listed: serde_json::Value =
        serde_json::from_str(&footprint(&["jobs", "--json", "--data-dir"], &data_dir)).unwrap();
    let listed_total: i64 = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["energy_mj"].as_i64().unwrap())
        .sum();
    assert_eq!(listed_total, jobs_total);
    // Each job's share of the site, as the summary has it (it was 0.0 for every job here).
    let share_in_summary = |id: &serde_json::Value| {
        jobs.iter().find(|j| j["id"] == *id).unwrap()["share_of_site"]
            .as_f64()
            .unwrap()
    };
    for job in listed.as_array().unwrap() {
        let share = job["share_of_site"].as_f64().unwrap();
        assert!(share > 0.0, "{job}");
        assert!(
            (share - share_in_summary(&job["id"])).abs() < 1e-12,
            "{job}"
        );
    }
    let first = &listed[0]["id"];
    let one: serde_json::Value = serde_json::from_str(&footprint(
        &["job", first.as_str().unwrap(), "--json", "--data-dir"],
        &data_dir,
    ))
    .unwrap();
    assert!((one["share_of_site"].as_f64().unwrap() - share_in_summary(first)).abs() < 1e-12);

    // Over one hour of a longer job, SCI counts the units of that hour, not of the whole job
    // (it was the whole job's: an SCI per unit many times too small).
    let hour: serde_json::Value = serde_json::from_str(&footprint(
        &[
            "jobs",
            "--from",
            "2023-11-06T01:00:00Z",
            "--to",
            "2023-11-06T02:00:00Z",
            "--json",
            "--data-dir",
        ],
        &data_dir,
    ))
    .unwrap();
    let mut cut = 0;
    for job in hour.as_array().unwrap() {
        let whole = jobs.iter().find(|j| j["id"] == job["id"]).unwrap();
        let units = job["functional_units"].as_u64().unwrap();
        let all_units = whole["functional_units"].as_u64().unwrap();
        let carbon =
            job["co2e_location_mg"].as_u64().unwrap() + job["co2e_embodied_mg"].as_u64().unwrap();
        assert_eq!(
            job["sci_mg_per_unit"].as_f64().unwrap(),
            carbon as f64 / units as f64,
            "{job}"
        );
        let held = job["gpu_hours"].as_f64().unwrap() / whole["gpu_hours"].as_f64().unwrap();
        if held < 0.99 {
            cut += 1;
            // The units follow the time the job held its GPUs in the hour.
            let share = units as f64 / all_units as f64;
            assert!(
                (share / held - 1.0).abs() < 0.05,
                "{share} of the units for {held} of the GPU time: {job}"
            );
        }
    }
    assert!(
        cut > 0,
        "no job of the demo runs past its second hour: {hour}"
    );

    // Totals per rack: the demo places two hosts per rack; every rack's books balance.
    let racks: serde_json::Value = serde_json::from_str(&footprint(
        &["totals", "--group-by", "rack", "--json", "--data-dir"],
        &data_dir,
    ))
    .unwrap();
    let racks = racks.as_array().unwrap();
    assert_eq!(racks.len(), 2, "{racks:?}");
    for rack in racks {
        let energy = &rack["energy_mj"];
        assert_eq!(
            energy["jobs"].as_i64().unwrap()
                + energy["idle"].as_i64().unwrap()
                + energy["unattributed"].as_i64().unwrap(),
            energy["site"].as_i64().unwrap(),
            "{rack}"
        );
    }

    // A feed imported afterwards lands in the same ledger, with its gaps counted.
    // The EIA-930 re-export does not say which hour a timestamp names: refused until told.
    let fixture = repository().join("core/tests/data/eia930-ciso-2022-01-05.csv");
    let refused = Command::new(env!("CARGO_BIN_EXE_footprint"))
        .args(["import-intensity", &fixture.to_string_lossy(), "--data-dir"])
        .arg(&data_dir)
        .output()
        .unwrap();
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && why.contains("hour_convention"),
        "{why}"
    );
    let said = footprint(
        &[
            "import-intensity",
            &fixture.to_string_lossy(),
            "--hour-convention",
            "ending",
            "--data-dir",
        ],
        &data_dir,
    );
    assert!(
        said.contains("23 hours (eia930-csv, hour-ending) for zone(s) CISO, 1 gap"),
        "{said}"
    );
    let bytes = std::fs::read(&fixture).unwrap();
    let sha256 = Command::new("sha256sum").arg(&fixture).output().unwrap();
    let sha256 = String::from_utf8_lossy(&sha256.stdout);
    let sha256 = sha256.split_whitespace().next().unwrap();
    assert!(
        !bytes.is_empty() && said.contains(&format!("sha256 {sha256}")),
        "{said}"
    );
    let ledger = rusqlite::Connection::open(data_dir.join("footprint.sqlite")).unwrap();
    let (layout, convention, hours): (String, String, i64) = ledger
        .query_row(
            "SELECT layout, hour_convention, hours FROM feeds WHERE sha256 = ?1",
            [sha256],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        (layout.as_str(), convention.as_str(), hours),
        ("eia930-csv", "ending", 23)
    );

    // Which factor each hour used, and from which feed: read as hour-ending, the row stamped
    // 01:00Z (324.017 g/kWh) is the hour from 00:00Z; the empty 10:00Z row leaves the hour from
    // 09:00Z to the gap rule, between its neighbours.
    let intensity: serde_json::Value = serde_json::from_str(&footprint(
        &[
            "intensity",
            "--zone",
            "CISO",
            "--from",
            "2022-01-05T00:00:00Z",
            "--to",
            "2022-01-05T12:00:00Z",
            "--json",
            "--data-dir",
        ],
        &data_dir,
    ))
    .unwrap();
    let hours = intensity.as_array().unwrap();
    assert_eq!(hours.len(), 12, "{intensity}");
    assert_eq!(hours[0]["mg_per_kwh"], 324_017, "{intensity}");
    assert_eq!(hours[0]["quality"], "measured");
    assert_eq!(hours[0]["feeds"][0]["sha256"], sha256);
    assert_eq!(hours[0]["feeds"][0]["hour_convention"], "ending");
    assert_eq!(hours[9]["quality"], "interpolated", "{}", hours[9]);
    assert!(
        hours[9]["method"].as_str().unwrap().contains("between"),
        "{}",
        hours[9]
    );
    // The demo's own hours were priced with the feed's figure.
    let de: serde_json::Value = serde_json::from_str(&footprint(
        &[
            "intensity",
            "--zone",
            "DE",
            "--from",
            "2023-11-06T00:00:00Z",
            "--to",
            "2023-11-06T02:00:00Z",
            "--json",
            "--data-dir",
        ],
        &data_dir,
    ))
    .unwrap();
    for hour in de.as_array().unwrap() {
        assert_eq!(hour["priced_mg_per_kwh"], hour["mg_per_kwh"], "{hour}");
        assert_eq!(hour["feeds"][0]["layout"], "electricitymaps-csv", "{hour}");
    }
}

/// Runs `footprint ARGS DIR`, which must succeed; returns its standard output.
fn footprint(args: &[&str], dir: &Path) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_footprint"))
        .args(args)
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "footprint {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn demo_refuses_a_directory_that_already_holds_a_ledger() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("footprint.sqlite"), b"").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_footprint"))
        .args(["demo", "--exit", "--hours", "1", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("already holds a ledger"));
}

#[test]
fn every_example_config_loads() {
    let examples = repository().join("deploy/examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let flag = if name.starts_with("aggregator") {
            "--aggregator"
        } else if name.starts_with("web-config") {
            "--web-config"
        } else {
            "--collector"
        };
        let output = Command::new(env!("CARGO_BIN_EXE_footprint"))
            .args(["check-config", flag])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 2, "examples missing in {}", examples.display());
}

#[test]
fn every_registered_source_has_an_example_config() {
    let examples = repository().join("deploy/examples");
    let mut text = String::new();
    for entry in std::fs::read_dir(&examples).unwrap() {
        text.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap());
    }
    for (name, _) in footprint_collector::config::SOURCE_TYPES {
        assert!(
            text.contains(&format!("type = \"{name}\"")),
            "no example in {} configures a source of type {name:?}",
            examples.display()
        );
    }
}

#[test]
fn a_config_typo_fails_at_start_with_the_key_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("collector.toml");
    std::fs::write(
        &path,
        "host = 'h'\n[[sources]]\ntype = 'replay'\ngpus = 2\ngpu_idel_w = 50.0\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_footprint-collector"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("sources[0]") && stderr.contains("gpu_idel_w"),
        "{stderr}"
    );

    std::fs::write(&path, "data_dir = '/tmp/x'\nwindow_seconds = 0\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_footprint-aggregator"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("window_seconds:"));
}

#[test]
fn the_same_seed_gives_a_byte_identical_summary_whatever_the_speed() {
    let dir = tempfile::tempdir().unwrap();
    let mut summaries = Vec::new();
    for (name, speed) in [("fast", "1000000"), ("faster", "5000000")] {
        let data_dir = dir.path().join(name);
        let output = Command::new(env!("CARGO_BIN_EXE_footprint"))
            .args([
                "demo",
                "--exit",
                "--hours",
                "2",
                "--seed",
                "11",
                "--speed",
                speed,
                "--data-dir",
            ])
            .arg(&data_dir)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        summaries.push(std::fs::read(data_dir.join("summary.json")).unwrap());
    }
    assert_eq!(
        summaries[0], summaries[1],
        "the simulated clock's pace must not change any figure"
    );
}

#[test]
fn loadgen_streams_durable_readings_and_reports_them() {
    let output = Command::new(env!("CARGO_BIN_EXE_footprint"))
        .args([
            "loadgen",
            "--collectors",
            "3",
            "--meters",
            "5",
            "--rate",
            "5",
            "--duration",
            "1",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert!(report["readings_acked"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["readings_rejected"], 0, "{report}");
    assert_eq!(report["source_errors"], 0, "{report}");
    assert!(
        report["ack_latency_ms_p99"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    // Once the collectors have flushed, every reading they sampled was acknowledged.
    let drained = &report["after_drain"];
    assert!(
        drained["readings_sampled"].as_u64().unwrap() > 0,
        "{report}"
    );
    assert_eq!(
        drained["readings_sampled"], drained["readings_acked"],
        "{report}"
    );
    assert_eq!(drained["readings_unacknowledged"], 0, "{report}");
    assert_eq!(drained["collectors_not_drained"], 0, "{report}");
}
