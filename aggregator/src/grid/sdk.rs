//! The Green Software Foundation Carbon Aware SDK's web API, served from the ledger's intensity
//! feeds so that an existing SDK client works unchanged: the SDK's paths, parameter names, JSON
//! keys and status codes (200 with data, 204 with none, 400 as `application/problem+json` naming
//! each parameter in `errors`). Which hours of a forecast are a feed's and which are Footprint's
//! own is said in the `X-Footprint-Forecast-Source` header, so the bodies keep the SDK's shapes.
//! Where the SDK's documentation differs from its code, both spellings work: `locations` as well
//! as `location` in queries, and a forecast carries `optimalDataPoint` (the first of
//! `optimalDataPoints`) too.

use std::collections::BTreeMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use footprint_core::units::NANOS_PER_HOUR;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Hour, Source};
use crate::now_ns;
use crate::query::LedgerReader;

/// The SDK's routes, answering from `reader`'s ledger.
pub fn routes(reader: LedgerReader) -> Router {
    Router::new()
        .route("/emissions/bylocation", get(by_location))
        .route("/emissions/bylocations", get(by_locations))
        .route("/emissions/bylocations/best", get(best_by_locations))
        .route("/emissions/forecasts/current", get(current_forecasts))
        .route("/emissions/forecasts/batch", post(batch_forecasts))
        .route("/emissions/average-carbon-intensity", get(average))
        .route(
            "/emissions/average-carbon-intensity/batch",
            post(average_batch),
        )
        .route("/locations", get(locations))
        .with_state(reader)
}

/// A 400 naming its parameters, as the SDK's `ValidationProblemDetails`.
#[derive(Debug, Default)]
struct Problem(BTreeMap<String, Vec<String>>);

impl Problem {
    fn of(parameter: &str, message: impl Into<String>) -> Self {
        let mut problem = Self::default();
        problem.add(parameter, message);
        problem
    }

    fn add(&mut self, parameter: &str, message: impl Into<String>) {
        self.0
            .entry(parameter.to_owned())
            .or_default()
            .push(message.into());
    }
}

/// An answer: a JSON body, 204 for nothing to say, a 400 problem or a 500.
enum Answer {
    Json(serde_json::Value, Option<String>),
    Empty,
    Problem(Problem),
    Failed(String),
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        match self {
            Self::Json(body, source) => {
                let mut response = axum::Json(body).into_response();
                if let Some(value) = source.and_then(|s| HeaderValue::from_str(&s).ok()) {
                    response
                        .headers_mut()
                        .insert("x-footprint-forecast-source", value);
                }
                response
            }
            Self::Empty => StatusCode::NO_CONTENT.into_response(),
            Self::Problem(Problem(errors)) => {
                let body = json!({
                    "type": "https://tools.ietf.org/html/rfc9110#section-15.5.1",
                    "title": "ArgumentException",
                    "status": 400,
                    "detail": "Invalid parameters",
                    "errors": errors,
                });
                (
                    StatusCode::BAD_REQUEST,
                    [(header::CONTENT_TYPE, "application/problem+json")],
                    body.to_string(),
                )
                    .into_response()
            }
            Self::Failed(detail) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "application/problem+json")],
                json!({"title": "InternalServerError", "status": 500, "detail": detail})
                    .to_string(),
            )
                .into_response(),
        }
    }
}

impl From<crate::Error> for Answer {
    fn from(error: crate::Error) -> Self {
        Self::Failed(error.to_string())
    }
}

/// A query string's parameters, each name with every value it was given.
fn parameters(query: Option<&str>) -> BTreeMap<String, Vec<String>> {
    let mut all: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        all.entry(name.into_owned())
            .or_default()
            .push(value.into_owned());
    }
    all
}

