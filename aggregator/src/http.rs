//! The HTTP API: a JSON mirror of `Query` under `/api/v1/`, and `/metrics`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use footprint_proto::v1 as pb;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::api::{FacilityAnswer, IntensityAnswer, JobAnswer};
use crate::ledger;
use crate::query::LedgerReader;

#[derive(Clone, Debug)]
struct HttpState {
    reader: LedgerReader,
    registry: Arc<Registry>,
    counters: Arc<crate::metrics::AggregatorMetrics>,
    /// What the control endpoints act through; `None`: read-only.
    control: Option<Control>,
    /// The forecast `/metrics` exposes, made at most once per quarter hour (its step): the
    /// quarter it was made in, and it (`None`: too little history then).
    forecast: Arc<tokio::sync::Mutex<Option<CachedForecast>>>,
}

/// The quarter hour a forecast was made in, and the forecast (`None`: too little history then).
type CachedForecast = (i64, Option<Arc<footprint_exporters::forecast::Forecast>>);

/// What the control endpoints (grid events, power caps) act through.
#[derive(Clone, Debug)]
pub struct Control {
    /// The writer, for the few writes the API takes.
    pub store: crate::store::StoreHandle,
    /// The collectors' streams, for directives.
    pub directives: crate::ingest::Directives,
}

/// The router; `counters` are the aggregator's own counters, exposed on `/metrics` beside the
/// ledger's figures, and every answer is counted in them by status; without `control` the grid
/// events and caps endpoints refuse to act (a read-only server); with `tokens`, every request
/// but the page's shell and `/healthz` needs a bearer token with the right scope.
pub fn router(
    reader: LedgerReader,
    counters: Arc<crate::metrics::AggregatorMetrics>,
    control: Option<Control>,
    tokens: Option<Arc<crate::auth::Tokens>>,
) -> Router {
    let registry = Arc::new(counters.registry());
    let mut app = Router::new()
        .route("/api/v1/jobs", get(list_jobs))
        .route("/api/v1/jobs/{id}", get(get_job))
        .route("/api/v1/facility", get(facility))
        .route("/api/v1/intensity", get(intensity))
        .route("/api/v1/explain", get(explain))
        .route("/api/v1/ledger/stats", get(ledger_stats))
        .route("/api/v1/report", get(report))
        .route("/api/v1/forecast", get(forecast))
        .route("/api/v1/grid/signal", get(grid_signal))
        .route("/api/v1/grid/events", get(list_events).post(post_event))
        .route("/api/v1/grid/caps", get(list_caps).post(post_cap))
        .route("/api/v1/jobs/{id}/caps", get(job_caps))
        .route(
            "/api/v1/grid/events/{id}",
            axum::routing::delete(cancel_event),
        )
        .route("/api/v1/grid/sources", get(list_sources))
        .route(
            "/api/v1/grid/sources/{name}",
            axum::routing::put(report_source),
        )
        .route("/api/v1/jobs/{id}/hours", get(job_hours))
        .route("/api/v1/overview", get(overview))
        .route("/", get(page))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(HttpState {
            reader: reader.clone(),
            registry,
            counters: Arc::clone(&counters),
            control,
            forecast: Arc::default(),
        })
        .merge(crate::grid::sdk::routes(reader));
    if let Some(tokens) = tokens {
        let counters = Arc::clone(&counters);
        app = app.layer(axum::middleware::from_fn(move |request, next| {
            crate::auth::check(Arc::clone(&tokens), Arc::clone(&counters), request, next)
        }));
    }
    app.layer(axum::middleware::map_response(move |response: Response| {
        let counters = Arc::clone(&counters);
        async move {
            counters.http_response(response.status().as_u16());
            response
        }
    }))
}

#[derive(Debug, Serialize)]
struct ErrorBody {
    error: String,
}

struct ApiError(Error);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self.0 {
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (
            status,
            Json(ErrorBody {
                error: self.0.to_string(),
            }),
        )
            .into_response()
    }
}

