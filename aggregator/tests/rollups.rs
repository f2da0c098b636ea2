//! Roll-ups over days: a host with a varying GPU load, two jobs and a site meter over 26 hours,
//! window detail aged as each hour settles. A span holding a whole UTC day reads that day from
//! the daily roll-ups and the rest from the hourly ones; it must give exactly what the same
//! span read hour by hour gives — per job, per host and for the site. A span that cuts an aged
//! hour is refused, naming the bound.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{SECOND, reading};
use footprint_aggregator::AggregatorConfig;
use footprint_aggregator::ledger::{self, FacilityWindow, Grouping, JobFilter, SeriesStep};
use footprint_aggregator::metrics::AggregatorMetrics;
use footprint_aggregator::store::StoreHandle;
use footprint_aggregator::tables::{LEDGER_FILE, schema};
use footprint_core::{Span, UnixNanos};
use footprint_proto::v1::{Allocation, Batch, Hello, Job, MeterInfo, MeterKind};

const HOUR: i64 = 3_600 * SECOND;
/// 2024-06-03T00:00:00Z.
const T0: i64 = 1_717_372_800 * SECOND;
const HOURS: i64 = 26;
const STEP: i64 = 600 * SECOND;

async fn register(store: &StoreHandle, name: &str, kind: MeterKind) -> i64 {
    store
        .hello(Hello {
            collector_id: name.into(),
            host: name.into(),
            software_version: "t".into(),
            meters: vec![MeterInfo {
                meter_id: "energy".into(),
                kind: kind as i32,
                device: "d0".into(),
                ..MeterInfo::default()
            }],
        })
        .await
        .unwrap()
        .collector
}

async fn submit(store: &StoreHandle, key: i64, name: &str, batch: Batch) {
    let durable = store
        .submit(
            key,
            Batch {
                collector_id: name.into(),
                ..batch
            },
        )
        .await
        .unwrap();
    let outcome = durable.await.unwrap().unwrap();
    assert!(outcome.rejections.is_empty(), "{:?}", outcome.rejections);
}

fn allocation(id: &str, from: i64, to: i64) -> Allocation {
    Allocation {
        job: Some(Job {
            id: id.into(),
            ..Job::default()
        }),
        gpus: vec!["d0".into()],
        cpus: vec![],
        start_ns: from,
        end_ns: to,
        mig: vec![],
    }
}

fn build(dir: &std::path::Path) {
    let mut config = AggregatorConfig::with_data_dir(dir.to_path_buf());
    config.group_commit_wait_ms = 0;
    config.window_seconds = 600;
    config.facility.require_site_meter = true;
    config.ledger.window_detail_days = 0;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = StoreHandle::open(&config, Arc::new(AggregatorMetrics::default())).unwrap();
        let host = register(&store, "h", MeterKind::GpuEnergy).await;
        let site = register(&store, "site", MeterKind::SiteEnergy).await;
        // A load that changes every step, so that no two hours are alike.
        let (mut gpu, mut facility) = (0u64, 0u64);
        let (mut gpu_readings, mut site_readings) = (Vec::new(), Vec::new());
        for step in 0..=HOURS * HOUR / STEP {
            let at = T0 + step * STEP;
            gpu_readings.push(reading("energy", gpu, at));
            site_readings.push(reading("energy", facility, at));
            let joules = 100_000 + (step as u64 * 7_919) % 250_000;
            gpu += joules * 1_000;
            facility += joules * 1_250;
        }
        submit(
            &store,
            host,
            "h",
            Batch {
                seq: 1,
                readings: gpu_readings,
                allocations: vec![
                    allocation("j1", T0 + 3 * HOUR, T0 + 25 * HOUR + HOUR / 2),
                    allocation("j2", T0 + 25 * HOUR + HOUR / 2, T0 + HOURS * HOUR),
                ],
                ..Batch::default()
            },
        )
        .await;
        submit(
            &store,
            site,
            "site",
            Batch {
                seq: 1,
                readings: site_readings,
                ..Batch::default()
            },
        )
        .await;
        store.build_windows().await.unwrap();
    });
}