/// Parses an instant as the SDK's `DateTimeOffset` binding does: RFC 3339 with or without an
/// offset (UTC), or a date alone (its midnight, UTC), as the SDK's own examples write them.
fn parse_time(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let full = if text.len() == 10 {
        format!("{text}T00:00:00Z")
    } else {
        text.to_owned()
    };
    footprint_core::time::parse_rfc3339(&full).map(|at| at.0)
}

/// An instant parameter; a bad one is added to `problem`.
fn instant(all: &BTreeMap<String, Vec<String>>, name: &str, problem: &mut Problem) -> Option<i64> {
    time_of(name, all.get(name)?.first(), problem)
}

/// `text` (parameter `name`) as an instant; a bad one is added to `problem`.
fn time_of(name: &str, text: Option<&String>, problem: &mut Problem) -> Option<i64> {
    let text = text?;
    match parse_time(text) {
        Ok(at) => Some(at),
        Err(error) => {
            problem.add(
                name,
                format!("The value '{text}' is not valid for {name}: {error}"),
            );
            None
        }
    }
}

/// Time as the SDK writes a `DateTimeOffset` in UTC.
fn time_text(ns: i64) -> String {
    let text = footprint_core::time::format_rfc3339(footprint_core::UnixNanos(ns));
    match text.strip_suffix('Z') {
        Some(base) => format!("{base}+00:00"),
        None => text,
    }
}

/// The `location`s asked for: `location` (and `locations`, as the SDK's docs spell it), at
/// least one.
fn locations_of(all: &BTreeMap<String, Vec<String>>, problem: &mut Problem) -> Vec<String> {
    let locations: Vec<String> = ["location", "locations"]
        .iter()
        .flat_map(|name| all.get(*name).into_iter().flatten())
        .filter(|l| !l.trim().is_empty())
        .cloned()
        .collect();
    if locations.is_empty() {
        problem.add("location", "location is not set");
    }
    locations
}

/// `[start, end]` from two parameters as the SDK validates them: `end` needs `start`, and
/// `start` must come before it; both default to now (the hour holding it).
fn span_of(
    all: &BTreeMap<String, Vec<String>>,
    (start_name, end_name): (&str, &str),
    problem: &mut Problem,
) -> (i64, i64) {
    let start = instant(all, start_name, problem);
    let end = instant(all, end_name, problem);
    if end.is_some() && start.is_none() && !all.contains_key(start_name) {
        problem.add(
            start_name,
            format!("{start_name} must be defined if {end_name} is defined"),
        );
    }
    if let (Some(start), Some(end)) = (start, end)
        && start >= end
    {
        problem.add(
            start_name,
            format!("{start_name} must be before {end_name}"),
        );
    }
    let start = start.unwrap_or_else(now_ns);
    (start, end.unwrap_or(start))
}

/// The SDK's `EmissionsData`: `{location, time, rating, duration}`.
fn emissions_data(location: &str, hour: &Hour) -> serde_json::Value {
    json!({
        "location": location,
        "time": time_text(hour.start_ns),
        "rating": hour.g_per_kwh,
        "duration": "01:00:00",
    })
}

async fn emissions(
    reader: &LedgerReader,
    all: &BTreeMap<String, Vec<String>>,
    best_only: bool,
) -> Answer {
    let mut problem = Problem::default();
    let locations = locations_of(all, &mut problem);
    let (start, end) = span_of(all, ("time", "toTime"), &mut problem);
    if !problem.0.is_empty() {
        return Answer::Problem(problem);
    }
    let read = reader
        .with(move |connection| {
            let mut found = Vec::new();
            for location in &locations {
                for hour in super::stored_hours(connection, location, start, end)? {
                    found.push((location.clone(), hour));
                }
            }
            Ok(found)
        })
        .await;
    let mut found = match read {
        Ok(found) => found,
        Err(error) => return error.into(),
    };
    if best_only {
        let lowest = found
            .iter()
            .map(|(_, h)| h.g_per_kwh)
            .fold(f64::INFINITY, f64::min);
        found.retain(|(_, h)| h.g_per_kwh == lowest);
    }
    if found.is_empty() {
        return Answer::Empty;
    }
    Answer::Json(
        found
            .iter()
            .map(|(location, hour)| emissions_data(location, hour))
            .collect(),
        None,
    )
}

