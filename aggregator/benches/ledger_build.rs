//! Windows built per second per core through the real ledger (SQLite), for a 10 000-GPU site:
//! 1 250 hosts × 8 GPUs, two CPU packages and two DRAM zones each, a PDU outlet, three jobs per
//! host (one ending and one starting mid-span), a facility energy meter and a water meter, every
//! meter read every 10 s. The readings are written straight into the ledger's tables (ingest is
//! measured by `footprint loadgen`); then the host stage builds every window and the site stage
//! settles every hour (rolling it up), on one thread, timed in wall and CPU seconds, each stage
//! apart; then the hours' window detail is deleted, as ageing does.
//!
//! `cargo bench -p footprint-aggregator --bench ledger_build` (env `HOSTS`, `MINUTES` scale it).

// A benchmark reports setup failures by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use footprint_aggregator::AggregatorConfig;
use footprint_aggregator::ledger::{self, HostLayout, LayoutMeter};
use footprint_aggregator::settings::LedgerSettings;
use footprint_aggregator::tables::{self, schema};
use footprint_core::window::WindowLength;
use footprint_proto::v1::MeterKind;
use rusqlite::{Connection, Transaction, params};

const SECOND: i64 = 1_000_000_000;
/// 2024-06-01T00:00:00Z.
const START: i64 = 1_717_200_000 * SECOND;
const STEP: i64 = 10 * SECOND;
const PACKAGE_CPUS: [std::ops::Range<u32>; 2] = [0..32, 32..64];

fn env(name: &str, default: i64) -> i64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds this process has used (user + system).
fn cpu_seconds() -> f64 {
    let text = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = text
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

struct Writer<'a> {
    transaction: &'a Transaction<'a>,
    samples: i64,
}

impl Writer<'_> {
    /// A meter with a reading every 10 s at constant power.
    fn meter(
        &self,
        collector: i64,
        id: &str,
        kind: MeterKind,
        cpus: &str,
        model: &str,
        power_mw: i64,
    ) -> LayoutMeter {
        self.transaction
            .prepare_cached(
                "INSERT INTO meters (collector, meter_id, kind, device, counter_max, cpus, method, model)
                 VALUES (?1, ?2, ?3, ?2, 0, ?4, 'bench', ?5)",
            )
            .unwrap()
            .execute(params![collector, id, kind as i32, cpus, model])
            .unwrap();
        let key = self.transaction.last_insert_rowid();
        let mut reading = self
            .transaction
            .prepare_cached(
                "INSERT INTO readings (meter, ts_ns, value, quality, from_ns, delta, step)
                 VALUES (?1, ?2, ?3, 1, ?4, ?5, 0)",
            )
            .unwrap();
        let delta = power_mw * STEP / SECOND;
        for sample in 0..=self.samples {
            let at = START + sample * STEP;
            let interval = (sample > 0).then_some((at - STEP, delta));
            reading
                .execute(params![
                    key,
                    at,
                    sample * delta,
                    interval.map(|i| i.0),
                    interval.map(|i| i.1)
                ])
                .unwrap();
        }
        LayoutMeter {
            key,
            kind,
            device: id.to_owned(),
            cpus: footprint_aggregator::codec::split_cpus(cpus),
            model: model.to_owned(),
            last_ns: Some(START + self.samples * STEP),
        }
    }

    fn host(&self, host: i64, minutes: i64) -> HostLayout {
        let transaction = self.transaction;
        transaction
            .execute(
                "INSERT INTO collectors (name, host, software_version) VALUES (?1, ?1, 'bench')",
                [format!("host-{host}")],
            )
            .unwrap();
        let collector = transaction.last_insert_rowid();
        let mut meters = Vec::new();
        for gpu in 0..8 {
            meters.push(self.meter(
                collector,
                &format!("gpu{gpu}"),
                MeterKind::GpuEnergy,
                "",
                "NVIDIA H100 80GB HBM3",
                350_000 + gpu * 1_000,
            ));
        }
        for (index, cpus) in PACKAGE_CPUS.iter().enumerate() {
            let cpus = footprint_aggregator::codec::join_list(&cpus.clone().collect::<Vec<_>>());
            meters.push(self.meter(
                collector,
                &format!("package-{index}"),
                MeterKind::CpuPackageEnergy,
                &cpus,
                "",
                180_000,
            ));
            meters.push(self.meter(
                collector,
                &format!("package-{index}:dram"),
                MeterKind::DramEnergy,
                &cpus,
                "",
                25_000,
            ));
        }
        meters.push(self.meter(
            collector,
            "outlet",
            MeterKind::OutletEnergy,
            "",
            "",
            3_800_000,
        ));
        let half = START + minutes * 30 * SECOND;
        for (job, start, end, gpus, cpus) in [
            (0, START, None, "gpu0,gpu1,gpu2,gpu3", "0,1,2,3,4,5,6,7"),
            (1, START, Some(half), "gpu4,gpu5", "32,33,34,35"),
            (2, half, None, "gpu6,gpu7", "48,49"),
        ] {
            transaction
                .execute(
                    "INSERT INTO jobs (job_id, scheduler, name, user, project, kind, model)
                     VALUES (?1, 'bench', '', '', '', 1, '')",
                    [format!("job-{host}-{job}")],
                )
                .unwrap();
            let job_key = transaction.last_insert_rowid();
            transaction
                .execute(
                    "INSERT INTO allocations (collector, job, start_ns, end_ns, gpus, cpus) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![collector, job_key, start, end, gpus, cpus],
                )
                .unwrap();
        }
        HostLayout {
            collector,
            meters,
            usage: Vec::new(),
            built_until: None,
        }
    }
}

