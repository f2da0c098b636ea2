//! The grid signal and the Carbon Aware SDK's web API, as an SDK client meets them: a real feed
//! (Germany, November 2023, Electricity Maps) imported into a ledger, then every endpoint's keys,
//! types and figures checked against the feed's own rows (with the averaging done here again),
//! and the 204 and 400 answers.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use footprint_aggregator::AggregatorConfig;
use footprint_aggregator::query::LedgerReader;
use footprint_aggregator::tables::schema;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const FEED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../cli/data/grid-intensity-de-2023-11.csv"
);
const HOUR_NS: i64 = 3_600_000_000_000;

/// The feed's rows: (hour start as RFC 3339, g/kWh).
fn feed_rows() -> Vec<(String, f64)> {
    std::fs::read_to_string(FEED)
        .unwrap()
        .lines()
        .skip(1)
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            (fields[0].to_owned(), fields[2].parse().unwrap())
        })
        .collect()
}

fn g_at(rows: &[(String, f64)], at: &str) -> f64 {
    rows.iter().find(|(t, _)| t == at).unwrap().1
}

/// A ledger holding the German feed and `extra` feed files, with `config`'s grid settings.
fn ledger(dir: &Path, config: impl FnOnce(&mut AggregatorConfig), extra: &[PathBuf]) -> PathBuf {
    let path = dir.join("footprint.sqlite");
    let connection = schema::open(&path).unwrap();
    let mut aggregator = AggregatorConfig::with_data_dir(dir.to_path_buf());
    aggregator.carbon.zone = "DE".into();
    config(&mut aggregator);
    connection
        .execute(
            "INSERT INTO aggregator_config (only, toml, written_ns) VALUES (1, ?1, 0)",
            [toml::to_string(&aggregator).unwrap()],
        )
        .unwrap();
    let now = footprint_core::time::parse_rfc3339("2026-01-01T00:00:00Z")
        .unwrap()
        .0;
    for file in std::iter::once(PathBuf::from(FEED)).chain(extra.iter().cloned()) {
        footprint_aggregator::ledger::intensity::import(&connection, &file, None, now).unwrap();
    }
    path
}

async fn request(path: &Path, method: &str, uri: &str, body: &str) -> (u16, String, String, Value) {
    let router = footprint_aggregator::http::router(
        LedgerReader::new(path.to_path_buf()),
        Arc::new(Default::default()),
        None,
        None,
    );
    let response = router
        .oneshot(
            axum::http::Request::builder()
                .method(method)
                .uri(uri)
                .header("content-type", "application/json")
                .body(Body::from(body.to_owned()))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let (content_type, source) = (
        header("content-type"),
        header("x-footprint-forecast-source"),
    );
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, content_type, source, json)
}

async fn get(path: &Path, uri: &str) -> (u16, Value) {
    let (status, _, _, json) = request(path, "GET", uri, "").await;
    (status, json)
}

fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