async fn by_location(State(reader): State<LedgerReader>, RawQuery(query): RawQuery) -> Answer {
    let all = parameters(query.as_deref());
    if all.get("location").is_some_and(|values| values.len() > 1) {
        return Answer::Problem(Problem::of(
            "location",
            "one location only; use /emissions/bylocations for several",
        ));
    }
    emissions(&reader, &all, false).await
}

async fn by_locations(State(reader): State<LedgerReader>, RawQuery(query): RawQuery) -> Answer {
    emissions(&reader, &parameters(query.as_deref()), false).await
}

async fn best_by_locations(
    State(reader): State<LedgerReader>,
    RawQuery(query): RawQuery,
) -> Answer {
    emissions(&reader, &parameters(query.as_deref()), true).await
}

/// One forecast asked for: the SDK's `EmissionsForecastBatchParametersDTO` (and the current
/// forecast's query parameters, with `requestedAt` now).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ForecastAsk {
    requested_at: Option<String>,
    location: Option<String>,
    data_start_at: Option<String>,
    data_end_at: Option<String>,
    window_size: Option<i64>,
}

/// The SDK's `EmissionsForecastDTO`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ForecastAnswer {
    generated_at: String,
    requested_at: String,
    location: String,
    data_start_at: String,
    data_end_at: String,
    window_size: i64,
    optimal_data_points: Vec<serde_json::Value>,
    /// The first of `optimalDataPoints`, as the SDK's documentation spells the key.
    optimal_data_point: Option<serde_json::Value>,
    forecast_data: Vec<serde_json::Value>,
}

/// A checked forecast request.
struct ForecastRequest {
    location: String,
    as_of: i64,
    start: Option<i64>,
    end: Option<i64>,
    window_minutes: i64,
}

fn check_forecast_ask(
    ask: &ForecastAsk,
    batch: bool,
    problem: &mut Problem,
) -> Option<ForecastRequest> {
    let time = |name: &str, text: &Option<String>, problem: &mut Problem| {
        time_of(name, text.as_ref(), problem)
    };
    let as_of = if batch {
        let requested = time("requestedAt", &ask.requested_at, problem);
        if ask.requested_at.is_none() {
            problem.add("requestedAt", "requestedAt is not set");
        }
        requested
    } else {
        Some(now_ns())
    };
    let location = ask.location.clone().filter(|l| !l.trim().is_empty());
    if location.is_none() {
        problem.add("location", "location is not set");
    }
    let start = time("dataStartAt", &ask.data_start_at, problem);
    let end = time("dataEndAt", &ask.data_end_at, problem);
    if let (Some(start), Some(end)) = (start, end)
        && start >= end
    {
        problem.add("dataStartAt", "dataStartAt must be before dataEndAt");
    }
    let window_minutes = ask.window_size.unwrap_or(0);
    if !(0..=FORECAST_MINUTES).contains(&window_minutes) {
        problem.add(
            "windowSize",
            format!("windowSize must be between 0 and {FORECAST_MINUTES} minutes"),
        );
    }
    Some(ForecastRequest {
        location: location?,
        as_of: as_of?,
        start,
        end,
        window_minutes,
    })
}

const FORECAST_MINUTES: i64 = super::FORECAST_HOURS * 60;

/// The SDK's `EmissionsDataDTO`: `{location, timestamp, duration (minutes), value}`.
fn data_point(location: &str, start_ns: i64, minutes: i64, value: f64) -> serde_json::Value {
    json!({
        "location": location,
        "timestamp": time_text(start_ns),
        "duration": minutes,
        "value": value,
    })
}

