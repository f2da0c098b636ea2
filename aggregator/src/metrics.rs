//! The aggregator's own metrics, in OpenMetrics form at `/metrics`. Every rejected input has a
//! counter, named `footprint_aggregator_<what>_total` and labelled with the reason.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CollectorLabel {
    pub collector: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

/// Counters shared by the ingest path, the store and the ledger.
#[derive(Debug)]
pub struct AggregatorMetrics {
    /// From receiving a batch to sending its ack (validation, commit, fsync, queueing), seconds.
    pub ack_latency: Histogram,
    pub readings_stored: Counter,
    pub readings_rejected: Family<ReasonLabel, Counter>,
    pub allocations_rejected: Family<ReasonLabel, Counter>,
    pub meters_rejected: Family<ReasonLabel, Counter>,
    pub batches: Family<OutcomeLabel, Counter>,
    pub windows_built: Counter,
    pub hours_settled: Counter,
    pub hours_aged: Counter,
    pub late_data: Family<ReasonLabel, Counter>,
    pub windows_revised: Counter,
    pub hours_revised: Counter,
    pub readings_compacted: Counter,
    pub streams_refused: Family<ReasonLabel, Counter>,
    /// Batches that waited for their turn under `input_limits.max_batches_per_s`.
    pub batches_paced: Counter,
    /// Exports (Parquet, InfluxDB) that failed and will be retried, by exporter.
    pub exports_failed: Family<ReasonLabel, Counter>,
    /// HTTP answers by status code (`code`): refusals (400, 404, 413 …) counted.
    pub http_responses: Family<CodeLabel, Counter>,
    /// API requests refused for their token (missing, unknown, scope, project, rate), by reason.
    pub requests_refused: Family<ReasonLabel, Counter>,
    /// TLS handshakes refused (unknown issuer, expired certificate …), by reason.
    pub tls_handshakes_failed: Family<ReasonLabel, Counter>,
    /// Reloads of changed TLS files, by outcome (`reloaded`, `failed`).
    pub tls_reloads: Family<OutcomeLabel, Counter>,
    /// Batches waiting in each collector's spool, as its newest batch said.
    pub collector_spool: Family<CollectorLabel, prometheus_client::metrics::gauge::Gauge>,
}

impl Default for AggregatorMetrics {
    fn default() -> Self {
        Self {
            // 1 ms to about 33 s.
            ack_latency: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            readings_stored: Counter::default(),
            readings_rejected: Family::default(),
            allocations_rejected: Family::default(),
            meters_rejected: Family::default(),
            batches: Family::default(),
            windows_built: Counter::default(),
            hours_settled: Counter::default(),
            hours_aged: Counter::default(),
            late_data: Family::default(),
            windows_revised: Counter::default(),
            hours_revised: Counter::default(),
            readings_compacted: Counter::default(),
            streams_refused: Family::default(),
            batches_paced: Counter::default(),
            requests_refused: Family::default(),
            tls_handshakes_failed: Family::default(),
            tls_reloads: Family::default(),
            exports_failed: Family::default(),
            collector_spool: Family::default(),
            http_responses: Family::default(),
        }
    }
}

/// Why an ingest stream is refused (`streams_refused`).
pub const STREAM_REFUSALS: [&str; 11] = [
    "no_hello",
    "host_not_in_certificate",
    "over_limit",
    "bad_hello",
    "id_in_use",
    "wrong_collector",
    "bad_seq",
    "overloaded",
    "second_hello",
    "empty_message",
    "bad_directive_ack",
];

/// Why an API request is refused for its token (`requests_refused`).
pub const REQUEST_REFUSALS: [&str; 5] = [
    "no_token",
    "unknown_token",
    "missing_scope",
    "other_project",
    "rate_limited",
];

/// Why a TLS handshake is refused (`tls_handshakes_failed`), the usual ones.
pub const HANDSHAKE_FAILURES: [&str; 6] = [
    "unknown_issuer",
    "bad_signature",
    "expired_certificate",
    "no_client_certificate",
    "alert_from_client",
    "timeout",
];

/// What late data touched (`late_data`).
pub const LATE_DATA: [&str; 4] = ["readings", "allocation", "site meter readings", "windows"];

