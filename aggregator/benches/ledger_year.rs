//! A year of a 1 000-GPU site as the ledger keeps it once window detail has aged out
//! (`year::write_year`); the queries users ask of a year are timed, each the median of five:
//! `footprint jobs` for the year, one job, and `totals --step month --group-by host`.
//!
//! `cargo bench -p footprint-aggregator --bench ledger_year` (env `HOSTS`, `JOBS_PER_HOST`).

// A benchmark reports setup failures by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod year;

use footprint_aggregator::ledger::{self, Grouping, JobFilter, SeriesStep};
use footprint_aggregator::tables::schema;
use footprint_core::{Span, UnixNanos};
use year::{HOUR, HOURS, YEAR_START, env, median_s};

fn main() {
    let hosts = env("HOSTS", 125);
    let jobs_per_host = env("JOBS_PER_HOST", 80);
    let dir = tempfile::tempdir().unwrap();
    // `KEEP=DIR` leaves the ledger there, to look into.
    let path = match std::env::var("KEEP") {
        Ok(keep) => std::path::PathBuf::from(keep).join("footprint.sqlite"),
        Err(_) => dir.path().join("footprint.sqlite"),
    };
    let bytes = year::write_year(&path, hosts, jobs_per_host);

    let reader = schema::open_reader(&path).unwrap();
    let year = Span::new(UnixNanos(YEAR_START), UnixNanos(YEAR_START + HOURS * HOUR));
    let filter = JobFilter {
        from_ns: year.start.0,
        to_ns: year.end.0,
        ..JobFilter::default()
    };
    let mut listed = 0;
    let jobs_s = median_s(|| listed = ledger::list_jobs(&reader, &filter).unwrap().len());
    let middle = format!("job-{:05}", hosts * jobs_per_host / 2);
    let job_s = median_s(|| {
        ledger::get_job(&reader, &middle).unwrap();
    });
    let mut series = 0;
    let totals_s = median_s(|| {
        series = ledger::facility_totals(&reader, year, SeriesStep::Month, Grouping::Host)
            .unwrap()
            .len();
    });
    assert_eq!(listed as i64, hosts * jobs_per_host);
    assert_eq!(series as i64, 12 * hosts);
    println!(
        "{{\"hosts\": {hosts}, \"gpus\": {}, \"jobs\": {listed}, \"ledger_mb\": {:.0}, \"jobs_for_the_year_s\": {jobs_s:.3}, \
\"one_job_ms\": {:.3}, \"totals_month_by_host_s\": {totals_s:.3}}}",
        hosts * 8,
        bytes as f64 / 1e6,
        job_s * 1e3
    );
}