#[tokio::test]
async fn observed_emissions_have_the_sdks_keys_types_and_the_feeds_figures() {
    let dir = tempfile::tempdir().unwrap();
    let path = ledger(dir.path(), |_| {}, &[]);
    let rows = feed_rows();

    // One instant: the hour holding it, as the SDK's EmissionsData.
    let (status, body) = get(
        &path,
        "/emissions/bylocation?location=DE&time=2023-11-06T10:30:00Z",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let entries = body.as_array().unwrap();
    assert_eq!(entries.len(), 1);
    let entry = &entries[0];
    assert_eq!(keys(entry), ["duration", "location", "rating", "time"]);
    assert_eq!(entry["location"], "DE");
    assert_eq!(entry["time"], "2023-11-06T10:00:00+00:00");
    assert_eq!(entry["duration"], "01:00:00");
    assert_eq!(
        entry["rating"].as_f64().unwrap(),
        g_at(&rows, "2023-11-06T10:00:00Z")
    );

    // A span over several locations (`locations`, as the SDK's docs spell it, works too): the
    // hours it overlaps, of the locations that have data.
    let (status, body) = get(
        &path,
        "/emissions/bylocations?locations=DE&location=NOWHERE&time=2023-11-06T10:00:00Z&toTime=2023-11-06T13:00:00Z",
    )
    .await;
    assert_eq!(status, 200);
    let ratings: Vec<f64> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["rating"].as_f64().unwrap())
        .collect();
    let expected: Vec<f64> = (10..13)
        .map(|h| g_at(&rows, &format!("2023-11-06T{h}:00:00Z")))
        .collect();
    assert_eq!(ratings, expected);

    // Best: the lowest of a day, found here from the feed's rows.
    let (status, body) = get(
        &path,
        "/emissions/bylocations/best?location=DE&time=2023-11-07T00:00:00Z&toTime=2023-11-08T00:00:00Z",
    )
    .await;
    assert_eq!(status, 200);
    let day: Vec<&(String, f64)> = rows
        .iter()
        .filter(|(t, _)| t.starts_with("2023-11-07"))
        .collect();
    let lowest = day.iter().map(|(_, g)| *g).fold(f64::INFINITY, f64::min);
    let best = body.as_array().unwrap();
    assert!(!best.is_empty());
    for entry in best {
        assert_eq!(entry["rating"].as_f64().unwrap(), lowest);
    }
    assert_eq!(best.len(), day.iter().filter(|(_, g)| *g == lowest).count());

    // Average over a span that cuts hours: each hour weighted by its overlap (an SDK date alone
    // is its midnight).
    let (status, body) = get(
        &path,
        "/emissions/average-carbon-intensity?location=DE&startTime=2023-11-06T10:30:00Z&endTime=2023-11-06T12:30:00Z",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        keys(&body),
        ["carbonIntensity", "endTime", "location", "startTime"]
    );
    let g = |h: u32| g_at(&rows, &format!("2023-11-06T{h}:00:00Z"));
    let expected = (0.5 * g(10) + g(11) + 0.5 * g(12)) / 2.0;
    assert!(
        (body["carbonIntensity"].as_f64().unwrap() - expected).abs() < 0.001,
        "{body} vs {expected}"
    );
    assert_eq!(body["startTime"], "2023-11-06T10:30:00+00:00");
    let (status, _, _, batch) = request(
        &path,
        "POST",
        "/emissions/average-carbon-intensity/batch",
        &json!([
            {"location": "DE", "startTime": "2023-11-06", "endTime": "2023-11-07"},
            {"location": "DE", "startTime": "2023-11-06T10:30:00Z", "endTime": "2023-11-06T12:30:00Z"}
        ])
        .to_string(),
    )
    .await;
    assert_eq!(status, 200, "{batch}");
    let first_day: f64 = (0..24)
        .map(|h| g_at(&rows, &format!("2023-11-06T{h:02}:00:00Z")))
        .sum::<f64>()
        / 24.0;
    assert!((batch[0]["carbonIntensity"].as_f64().unwrap() - first_day).abs() < 0.001);
    assert_eq!(batch[1]["carbonIntensity"], body["carbonIntensity"]);

    // Locations: every zone with data, coordinates where configured.
    let (status, body) = get(&path, "/locations").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"DE": {"latitude": null, "longitude": null, "name": "DE"}})
    );
}

#[tokio::test]
async fn empty_answers_are_204_and_bad_parameters_a_problem_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = ledger(dir.path(), |_| {}, &[]);
    for uri in [
        "/emissions/bylocation?location=NOWHERE&time=2023-11-06T10:00:00Z",
        "/emissions/bylocations?location=DE&time=2020-01-01T00:00:00Z&toTime=2020-01-02T00:00:00Z",
        "/emissions/bylocations/best?location=NOWHERE",
        "/emissions/average-carbon-intensity?location=DE&startTime=2020-01-01T00:00:00Z&endTime=2020-01-02T00:00:00Z",
    ] {
        let (status, _, _, body) = request(&path, "GET", uri, "").await;
        assert_eq!(status, 204, "{uri}: {body}");
    }
    for (method, uri, body, named) in [
        ("GET", "/emissions/bylocation", "", "location"),
        (
            "GET",
            "/emissions/bylocations?location=DE&toTime=2023-11-06T10:00:00Z",
            "",
            "time",
        ),
        (
            "GET",
            "/emissions/bylocations?location=DE&time=2023-11-07T00:00:00Z&toTime=2023-11-06T00:00:00Z",
            "",
            "time",
        ),
        (
            "GET",
            "/emissions/bylocation?location=DE&time=yesterday",
            "",
            "time",
        ),
        (
            "GET",
            "/emissions/average-carbon-intensity?location=DE&startTime=2023-11-06T00:00:00Z",
            "",
            "endTime",
        ),
        (
            "GET",
            "/emissions/forecasts/current?location=DE&windowSize=ten",
            "",
            "windowSize",
        ),
        ("GET", "/emissions/forecasts/current", "", "location"),
        (
            "POST",
            "/emissions/forecasts/batch",
            r#"[{"location": "DE"}]"#,
            "[0].requestedAt",
        ),
        (
            "POST",
            "/emissions/forecasts/batch",
            r#"[{"location": "DE", "requestedAt": "2023-11-17T00:00:00Z", "windowSize": 100000}]"#,
            "[0].windowSize",
        ),
        (
            "POST",
            "/emissions/forecasts/batch",
            r#"{"location": "DE"}"#,
            "body",
        ),
        (
            "POST",
            "/emissions/average-carbon-intensity/batch",
            r#"[{"location": "DE", "startTime": 5}]"#,
            "[0].startTime",
        ),
    ] {
        let (status, content_type, _, problem) = request(&path, method, uri, body).await;
        assert_eq!(status, 400, "{uri} {body}: {problem}");
        assert_eq!(content_type, "application/problem+json", "{uri}");
        assert_eq!(problem["status"], 400);
        assert!(
            problem["errors"].get(named).is_some(),
            "{uri} {body}: {problem}"
        );
    }
}