impl AggregatorMetrics {
    /// Counts an API request refused for its token.
    pub fn request_refused(&self, reason: &str) {
        self.requests_refused
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts a refused TLS handshake.
    pub fn handshake_failed(&self, reason: &str) {
        self.tls_handshakes_failed
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts a reload of changed TLS files.
    pub fn tls_reload(&self, reloaded: bool) {
        let outcome = if reloaded { "reloaded" } else { "failed" };
        self.tls_reloads
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// A registry exposing these counters under `footprint_aggregator_`. Every known reason
    /// starts at zero, so a dashboard's query finds its series before the first refusal.
    pub fn registry(self: &std::sync::Arc<Self>) -> Registry {
        let zero = |family: &Family<ReasonLabel, Counter>, reasons: &[&str]| {
            for reason in reasons {
                drop(family.get_or_create(&ReasonLabel {
                    reason: (*reason).to_owned(),
                }));
            }
        };
        let reading_reasons: Vec<&str> = crate::store::validate::Reason::ALL
            .iter()
            .map(|reason| reason.code())
            .collect();
        zero(&self.readings_rejected, &reading_reasons);
        zero(&self.streams_refused, &STREAM_REFUSALS);
        zero(&self.late_data, &LATE_DATA);
        for outcome in ["stored", "duplicate"] {
            drop(self.batches.get_or_create(&OutcomeLabel {
                outcome: outcome.to_owned(),
            }));
        }
        let mut registry = Registry::with_prefix("footprint_aggregator");
        registry.register_with_unit(
            "ack_latency",
            "From receiving a batch to sending its ack (validation, commit, queueing)",
            prometheus_client::registry::Unit::Seconds,
            self.ack_latency.clone(),
        );
        registry.register(
            "readings_stored",
            "Readings committed to the ledger",
            self.readings_stored.clone(),
        );
        registry.register(
            "readings_rejected",
            "Readings rejected, by reason",
            self.readings_rejected.clone(),
        );
        registry.register(
            "allocations_rejected",
            "Allocations rejected, by reason",
            self.allocations_rejected.clone(),
        );
        registry.register(
            "meters_rejected",
            "Meters announced inside a batch and refused, by reason",
            self.meters_rejected.clone(),
        );
        registry.register(
            "batches",
            "Batches received, by outcome (stored, duplicate)",
            self.batches.clone(),
        );
        registry.register(
            "windows_built",
            "Host attribution windows built",
            self.windows_built.clone(),
        );
        registry.register(
            "hour_settlements",
            "Hours of the site settled: facility overhead, water and carbon shared out",
            self.hours_settled.clone(),
        );
        registry.register(
            "hour_details_aged",
            "Settled hours whose window detail was deleted after ledger.window_detail_days, leaving their hourly roll-ups",
            self.hours_aged.clone(),
        );
        registry.register(
            "late_data",
            "Stored readings and allocations that touched windows already built or hours already settled, by what they were",
            self.late_data.clone(),
        );
        registry.register(
            "windows_revised",
            "Host windows built again after late data whose attribution changed",
            self.windows_revised.clone(),
        );
        registry.register(
            "hour_settlements_revised",
            "Site hours settled again after late data whose figures changed",
            self.hours_revised.clone(),
        );
        registry.register(
            "readings_compacted",
            "Readings packed from rows into hourly per-meter chunks",
            self.readings_compacted.clone(),
        );
        registry.register(
            "streams_refused",
            "Ingest streams refused, by reason",
            self.streams_refused.clone(),
        );
        registry.register(
            "batches_paced",
            "Batches that waited for their turn under input_limits.max_batches_per_s",
            self.batches_paced.clone(),
        );
        zero(&self.requests_refused, &REQUEST_REFUSALS);
        registry.register(
            "requests_refused",
            "API requests (HTTP and gRPC Query) refused for their bearer token, by reason",
            self.requests_refused.clone(),
        );
        zero(&self.tls_handshakes_failed, &HANDSHAKE_FAILURES);
        registry.register(
            "tls_handshakes_failed",
            "TLS handshakes refused on the gRPC and HTTP listeners, by reason",
            self.tls_handshakes_failed.clone(),
        );
        registry.register(
            "tls_reloads",
            "Changed TLS files loaded (reloaded) or refused (failed, the old ones kept)",
            self.tls_reloads.clone(),
        );
        zero(&self.exports_failed, &["parquet", "influxdb"]);
        for code in ["200", "204", "400", "404", "500"] {
            drop(self.http_responses.get_or_create(&CodeLabel {
                code: code.to_owned(),
            }));
        }
        registry.register(
            "http_responses",
            "HTTP answers of the API, the page and /metrics, by status code",
            self.http_responses.clone(),
        );
        registry.register(
            "collector_spool_batches",
            "Batches waiting in a collector's spool, as its newest batch said (how far behind it is)",
            self.collector_spool.clone(),
        );
        registry.register(
            "exports_failed",
            "Exports that failed and will be retried from their cursor, by exporter (reason)",
            self.exports_failed.clone(),
        );
        registry
    }

    pub fn late(&self, what: &str) {
        self.late_data
            .get_or_create(&ReasonLabel {
                reason: what.to_owned(),
            })
            .inc();
    }

    pub fn reject_reading(&self, reason: &str) {
        self.readings_rejected
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn reject_allocation(&self, reason: &str) {
        self.allocations_rejected
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn reject_meter(&self, reason: &str) {
        self.meters_rejected
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn http_response(&self, code: u16) {
        self.http_responses
            .get_or_create(&CodeLabel {
                code: code.to_string(),
            })
            .inc();
    }

    pub fn spool_pending(&self, collector: &str, batches: u64) {
        self.collector_spool
            .get_or_create(&CollectorLabel {
                collector: collector.to_owned(),
            })
            .set(i64::try_from(batches).unwrap_or(i64::MAX));
    }

    pub fn export_failed(&self, exporter: &str) {
        self.exports_failed
            .get_or_create(&ReasonLabel {
                reason: exporter.to_owned(),
            })
            .inc();
    }

    pub fn batch(&self, outcome: &str) {
        self.batches
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_owned(),
            })
            .inc();
    }
}