/// `from` and `to` in ns since the epoch; `step_s` in seconds (0: one total) or `step=month`;
/// `group_by`: `site` (default), `hall`, `rack` or `host`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RangeQuery {
    #[serde(default)]
    from: i64,
    #[serde(default)]
    to: i64,
    #[serde(default)]
    step_s: u64,
    #[serde(default)]
    step: String,
    #[serde(default)]
    group_by: String,
}

/// The report's period, `from` and `to` as RFC 3339 or ns since the epoch (both absent: the
/// calendar year of the latest settled data); `format` `json` (default), `csv` or `html`;
/// `require_settled=true` refuses a provisional period.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportQuery {
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    format: String,
    #[serde(default)]
    require_settled: bool,
}

/// An instant given as ns since the epoch or RFC 3339; empty is 0.
fn instant(name: &str, text: &str) -> Result<i64, Error> {
    if text.is_empty() {
        return Ok(0);
    }
    text.parse::<i64>().or_else(|_| {
        footprint_core::time::parse_rfc3339(text)
            .map(|at| at.0)
            .map_err(|error| Error::BadRequest(format!("{name}: {error}")))
    })
}

async fn report(
    State(state): State<HttpState>,
    Query(query): Query<ReportQuery>,
) -> Result<Response, ApiError> {
    let format = footprint_exporters::report::Format::parse(&query.format)
        .map_err(|error| ApiError(Error::BadRequest(error.to_string())))?;
    let request = crate::report::ReportRequest {
        from_ns: instant("from", &query.from).map_err(ApiError)?,
        to_ns: instant("to", &query.to).map_err(ApiError)?,
        require_settled: query.require_settled,
        ..Default::default()
    };
    let (report, bytes) = state
        .reader
        .report(request, format)
        .await
        .map_err(ApiError)?;
    // The archive is saved; JSON and HTML are shown, with a name for saving them.
    let (disposition, extension) = match format {
        footprint_exporters::report::Format::Csv => ("attachment", "zip"),
        other => ("inline", other.name()),
    };
    let file_name = format!(
        "{disposition}; filename=\"footprint-report-{}.{extension}\"",
        report.report.period.from.get(..10).unwrap_or("period")
    );
    Ok((
        [
            (header::CONTENT_TYPE, format.content_type().to_owned()),
            (header::CONTENT_DISPOSITION, file_name),
        ],
        bytes,
    )
        .into_response())
}

/// The forecast's origin, `from` as RFC 3339 or ns since the epoch (absent: the end of the
/// ledger's last complete quarter hour); `format` `json` (default), `csv`, `openadr` or `svg`; for
/// `openadr`, the report's `program_id`, `event_id` and `client_name`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ForecastQuery {
    #[serde(default)]
    from: String,
    #[serde(default)]
    format: String,
    #[serde(default)]
    program_id: String,
    #[serde(default)]
    event_id: String,
    #[serde(default)]
    client_name: String,
}

async fn forecast(
    State(state): State<HttpState>,
    Query(query): Query<ForecastQuery>,
) -> Result<Response, ApiError> {
    use footprint_exporters::forecast::output;
    let format = output::Format::parse(&query.format)
        .map_err(|error| ApiError(Error::BadRequest(error.to_string())))?;
    let from_ns = instant("from", &query.from).map_err(ApiError)?;
    let request = crate::forecast::ForecastRequest {
        from_ns: (!query.from.is_empty()).then_some(from_ns),
    };
    let forecast = state.reader.forecast(request).await.map_err(ApiError)?;
    let ids = output::OpenAdrIds {
        program_id: query.program_id,
        event_id: query.event_id,
        client_name: query.client_name,
    };
    Ok((
        [(header::CONTENT_TYPE, format.content_type())],
        output::render(&forecast, format, &ids),
    )
        .into_response())
}

/// The grid signal for `location` (default: `carbon.zone`) at `at` (RFC 3339 or ns; default
/// now).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignalQuery {
    #[serde(default)]
    location: String,
    #[serde(default)]
    at: String,
}

