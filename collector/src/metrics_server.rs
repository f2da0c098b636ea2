//! The collector's own health on `/metrics` (`metrics_listen`, off by default): what it sampled,
//! what the aggregator acknowledged or refused, reconnects, and how many batches wait in its
//! spool. Prometheus text format; OpenMetrics for a scraper that asks for it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use tokio_util::sync::CancellationToken;

use crate::daemon::CollectorStats;
use crate::uplink::SharedSpool;

#[derive(Clone)]
struct Health {
    stats: Arc<CollectorStats>,
    spool: SharedSpool,
}

/// The registry of one scrape; `spool`: batches and bytes it holds.
fn registry(stats: &CollectorStats, (pending, bytes): (u64, u64)) -> Registry {
    let mut registry = Registry::with_prefix("footprint_collector");
    for (name, help, value) in [
        (
            "readings_sampled",
            "Readings taken from the sources",
            &stats.readings_sampled,
        ),
        (
            "source_errors",
            "Samples a source failed to give",
            &stats.source_errors,
        ),
        (
            "batches_acked",
            "Batches the aggregator acknowledged (durable there)",
            &stats.batches_acked,
        ),
        (
            "readings_acked",
            "Readings in acknowledged batches",
            &stats.readings_acked,
        ),
        (
            "readings_rejected",
            "Readings the aggregator refused (each logged with its reason)",
            &stats.readings_rejected,
        ),
        (
            "reconnects",
            "Sessions with the aggregator that failed and were opened again",
            &stats.reconnects,
        ),
    ] {
        let counter = Counter::<u64, AtomicU64>::default();
        counter.inc_by(value.load(Ordering::Relaxed));
        registry.register(name, help, counter);
    }
    let gauge = |value: u64| {
        let gauge = Gauge::<i64>::default();
        gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
        gauge
    };
    registry.register(
        "spool_batches",
        "Batches in the spool not yet acknowledged",
        gauge(pending),
    );
    registry.register_with_unit("spool", "Bytes the spool holds", Unit::Bytes, gauge(bytes));
    registry.register_with_unit(
        "last_tick_timestamp",
        "The collector's clock at its newest tick (time() minus this is how far behind it is)",
        Unit::Seconds,
        gauge(
            u64::try_from(stats.last_tick_ns.load(Ordering::Relaxed) / 1_000_000_000).unwrap_or(0),
        ),
    );
    registry
}

async fn metrics(State(health): State<Health>, headers: HeaderMap) -> Response {
    // The spool is behind a lock its writers hold across disk syncs: read off the async threads.
    let spool = crate::uplink::with_spool(&health.spool, |s| Ok((s.len()?, s.bytes())))
        .await
        .unwrap_or((0, 0));
    let mut text = String::new();
    if let Err(error) =
        prometheus_client::encoding::text::encode(&mut text, &registry(&health.stats, spool))
    {
        return (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response();
    }
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok());
    let (content_type, body) = footprint_core::exposition::negotiate(accept, text);
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// Serves `/metrics` on `addr` until `shutdown`; the address bound.
///
/// # Errors
/// The address cannot be bound.
pub async fn serve(
    addr: SocketAddr,
    stats: Arc<CollectorStats>,
    spool: SharedSpool,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    if !bound.ip().is_loopback() {
        tracing::warn!(%bound, "The collector's /metrics listens beyond loopback, without authentication.");
    }
    let router = axum::Router::new()
        .route("/metrics", axum::routing::get(metrics))
        .with_state(Health { stats, spool });
    tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(error) = served {
            tracing::warn!(%error, "The collector's /metrics server stopped.");
        }
    });
    Ok(bound)
}
