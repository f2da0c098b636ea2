//! The site's hours wait for every host that builds windows, whatever meters it: a host metered
//! only by its BMC (IPMI DCMI) or only by a PDU outlet holds them back exactly as a GPU host does,
//! so its energy never arrives after the hours it belongs to were settled.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{register_one_meter, submit_minutes};
use footprint_aggregator::AggregatorConfig;
use footprint_aggregator::ledger;
use footprint_aggregator::metrics::AggregatorMetrics;
use footprint_aggregator::store::StoreHandle;
use footprint_aggregator::tables::{LEDGER_FILE, schema};
use footprint_proto::v1::MeterKind;

const MINUTE: i64 = 60 * common::SECOND;
/// 2024-06-03T00:00:00Z.
const T0: i64 = 1_717_372_800 * common::SECOND;

/// A GPU host and the site meter report two hours and a minute; the host under test (metered by
/// `kind`) only half an hour, then the rest. Returns where the site had settled before and after
/// the rest arrived, and how many hours were revised.
async fn settled_with_a_slow_host(kind: MeterKind) -> (Option<i64>, Option<i64>, i64) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = AggregatorConfig::with_data_dir(dir.path().to_path_buf());
    config.group_commit_wait_ms = 0;
    config.window_seconds = 60;
    config.facility.require_site_meter = true;
    // Nobody falls silent during the test.
    config.facility.max_wait_s = 3_600;
    let store = StoreHandle::open(&config, Arc::new(AggregatorMetrics::default())).unwrap();
    let gpu = register_one_meter(&store, "gpu", MeterKind::GpuEnergy).await;
    let slow = register_one_meter(&store, "slow", kind).await;
    let site = register_one_meter(&store, "site", MeterKind::SiteEnergy).await;
    submit_minutes(&store, (gpu, "gpu"), 1, T0, (0, 121)).await;
    submit_minutes(&store, (site, "site"), 1, T0, (0, 121)).await;
    submit_minutes(&store, (slow, "slow"), 1, T0, (0, 30)).await;
    store.build_windows().await.unwrap();
    let ledger_path = dir.path().join(LEDGER_FILE);
    let settled = || {
        let connection = schema::open_reader(&ledger_path).unwrap();
        ledger::site::settled_until(&connection)
            .unwrap()
            .map(|until| until.0)
    };
    let before = settled();
    submit_minutes(&store, (slow, "slow"), 2, T0, (31, 121)).await;
    store.build_windows().await.unwrap();
    let after = settled();
    let connection = schema::open_reader(&ledger_path).unwrap();
    let revised: i64 = connection
        .query_row("SELECT COUNT(*) FROM hour_revisions", [], |row| row.get(0))
        .unwrap();
    (before, after, revised)
}

#[tokio::test]
async fn a_host_metered_only_by_its_bmc_holds_the_site_back_as_a_gpu_host_does() {
    let gpu_host = settled_with_a_slow_host(MeterKind::GpuEnergy).await;
    assert_eq!(gpu_host, (None, Some(T0 + 120 * MINUTE), 0));
    assert_eq!(
        settled_with_a_slow_host(MeterKind::HostEnergy).await,
        gpu_host
    );
}

#[tokio::test]
async fn a_host_metered_only_by_a_pdu_outlet_holds_the_site_back_as_a_gpu_host_does() {
    let gpu_host = settled_with_a_slow_host(MeterKind::GpuEnergy).await;
    assert_eq!(
        settled_with_a_slow_host(MeterKind::OutletEnergy).await,
        gpu_host
    );
}