async fn grid_signal(
    State(state): State<HttpState>,
    Query(query): Query<SignalQuery>,
) -> Result<Json<crate::grid::signal::Signal>, ApiError> {
    let at_ns = match instant("at", &query.at).map_err(ApiError)? {
        0 => crate::now_ns(),
        // Years 1970–2262 as ns: room for the 48 hours ahead.
        at if (1..i64::MAX / 2).contains(&at) => at,
        at => {
            return Err(ApiError(Error::BadRequest(format!(
                "at: {at} ns is out of range"
            ))));
        }
    };
    let signal = state
        .reader
        .with(move |connection| {
            let config = crate::report::stored_config(connection)?;
            let zone = if query.location.is_empty() {
                config.carbon.zone.clone()
            } else {
                query.location
            };
            if zone.trim().is_empty() {
                return Err(Error::BadRequest(
                    "location: not given, and carbon.zone names no zone".into(),
                ));
            }
            crate::grid::signal::signal(connection, &config, &zone, at_ns)
        })
        .await
        .map_err(ApiError)?;
    Ok(Json(signal))
}

/// `active_at` (RFC 3339 or ns): only the events, and their intervals, in force then.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    #[serde(default)]
    active_at: String,
}

async fn list_events(
    State(state): State<HttpState>,
    Query(query): Query<EventsQuery>,
) -> Result<Json<Vec<crate::grid::events::StoredEvent>>, ApiError> {
    let at = match instant("active_at", &query.active_at).map_err(ApiError)? {
        0 => None,
        at => Some(at),
    };
    let events = state
        .reader
        .with(move |connection| crate::grid::events::list(connection, at))
        .await
        .map_err(ApiError)?;
    Ok(Json(events))
}

/// What became of a posted event.
#[derive(Debug, Serialize)]
struct EventAccepted {
    id: String,
    intervals: usize,
    notes: Vec<String>,
}

/// `source`: who sends the event (default `posted`); a VEN bridge names its VTN.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PostEventQuery {
    #[serde(default)]
    source: String,
}

/// An OpenADR 3 event, posted (by an operator, or a VEN bridge relaying its VTN's); stored once
/// checked, replacing one of the same id.
async fn post_event(
    State(state): State<HttpState>,
    Query(query): Query<PostEventQuery>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<EventAccepted>), ApiError> {
    let store = control_of(&state)?.store;
    let source = if query.source.is_empty() {
        "posted".to_owned()
    } else {
        crate::grid::sources::check_name(&query.source).map_err(ApiError)?;
        query.source
    };
    let floor = state
        .reader
        .with(|connection| {
            Ok(crate::report::stored_config(connection)?
                .grid
                .min_facility_kw)
        })
        .await
        .map_err(ApiError)?;
    let event = crate::grid::events::parse(&body, floor).map_err(ApiError)?;
    let accepted = EventAccepted {
        id: event.id.clone(),
        intervals: event.intervals.len(),
        notes: event.notes.clone(),
    };
    let now = crate::now_ns();
    store
        .write(move |connection| crate::grid::events::store(connection, &event, &source, now))
        .await
        .map_err(ApiError)?;
    Ok((StatusCode::CREATED, Json(accepted)))
}

/// Ends an event now (as a VTN deleting it would).
async fn cancel_event(
    State(state): State<HttpState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let store = control_of(&state)?.store;
    let now = crate::now_ns();
    store
        .write(move |connection| crate::grid::events::cancel(connection, &id, now))
        .await
        .map_err(ApiError)?;
    Ok(StatusCode::NO_CONTENT)
}

