//! Guarantees of origin accrue from 1 January: a ledger that starts keeping the books in June
//! starts with the certificates of January to May in hand, not with none.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{register_one_meter, submit_minutes};
use footprint_aggregator::AggregatorConfig;
use footprint_aggregator::metrics::AggregatorMetrics;
use footprint_aggregator::store::StoreHandle;
use footprint_aggregator::tables::{LEDGER_FILE, schema};
use footprint_proto::v1::MeterKind;

use common::SECOND;
/// 2024-06-03T00:00:00Z: 3 696 hours into the leap year 2024 (8 784 hours).
const T0: i64 = 1_717_372_800 * SECOND;

#[tokio::test]
async fn a_ledger_started_in_june_has_the_certificates_accrued_since_january() {
    let dir = tempfile::tempdir().unwrap();
    let feed = dir.path().join("grid.csv");
    std::fs::write(
        &feed,
        "datetime,zone,carbon_intensity_gco2_per_kwh\n2024-06-03T00:00:00Z,Z,300\n2024-06-03T01:00:00Z,Z,300\n",
    )
    .unwrap();
    let mut config = AggregatorConfig::with_data_dir(dir.path().to_path_buf());
    config.group_commit_wait_ms = 0;
    config.window_seconds = 60;
    config.carbon.zone = "Z".into();
    config.carbon.intensity_files = vec![feed];
    // 0.1 MWh a year: 11.4 Wh an hour, far less than the host's 100 Wh an hour; but the 3 696
    // hours since 1 January left 42 kWh of certificates.
    config.carbon.guarantees_of_origin_mwh_per_year = 0.1;
    let store = StoreHandle::open(&config, Arc::new(AggregatorMetrics::default())).unwrap();
    // 100 W for an hour and a minute: the first hour settles.
    let host = register_one_meter(&store, "h", MeterKind::GpuEnergy).await;
    submit_minutes(&store, (host, "h"), 1, T0, (0, 61)).await;
    store.build_windows().await.unwrap();
    let connection = schema::open_reader(&dir.path().join(LEDGER_FILE)).unwrap();
    let (load, go, uncovered, balance, market): (i64, i64, i64, i64, i64) = connection
        .query_row(
            "SELECT load_mj, go_mj, uncovered_mj, go_balance_after_mj, co2e_market_mg FROM site_hours WHERE hour_ns = ?1",
            [T0],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?)),
        )
        .unwrap();
    // 100 W for an hour: 360 000 000 mJ, all covered by certificates.
    assert_eq!(
        (load, go, uncovered, market),
        (360_000_000, 360_000_000, 0, 0)
    );
    // Accrued from 1 January to the end of the first hour (3 697 of 8 784 hours of 0.1 MWh),
    // less what the hour used.
    let accrued: i64 = 360_000_000_000 * 3_697 / 8_784;
    assert!((balance - (accrued - load)).abs() <= 1, "{balance}");
}