fn populate(connection: &mut Connection, hosts: i64, minutes: i64) -> Vec<HostLayout> {
    let transaction = connection.transaction().unwrap();
    let writer = Writer {
        transaction: &transaction,
        samples: minutes * 60 * SECOND / STEP,
    };
    let layouts: Vec<HostLayout> = (0..hosts).map(|host| writer.host(host, minutes)).collect();
    transaction
        .execute(
            "INSERT INTO collectors (name, host, software_version) VALUES ('site', 'site', 'bench')",
            [],
        )
        .unwrap();
    let site = transaction.last_insert_rowid();
    writer.meter(
        site,
        "site-energy",
        MeterKind::SiteEnergy,
        "",
        "",
        3_800_000 * hosts * 6 / 5,
    );
    writer.meter(site, "site-water", MeterKind::SiteWater, "", "", hosts * 2);
    transaction.commit().unwrap();
    layouts
}

fn main() {
    let hosts = env("HOSTS", 1_250);
    let minutes = env("MINUTES", 60);
    let dir = tempfile::tempdir().unwrap();
    let mut connection = schema::open(&dir.path().join("footprint.sqlite")).unwrap();
    let started = Instant::now();
    let layouts = populate(&mut connection, hosts, minutes);
    let readings: i64 = connection
        .query_row("SELECT COUNT(*) FROM readings", [], |r| r.get(0))
        .unwrap();
    eprintln!(
        "setup: {hosts} hosts, {minutes} min, {readings} readings written in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let settings =
        LedgerSettings::from_config(&AggregatorConfig::with_data_dir(dir.path().to_path_buf()))
            .unwrap();
    let window = WindowLength::from_seconds(10).unwrap();
    let (wall, cpu_before) = (Instant::now(), cpu_seconds());
    let mut host_windows = 0;
    for layout in &layouts {
        let transaction = connection.transaction().unwrap();
        let progress =
            ledger::build_ready_windows(&transaction, layout, window, &settings).unwrap();
        transaction
            .execute(
                "UPDATE collectors SET built_until_ns = ?2 WHERE id = ?1",
                params![layout.collector, progress.built_until],
            )
            .unwrap();
        transaction.commit().unwrap();
        host_windows += progress.windows;
    }
    let host_stage = wall.elapsed().as_secs_f64();
    let host_stage_cpu = cpu_seconds() - cpu_before;
    let transaction = connection.transaction().unwrap();
    let hours = ledger::site::settle_ready_hours(
        &transaction,
        &settings,
        window,
        &std::collections::BTreeSet::new(),
        footprint_core::UnixNanos(0),
    )
    .unwrap()
    .hours;
    transaction.commit().unwrap();
    let total = wall.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_before;
    // Ageing: deleting the hours' window detail, as the writer does once they are
    // `window_detail_days` old (detail first, each hour as its own pass).
    let ageing_cpu_before = cpu_seconds();
    let transaction = connection.transaction().unwrap();
    let first_hour = START.div_euclid(3_600 * SECOND) * 3_600 * SECOND;
    let deleted = tables::rollups::delete_detail(
        &transaction,
        first_hour,
        first_hour + hours as i64 * 3_600 * SECOND,
    )
    .unwrap();
    transaction.commit().unwrap();
    let ageing_cpu = cpu_seconds() - ageing_cpu_before;
    let span_s = (minutes * 60) as f64;
    println!(
        "{{\"hosts\": {hosts}, \"gpus\": {}, \"minutes\": {minutes}, \"host_windows\": {host_windows}, \
\"hours_settled\": {hours}, \"host_stage_s\": {host_stage:.2}, \"site_stage_s\": {:.2}, \"wall_s\": {total:.2}, \
\"cpu_s\": {cpu:.2}, \"host_windows_per_cpu_s\": {:.0}, \"site_windows_per_cpu_s\": {:.2}, \
\"times_real_time_per_core\": {:.1}, \"host_stage_cpu_s\": {host_stage_cpu:.2}, \"site_stage_cpu_s\": {:.2}, \
\"ageing_rows\": {deleted}, \"ageing_cpu_s\": {ageing_cpu:.2}}}",
        hosts * 8,
        total - host_stage,
        host_windows as f64 / cpu,
        hours as f64 * 360.0 / cpu,
        span_s / cpu,
        cpu - host_stage_cpu,
    );
}
