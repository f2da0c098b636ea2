//! The load forecast read from a ledger: hourly roll-ups and 15-minute window detail joined into
//! one series, the origin where the data ends (or where asked), the model's backtest on the same
//! series, and the HTTP endpoint's answers and refusals.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use footprint_aggregator::AggregatorConfig;
use footprint_aggregator::forecast::{ForecastRequest, HORIZON, STEP_NS, make_forecast};
use footprint_aggregator::query::LedgerReader;
use footprint_aggregator::tables::schema;
use http_body_util::BodyExt;
use rusqlite::params;
use tower::ServiceExt;

const HOUR_NS: i64 = 3_600_000_000_000;
/// 2024-03-04T00:00:00Z, a Monday.
const START_NS: i64 = 1_709_510_400_000_000_000;
const DAYS: i64 = 30;
/// The last two days are kept as 10-second windows, the rest as hourly roll-ups.
const DETAIL_FROM_NS: i64 = START_NS + (DAYS - 2) * 24 * HOUR_NS;

/// The site's draw: 40 kW at night, 100 kW from 08:00 to 20:00 UTC.
fn kw_at(at_ns: i64) -> i64 {
    let hour = at_ns.rem_euclid(24 * HOUR_NS) / HOUR_NS;
    if (8..20).contains(&hour) { 100 } else { 40 }
}

/// A ledger whose site drew `kw_at` for `DAYS` days, metered.
fn ledger(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("footprint.sqlite");
    let connection = schema::open(&path).unwrap();
    let mut config = AggregatorConfig::with_data_dir(dir.to_path_buf());
    config.disclosure.name = Some("Test hall".into());
    connection
        .execute(
            "INSERT INTO aggregator_config (only, toml, written_ns) VALUES (1, ?1, 0)",
            [toml::to_string(&config).unwrap()],
        )
        .unwrap();
    connection.execute_batch("BEGIN").unwrap();
    let mut hour = START_NS;
    while hour < DETAIL_FROM_NS {
        // kW × 3600 s × 1e6 mJ/kJ.
        let energy_mj = kw_at(hour) * 3_600 * 1_000_000;
        connection
            .execute(
                "INSERT INTO rollup_site (hour_ns, facility_mj, it_mj, overhead_deficit_mj,
                 unattributed_mj, water_ml, unattributed_water_ml, co2e_location_mg,
                 unattributed_co2e_location_mg, co2e_market_mg, unattributed_co2e_market_mg,
                 windows_it_only, windows_metered, windows_assumed_pue)
                 VALUES (?1, ?2, ?2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 360, 0)",
                params![hour, energy_mj],
            )
            .unwrap();
        hour += HOUR_NS;
    }
    let mut window = DETAIL_FROM_NS;
    let end = START_NS + DAYS * 24 * HOUR_NS;
    while window < end {
        connection
            .execute(
                "INSERT INTO site_windows (start_ns, facility_mj, it_mj, overhead_source,
                 overhead_deficit_mj, unattributed_mj, water_ml, unattributed_water_ml,
                 co2e_location_mg, unattributed_co2e_location_mg, co2e_market_mg,
                 unattributed_co2e_market_mg)
                 VALUES (?1, ?2, ?2, 1, 0, 0, 0, 0, 0, 0, 0, 0)",
                params![window, kw_at(window) * 10 * 1_000_000],
            )
            .unwrap();
        window += 10_000_000_000;
    }
    connection.execute_batch("COMMIT").unwrap();
    path
}

#[test]
fn a_forecast_continues_the_site_series_from_where_the_ledger_ends() {
    let dir = tempfile::tempdir().unwrap();
    let path = ledger(dir.path());
    let forecast = make_forecast(&path, &ForecastRequest::default()).unwrap();
    assert_eq!(forecast.site, "Test hall");
    assert_eq!(forecast.origin, "2024-04-03T00:00:00Z");
    assert_eq!(forecast.step, "PT15M");
    assert_eq!(forecast.points.len(), HORIZON);
    assert_eq!(forecast.points[0].timestamp, "2024-04-03T00:00:00Z");
    assert_eq!(forecast.points[191].timestamp, "2024-04-04T23:45:00Z");
    assert!(
        forecast.target.contains("site meter"),
        "{}",
        forecast.target
    );
    // Thirty days of quarters, none missing: roll-ups and windows joined without a seam.
    assert_eq!(forecast.training.notes.steps, (DAYS * 96) as u64);
    assert_eq!(forecast.training.notes.missing_steps, 0);
    for point in &forecast.points {
        assert!(point.p10_kw <= point.p50_kw && point.p50_kw <= point.p90_kw);
    }
    // The pattern is the same every day: night and day are forecast as they were.
    assert_eq!(forecast.points[8].p50_kw, 40.0, "02:00");
    assert_eq!(forecast.points[12 * 4].p50_kw, 100.0, "12:00");
    assert_eq!(forecast.points[36 * 4].p50_kw, 100.0, "12:00 the next day");
    // The backtest ran on the same series from the daily origins it allows, beside both
    // baselines: last week's value is exact here, persistence is not.
    let backtest = forecast.backtest.as_ref().expect("a backtest");
    assert!(backtest.origins >= 15, "{backtest:?}");
    assert_eq!(backtest.seasonal_naive.pinball_loss, 0.0);
    assert!(backtest.pinball_ratio_persistence < 0.2, "{backtest:?}");
}

