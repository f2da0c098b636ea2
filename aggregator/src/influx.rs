//! The InfluxDB 2 exporter: each settled hour of the site, of every host and of every job on
//! each host, written through InfluxDB 2's write API (`POST /api/v2/write?org=&bucket=&precision=ns`,
//! `Authorization: Token …`, gzip) — which VictoriaMetrics also takes.
//!
//! The ledger is the buffer: a cursor in `ledger_state` says which hour goes next, and it moves
//! only when the database has taken the whole hour (2xx), so an outage of the database loses
//! nothing and sends nothing twice. What is retried and what is not follows the status: a
//! refused token (401, 403) or a missing bucket (404) waits for the operator with the reason in
//! the log and `footprint_aggregator_exports_failed_total{reason="influxdb"}`; a request too large
//! (413) is split; throttling (429, 503) is waited out as asked (`Retry-After`); a 400 for points
//! the database will never take is logged with its body and the hour passed over (retrying
//! cannot help; the hour stays in the ledger and in the Parquet history).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use footprint_core::units::NANOS_PER_HOUR;
use footprint_exporters::line_protocol::{Point, write_point};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::tables::rollups::{HOST_FIGURES, JOB_FIGURES, SITE_FIGURES};
use crate::{Error, Result};

/// `ledger_state` key of the first hour not yet written to InfluxDB.
pub const EXPORTED_KEY: &str = "influxdb_exported_until_ns";

/// Longest wait between tries after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// `[influxdb]`: where settled hours are written.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InfluxConfig {
    /// The database's base URL (`https://influx.example:8086`, or `http://` on the same host);
    /// unset (the default): no export.
    #[serde(default)]
    pub url: Option<String>,
    /// For an `https://` url: PEM CA certificate(s) its certificate chains to (for a public CA,
    /// the system bundle, `/etc/ssl/certs/ca-certificates.crt`).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The organisation written to.
    #[serde(default)]
    pub org: String,
    /// The bucket written to.
    #[serde(default)]
    pub bucket: String,
    /// A file holding the API token (kept out of the config).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// A `site` tag on every point, so several sites share a bucket.
    #[serde(default = "default_site")]
    pub site: String,
    /// Seconds between looks for newly settled hours.
    #[serde(default = "default_interval_s")]
    pub interval_s: u64,
    /// Lines per request at most (a 413 halves it for that hour).
    #[serde(default = "default_max_lines")]
    pub max_lines: usize,
    /// Compress request bodies.
    #[serde(default = "default_gzip")]
    pub gzip: bool,
}

fn default_site() -> String {
    "site".to_owned()
}

fn default_interval_s() -> u64 {
    30
}

fn default_max_lines() -> usize {
    5_000
}

fn default_gzip() -> bool {
    true
}

impl Default for InfluxConfig {
    fn default() -> Self {
        Self {
            url: None,
            ca_file: None,
            org: String::new(),
            bucket: String::new(),
            token_file: None,
            site: default_site(),
            interval_s: default_interval_s(),
            max_lines: default_max_lines(),
            gzip: default_gzip(),
        }
    }
}