/// The forecast the request asks for, shaped as the SDK does: the hours within
/// `[dataStartAt, dataEndAt]`, averaged over every window of `windowSize` minutes that fits,
/// and the lowest of them as `optimalDataPoints`; `Err` names a bad span.
fn shape(
    request: &ForecastRequest,
    hours: &[Hour],
    generated_ns: i64,
) -> Result<ForecastAnswer, Problem> {
    let (Some(first), Some(last)) = (hours.first(), hours.last()) else {
        return Err(Problem::default());
    };
    let span = (first.start_ns, last.start_ns + NANOS_PER_HOUR);
    let start = request.start.unwrap_or(span.0);
    let end = request.end.unwrap_or(span.1);
    let mut problem = Problem::default();
    for (name, at) in [("dataStartAt", start), ("dataEndAt", end)] {
        if at < span.0 || at > span.1 {
            problem.add(
                name,
                format!(
                    "{name} must be within the forecast's data, {} to {}",
                    time_text(span.0),
                    time_text(span.1)
                ),
            );
        }
    }
    if !problem.0.is_empty() {
        return Err(problem);
    }
    let inside: Vec<&Hour> = hours
        .iter()
        .filter(|h| h.start_ns + NANOS_PER_HOUR > start && h.start_ns < end)
        .collect();
    let window_ns = request.window_minutes * 60_000_000_000;
    let data: Vec<(i64, i64, f64)> = if window_ns == 0 {
        inside
            .iter()
            .map(|h| (h.start_ns, 60, h.g_per_kwh))
            .collect()
    } else {
        inside
            .iter()
            .filter(|h| h.start_ns + window_ns <= end)
            .filter_map(|h| {
                let (from, to) = (h.start_ns, h.start_ns + window_ns);
                let mut weighted = 0.0;
                let mut covered = 0i64;
                for other in &inside {
                    let overlap =
                        (other.start_ns + NANOS_PER_HOUR).min(to) - other.start_ns.max(from);
                    if overlap > 0 {
                        weighted += other.g_per_kwh * overlap as f64;
                        covered += overlap;
                    }
                }
                (covered == window_ns)
                    .then(|| (from, request.window_minutes, weighted / covered as f64))
            })
            .collect()
    };
    let lowest = data.iter().map(|d| d.2).fold(f64::INFINITY, f64::min);
    let point = |&(at, minutes, value): &(i64, i64, f64)| {
        data_point(
            &request.location,
            at,
            minutes,
            (value * 1_000.0).round() / 1_000.0,
        )
    };
    Ok(ForecastAnswer {
        generated_at: time_text(generated_ns),
        requested_at: time_text(request.as_of),
        location: request.location.clone(),
        data_start_at: time_text(start),
        data_end_at: time_text(end),
        window_size: request.window_minutes,
        optimal_data_points: data.iter().filter(|d| d.2 == lowest).map(point).collect(),
        optimal_data_point: data.iter().find(|d| d.2 == lowest).map(point),
        forecast_data: data.iter().map(point).collect(),
    })
}

