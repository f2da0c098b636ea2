//! The aggregator's grid-events API, as the bridge uses it.

use serde::{Deserialize, Serialize};
use url::Url;

/// Why a call to the aggregator failed.
#[derive(Debug, thiserror::Error)]
pub enum AggregatorError {
    /// The aggregator could not be reached, or answered with something else than expected.
    #[error("aggregator at {url}: {reason}")]
    Unavailable { url: String, reason: String },
    /// The aggregator refused the event (400): the reason names the field.
    #[error("refused: {0}")]
    Refused(String),
}

/// An event the aggregator holds, as far as the bridge needs it.
#[derive(Clone, Debug, Deserialize)]
pub struct HeldEvent {
    pub id: String,
    pub source: String,
    pub cancelled: Option<String>,
}

/// What the bridge reports after a poll (`grid::sources::SourceReport` in the aggregator).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct SourceReport {
    pub ok: bool,
    pub error: Option<String>,
    pub events: u32,
    pub refused: Vec<Refusal>,
    pub poll_interval_s: u32,
}

/// An event the aggregator refused, and why.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Refusal {
    pub id: String,
    pub reason: String,
}

/// A client of one aggregator's HTTP API.
#[derive(Clone, Debug)]
pub struct Aggregator {
    base: Url,
    http: reqwest::Client,
}

/// How long one call to the aggregator may take.
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
}

impl Aggregator {
    /// A client for the aggregator at `base` (e.g. `http://127.0.0.1:7412/`).
    pub fn new(base: Url) -> Self {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .unwrap_or_default();
        Self { base, http }
    }

    /// A client that sends `token` as its bearer token (the aggregator's web config lists its
    /// hash; the bridge needs the `control` scope) and trusts `ca_pem` for an `https://` base.
    ///
    /// # Errors
    /// The token is not a valid header value, or the CA file holds no certificate.
    pub fn with_credentials(
        base: Url,
        token: Option<&str>,
        ca_pem: Option<&[u8]>,
    ) -> Result<Self, AggregatorError> {
        let invalid = |reason: String| AggregatorError::Unavailable {
            url: base.to_string(),
            reason,
        };
        let mut builder = reqwest::Client::builder().timeout(TIMEOUT);
        if let Some(token) = token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| invalid("the token is not printable ASCII".into()))?;
            value.set_sensitive(true);
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(reqwest::header::AUTHORIZATION, value);
            builder = builder.default_headers(headers);
        }
        if let Some(pem) = ca_pem {
            let certificates = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|error| invalid(format!("the CA file: {error}")))?;
            if certificates.is_empty() {
                return Err(invalid("the CA file holds no PEM certificate".into()));
            }
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let http = builder
            .build()
            .map_err(|error| invalid(format!("HTTP client: {error}")))?;
        Ok(Self { base, http })
    }

    fn url(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        url.set_path(path);
        url
    }

    fn unavailable(&self, reason: impl std::fmt::Display) -> AggregatorError {
        AggregatorError::Unavailable {
            url: self.base.to_string(),
            reason: reason.to_string(),
        }
    }

    async fn check(
        &self,
        response: reqwest::Response,
    ) -> Result<reqwest::Response, AggregatorError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        let reason = serde_json::from_str::<ErrorBody>(&text)
            .map(|body| body.error)
            .unwrap_or(text);
        if status == reqwest::StatusCode::BAD_REQUEST {
            Err(AggregatorError::Refused(reason))
        } else {
            Err(self.unavailable(format!("{status}: {reason}")))
        }
    }

    /// Posts `event` (OpenADR 3 JSON) as coming from `source`.
    ///
    /// # Errors
    /// [`AggregatorError::Refused`] with the aggregator's reason, or
    /// [`AggregatorError::Unavailable`].
    pub async fn post_event(
        &self,
        source: &str,
        event: &serde_json::Value,
    ) -> Result<(), AggregatorError> {
        let mut url = self.url("/api/v1/grid/events");
        url.query_pairs_mut().append_pair("source", source);
        let response = self
            .http
            .post(url)
            .json(event)
            .send()
            .await
            .map_err(|e| self.unavailable(e))?;
        self.check(response).await.map(drop)
    }

    /// The events the aggregator holds from `source` and has not cancelled.
    ///
    /// # Errors
    /// [`AggregatorError::Unavailable`].
    pub async fn held_events(&self, source: &str) -> Result<Vec<String>, AggregatorError> {
        let response = self
            .http
            .get(self.url("/api/v1/grid/events"))
            .send()
            .await
            .map_err(|e| self.unavailable(e))?;
        let events: Vec<HeldEvent> = self
            .check(response)
            .await?
            .json()
            .await
            .map_err(|e| self.unavailable(e))?;
        Ok(events
            .into_iter()
            .filter(|e| e.source == source && e.cancelled.is_none())
            .map(|e| e.id)
            .collect())
    }

    /// Cancels event `id` now.
    ///
    /// # Errors
    /// [`AggregatorError::Unavailable`] (an event cancelled already is not an error).
    pub async fn cancel_event(&self, id: &str) -> Result<(), AggregatorError> {
        let mut url = self.url("/api/v1/grid/events/");
        url.path_segments_mut()
            .map_err(|()| self.unavailable("the aggregator URL cannot take a path"))?
            .pop_if_empty()
            .push(id);
        let response = self
            .http
            .delete(url)
            .send()
            .await
            .map_err(|e| self.unavailable(e))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(());
        }
        self.check(response).await.map(drop)
    }

    /// Reports how a poll went.
    ///
    /// # Errors
    /// [`AggregatorError::Unavailable`] or [`AggregatorError::Refused`].
    pub async fn report(&self, source: &str, report: &SourceReport) -> Result<(), AggregatorError> {
        let mut url = self.url("/api/v1/grid/sources/");
        url.path_segments_mut()
            .map_err(|()| self.unavailable("the aggregator URL cannot take a path"))?
            .pop_if_empty()
            .push(source);
        let response = self
            .http
            .put(url)
            .json(report)
            .send()
            .await
            .map_err(|e| self.unavailable(e))?;
        self.check(response).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_credentials_are_refused_naming_what_is_wrong() {
        let base = Url::parse("https://aggregator.example:7412/").unwrap();
        let error = Aggregator::with_credentials(base.clone(), Some("fpt_\n"), None).unwrap_err();
        assert!(error.to_string().contains("token"), "{error}");
        let error = Aggregator::with_credentials(base.clone(), None, Some(b"not a certificate"))
            .unwrap_err();
        assert!(error.to_string().contains("CA file"), "{error}");
        Aggregator::with_credentials(base, Some("fpt_0123"), None).unwrap();
    }
}