/// The lines of the hour starting at `hour_ns`: `footprint_site`, `footprint_host` (tags host,
/// hall, rack) and `footprint_job` (tags job, project, user, kind, host), each with the hour's
/// roll-up figures as integer fields, stamped at the hour's start.
///
/// # Errors
/// A database error.
pub fn hour_lines(connection: &Connection, hour_ns: i64, site: &str) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    let mut push = |measurement: &str, tags: Vec<(&str, String)>, names: &[&str], row: &[i64]| {
        let mut line = String::new();
        write_point(
            &mut line,
            &Point {
                measurement,
                tags,
                fields: names.iter().copied().zip(row.iter().copied()).collect(),
                time_ns: hour_ns,
            },
        );
        lines.push(line);
    };
    let site_names: Vec<&str> = SITE_FIGURES.split(", ").collect();
    let figures =
        |row: &rusqlite::Row<'_>, first: usize, count: usize| -> rusqlite::Result<Vec<i64>> {
            (first..first + count).map(|index| row.get(index)).collect()
        };
    let site_row: Option<Vec<i64>> = connection
        .query_row(
            &format!("SELECT {SITE_FIGURES} FROM rollup_site WHERE hour_ns = ?1"),
            [hour_ns],
            |row| figures(row, 0, site_names.len()),
        )
        .optional()?;
    if let Some(row) = site_row {
        push(
            "footprint_site",
            vec![("site", site.to_owned())],
            &site_names,
            &row,
        );
    }
    let host_names: Vec<&str> = HOST_FIGURES.split(", ").collect();
    let mut hosts = connection.prepare_cached(&format!(
        "SELECT c.host, COALESCE(p.hall, 'unplaced'), COALESCE(p.rack, 'unplaced'), {}
         FROM rollup_hosts r JOIN collectors c ON c.id = r.collector
         LEFT JOIN placement p ON p.host = c.host WHERE r.hour_ns = ?1 ORDER BY c.name",
        host_names
            .iter()
            .map(|c| format!("r.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    ))?;
    let mut rows = hosts.query([hour_ns])?;
    while let Some(row) = rows.next()? {
        let tags = vec![
            ("site", site.to_owned()),
            ("host", row.get(0)?),
            ("hall", row.get(1)?),
            ("rack", row.get(2)?),
        ];
        push(
            "footprint_host",
            tags,
            &host_names,
            &figures(row, 3, host_names.len())?,
        );
    }
    drop(rows);
    let job_names: Vec<&str> = JOB_FIGURES.split(", ").collect();
    let mut jobs = connection.prepare_cached(&format!(
        "SELECT j.job_id, j.project, j.user, j.kind, c.host, {}
         FROM rollup_jobs r JOIN jobs j ON j.id = r.job JOIN collectors c ON c.id = r.collector
         WHERE r.hour_ns = ?1 ORDER BY j.job_id, c.name",
        job_names
            .iter()
            .map(|c| format!("r.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    ))?;
    let mut rows = jobs.query([hour_ns])?;
    while let Some(row) = rows.next()? {
        let kind = footprint_proto::v1::JobKind::try_from(row.get::<_, i32>(3)?)
            .map_or("other", |k| k.short_name());
        let tags = vec![
            ("site", site.to_owned()),
            ("job", row.get(0)?),
            ("project", row.get(1)?),
            ("user", row.get(2)?),
            ("kind", kind.to_owned()),
            ("host", row.get(4)?),
        ];
        push(
            "footprint_job",
            tags,
            &job_names,
            &figures(row, 5, job_names.len())?,
        );
    }
    Ok(lines)
}

/// The next hour to write — the cursor, else the first settled hour — once it is settled.
///
/// # Errors
/// A database error.
pub fn next_hour(connection: &Connection) -> Result<Option<i64>> {
    let next = match crate::tables::state(connection, EXPORTED_KEY)? {
        Some(hour) => Some(hour),
        None => connection.query_row("SELECT MIN(hour_ns) FROM rollup_site", [], |r| r.get(0))?,
    };
    let settled = crate::ledger::site::settled_until(connection)?.map_or(i64::MIN, |at| at.0);
    Ok(next.filter(|hour| hour + NANOS_PER_HOUR <= settled))
}

/// What became of a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Taken (2xx).
    Written,
    /// Too large (413): split it.
    TooLarge,
    /// Refused for good (400): passing over it is all that helps.
    Rejected(String),
    /// Worth trying again after at least this long.
    Retry(Duration, String),
}

/// Reads what a status means for the exporter.
pub fn outcome_of(status: u16, retry_after: Option<&str>, body: &str) -> Outcome {
    let body = body.chars().take(500).collect::<String>();
    match status {
        200..=299 => Outcome::Written,
        413 => Outcome::TooLarge,
        400 => Outcome::Rejected(format!("400 Bad Request: {body}")),
        401 | 403 => Outcome::Retry(
            Duration::ZERO,
            format!("{status}: the token was refused (influxdb.token_file): {body}"),
        ),
        404 => Outcome::Retry(
            Duration::ZERO,
            format!("404: no such organisation or bucket (influxdb.org, influxdb.bucket): {body}"),
        ),
        429 | 503 => {
            let wait = retry_after
                .and_then(|text| text.trim().parse::<u64>().ok())
                .map_or(Duration::from_secs(30), Duration::from_secs);
            Outcome::Retry(wait.min(MAX_BACKOFF), format!("{status}: busy: {body}"))
        }
        _ => Outcome::Retry(Duration::ZERO, format!("{status}: {body}")),
    }
}

/// One InfluxDB 2 endpoint.
struct Client {
    authority: String,
    /// Over TLS when the url is `https://`.
    tls: Option<footprint_proto::tls::TlsClient>,
    path: String,
    token: Option<String>,
    gzip: bool,
}

impl Client {
    fn new(config: &InfluxConfig) -> Result<Self> {
        let url = config.url.as_deref().unwrap_or_default();
        let (rest, secure) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
            (Some(rest), _) => (rest, true),
            (None, Some(rest)) => (rest, false),
            (None, None) => {
                return Err(Error::Server(format!(
                    "influxdb.url: {url:?} is not an http:// or https:// URL"
                )));
            }
        };
        let (authority, base) = rest.split_once('/').unwrap_or((rest, ""));
        // `host:port`, the port optional; an IPv6 host is bracketed.
        let host = match authority.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => host,
            _ => authority,
        };
        let authority = if authority.contains(':') && !authority.ends_with(']') {
            authority.to_owned()
        } else {
            format!("{authority}:{}", if secure { 443 } else { 80 })
        };
        let tls = match (secure, &config.ca_file) {
            (false, _) => None,
            (true, None) => {
                return Err(Error::Server(
                    "influxdb.ca_file: an https:// url needs the CA its certificate chains to"
                        .into(),
                ));
            }
            (true, Some(ca_file)) => {
                let files = footprint_proto::tls::ClientFiles {
                    ca_file: ca_file.clone(),
                    ..Default::default()
                };
                Some(
                    footprint_proto::tls::TlsClient::new(&files, host, b"http/1.1")
                        .map_err(|error| Error::Server(format!("influxdb.ca_file: {error}")))?,
                )
            }
        };
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("org", &config.org)
            .append_pair("bucket", &config.bucket)
            .append_pair("precision", "ns")
            .finish();
        let base = base.trim_end_matches('/');
        let path = if base.is_empty() {
            format!("/api/v2/write?{query}")
        } else {
            format!("/{base}/api/v2/write?{query}")
        };
        let token = match &config.token_file {
            Some(file) => Some(
                std::fs::read_to_string(file)
                    .map_err(|e| {
                        Error::Server(format!("influxdb.token_file {}: {e}", file.display()))
                    })?
                    .trim()
                    .to_owned(),
            ),
            None => None,
        };
        Ok(Self {
            authority,
            tls,
            path,
            token,
            gzip: config.gzip,
        })
    }

    async fn post(&self, body: &str) -> Outcome {
        let unreachable = |what: String| Outcome::Retry(Duration::ZERO, what);
        let stream = match tokio::net::TcpStream::connect(&self.authority).await {
            Ok(stream) => stream,
            Err(error) => return unreachable(format!("connecting to {}: {error}", self.authority)),
        };
        match &self.tls {
            None => self.exchange(stream, body).await,
            Some(tls) => match tls.connect(stream).await {
                Ok(stream) => self.exchange(stream, body).await,
                Err(error) => unreachable(format!("TLS with {}: {error}", self.authority)),
            },
        }
    }

    /// One write request over `stream`, plain or TLS.
    async fn exchange<S>(&self, stream: S, body: &str) -> Outcome
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let unreachable = |what: String| Outcome::Retry(Duration::ZERO, what);
        let (mut sender, connection) =
            match hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await
            {
                Ok(pair) => pair,
                Err(error) => return unreachable(format!("HTTP with {}: {error}", self.authority)),
            };
        tokio::spawn(connection);
        let mut request = hyper::Request::post(&self.path)
            .header(hyper::header::HOST, &self.authority)
            .header(hyper::header::CONTENT_TYPE, "text/plain; charset=utf-8");
        if let Some(token) = &self.token {
            request = request.header(hyper::header::AUTHORIZATION, format!("Token {token}"));
        }
        let bytes = if self.gzip {
            request = request.header(hyper::header::CONTENT_ENCODING, "gzip");
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            if encoder.write_all(body.as_bytes()).is_err() {
                return unreachable("gzip failed".into());
            }
            match encoder.finish() {
                Ok(bytes) => bytes,
                Err(error) => return unreachable(format!("gzip: {error}")),
            }
        } else {
            body.as_bytes().to_vec()
        };
        let request = match request.body(Full::new(Bytes::from(bytes))) {
            Ok(request) => request,
            Err(error) => return unreachable(format!("request: {error}")),
        };
        let response =
            match tokio::time::timeout(Duration::from_secs(60), sender.send_request(request)).await
            {
                Ok(Ok(response)) => response,
                Ok(Err(error)) => return unreachable(format!("{}: {error}", self.authority)),
                Err(_) => return unreachable(format!("{}: no answer within 60 s", self.authority)),
            };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(hyper::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = match response.into_body().collect().await {
            Ok(collected) => String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
            Err(_) => String::new(),
        };
        outcome_of(status, retry_after.as_deref(), &body)
    }
}

/// Writes `lines` in requests of at most `max_lines` (halved on 413); the first failure.
async fn send(client: &Client, lines: &[String], max_lines: usize) -> Outcome {
    let mut size = max_lines.max(1);
    let mut from = 0;
    while from < lines.len() {
        let to = (from + size).min(lines.len());
        match client.post(&lines[from..to].concat()).await {
            Outcome::Written => from = to,
            Outcome::TooLarge if size > 1 => size = size.div_ceil(2),
            Outcome::TooLarge => return Outcome::Rejected("413: one line is too large".into()),
            other => return other,
        }
    }
    Outcome::Written
}

/// The wait after `failed` consecutive failures: the interval doubled per failure, at most
/// [`MAX_BACKOFF`].
fn backoff(interval: Duration, failed: u32) -> Duration {
    interval
        .saturating_mul(1 << failed.saturating_sub(1).min(16))
        .min(MAX_BACKOFF)
}

/// Writes every settled hour after the cursor, every `influxdb.interval_s`, until `shutdown`.
pub async fn run(
    reader: crate::query::LedgerReader,
    store: crate::store::StoreHandle,
    config: InfluxConfig,
    metrics: std::sync::Arc<crate::metrics::AggregatorMetrics>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let client = match Client::new(&config) {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "InfluxDB export is off.");
            metrics.export_failed("influxdb");
            return;
        }
    };
    let interval = Duration::from_secs(config.interval_s.max(1));
    let mut wait = Duration::ZERO;
    // Consecutive failed tries: the wait doubles from the interval up to MAX_BACKOFF.
    let mut failed = 0u32;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        wait = interval;
        loop {
            let site = config.site.clone();
            let next = reader
                .with(move |connection| {
                    next_hour(connection)?
                        .map(|hour| hour_lines(connection, hour, &site).map(|lines| (hour, lines)))
                        .transpose()
                })
                .await;
            let (hour, lines) = match next {
                Ok(Some(next)) => next,
                Ok(None) => break,
                Err(error) => {
                    tracing::warn!(%error, "InfluxDB export: reading the ledger failed.");
                    break;
                }
            };
            match send(&client, &lines, config.max_lines).await {
                Outcome::Written => failed = 0,
                Outcome::TooLarge => {
                    metrics.export_failed("influxdb");
                    tracing::warn!(
                        hour_ns = hour,
                        "InfluxDB: a line is too large to write; the hour is passed over (it stays in the ledger)."
                    );
                }
                Outcome::Rejected(reason) => {
                    metrics.export_failed("influxdb");
                    tracing::warn!(hour_ns = hour, %reason, "InfluxDB refused the hour's points; passed over (it stays in the ledger).");
                }
                Outcome::Retry(after, reason) => {
                    metrics.export_failed("influxdb");
                    failed = failed.saturating_add(1);
                    wait = after.max(backoff(interval, failed));
                    tracing::warn!(hour_ns = hour, %reason, retry_in_s = wait.as_secs(), "InfluxDB export failed; the hour is kept and tried again.");
                    break;
                }
            }
            let moved = store
                .write(move |connection| {
                    Ok(crate::tables::set_state(
                        connection,
                        EXPORTED_KEY,
                        hour + NANOS_PER_HOUR,
                    )?)
                })
                .await;
            if let Err(error) = moved {
                tracing::warn!(%error, "InfluxDB export: the cursor did not move; the hour will be sent again.");
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_status_is_retried_only_where_retrying_can_help() {
        assert_eq!(outcome_of(204, None, ""), Outcome::Written);
        assert_eq!(outcome_of(413, None, ""), Outcome::TooLarge);
        assert!(
            matches!(outcome_of(400, None, "bad field"), Outcome::Rejected(r) if r.contains("bad field"))
        );
        assert!(matches!(outcome_of(401, None, ""), Outcome::Retry(_, r) if r.contains("token")));
        assert!(matches!(outcome_of(404, None, ""), Outcome::Retry(_, r) if r.contains("bucket")));
        assert_eq!(
            outcome_of(429, Some("12"), ""),
            Outcome::Retry(Duration::from_secs(12), "429: busy: ".into())
        );
        assert_eq!(backoff(Duration::from_secs(30), 1), Duration::from_secs(30));
        assert_eq!(
            backoff(Duration::from_secs(30), 3),
            Duration::from_secs(120)
        );
        assert_eq!(backoff(Duration::from_secs(30), 40), MAX_BACKOFF);
    }
}