/// The figures that add up over spans (revision counts and the span's bounds left out).
fn additive(window: &FacilityWindow) -> Vec<i64> {
    let mut figures = Vec::new();
    for balance in [
        window.energy_mj,
        window.water_ml,
        window.co2e_location_mg,
        window.co2e_market_mg,
        window.co2e_embodied_mg,
    ] {
        figures.extend([
            balance.site,
            balance.jobs,
            balance.idle,
            balance.unattributed,
        ]);
    }
    figures.extend([window.it_mj as i64, window.overhead_mj as i64]);
    figures
}

fn add(total: &mut Vec<i64>, more: &[i64]) {
    if total.is_empty() {
        total.resize(more.len(), 0);
    }
    for (sum, value) in total.iter_mut().zip(more) {
        *sum += value;
    }
}

fn job_figures(job: &ledger::JobFootprint) -> Vec<i64> {
    [
        job.energy_mj,
        job.gpu_energy_mj,
        job.overhead_mj,
        job.energy_quality.measured_mj,
        job.energy_quality.interpolated_mj,
        job.energy_quality.estimated_mj,
        job.water_ml,
        job.co2e_location_mg,
        job.co2e_market_mg,
        job.co2e_embodied_mg,
        (job.gpu_hours * 3.6e12).round() as u64,
    ]
    .map(|v| v as i64)
    .to_vec()
}

#[test]
fn a_span_read_by_days_gives_what_it_gives_hour_by_hour() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let connection = schema::open_reader(&dir.path().join(LEDGER_FILE)).unwrap();
    let settled = ledger::settled_span(&connection).unwrap().unwrap();
    assert_eq!(
        settled,
        Span::new(UnixNanos(T0), UnixNanos(T0 + HOURS * HOUR))
    );
    let detail: i64 = connection
        .query_row("SELECT COUNT(*) FROM window_jobs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(detail, 0, "every settled hour aged");
    let days: i64 = connection
        .query_row("SELECT COUNT(*) FROM rollup_hosts_days", [], |r| r.get(0))
        .unwrap();
    assert_eq!(days, 2);

    for grouping in [Grouping::Site, Grouping::Host] {
        let whole = ledger::facility_totals(&connection, settled, SeriesStep::Total, grouping)
            .unwrap()
            .remove(0);
        let mut by_hours = Vec::new();
        for hour in ledger::facility_totals(&connection, settled, SeriesStep::Every(HOUR), grouping)
            .unwrap()
        {
            add(&mut by_hours, &additive(&hour));
        }
        assert_eq!(additive(&whole), by_hours, "{grouping:?}");
        assert_eq!(whole.energy_mj.imbalance(), 0);
    }

    let filter = JobFilter {
        from_ns: T0,
        to_ns: T0 + HOURS * HOUR,
        ..JobFilter::default()
    };
    let whole = ledger::list_jobs(&connection, &filter).unwrap();
    assert_eq!(whole.len(), 2);
    for job in &whole {
        let mut by_hours = Vec::new();
        for hour in 0..HOURS {
            let filter = JobFilter {
                from_ns: T0 + hour * HOUR,
                to_ns: T0 + (hour + 1) * HOUR,
                id: Some(job.id.clone()),
                ..JobFilter::default()
            };
            for part in ledger::list_jobs(&connection, &filter).unwrap() {
                add(&mut by_hours, &job_figures(&part));
            }
        }
        assert_eq!(job_figures(job), by_hours, "{}", job.id);
        assert!(job.energy_mj > 0);
    }

    // Half past an aged hour: only its roll-up is left.
    let cut = JobFilter {
        from_ns: T0 + HOUR / 2,
        ..JobFilter::default()
    };
    let error = ledger::list_jobs(&connection, &cut)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("from:") && error.contains("aged out"),
        "{error}"
    );
}
