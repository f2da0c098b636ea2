//! A year of a 1 000-GPU site as the ledger keeps it once window detail has aged out, written
//! straight into the ledger's tables (building a year of windows is what `ledger_build` measures
//! an hour of): 125 hosts × 8 GPUs (env `HOSTS`), 10 000 jobs (each host runs `JOBS_PER_HOST`
//! = 80 jobs of 8 GPUs back to back, about 110 hours each), every hour settled and rolled up,
//! and every day. Shared by the `ledger_year` and `report_year` benchmarks.

// Each benchmark that includes this uses part of it.
#![allow(dead_code)]

use std::time::Instant;

use footprint_aggregator::tables::rollups::{HOST_FIGURES, JOB_FIGURES, JOBS_OF_HOST, sums};
use footprint_aggregator::tables::{DETAIL_FROM_KEY, SITE_SETTLED_KEY, schema};
use rusqlite::params;

pub const HOUR: i64 = 3_600_000_000_000;
/// 2025-01-01T00:00:00Z.
pub const YEAR_START: i64 = 1_735_689_600_000_000_000;
pub const HOURS: i64 = 8_760;

pub fn env(name: &str, default: i64) -> i64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn median_s(mut run: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..5)
        .map(|_| {
            let started = Instant::now();
            run();
            started.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[2]
}

/// Writes the year into a new ledger at `path`; returns its size in bytes.
pub fn write_year(path: &std::path::Path, hosts: i64, jobs_per_host: i64) -> u64 {
    let mut connection = schema::open(path).unwrap();
    let started = Instant::now();
    let transaction = connection.transaction().unwrap();
    let hours_per_job = HOURS / jobs_per_host;
    {
        let mut collector = transaction
            .prepare("INSERT INTO collectors (id, name, host, software_version, built_until_ns) VALUES (?1, ?2, ?2, 'bench', ?3)")
            .unwrap();
        let mut job = transaction
            .prepare("INSERT INTO jobs (id, job_id, scheduler, name, user, project, kind, model, functional_unit, functional_units)
                      VALUES (?1, ?2, 'slurm', ?2, 'user', 'project', 1, 'model', 'token', 1000000)")
            .unwrap();
        let mut allocation = transaction
            .prepare("INSERT INTO allocations (collector, job, start_ns, end_ns, gpus, cpus) VALUES (?1, ?2, ?3, ?4, 'gpu0,gpu1,gpu2,gpu3,gpu4,gpu5,gpu6,gpu7', '0-63')")
            .unwrap();
        let mut job_hour = transaction
            .prepare(
                "INSERT INTO rollup_jobs (hour_ns, collector, job, gpu_mj, cpu_mj, dram_mj, remainder_mj, measured_mj,
                   interpolated_mj, estimated_mj, gpu_ns, embodied_mg, overhead_mj, water_ml, co2e_location_mg,
                   co2e_market_mg, host_windows, revised_windows, first_start_ns, last_start_ns)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?4 + ?5 + ?6 + ?7, 0, 0, 28800000000000, 3000000, ?8, ?9, ?10, ?11, 360, 0, ?1, ?1 + 3590000000000)",
            )
            .unwrap();
        let mut host_hour = transaction
            .prepare(
                "INSERT INTO rollup_hosts (hour_ns, collector, it_mj, host_mj, remainder_mj, remainder_deficit_mj, idle_mj,
                   unattributed_mj, measured_mj, interpolated_mj, estimated_mj, idle_embodied_mg, idle_overhead_mj,
                   idle_water_ml, idle_co2e_location_mg, idle_co2e_market_mg, unattributed_overhead_mj,
                   unattributed_water_ml, unattributed_co2e_location_mg, unattributed_co2e_market_mg, host_windows,
                   revised_windows, jobs_it_mj, jobs_overhead_mj, jobs_water_ml, jobs_co2e_location_mg,
                   jobs_co2e_market_mg, jobs_embodied_mg)
                 VALUES (?1, ?2, ?3, ?3, 0, 0, 0, 0, ?3, 0, 0, 100000, 0, 0, 0, 0, 0, 0, 0, 0, 360, 0,
                   ?3, ?4, ?5, ?6, ?7, 3000000)",
            )
            .unwrap();
        for host in 1..=hosts {
            collector
                .execute(params![
                    host,
                    format!("gpu-node-{host:03}"),
                    YEAR_START + HOURS * HOUR
                ])
                .unwrap();
            for slot in 0..jobs_per_host {
                let key = (host - 1) * jobs_per_host + slot + 1;
                let (first, last) = (
                    slot * hours_per_job,
                    ((slot + 1) * hours_per_job).min(HOURS),
                );
                job.execute(params![key, format!("job-{key:05}")]).unwrap();
                allocation
                    .execute(params![
                        host,
                        key,
                        YEAR_START + first * HOUR,
                        YEAR_START + last * HOUR
                    ])
                    .unwrap();
                for hour in first..last {
                    let at = YEAR_START + hour * HOUR;
                    // About 5.6 kW of GPUs, 0.6 kW of CPUs and DRAM, 0.5 kW host remainder,
                    // varying by hour so that nothing compresses away.
                    let gpu = 20_000_000_000 + (hour * 7_919 + key) % 1_000_000_000;
                    job_hour
                        .execute(params![
                            at,
                            host,
                            key,
                            gpu,
                            2_000_000_000_i64,
                            200_000_000_i64,
                            1_800_000_000_i64,
                            gpu / 5,
                            gpu / 1_000_000,
                            gpu / 10_000,
                            gpu / 20_000
                        ])
                        .unwrap();
                    host_hour
                        .execute(params![
                            at,
                            host,
                            gpu + 4_000_000_000,
                            gpu / 5,
                            gpu / 1_000_000,
                            gpu / 10_000,
                            gpu / 20_000
                        ])
                        .unwrap();
                }
            }
        }
        let mut site_hour = transaction
            .prepare(
                "INSERT INTO site_hours (hour_ns, load_mj, ppa_mj, go_mj, uncovered_mj, go_balance_after_mj,
                   uncovered_mg_per_kwh, residual_mix, co2e_market_mg, ppa_delivered_mj)
                 VALUES (?1, 1, 0, 0, 1, 0, 0, 0, 0, 0)",
            )
            .unwrap();
        let mut site_rollup = transaction
            .prepare(
                "INSERT INTO rollup_site (hour_ns, facility_mj, it_mj, overhead_deficit_mj, unattributed_mj, water_ml,
                   unattributed_water_ml, co2e_location_mg, unattributed_co2e_location_mg, co2e_market_mg,
                   unattributed_co2e_market_mg, windows_it_only, windows_metered, windows_assumed_pue)
                 VALUES (?1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 360, 0)",
            )
            .unwrap();
        for hour in 0..HOURS {
            site_hour.execute([YEAR_START + hour * HOUR]).unwrap();
            site_rollup.execute([YEAR_START + hour * HOUR]).unwrap();
        }
        // The days, summed from the hours as the roll-up does.
        let day = "hour_ns - hour_ns % 86400000000000";
        transaction
            .execute(
                &format!(
                    "INSERT INTO rollup_jobs_days (day_ns, collector, job, {JOB_FIGURES}, host_windows,
                       revised_windows, first_start_ns, last_start_ns)
                     SELECT {day} AS day, collector, job, {}, SUM(host_windows), SUM(revised_windows),
                       MIN(first_start_ns), MAX(last_start_ns)
                     FROM rollup_jobs GROUP BY day, collector, job",
                    sums(JOB_FIGURES)
                ),
                [],
            )
            .unwrap();
        transaction
            .execute(
                &format!(
                    "INSERT INTO rollup_hosts_days (day_ns, collector, {HOST_FIGURES}, host_windows,
                       revised_windows, {JOBS_OF_HOST})
                     SELECT {day} AS day, collector, {}, SUM(host_windows), SUM(revised_windows), {}
                     FROM rollup_hosts GROUP BY day, collector",
                    sums(HOST_FIGURES),
                    sums(JOBS_OF_HOST)
                ),
                [],
            )
            .unwrap();
        let mut state = transaction
            .prepare("INSERT OR REPLACE INTO ledger_state (key, value) VALUES (?1, ?2)")
            .unwrap();
        state
            .execute(params![SITE_SETTLED_KEY, YEAR_START + HOURS * HOUR])
            .unwrap();
        state
            .execute(params![DETAIL_FROM_KEY, YEAR_START + HOURS * HOUR])
            .unwrap();
    }
    transaction.commit().unwrap();
    drop(connection);
    let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "setup: {hosts} hosts, {} jobs, a year of roll-ups written in {:.1} s ({:.0} MB)",
        hosts * jobs_per_host,
        started.elapsed().as_secs_f64(),
        bytes as f64 / 1e6
    );

    bytes
}