/// A VEN bridge's report after a poll of its VTN.
async fn report_source(
    State(state): State<HttpState>,
    Path(name): Path<String>,
    Json(report): Json<crate::grid::sources::SourceReport>,
) -> Result<StatusCode, ApiError> {
    let store = control_of(&state)?.store;
    let now = crate::now_ns();
    store
        .write(move |connection| crate::grid::sources::record(connection, &name, &report, now))
        .await
        .map_err(ApiError)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_sources(
    State(state): State<HttpState>,
) -> Result<Json<Vec<crate::grid::sources::SourceStatus>>, ApiError> {
    let now = crate::now_ns();
    let sources = state
        .reader
        .with(move |connection| crate::grid::sources::list(connection, now))
        .await
        .map_err(ApiError)?;
    Ok(Json(sources))
}

fn control_of(state: &HttpState) -> Result<Control, ApiError> {
    state
        .control
        .clone()
        .ok_or_else(|| ApiError(Error::Server("this server is read-only".into())))
}

/// A cap an operator asks for: collector, GPU (as the collector names it), W, how long.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CapRequest {
    collector: String,
    device: String,
    #[serde(default)]
    watts: u32,
    /// Seconds the cap holds unless renewed; 0 with `release` ends it now.
    #[serde(default)]
    lease_s: u32,
    #[serde(default)]
    release: bool,
    #[serde(default)]
    reason: String,
}

/// What was sent.
#[derive(Debug, Serialize)]
struct CapSent {
    id: u64,
    collector: String,
    device: String,
    watts: u32,
    until: Option<String>,
}

/// The largest lease a cap may ask for: a cap always comes back off.
const MAX_LEASE_S: u32 = 86_400;

/// Sends a GPU power cap (or its release) to a connected collector; its outcome is recorded
/// when the collector acknowledges it (`GET /api/v1/grid/caps`).
async fn post_cap(
    State(state): State<HttpState>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<CapSent>), ApiError> {
    let control = control_of(&state)?;
    let request: CapRequest = serde_json::from_slice(&body)
        .map_err(|error| ApiError(Error::BadRequest(format!("cap: {error}"))))?;
    if request.device.trim().is_empty() {
        return Err(ApiError(Error::BadRequest(
            "device: must name a GPU".into(),
        )));
    }
    if !request.release && (request.watts == 0 || !(1..=MAX_LEASE_S).contains(&request.lease_s)) {
        return Err(ApiError(Error::BadRequest(format!(
            "watts, lease_s: a cap needs watts above 0 and a lease of 1 to {MAX_LEASE_S} s"
        ))));
    }
    static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let id = (crate::now_ns() as u64 & !0xFFFF)
        | (NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed) & 0xFFFF);
    let until_ns = crate::now_ns() + i64::from(request.lease_s) * 1_000_000_000;
    control
        .directives
        .send_cap(
            &request.collector,
            footprint_proto::v1::PowerCap {
                device: request.device.clone(),
                watts: request.watts,
                until_ns,
                id,
                reason: request.reason,
                release: request.release,
            },
        )
        .map_err(ApiError)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(CapSent {
            id,
            collector: request.collector,
            device: request.device,
            watts: request.watts,
            until: (!request.release)
                .then(|| footprint_core::time::format_rfc3339(footprint_core::UnixNanos(until_ns))),
        }),
    ))
}

async fn job_caps(
    State(state): State<HttpState>,
    access: Access,
    Path(id): Path<String>,
) -> Result<Json<crate::grid::caps::JobCaps>, ApiError> {
    ensure_job_readable(&state, &access, &id).await?;
    let now = crate::now_ns();
    let caps = state
        .reader
        .with(move |connection| crate::grid::caps::job_caps(connection, &id, now))
        .await
        .map_err(ApiError)?;
    Ok(Json(caps))
}

async fn list_caps(
    State(state): State<HttpState>,
) -> Result<Json<Vec<crate::grid::caps::CapRecord>>, ApiError> {
    let caps = state
        .reader
        .with(crate::grid::caps::list)
        .await
        .map_err(ApiError)?;
    Ok(Json(caps))
}

/// Jobs active in `[from, to)` (ns, 0 = unbounded), filtered by exact user, project, model and
/// kind (`training`, `inference`, `other`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobQuery {
    #[serde(default)]
    from: i64,
    #[serde(default)]
    to: i64,
    #[serde(default)]
    user: String,
    #[serde(default)]
    project: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    kind: String,
}

impl From<JobQuery> for pb::ListJobsRequest {
    fn from(query: JobQuery) -> Self {
        Self {
            from_ns: query.from,
            to_ns: query.to,
            user: query.user,
            project: query.project,
            model: query.model,
            kind: query.kind,
        }
    }
}

