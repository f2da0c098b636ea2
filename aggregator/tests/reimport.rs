//! Re-importing an intensity feed: an identical copy changes nothing in the ledger; a changed
//! figure for a settled hour reopens it, the site stage prices it again, and the hour is recorded
//! as revised with a reason naming the feed.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{register_one_meter, submit_minutes};
use footprint_aggregator::AggregatorConfig;
use footprint_aggregator::ledger;
use footprint_aggregator::metrics::AggregatorMetrics;
use footprint_aggregator::store::StoreHandle;
use footprint_aggregator::tables::{LEDGER_FILE, schema};
use footprint_proto::v1::MeterKind;

use common::SECOND;
const MINUTE: i64 = 60 * SECOND;
const HOUR: i64 = 60 * MINUTE;
/// 2024-06-03T00:00:00Z.
const T0: i64 = 1_717_372_800 * SECOND;

/// A plain-layout feed for zone Z: three hours at the given g/kWh.
fn feed(path: &Path, grams: [u32; 3]) {
    let mut csv = String::from("datetime,zone,carbon_intensity_gco2_per_kwh\n");
    for (hour, g) in grams.iter().enumerate() {
        csv.push_str(&format!("2024-06-03T{hour:02}:00:00Z,Z,{g}\n"));
    }
    std::fs::write(path, csv).unwrap();
}

/// Everything the ledger says about intensity and the site's hours, to compare before and after.
fn books(path: &Path) -> Vec<String> {
    let connection = schema::open_reader(path).unwrap();
    let mut rows = Vec::new();
    for query in [
        "SELECT zone, hour_ns, mg_per_kwh, quality, source, feed FROM intensity ORDER BY 1, 2",
        "SELECT id, file, sha256, layout, hour_convention, hours, gaps, imported_ns FROM feeds ORDER BY 1",
        "SELECT start_ns, intensity_mg_per_kwh, co2e_location_mg FROM site_windows ORDER BY 1",
        "SELECT hour_ns, reason FROM hours_reopened ORDER BY 1",
        "SELECT hour_ns, revisions, reason FROM hour_revisions ORDER BY 1",
        "SELECT key, value FROM ledger_state ORDER BY 1",
    ] {
        let mut statement = connection.prepare(query).unwrap();
        let columns = statement.column_count();
        let found: Vec<String> = statement
            .query_map([], |row| {
                let cells: Vec<String> = (0..columns)
                    .map(|i| format!("{:?}", row.get_ref(i).unwrap()))
                    .collect();
                Ok(cells.join("|"))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        rows.push(format!("{query}: {found:?}"));
    }
    rows
}

#[tokio::test]
async fn a_changed_factor_reprices_its_settled_hour_and_an_identical_one_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("grid.csv");
    feed(&first, [100, 100, 100]);
    let mut config = AggregatorConfig::with_data_dir(dir.path().to_path_buf());
    config.group_commit_wait_ms = 0;
    config.window_seconds = 60;
    config.carbon.zone = "Z".into();
    config.carbon.intensity_files = vec![first.clone()];
    let store = StoreHandle::open(&config, Arc::new(AggregatorMetrics::default())).unwrap();
    // 100 W for two hours and a minute: the first two hours settle.
    let host = register_one_meter(&store, "h", MeterKind::GpuEnergy).await;
    submit_minutes(&store, (host, "h"), 1, T0, (0, 121)).await;
    store.build_windows().await.unwrap();
    let path = dir.path().join(LEDGER_FILE);
    let location = |path: &Path| {
        let connection = schema::open_reader(path).unwrap();
        let span = footprint_core::Span::new(
            footprint_core::UnixNanos(T0),
            footprint_core::UnixNanos(T0 + HOUR),
        );
        ledger::facility_totals(
            &connection,
            span,
            ledger::SeriesStep::Total,
            ledger::Grouping::Site,
        )
        .unwrap()[0]
            .co2e_location_mg
            .site
    };
    // 100 W for an hour is 0.1 kWh, priced once for the hour: 10 g at 100 g/kWh.
    assert_eq!(location(&path), 10_000);
    let before = books(&path);

    // The same bytes again, under another name: no byte of the books changes.
    let copy = dir.path().join("grid-copy.csv");
    std::fs::copy(&first, &copy).unwrap();
    let writer = schema::open(&path).unwrap();
    let (_, record) = ledger::intensity::import(&writer, &copy, None, 1).unwrap();
    assert_eq!(record.changed_hours, 0);
    assert_eq!(books(&path), before);

    // A corrected figure for the first (settled) hour reopens it and prices it again.
    let corrected = dir.path().join("grid-corrected.csv");
    feed(&corrected, [200, 100, 100]);
    let (_, record) = ledger::intensity::import(&writer, &corrected, None, 2).unwrap();
    assert_eq!(
        (record.changed_hours, record.first_changed.clone()),
        (1, Some(("Z".to_owned(), T0)))
    );
    drop(writer);
    store.build_windows().await.unwrap();
    assert_eq!(location(&path), 20_000);
    let connection = schema::open_reader(&path).unwrap();
    let (hour, reason): (i64, String) = connection
        .query_row("SELECT hour_ns, reason FROM hour_revisions", [], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .unwrap();
    assert_eq!(hour, T0);
    assert!(reason.contains("grid-corrected.csv"), "{reason}");
    let hours = ledger::intensity::intensity_hours(
        &connection,
        "Z",
        footprint_core::Span::new(
            footprint_core::UnixNanos(T0),
            footprint_core::UnixNanos(T0 + HOUR),
        ),
    )
    .unwrap();
    assert_eq!(hours[0].priced.map(|mg| mg.0), Some(200_000));
    assert_eq!(hours[0].feeds[0].file, "grid-corrected.csv");
}
