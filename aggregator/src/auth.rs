//! Who may read and act through the HTTP API and the gRPC `Query` service.
//!
//! Configured by a web-config file in the format Prometheus exporters use (the exporter-toolkit's
//! `tls_server_config` keys), with bearer tokens added: each token has a name, the SHA-256 of its
//! secret (the secret itself is never stored), its scopes, and optionally the projects whose jobs
//! it may read. Without a web-config file the API is open, which the listener check only allows
//! on loopback.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::Request;
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::metrics::AggregatorMetrics;

/// What a token may do.
#[derive(
    Clone, Copy, Debug, Deserialize, PartialEq, Eq, Hash, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Read the ledger, jobs, forecast, grid signal and `/metrics`.
    Read,
    /// Download disclosure reports.
    Report,
    /// Post grid events and power caps, report grid sources.
    Control,
}

impl Scope {
    pub fn name(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Report => "report",
            Scope::Control => "control",
        }
    }
}

/// The web-config file (`web_config_file`).
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    /// TLS for the HTTP listener; absent: plaintext.
    #[serde(default)]
    pub tls_server_config: Option<TlsServerConfig>,
    /// Tokens accepted as `Authorization: Bearer …`; absent or empty: no token is asked for.
    #[serde(default)]
    pub bearer_tokens: Vec<TokenEntry>,
    /// Requests a second each token may make (averaged over two seconds); 0: no limit.
    #[serde(default = "default_token_requests_per_s")]
    pub token_requests_per_s: u32,
}

fn default_token_requests_per_s() -> u32 {
    50
}

/// The exporter-toolkit's `tls_server_config`, the keys Footprint reads.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsServerConfig {
    /// PEM certificate chain of the HTTP listener.
    pub cert_file: PathBuf,
    /// PEM private key of `cert_file`.
    pub key_file: PathBuf,
    /// `NoClientCert` (default), `VerifyClientCertIfGiven` or `RequireAndVerifyClientCert`.
    #[serde(default)]
    pub client_auth_type: ClientAuth,
    /// PEM CA certificate(s) client certificates must chain to, when `client_auth_type` asks
    /// for them.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub enum ClientAuth {
    #[default]
    NoClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

/// One bearer token.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// Who holds it; shown in logs and refusals, never the secret.
    pub name: String,
    /// Lower-case hex SHA-256 of the token (`footprint token new` prints both).
    pub sha256: String,
    /// What it may do: `read` (every GET and Query call but the report), `report` (the
    /// disclosure report), `control` (every other method: grid events, power caps, source
    /// reports).
    pub scopes: Vec<Scope>,
    /// The projects whose jobs it may read; absent: every job and the site-wide figures.
    #[serde(default)]
    pub projects: Option<Vec<String>>,
}

/// Why a web-config file was refused; names the key.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct WebConfigError {
    pub path: PathBuf,
    pub reason: String,
}