/// Hourly rows of `zone` around the real now, as a forecast feed imported now would hold them.
fn feed_around_now(dir: &Path, zone: &str) -> (PathBuf, i64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let hour = now.div_euclid(HOUR_NS) * HOUR_NS;
    let mut text = String::from("datetime,zone,carbon_intensity_gco2_per_kwh\n");
    for h in -240..36 {
        let at =
            footprint_core::time::format_rfc3339(footprint_core::UnixNanos(hour + h * HOUR_NS));
        // A daily shape: cleanest at 13:00.
        let hour_of_day = (hour + h * HOUR_NS).rem_euclid(24 * HOUR_NS) / HOUR_NS;
        text.push_str(&format!(
            "{at},{zone},{}\n",
            200 + (hour_of_day - 13).abs() * 10
        ));
    }
    let file = dir.join("around-now.csv");
    std::fs::write(&file, text).unwrap();
    (file, hour)
}

#[tokio::test]
async fn forecasts_come_from_a_forecast_feed_else_footprints_own_and_say_which() {
    let dir = tempfile::tempdir().unwrap();
    let (file, hour) = feed_around_now(dir.path(), "XX");
    // The feeds are imported at 2026-01-01; the one around now is therefore read as what was known
    // then only where its hours lie after that import.
    let path = ledger(dir.path(), |_| {}, &[file]);

    // As of a past instant, nothing imported by then covers the next hours: Footprint's own
    // forecast from the hours before it, rolled into two-hour windows as the SDK does.
    let ask = json!([{"requestedAt": "2023-11-17T00:00:00Z", "location": "DE", "windowSize": 120}]);
    let (status, _, source, body) = request(
        &path,
        "POST",
        "/emissions/forecasts/batch",
        &ask.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(source, "footprint_forecast");
    let forecast = &body[0];
    assert_eq!(
        keys(forecast),
        [
            "dataEndAt",
            "dataStartAt",
            "forecastData",
            "generatedAt",
            "location",
            "optimalDataPoint",
            "optimalDataPoints",
            "requestedAt",
            "windowSize"
        ]
    );
    assert_eq!(forecast["requestedAt"], "2023-11-17T00:00:00+00:00");
    assert_eq!(forecast["dataStartAt"], "2023-11-17T00:00:00+00:00");
    assert_eq!(forecast["dataEndAt"], "2023-11-19T00:00:00+00:00");
    assert_eq!(forecast["windowSize"], 120);
    let windows = forecast["forecastData"].as_array().unwrap();
    assert_eq!(
        keys(&windows[0]),
        ["duration", "location", "timestamp", "value"]
    );
    assert_eq!(
        windows.len(),
        47,
        "every two-hour window that fits in 48 hours"
    );
    assert!(
        windows
            .iter()
            .all(|w| w["duration"] == 120 && w["location"] == "DE")
    );
    // The same forecast hour by hour: each window is the mean of its two hours.
    let hourly_ask = json!([{"requestedAt": "2023-11-17T00:00:00Z", "location": "DE"}]);
    let (_, _, _, hourly) = request(
        &path,
        "POST",
        "/emissions/forecasts/batch",
        &hourly_ask.to_string(),
    )
    .await;
    let hours: Vec<f64> = hourly[0]["forecastData"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["value"].as_f64().unwrap())
        .collect();
    assert_eq!(hours.len(), 48);
    for (i, window) in windows.iter().enumerate() {
        let mean = (hours[i] + hours[i + 1]) / 2.0;
        assert!(
            (window["value"].as_f64().unwrap() - mean).abs() < 0.002,
            "window {i}"
        );
    }
    let lowest = windows
        .iter()
        .map(|w| w["value"].as_f64().unwrap())
        .fold(f64::INFINITY, f64::min);
    assert_eq!(
        forecast["optimalDataPoints"][0]["value"].as_f64().unwrap(),
        lowest
    );
    assert_eq!(
        forecast["optimalDataPoint"],
        forecast["optimalDataPoints"][0]
    );
    // A span outside the forecast is refused naming it.
    let outside = json!([{"requestedAt": "2023-11-17T00:00:00Z", "location": "DE", "dataStartAt": "2023-11-20T00:00:00Z"}]);
    let (status, _, _, problem) = request(
        &path,
        "POST",
        "/emissions/forecasts/batch",
        &outside.to_string(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(problem["errors"]["[0].dataStartAt"].is_array(), "{problem}");

    // Now: the feed's future hours are a forecast (imported before now), Footprint's own fills
    // the rest of the 48 hours; the header says both.
    let (status, _, source, body) =
        request(&path, "GET", "/emissions/forecasts/current?location=XX", "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(source, "feed_forecast+footprint_forecast");
    let points = body[0]["forecastData"].as_array().unwrap();
    assert_eq!(points.len(), 48);
    let first = footprint_core::time::parse_rfc3339(points[0]["timestamp"].as_str().unwrap())
        .unwrap()
        .0;
    assert_eq!(first, hour);
    // The feed's own hours come through unchanged: cleanest at 13:00, 200 g/kWh.
    assert!(points[..36].iter().any(|p| p["value"] == 200.0));
    // With a window: the optimal point is a feed window at 13:00 or the one before it.
    let (_, _, _, windowed) = request(
        &path,
        "GET",
        "/emissions/forecasts/current?location=XX&windowSize=60",
        "",
    )
    .await;
    assert_eq!(windowed[0]["optimalDataPoints"][0]["value"], 200.0);
    let (status, _, _, _) = request(
        &path,
        "GET",
        "/emissions/forecasts/current?location=NOWHERE",
        "",
    )
    .await;
    assert_eq!(status, 204);
}

#[tokio::test]
async fn the_signal_gives_one_level_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let rows = feed_rows();
    let path = ledger(
        dir.path(),
        |config| {
            config.grid.reduce_above_g_per_kwh = Some(300.0);
            config.grid.curtail_above_g_per_kwh = Some(450.0);
        },
        &[],
    );
    let (status, signal) = get(&path, "/api/v1/grid/signal?at=2023-11-16T10:30:00Z").await;
    assert_eq!(status, 200, "{signal}");
    let now = g_at(&rows, "2023-11-16T10:00:00Z");
    assert_eq!(signal["location"], "DE");
    assert_eq!(signal["intensity_now"]["g_per_kwh"].as_f64().unwrap(), now);
    assert_eq!(signal["intensity_now"]["source"], "feed");
    assert_eq!(signal["next_48h"].as_array().unwrap().len(), 48);
    let expected = if now > 450.0 {
        "curtail"
    } else if now > 300.0 {
        "reduce"
    } else {
        "normal"
    };
    assert_eq!(signal["level"], expected, "{signal}");
    assert!(
        signal["reason"].as_str().unwrap().contains("grid."),
        "{signal}"
    );
    assert_eq!(signal["active_events"], json!([]));
    assert!(signal["facility_power_budget_kw"].is_null());
    // Every level the thresholds give, at hours of the feed chosen for it.
    for (at, g) in rows.iter().step_by(7).take(30) {
        let (_, signal) = get(&path, &format!("/api/v1/grid/signal?at={at}")).await;
        let expected = if *g > 450.0 {
            "curtail"
        } else if *g > 300.0 {
            "reduce"
        } else {
            "normal"
        };
        assert_eq!(signal["level"], expected, "{at}: {g}");
    }
    for at in ["noon", "9223372036854775807", "-5"] {
        let (status, body) = get(&path, &format!("/api/v1/grid/signal?at={at}")).await;
        assert_eq!(status, 400, "{at}: {body}");
    }
}

/// A request to a running aggregator over HTTP/1.1: its status and body.
async fn http(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn posted_events_set_the_budget_and_level_until_they_end_or_are_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = AggregatorConfig::with_data_dir(dir.path().join("ledger"));
    config.grpc_listen = "127.0.0.1:0".parse().unwrap();
    config.http_listen = "127.0.0.1:0".parse().unwrap();
    config.carbon.zone = "DE".into();
    config.carbon.intensity_files = vec![PathBuf::from(FEED)];
    config.grid.min_facility_kw = Some(50.0);
    let aggregator = footprint_aggregator::server::start(&config).await.unwrap();
    let addr = aggregator.http_addr;

    // An event of two hours from 2023-11-16T10:00Z: a capacity limit, then SIMPLE level 2; and a
    // limit below the site's floor in a third interval, held at the floor.
    let event = json!({
        "objectType": "EVENT", "id": "peak-1", "programID": "dr-winter", "eventName": "evening peak",
        "intervalPeriod": {"start": "2023-11-16T10:00:00Z", "duration": "PT1H"},
        "intervals": [
            {"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [400]}]},
            {"id": 1, "payloads": [{"type": "SIMPLE", "values": [2]}]},
            {"id": 2, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [10]}]}
        ]
    });
    let (status, accepted) = http(addr, "POST", "/api/v1/grid/events", &event.to_string()).await;
    assert_eq!(status, 201, "{accepted}");
    assert_eq!(accepted["id"], "peak-1");
    assert_eq!(accepted["intervals"], 3);
    assert!(
        accepted["notes"][0]
            .as_str()
            .unwrap()
            .contains("held at 50 kW"),
        "{accepted}"
    );

    // In the first hour: the budget is the limit, the level at least reduce (no windows built:
    // the site's draw is unknown, so not curtail).
    let (_, signal) = http(
        addr,
        "GET",
        "/api/v1/grid/signal?at=2023-11-16T10:30:00Z",
        "",
    )
    .await;
    assert_eq!(signal["facility_power_budget_kw"], 400.0, "{signal}");
    assert!(signal["budget_reason"].as_str().unwrap().contains("peak-1"));
    assert_ne!(signal["level"], "normal", "{signal}");
    assert!(
        signal["reason"]
            .as_str()
            .unwrap()
            .contains("limits the site to 400 kW"),
        "{signal}"
    );
    assert_eq!(
        signal["active_events"][0]["intervals"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Second hour: SIMPLE 2 curtails.
    let (_, signal) = http(
        addr,
        "GET",
        "/api/v1/grid/signal?at=2023-11-16T11:30:00Z",
        "",
    )
    .await;
    assert_eq!(signal["level"], "curtail", "{signal}");
    assert!(signal["facility_power_budget_kw"].is_null());
    // Third hour: the floor.
    let (_, signal) = http(
        addr,
        "GET",
        "/api/v1/grid/signal?at=2023-11-16T12:30:00Z",
        "",
    )
    .await;
    assert_eq!(signal["facility_power_budget_kw"], 50.0);
    // After the event: nothing in force.
    let (_, signal) = http(
        addr,
        "GET",
        "/api/v1/grid/signal?at=2023-11-16T13:30:00Z",
        "",
    )
    .await;
    assert_eq!(signal["active_events"], json!([]));
    assert!(signal["facility_power_budget_kw"].is_null());

    // Listed, with every interval; only the one in force with active_at.
    let (status, events) = http(addr, "GET", "/api/v1/grid/events", "").await;
    assert_eq!(status, 200);
    assert_eq!(events[0]["intervals"].as_array().unwrap().len(), 3);
    assert_eq!(events[0]["source"], "posted");
    let (_, active) = http(
        addr,
        "GET",
        "/api/v1/grid/events?active_at=2023-11-16T11:00:00Z",
        "",
    )
    .await;
    assert_eq!(active[0]["intervals"][0]["type"], "SIMPLE");

    // An event open-ended from long ago, cancelled: in force until the cancel, then not.
    let open = json!({
        "id": "open-1", "programID": "dr-winter",
        "intervals": [{"id": 0, "intervalPeriod": {"start": "2020-01-01T00:00:00Z", "duration": "P9999Y"},
                       "payloads": [{"type": "SIMPLE", "values": [1]}]}]
    });
    assert_eq!(
        http(addr, "POST", "/api/v1/grid/events", &open.to_string())
            .await
            .0,
        201
    );
    let (_, signal) = http(addr, "GET", "/api/v1/grid/signal", "").await;
    assert!(
        signal["active_events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["id"] == "open-1"),
        "{signal}"
    );
    assert_eq!(
        http(addr, "DELETE", "/api/v1/grid/events/open-1", "")
            .await
            .0,
        204
    );
    let (_, signal) = http(addr, "GET", "/api/v1/grid/signal", "").await;
    assert!(
        !signal["active_events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["id"] == "open-1"),
        "{signal}"
    );
    assert_eq!(
        http(addr, "DELETE", "/api/v1/grid/events/open-1", "")
            .await
            .0,
        404
    );

    // A malformed event changes nothing and says which field.
    let (status, refused) = http(
        addr,
        "POST",
        "/api/v1/grid/events",
        r#"{"programID": "p", "intervalPeriod": {"start": "2023-11-16T10:00:00Z"}, "intervals": [{"payloads": []}]}"#,
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("intervals[0].payloads"),
        "{refused}"
    );
    let (_, events) = http(addr, "GET", "/api/v1/grid/events", "").await;
    assert_eq!(events.as_array().unwrap().len(), 2);
    aggregator.stop().await.unwrap();
}

#[tokio::test]
async fn a_failing_event_source_is_named_in_the_signal_and_bad_sources_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = AggregatorConfig::with_data_dir(dir.path().join("ledger"));
    config.grpc_listen = "127.0.0.1:0".parse().unwrap();
    config.http_listen = "127.0.0.1:0".parse().unwrap();
    config.carbon.zone = "DE".into();
    config.carbon.intensity_files = vec![PathBuf::from(FEED)];
    let aggregator = footprint_aggregator::server::start(&config).await.unwrap();
    let addr = aggregator.http_addr;

    // An event relayed from a VTN carries its source.
    let event = json!({
        "id": "vtn-1", "programID": "dr",
        "intervals": [{"id": 0, "intervalPeriod": {"start": "2020-01-01T00:00:00Z", "duration": "P9999Y0M0DT0H0M0S"},
                       "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [500]}]}]
    });
    let (status, body) = http(
        addr,
        "POST",
        "/api/v1/grid/events?source=vtn:utility",
        &event.to_string(),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let report = |ok: bool| {
        json!({"ok": ok, "error": (!ok).then_some("VTN http://vtn/: connection refused"),
               "events": 1, "refused": [], "poll_interval_s": 30})
        .to_string()
    };
    let (status, _) = http(
        addr,
        "PUT",
        "/api/v1/grid/sources/vtn:utility",
        &report(true),
    )
    .await;
    assert_eq!(status, 204);
    let (_, signal) = http(addr, "GET", "/api/v1/grid/signal", "").await;
    assert_eq!(signal["active_events"][0]["source"], "vtn:utility");
    assert_eq!(signal["event_sources"][0]["state"], "ok");
    assert!(!signal["reason"].as_str().unwrap().contains("vtn:utility"));

    let (status, _) = http(
        addr,
        "PUT",
        "/api/v1/grid/sources/vtn:utility",
        &report(false),
    )
    .await;
    assert_eq!(status, 204);
    let (_, signal) = http(addr, "GET", "/api/v1/grid/signal", "").await;
    assert_eq!(signal["event_sources"][0]["state"], "failing");
    assert_eq!(signal["facility_power_budget_kw"], 500.0);
    let reason = signal["reason"].as_str().unwrap();
    assert!(reason.contains("connection refused"), "{reason}");
    assert!(reason.contains("stay in force until they end"), "{reason}");
    let (status, sources) = http(addr, "GET", "/api/v1/grid/sources", "").await;
    assert_eq!(status, 200);
    assert_eq!(sources[0]["error"], "VTN http://vtn/: connection refused");
    assert!(sources[0]["last_success"].is_string(), "{sources}");

    // Bad names and reports: 400 naming the field, nothing recorded.
    let (status, body) = http(
        addr,
        "POST",
        "/api/v1/grid/events?source=a%20b",
        &event.to_string(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("source"), "{body}");
    let (status, _) = http(
        addr,
        "PUT",
        "/api/v1/grid/sources/other",
        r#"{"ok": true, "poll_interval_s": 0}"#,
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = http(addr, "PUT", "/api/v1/grid/sources/other", r#"{"ok": 1}"#).await;
    assert!(status == 400 || status == 422, "{status}");
    let (_, sources) = http(addr, "GET", "/api/v1/grid/sources", "").await;
    assert_eq!(sources.as_array().unwrap().len(), 1);
    aggregator.stop().await.unwrap();
}