/// Answers forecast requests, all or none: a bad one is a 400 naming its parameters (with the
/// index of a batch entry).
async fn forecasts(reader: &LedgerReader, asks: Vec<ForecastAsk>, batch: bool) -> Answer {
    let mut problem = Problem::default();
    let mut requests = Vec::new();
    for (index, ask) in asks.iter().enumerate() {
        let mut own = Problem::default();
        let request = check_forecast_ask(ask, batch, &mut own);
        for (name, messages) in own.0 {
            let key = if batch {
                format!("[{index}].{name}")
            } else {
                name
            };
            for message in messages {
                problem.add(&key, message);
            }
        }
        requests.extend(request);
    }
    if !problem.0.is_empty() {
        return Answer::Problem(problem);
    }
    let read = reader
        .with(move |connection| {
            requests
                .into_iter()
                .map(|request| {
                    let (hours, generated) =
                        super::forecast(connection, &request.location, request.as_of)?;
                    Ok((request, hours, generated))
                })
                .collect::<crate::Result<Vec<_>>>()
        })
        .await;
    let answered = match read {
        Ok(answered) => answered,
        Err(error) => return error.into(),
    };
    let mut sources = std::collections::BTreeSet::new();
    let mut answers = Vec::new();
    for (index, (request, hours, generated)) in answered.iter().enumerate() {
        sources.extend(hours.iter().map(|h| match h.source {
            Source::FootprintForecast => "footprint_forecast",
            _ => "feed_forecast",
        }));
        match shape(request, hours, *generated) {
            Ok(answer) => answers.push(answer),
            Err(own) if own.0.is_empty() => {}
            Err(own) => {
                for (name, messages) in own.0 {
                    let key = if batch {
                        format!("[{index}].{name}")
                    } else {
                        name
                    };
                    for message in messages {
                        problem.add(&key, message);
                    }
                }
            }
        }
    }
    if !problem.0.is_empty() {
        return Answer::Problem(problem);
    }
    if answers.is_empty() {
        return Answer::Empty;
    }
    let source = sources.into_iter().collect::<Vec<_>>().join("+");
    Answer::Json(
        serde_json::to_value(answers).unwrap_or_default(),
        Some(source),
    )
}

async fn current_forecasts(
    State(reader): State<LedgerReader>,
    RawQuery(query): RawQuery,
) -> Answer {
    let all = parameters(query.as_deref());
    let mut problem = Problem::default();
    let locations = locations_of(&all, &mut problem);
    let window_size = match all.get("windowSize").and_then(|v| v.first()) {
        Some(text) => match text.parse::<i64>() {
            Ok(minutes) => Some(minutes),
            Err(_) => {
                problem.add(
                    "windowSize",
                    format!("The value '{text}' is not valid for windowSize."),
                );
                None
            }
        },
        None => None,
    };
    if !problem.0.is_empty() {
        return Answer::Problem(problem);
    }
    let first = |name: &str| all.get(name).and_then(|v| v.first()).cloned();
    let asks = locations
        .into_iter()
        .map(|location| ForecastAsk {
            requested_at: None,
            location: Some(location),
            data_start_at: first("dataStartAt"),
            data_end_at: first("dataEndAt"),
            window_size,
        })
        .collect();
    forecasts(&reader, asks, false).await
}

/// A JSON body, or a 400 naming what is wrong with it.
fn body_of<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Answer> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        Answer::Problem(Problem::of(
            if path == "." { "body" } else { path.as_str() },
            error.inner().to_string(),
        ))
    })
}

async fn batch_forecasts(State(reader): State<LedgerReader>, body: Bytes) -> Answer {
    match body_of::<Vec<ForecastAsk>>(&body) {
        Ok(asks) => forecasts(&reader, asks, true).await,
        Err(answer) => answer,
    }
}

/// One average asked for: the SDK's `CarbonIntensityBatchParametersDTO`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AverageAsk {
    location: Option<String>,
    start_time: Option<String>,
    end_time: Option<String>,
}

/// The time-weighted mean intensity over `[start, end)` of the stored hours, if any overlap.
fn average_over(hours: &[Hour], start: i64, end: i64) -> Option<f64> {
    let mut weighted = 0.0;
    let mut covered = 0i64;
    for hour in hours {
        let overlap = (hour.start_ns + NANOS_PER_HOUR).min(end) - hour.start_ns.max(start);
        if overlap > 0 {
            weighted += hour.g_per_kwh * overlap as f64;
            covered += overlap;
        }
    }
    (covered > 0).then(|| weighted / covered as f64)
}