#[test]
fn a_forecast_from_an_earlier_instant_reads_only_the_history_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = ledger(dir.path());
    let from_ns = START_NS + 20 * 24 * HOUR_NS + 7 * STEP_NS + 123;
    let forecast = make_forecast(
        &path,
        &ForecastRequest {
            from_ns: Some(from_ns),
        },
    )
    .unwrap();
    assert_eq!(forecast.origin, "2024-03-24T01:45:00Z");
    assert_eq!(forecast.training.to, forecast.origin);
    assert_eq!(forecast.training.notes.steps, 20 * 96 + 7);
    // Too early for any forecast: the reason, not a guess.
    let error = make_forecast(
        &path,
        &ForecastRequest {
            from_ns: Some(START_NS + 2 * 24 * HOUR_NS),
        },
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("the model needs at least"), "{error}");
    for from_ns in [i64::MIN, START_NS - 1] {
        let error = make_forecast(
            &path,
            &ForecastRequest {
                from_ns: Some(from_ns),
            },
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("from: "), "{from_ns}: {error}");
    }
    // Far past the ledger's end: refused by name, without padding a series out to it.
    let error = make_forecast(
        &path,
        &ForecastRequest {
            from_ns: Some(i64::MAX - 1),
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains(
            "from: more than a day after the ledger's last quarter hour (2024-04-03T00:00:00Z)"
        ),
        "{error}"
    );
}

async fn get(path: &Path, uri: &str) -> (u16, String, String) {
    let reader = LedgerReader::new(path.to_path_buf());
    let router =
        footprint_aggregator::http::router(reader, Arc::new(Default::default()), None, None);
    let response = router
        .oneshot(
            axum::http::Request::builder()
                .uri(uri)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        content_type,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

#[tokio::test]
async fn the_http_endpoint_serves_every_format_and_names_bad_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let path = ledger(dir.path());
    let (status, content_type, body) = get(&path, "/api/v1/forecast?format=csv").await;
    assert_eq!(
        (status, content_type.as_str()),
        (200, "text/csv; charset=utf-8")
    );
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines[0], "timestamp,p10_kw,p50_kw,p90_kw");
    assert_eq!(lines.len(), 1 + HORIZON);
    assert!(lines[1].starts_with("2024-04-03T00:00:00Z,"));

    let (status, _, body) = get(&path, "/api/v1/forecast").await;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["points"].as_array().unwrap().len(), HORIZON);
    assert_eq!(json["model"]["name"], "analog-quantiles");

    let (status, _, body) = get(
        &path,
        "/api/v1/forecast?format=openadr&program_id=P-1&event_id=E-9",
    )
    .await;
    assert_eq!(status, 200);
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["objectType"], "REPORT");
    assert_eq!(report["programID"], "P-1");
    assert_eq!(report["eventID"], "E-9");
    assert_eq!(report["clientName"], "Test hall");
    let intervals = report["resources"][0]["intervals"].as_array().unwrap();
    assert_eq!(intervals.len(), HORIZON);
    assert_eq!(intervals[4]["payloads"][0]["type"], "USAGE_FORECAST");

    for (uri, named) in [
        ("/api/v1/forecast?format=xml", "format"),
        ("/api/v1/forecast?from=yesterday", "from"),
        ("/api/v1/forecast?horizon=3", "horizon"),
    ] {
        let (status, _, body) = get(&path, uri).await;
        assert_eq!(status, 400, "{uri}: {body}");
        assert!(body.contains(named), "{uri}: {body}");
    }
}