#[derive(Debug, Serialize)]
struct JobList {
    jobs: Vec<JobAnswer>,
}

/// What the request's token allows, when the server asks for tokens.
type Access = Option<axum::Extension<crate::auth::Access>>;

/// Refuses, and counts, a job that the request's token may not read.
fn ensure_readable(
    state: &HttpState,
    access: &Access,
    job: &str,
    project: &str,
) -> Result<(), ApiError> {
    match access {
        Some(access) if !access.may_read_project(project) => {
            state.counters.request_refused("other_project");
            Err(ApiError(Error::Forbidden(format!(
                "token {:?} may not read job {job:?}: it belongs to another project",
                access.token
            ))))
        }
        _ => Ok(()),
    }
}

/// Checks that the request's token may read job `id` before anything about it is shown.
async fn ensure_job_readable(state: &HttpState, access: &Access, id: &str) -> Result<(), ApiError> {
    if access
        .as_ref()
        .is_none_or(|access| access.projects.is_none())
    {
        return Ok(());
    }
    let job_id = id.to_owned();
    let job = state
        .reader
        .with(move |c| ledger::get_job(c, &job_id))
        .await
        .map_err(ApiError)?;
    ensure_readable(state, access, id, &job.project)
}

async fn list_jobs(
    State(state): State<HttpState>,
    access: Access,
    Query(query): Query<JobQuery>,
) -> Result<Json<JobList>, ApiError> {
    let filter = ledger::JobFilter::from(pb::ListJobsRequest::from(query));
    let mut jobs = state
        .reader
        .with(move |c| ledger::list_jobs(c, &filter))
        .await
        .map_err(ApiError)?;
    if let Some(access) = &access {
        jobs.retain(|job| access.may_read_project(&job.project));
    }
    Ok(Json(JobList {
        jobs: jobs.into_iter().map(Into::into).collect(),
    }))
}

async fn get_job(
    State(state): State<HttpState>,
    access: Access,
    Path(id): Path<String>,
) -> Result<Json<JobAnswer>, ApiError> {
    let job_id = id.clone();
    let job = state
        .reader
        .with(move |c| ledger::get_job(c, &job_id))
        .await
        .map_err(ApiError)?;
    ensure_readable(&state, &access, &id, &job.project)?;
    Ok(Json(job.into()))
}

/// One job's footprint hour by hour (`ledger::job_hours`).
async fn job_hours(
    State(state): State<HttpState>,
    access: Access,
    Path(id): Path<String>,
) -> Result<Json<Vec<crate::ledger::job_hours::JobHour>>, ApiError> {
    ensure_job_readable(&state, &access, &id).await?;
    let hours = state
        .reader
        .with(move |c| crate::ledger::job_hours::job_hours(c, &id))
        .await
        .map_err(ApiError)?;
    Ok(Json(hours))
}

/// What `/metrics` exposes of the ledger at `now_ns`, read with the config the ledger was
/// last started with.
async fn ledger_snapshot(
    reader: &LedgerReader,
    now_ns: i64,
) -> Result<crate::exposition::Snapshot, Error> {
    reader
        .with(move |connection| {
            let config = crate::report::stored_config(connection)?;
            crate::exposition::read(connection, &config, now_ns)
        })
        .await
}

/// What `/metrics` exposes of the ledger, as JSON, for the page.
async fn overview(
    State(state): State<HttpState>,
) -> Result<Json<crate::exposition::Snapshot>, ApiError> {
    let snapshot = ledger_snapshot(&state.reader, crate::now_ns())
        .await
        .map_err(ApiError)?;
    Ok(Json(snapshot))
}

/// The operators' page: one HTML file with its script and styles inline (nothing fetched from
/// elsewhere), reading the JSON API.
async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:",
            ),
        ],
        include_str!("web/index.html"),
    )
        .into_response()
}

#[derive(Debug, Serialize)]
struct FacilityBody {
    windows: Vec<FacilityAnswer>,
}

