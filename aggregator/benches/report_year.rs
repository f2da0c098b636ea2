//! The disclosure report of a year of a 1 000-GPU site with 10 000 jobs (`year::write_year`, plus
//! each host's eleven energy meters and the site's two with every day of their readings closed
//! and summarised, and the config the aggregator stores):
//! made and signed, written as JSON and HTML, and verified against the ledger's settled figures
//! (`verify --figures-only`: the synthetic year has roll-ups but no readings to rebuild them
//! from). Times are medians of three; memory is the process's peak resident set from the
//! report's start (`VmHWM` after `clear_refs`).
//!
//! `cargo bench -p footprint-aggregator --bench report_year` (env `HOSTS`, `JOBS_PER_HOST`).

// A benchmark reports setup failures by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod year;

use std::time::Instant;

use footprint_aggregator::AggregatorConfig;
use footprint_aggregator::report::{self, ReportRequest, VerifyOptions};
use footprint_exporters::report::Format;
use footprint_exporters::report::signing;
use rusqlite::params;
use year::{HOUR, HOURS, YEAR_START, env};

/// The process's peak resident set since the last reset, MB.
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmHWM:"))
                .and_then(|line| line.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1_024.0)
}

fn main() {
    let hosts = env("HOSTS", 125);
    let jobs_per_host = env("JOBS_PER_HOST", 80);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("footprint.sqlite");
    year::write_year(&path, hosts, jobs_per_host);

    let key = dir.path().join("report.key");
    signing::generate_key_pair(&key, &dir.path().join("report.key.pub")).unwrap();
    let mut config = AggregatorConfig::with_data_dir(dir.path().to_path_buf());
    config.carbon.zone = "DE".into();
    config.disclosure.name = Some("a year of 1 000 GPUs".into());
    config.disclosure.signing_key = Some(key);
    let connection = rusqlite::Connection::open(&path).unwrap();
    connection
        .execute(
            "INSERT INTO aggregator_config (only, toml, written_ns) VALUES (1, ?1, 0)",
            [toml::to_string(&config).unwrap()],
        )
        .unwrap();
    // Each host's 8 GPUs, 2 CPU packages and its outlet; the site's energy and water meters.
    let mut meter = connection
        .prepare(
            "INSERT INTO meters (collector, meter_id, kind, device, counter_max, cpus, method)
             VALUES (?1, ?2, ?3, ?2, 0, '', 'bench')",
        )
        .unwrap();
    for host in 1..=hosts {
        for gpu in 0..8 {
            meter
                .execute(params![host, format!("gpu{gpu}"), 1])
                .unwrap();
        }
        for package in 0..2 {
            meter
                .execute(params![host, format!("package{package}"), 2])
                .unwrap();
        }
        meter.execute(params![host, "outlet", 4]).unwrap();
    }
    connection
        .execute(
            "INSERT INTO collectors (id, name, host, software_version) VALUES (?1, 'site', 'site', 'bench')",
            [hosts + 1],
        )
        .unwrap();
    meter.execute(params![hosts + 1, "energy", 6]).unwrap();
    meter.execute(params![hosts + 1, "water", 7]).unwrap();
    drop(meter);
    // Every meter's every day closed and summarised, as a year of 5-second readings leaves it
    // (the readings themselves are not written: the summaries are what the report reads).
    let started = Instant::now();
    let transaction = connection.unchecked_transaction().unwrap();
    {
        let mut day_row = transaction
            .prepare(
                "INSERT INTO meter_days (meter, day_ns, readings, first_ns, last_ns, covered_ns,
                   spill_from_ns, gaps, wraps, resets)
                 SELECT id, ?1, 17280, ?1 + 5000000000, ?1 + 86400000000000, 86400000000000 - 5000000000,
                   ?1 - 5000000000, 0, 0, 0 FROM meters",
            )
            .unwrap();
        for day in 0..HOURS / 24 {
            day_row.execute([YEAR_START + day * 24 * HOUR]).unwrap();
        }
    }
    transaction.commit().unwrap();
    let summaries: i64 = connection
        .query_row("SELECT COUNT(*) FROM meter_days", [], |row| row.get(0))
        .unwrap();
    eprintln!(
        "setup: {summaries} meter-days summarised in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    drop(connection);

    let request = ReportRequest {
        from_ns: YEAR_START,
        to_ns: YEAR_START + HOURS * HOUR,
        ..ReportRequest::default()
    };
    // Peak memory counts from here.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let mut runs: Vec<[f64; 4]> = Vec::new();
    let mut sizes = (0, 0);
    for _ in 0..3 {
        let started = Instant::now();
        let signed = report::make_report(&path, &request).unwrap();
        let json = report::render(&signed, Format::Json).unwrap();
        let made = started.elapsed().as_secs_f64();
        let html = report::render(&signed, Format::Html).unwrap();
        let html_s = started.elapsed().as_secs_f64() - made;
        let verified = report::verify(
            &path,
            &json,
            &VerifyOptions {
                expected_key: None,
                readings: false,
            },
            |_, _| {},
        )
        .unwrap();
        assert!(verified.holds(), "{:?}", verified.problems);
        assert_eq!(
            signed.report.jobs.len() as i64,
            hosts * jobs_per_host,
            "every job in the annex"
        );
        let total = started.elapsed().as_secs_f64();
        // Outside the timing: the total is summed from the months, so it must be the ledger's
        // own total of the year.
        let reader = footprint_aggregator::tables::schema::open_reader(&path).unwrap();
        let year = footprint_core::Span::new(
            footprint_core::UnixNanos(YEAR_START),
            footprint_core::UnixNanos(YEAR_START + HOURS * HOUR),
        );
        let site = footprint_aggregator::ledger::facility_totals(
            &reader,
            year,
            footprint_aggregator::ledger::SeriesStep::Total,
            footprint_aggregator::ledger::Grouping::Site,
        )
        .unwrap()
        .remove(0);
        let energy = &signed.report.conservation["energy"];
        assert_eq!(
            (energy.site, energy.jobs),
            (site.energy_mj.site, site.energy_mj.jobs)
        );
        runs.push([made, html_s, total - made - html_s, total]);
        sizes = (json.len(), html.len());
    }
    runs.sort_by(|a, b| a[3].total_cmp(&b[3]));
    let [make_s, html_s, verify_s, total_s] = runs[1];
    println!(
        "{{\"hosts\": {hosts}, \"gpus\": {}, \"jobs\": {}, \"json_mb\": {:.1}, \"html_mb\": {:.1}, \
\"make_and_json_s\": {make_s:.2}, \"html_s\": {html_s:.2}, \"verify_figures_s\": {verify_s:.2}, \
\"total_s\": {total_s:.2}, \"peak_rss_mb\": {:.0}}}",
        hosts * 8,
        hosts * jobs_per_host,
        sizes.0 as f64 / 1e6,
        sizes.1 as f64 / 1e6,
        peak_rss_mb()
    );
}