impl WebConfig {
    /// Reads and checks `path`; relative file names inside it are taken from its directory, as
    /// Prometheus does.
    ///
    /// # Errors
    /// The file cannot be read or parsed, or a key is wrong (the message names it).
    pub fn load(path: &Path) -> Result<Self, WebConfigError> {
        let fail = |reason: String| WebConfigError {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|error| fail(error.to_string()))?;
        let mut config: WebConfig =
            serde_norway::from_str(&text).map_err(|error| fail(error.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        if let Some(tls) = &mut config.tls_server_config {
            tls.cert_file = base.join(&tls.cert_file);
            tls.key_file = base.join(&tls.key_file);
            if let Some(ca) = &mut tls.client_ca_file {
                *ca = base.join(&*ca);
            }
            if tls.client_auth_type != ClientAuth::NoClientCert && tls.client_ca_file.is_none() {
                return Err(fail(
                    "tls_server_config.client_ca_file: required when client_auth_type asks for \
                     client certificates"
                        .into(),
                ));
            }
        }
        let mut names = std::collections::HashSet::new();
        for (index, token) in config.bearer_tokens.iter_mut().enumerate() {
            token.sha256.make_ascii_lowercase();
            if token.sha256.len() != 64 || !token.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(fail(format!(
                    "bearer_tokens[{index}].sha256: must be 64 hex digits (the SHA-256 of the token)"
                )));
            }
            if token.scopes.is_empty() {
                return Err(fail(format!(
                    "bearer_tokens[{index}].scopes: give at least one of read, report, control"
                )));
            }
            if !names.insert(token.name.clone()) {
                return Err(fail(format!(
                    "bearer_tokens[{index}].name: {:?} is used twice",
                    token.name
                )));
            }
        }
        Ok(config)
    }

    /// The TLS files of the HTTP listener, when it has TLS.
    pub fn server_files(&self) -> Option<footprint_proto::tls::ServerFiles> {
        let tls = self.tls_server_config.as_ref()?;
        Some(footprint_proto::tls::ServerFiles {
            cert_file: tls.cert_file.clone(),
            key_file: tls.key_file.clone(),
            client_ca_file: match tls.client_auth_type {
                ClientAuth::NoClientCert => None,
                _ => tls.client_ca_file.clone(),
            },
            client_cert_optional: tls.client_auth_type == ClientAuth::VerifyClientCertIfGiven,
            alpn: vec![b"http/1.1".to_vec()],
        })
    }
}

/// The SHA-256 of a token, as the web-config file holds it.
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// A new random token: 32 bytes from the OS, hex, with a prefix that secret scanners can match.
///
/// # Errors
/// The OS has no randomness to give.
pub fn new_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!(
        "fpt_{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

/// What a request was allowed to see: attached to each authorised request.
#[derive(Clone, Debug)]
pub struct Access {
    pub token: String,
    /// `None`: every project.
    pub projects: Option<Arc<[String]>>,
}

impl Access {
    /// Whether this access may read the jobs of `project`.
    pub fn may_read_project(&self, project: &str) -> bool {
        self.projects
            .as_ref()
            .is_none_or(|projects| projects.iter().any(|p| p == project))
    }
}

/// Checks presented tokens, and their rate.
#[derive(Debug)]
pub struct Tokens {
    by_hash: HashMap<String, TokenEntry>,
    requests_per_s: u32,
    /// Per token: tokens left in its bucket, and when it was last filled.
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

/// Why a request was refused: the status, the metric reason and the message.
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub reason: &'static str,
    pub message: String,
}

impl Refusal {
    fn new(status: StatusCode, reason: &'static str, message: String) -> Self {
        Self {
            status,
            reason,
            message,
        }
    }
}

impl Tokens {
    pub fn new(config: &WebConfig) -> Option<Arc<Self>> {
        if config.bearer_tokens.is_empty() {
            return None;
        }
        Some(Arc::new(Self {
            by_hash: config
                .bearer_tokens
                .iter()
                .map(|token| (token.sha256.clone(), token.clone()))
                .collect(),
            requests_per_s: config.token_requests_per_s,
            buckets: Mutex::default(),
        }))
    }

    /// The access `authorization` (the header's value) grants for `scope`.
    ///
    /// # Errors
    /// No token, an unknown token, a token without `scope`, or one past its rate.
    pub fn authorise(&self, authorization: Option<&str>, scope: Scope) -> Result<Access, Refusal> {
        let Some(value) = authorization else {
            return Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "no_token",
                "authorization: send `Authorization: Bearer <token>`".into(),
            ));
        };
        let secret = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .unwrap_or_default()
            .trim();
        let Some(entry) = self.by_hash.get(&token_hash(secret)) else {
            return Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "unknown_token",
                "authorization: the bearer token is not one this server accepts".into(),
            ));
        };
        if !entry.scopes.contains(&scope) {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                "missing_scope",
                format!(
                    "token {:?} lacks the {:?} scope this needs",
                    entry.name,
                    scope.name()
                ),
            ));
        }
        if !self.take(&entry.name) {
            return Err(Refusal::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "token {:?} is past token_requests_per_s = {}",
                    entry.name, self.requests_per_s
                ),
            ));
        }
        Ok(Access {
            token: entry.name.clone(),
            projects: entry.projects.clone().map(Into::into),
        })
    }

    /// Takes one request from `name`'s bucket (which holds two seconds' worth).
    fn take(&self, name: &str) -> bool {
        if self.requests_per_s == 0 {
            return true;
        }
        let rate = f64::from(self.requests_per_s);
        let capacity = 2.0 * rate;
        let now = Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (left, filled) = buckets.entry(name.to_owned()).or_insert((capacity, now));
        *left = (*left + now.duration_since(*filled).as_secs_f64() * rate).min(capacity);
        *filled = now;
        if *left >= 1.0 {
            *left -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The scope a request needs, and whether a token limited to projects may make it; `None`:
/// open to all (the page's shell and the health check carry no data).
fn needs(method: &Method, path: &str) -> Option<(Scope, bool)> {
    if path == "/" || path == "/healthz" {
        return None;
    }
    let job_path = path == "/api/v1/jobs" || path.starts_with("/api/v1/jobs/");
    if path == "/api/v1/report" {
        return Some((Scope::Report, false));
    }
    // Everything that changes state (grid events, power caps, source reports) acts on the site:
    // any method but a read needs `control`, so a route added later is not left open.
    if *method != Method::GET && *method != Method::HEAD {
        return Some((Scope::Control, false));
    }
    Some((Scope::Read, job_path || path == "/api/v1/explain"))
}

/// The HTTP middleware: refuses what the token does not allow, and attaches [`Access`].
pub async fn check(
    tokens: Arc<Tokens>,
    metrics: Arc<AggregatorMetrics>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some((scope, project_ok)) = needs(request.method(), request.uri().path()) else {
        return next.run(request).await;
    };
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    let refusal = match tokens.authorise(authorization, scope) {
        Ok(access) if access.projects.is_some() && !project_ok => Refusal::new(
            StatusCode::FORBIDDEN,
            "other_project",
            format!(
                "token {:?} may read only its projects' jobs (/api/v1/jobs…); site-wide figures \
                 need a token without `projects`",
                access.token
            ),
        ),
        Ok(access) => {
            request.extensions_mut().insert(access);
            return next.run(request).await;
        }
        Err(refusal) => refusal,
    };
    metrics.request_refused(refusal.reason);
    let mut response = (
        refusal.status,
        axum::Json(serde_json::json!({ "error": refusal.message })),
    )
        .into_response();
    if refusal.status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    response
}

/// The gRPC method a request calls (`/footprint.v1.Query/Report`), kept in its extensions for
/// [`check_grpc`]: tonic's interceptors see the metadata, not the path.
#[derive(Clone, Debug)]
pub struct GrpcPath(pub String);

/// Tags a gRPC request with its [`GrpcPath`]; a layer on the whole gRPC server.
pub fn tag_grpc_path<B>(mut request: axum::http::Request<B>) -> axum::http::Request<B> {
    let path = GrpcPath(request.uri().path().to_owned());
    request.extensions_mut().insert(path);
    request
}

/// The scope a `Query` method needs: `report` for the signed disclosure report, `read` for the
/// rest.
fn grpc_scope(request: &tonic::Request<()>) -> Scope {
    match request.extensions().get::<GrpcPath>() {
        Some(GrpcPath(path)) if path.ends_with("/Report") => Scope::Report,
        _ => Scope::Read,
    }
}

/// Checks the bearer token of a gRPC `Query` call: `report` for the report, `read` for the
/// rest, for the whole site.
///
/// # Errors
/// `UNAUTHENTICATED` or `PERMISSION_DENIED`, naming what is missing.
pub fn check_grpc(
    tokens: &Tokens,
    metrics: &AggregatorMetrics,
    request: &tonic::Request<()>,
) -> Result<(), tonic::Status> {
    let authorization = request
        .metadata()
        .get("authorization")
        .and_then(|value| value.to_str().ok());
    let refusal = match tokens.authorise(authorization, grpc_scope(request)) {
        Ok(access) if access.projects.is_none() => return Ok(()),
        Ok(access) => Refusal::new(
            StatusCode::FORBIDDEN,
            "other_project",
            format!(
                "token {:?} is limited to projects; the Query service answers for the whole site",
                access.token
            ),
        ),
        Err(refusal) => refusal,
    };
    metrics.request_refused(refusal.reason);
    Err(match refusal.status {
        StatusCode::UNAUTHORIZED => tonic::Status::unauthenticated(refusal.message),
        StatusCode::TOO_MANY_REQUESTS => tonic::Status::resource_exhausted(refusal.message),
        _ => tonic::Status::permission_denied(refusal.message),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(projects: Option<Vec<String>>, rate: u32) -> (Tokens, String) {
        let secret = new_token().expect("randomness");
        let config = WebConfig {
            bearer_tokens: vec![TokenEntry {
                name: "team".into(),
                sha256: token_hash(&secret),
                scopes: vec![Scope::Read],
                projects,
            }],
            token_requests_per_s: rate,
            ..WebConfig::default()
        };
        let tokens = Tokens::new(&config).expect("one token");
        (Arc::try_unwrap(tokens).expect("sole owner"), secret)
    }

    #[test]
    fn a_token_grants_only_its_scopes() {
        let (tokens, secret) = tokens(None, 0);
        let header = format!("Bearer {secret}");
        assert!(tokens.authorise(Some(&header), Scope::Read).is_ok());
        let refused = tokens
            .authorise(Some(&header), Scope::Control)
            .expect_err("no control scope");
        assert_eq!(refused.reason, "missing_scope");
        assert!(refused.message.contains("control"));
        let refused = tokens
            .authorise(Some("Bearer fpt_guess"), Scope::Read)
            .expect_err("unknown");
        assert_eq!(refused.reason, "unknown_token");
        assert_eq!(
            tokens
                .authorise(None, Scope::Read)
                .expect_err("none")
                .reason,
            "no_token"
        );
    }

    #[test]
    fn a_project_token_reads_only_its_projects() {
        let (tokens, secret) = tokens(Some(vec!["climate".into()]), 0);
        let access = tokens
            .authorise(Some(&format!("Bearer {secret}")), Scope::Read)
            .expect("read");
        assert!(access.may_read_project("climate"));
        assert!(!access.may_read_project("vision"));
    }

    #[test]
    fn a_token_past_its_rate_is_refused_until_its_bucket_refills() {
        let (tokens, secret) = tokens(None, 5);
        let header = format!("Bearer {secret}");
        let granted = (0..20)
            .filter(|_| tokens.authorise(Some(&header), Scope::Read).is_ok())
            .count();
        // Two seconds' worth, give or take what refilled while the loop ran.
        assert!((10..=11).contains(&granted), "granted {granted}");
    }

    #[test]
    fn the_example_web_config_loads_with_its_paths_taken_from_its_directory() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/web-config.yml");
        let config = WebConfig::load(&path).unwrap();
        let tls = config.tls_server_config.as_ref().unwrap();
        assert_eq!(
            tls.cert_file,
            path.parent().unwrap().join("pki/aggregator.pem")
        );
        assert_eq!(config.bearer_tokens.len(), 4);
        assert!(config.bearer_tokens.iter().any(|t| t.projects.is_some()));
    }

    #[test]
    fn routes_need_the_scope_of_what_they_do() {
        assert_eq!(needs(&Method::GET, "/healthz"), None);
        assert_eq!(needs(&Method::GET, "/metrics"), Some((Scope::Read, false)));
        assert_eq!(
            needs(&Method::GET, "/api/v1/report"),
            Some((Scope::Report, false))
        );
        assert_eq!(
            needs(&Method::POST, "/api/v1/grid/events"),
            Some((Scope::Control, false))
        );
        assert_eq!(
            needs(&Method::GET, "/api/v1/grid/events"),
            Some((Scope::Read, false))
        );
        assert_eq!(
            needs(&Method::PUT, "/api/v1/grid/sources/vtn"),
            Some((Scope::Control, false))
        );
        assert_eq!(
            needs(&Method::GET, "/api/v1/jobs/42/hours"),
            Some((Scope::Read, true))
        );
    }
}