async fn facility(
    State(state): State<HttpState>,
    Query(range): Query<RangeQuery>,
) -> Result<Json<FacilityBody>, ApiError> {
    let step = ledger::SeriesStep::parse(&range.step, range.step_s).map_err(ApiError)?;
    let windows = state
        .reader
        .facility(range.from, range.to, step, &range.group_by)
        .await
        .map_err(ApiError)?;
    Ok(Json(FacilityBody {
        windows: windows.into_iter().map(Into::into).collect(),
    }))
}

/// `job` and `hour` (the hour's start, ns since the epoch), both required.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExplainQuery {
    job: String,
    hour: i64,
}

async fn explain(
    State(state): State<HttpState>,
    access: Access,
    Query(query): Query<ExplainQuery>,
) -> Result<Json<ledger::explain::Explanation>, ApiError> {
    ensure_job_readable(&state, &access, &query.job).await?;
    let explanation = state
        .reader
        .explain(query.job, query.hour)
        .await
        .map_err(ApiError)?;
    Ok(Json(explanation))
}

async fn ledger_stats(
    State(state): State<HttpState>,
) -> Result<Json<ledger::stats::LedgerStats>, ApiError> {
    let stats = state
        .reader
        .with(ledger::stats::ledger_stats)
        .await
        .map_err(ApiError)?;
    Ok(Json(stats))
}

/// `zone` (required), and the hours starting in `[from, to)`, ns since the epoch (required).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct IntensityQuery {
    #[serde(default)]
    zone: String,
    #[serde(default)]
    from: i64,
    #[serde(default)]
    to: i64,
}

#[derive(Debug, Serialize)]
struct IntensityBody {
    zone: String,
    hours: Vec<IntensityAnswer>,
}

async fn intensity(
    State(state): State<HttpState>,
    Query(query): Query<IntensityQuery>,
) -> Result<Json<IntensityBody>, ApiError> {
    let hours = state
        .reader
        .intensity(query.zone.clone(), query.from, query.to)
        .await
        .map_err(ApiError)?;
    Ok(Json(IntensityBody {
        zone: query.zone,
        hours: hours.into_iter().map(Into::into).collect(),
    }))
}

/// The aggregator's own counters, then the ledger's figures ([`crate::exposition`]): OpenMetrics
/// for a scraper that asks for it (Prometheus does), else the Prometheus text format.
async fn metrics(State(state): State<HttpState>, headers: axum::http::HeaderMap) -> Response {
    let connected = state
        .control
        .as_ref()
        .map(|control| control.directives.connected())
        .unwrap_or_default();
    let now = crate::now_ns();
    let snapshot = ledger_snapshot(&state.reader, now).await;
    let snapshot = match snapshot {
        Ok(snapshot) => snapshot,
        Err(error) => return ApiError(error).into_response(),
    };
    let mut ledger = crate::exposition::registry(&snapshot, &connected);
    // The forecast needs about four days of history; before that there is none to expose.
    let quarter = now.div_euclid(900_000_000_000);
    let mut cached = state.forecast.lock().await;
    let forecast = match cached.as_ref() {
        Some((made, forecast)) if *made == quarter => forecast.clone(),
        _ => {
            let made = state
                .reader
                .forecast(Default::default())
                .await
                .ok()
                .map(Arc::new);
            *cached = Some((quarter, made.clone()));
            made
        }
    };
    drop(cached);
    if let Some(forecast) = forecast {
        crate::exposition::register_forecast(&mut ledger, &forecast);
    }
    let mut text = String::new();
    let encoded = prometheus_client::encoding::text::encode_registry(&mut text, &state.registry)
        .and_then(|()| prometheus_client::encoding::text::encode_registry(&mut text, &ledger))
        .and_then(|()| prometheus_client::encoding::text::encode_eof(&mut text));
    match encoded {
        Ok(()) => {
            let accept = headers
                .get_all(header::ACCEPT)
                .iter()
                .filter_map(|value| value.to_str().ok());
            let (content_type, body) = footprint_core::exposition::negotiate(accept, text);
            ([(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}