async fn averages(reader: &LedgerReader, asks: Vec<AverageAsk>, batch: bool) -> Answer {
    let mut problem = Problem::default();
    let mut checked = Vec::new();
    for (index, ask) in asks.iter().enumerate() {
        let key = |name: &str| {
            if batch {
                format!("[{index}].{name}")
            } else {
                name.to_owned()
            }
        };
        let mut all = BTreeMap::new();
        for (name, value) in [("startTime", &ask.start_time), ("endTime", &ask.end_time)] {
            match value {
                Some(text) => {
                    all.insert(name.to_owned(), vec![text.clone()]);
                }
                None => problem.add(&key(name), format!("{name} is not set")),
            }
        }
        let mut own = Problem::default();
        let start = instant(&all, "startTime", &mut own);
        let end = instant(&all, "endTime", &mut own);
        if let (Some(start), Some(end)) = (start, end)
            && start >= end
        {
            own.add("startTime", "startTime must be before endTime");
        }
        let location = ask.location.clone().filter(|l| !l.trim().is_empty());
        if location.is_none() {
            own.add("location", "location is not set");
        }
        for (name, messages) in own.0 {
            for message in messages {
                problem.add(&key(&name), message);
            }
        }
        if let (Some(location), Some(start), Some(end)) = (location, start, end) {
            checked.push((location, start, end));
        }
    }
    if !problem.0.is_empty() {
        return Answer::Problem(problem);
    }
    let read = reader
        .with(move |connection| {
            checked
                .into_iter()
                .map(|(location, start, end)| {
                    let hours = super::stored_hours(connection, &location, start, end)?;
                    Ok((location, start, end, average_over(&hours, start, end)))
                })
                .collect::<crate::Result<Vec<_>>>()
        })
        .await;
    let answered = match read {
        Ok(answered) => answered,
        Err(error) => return error.into(),
    };
    let answers: Vec<serde_json::Value> = answered
        .iter()
        .filter_map(|(location, start, end, average)| {
            average.map(|value| {
                json!({
                    "location": location,
                    "startTime": time_text(*start),
                    "endTime": time_text(*end),
                    "carbonIntensity": (value * 1_000.0).round() / 1_000.0,
                })
            })
        })
        .collect();
    match (batch, answers.len()) {
        (_, 0) => Answer::Empty,
        (false, _) => Answer::Json(answers.into_iter().next().unwrap_or_default(), None),
        (true, _) => Answer::Json(answers.into(), None),
    }
}

async fn average(State(reader): State<LedgerReader>, RawQuery(query): RawQuery) -> Answer {
    let all = parameters(query.as_deref());
    let first = |name: &str| all.get(name).and_then(|v| v.first()).cloned();
    let ask = AverageAsk {
        location: first("location"),
        start_time: first("startTime"),
        end_time: first("endTime"),
    };
    averages(&reader, vec![ask], false).await
}

async fn average_batch(State(reader): State<LedgerReader>, body: Bytes) -> Answer {
    match body_of::<Vec<AverageAsk>>(&body) {
        Ok(asks) => averages(&reader, asks, true).await,
        Err(answer) => answer,
    }
}

/// `{name: {latitude, longitude, name}}` for every zone with stored intensity (coordinates from
/// `[[grid.locations]]`, else null) and every configured one.
async fn locations(State(reader): State<LedgerReader>) -> Answer {
    let read = reader
        .with(|connection| {
            let configured = crate::report::stored_config(connection)
                .map(|config| config.grid.locations)
                .unwrap_or_default();
            Ok((super::zones(connection)?, configured))
        })
        .await;
    let (zones, configured) = match read {
        Ok(found) => found,
        Err(error) => return error.into(),
    };
    let mut all = serde_json::Map::new();
    for zone in zones {
        all.insert(
            zone.clone(),
            json!({"latitude": null, "longitude": null, "name": zone}),
        );
    }
    for location in configured {
        all.insert(
            location.name.clone(),
            json!({"latitude": location.latitude, "longitude": location.longitude, "name": location.name}),
        );
    }
    if all.is_empty() {
        Answer::Empty
    } else {
        Answer::Json(all.into(), None)
    }
}
