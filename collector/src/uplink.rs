//! The uplink: streams the spool's batches to the aggregator and forgets a batch only when the
//! aggregator acknowledges it as durable.
//!
//! Guarantees:
//! - batches are sent in sequence order; after a reconnect, or a restart of the collector, every
//!   batch still in the spool is sent again, in order (the aggregator drops the copies it has);
//! - at most [`IN_FLIGHT_WINDOW`] batches are sent and unacknowledged at a time; the rest wait in
//!   the spool, on disk, whose size is bounded by compaction;
//! - sampling never waits for the network: the sampler appends to the spool, the uplink drains it.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use footprint_core::rng::SplitMix64;
use footprint_proto::v1::aggregator_message::Body as Down;
use footprint_proto::v1::collector_message::Body as Up;
use footprint_proto::v1::directive::Kind as DirectiveKind;
use footprint_proto::v1::ingest_client::IngestClient;
use footprint_proto::v1::{Batch, CollectorMessage, DirectiveAck, Hello, PowerCap};
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::daemon::CollectorStats;
use crate::spool::{Spool, SpoolError};

/// Batches sent and not yet acknowledged, at most.
pub const IN_FLIGHT_WINDOW: usize = 64;

/// Why a session with the aggregator ended before its work was done.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot connect to {endpoint}: {message}")]
    Connect { endpoint: String, message: String },
    #[error("stream failed: {0}")]
    Stream(#[from] tonic::Status),
    #[error("aggregator closed the stream")]
    Closed,
    #[error("protocol: {0}")]
    Protocol(String),
    #[error(transparent)]
    Spool(#[from] SpoolError),
}

/// An error with its sources, one line: a handshake's reason sits a few causes down.
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The spool, shared by the sampler (appends) and the uplink (reads, acknowledges).
pub type SharedSpool = Arc<Mutex<Spool>>;

/// Runs `work` on the spool on a blocking thread: redb commits wait for the disk.
pub async fn with_spool<T: Send + 'static>(
    spool: &SharedSpool,
    work: impl FnOnce(&mut Spool) -> Result<T, SpoolError> + Send + 'static,
) -> Result<T, SpoolError> {
    let spool = Arc::clone(spool);
    tokio::task::spawn_blocking(move || {
        let mut guard = spool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        work(&mut guard)
    })
    .await
    .unwrap_or_else(|join| Err(SpoolError::Io(std::io::Error::other(join.to_string()))))
}

/// Where directives go and where their outcomes come from ([`crate::power_cap::serve`]).
#[derive(Debug)]
pub struct CapLink {
    pub directives: mpsc::Sender<PowerCap>,
    /// Outcomes wait here while the aggregator is away, and go up with the next session.
    pub reports: tokio::sync::Mutex<mpsc::Receiver<DirectiveAck>>,
}

/// Where the uplink connects, and the files that prove who it is when the address is https://.
#[derive(Clone, Debug)]
pub struct Aggregator {
    pub endpoint: String,
    pub tls: Option<footprint_proto::tls::ClientFiles>,
}

/// Streams one collector's spool to one aggregator, and carries power caps down and their
/// outcomes up.
#[derive(Debug)]
pub struct Uplink {
    aggregator: Aggregator,
    hello: Hello,
    spool: SharedSpool,
    /// Signalled by the sampler after each append.
    appended: Arc<Notify>,
    /// Cancelled when the sampler has stopped for good.
    sampling_done: CancellationToken,
    stats: Arc<CollectorStats>,
    caps: CapLink,
}

impl Uplink {
    pub fn new(
        aggregator: Aggregator,
        hello: Hello,
        spool: SharedSpool,
        appended: Arc<Notify>,
        sampling_done: CancellationToken,
        stats: Arc<CollectorStats>,
        caps: CapLink,
    ) -> Self {
        Self {
            aggregator,
            hello,
            spool,
            appended,
            sampling_done,
            stats,
            caps,
        }
    }

    async fn finished(&self) -> bool {
        self.sampling_done.is_cancelled()
            && with_spool(&self.spool, |s| s.is_empty())
                .await
                .unwrap_or(false)
    }

    /// Runs until sampling is done and the spool is empty. Reconnects with jittered exponential
    /// backoff on any failure; a session that was healthy (welcomed, and a batch acknowledged)
    /// starts the backoff again from its first step. Drop the future to give up (the spool keeps
    /// what is left).
    pub async fn run(self) {
        let mut rng = SplitMix64::new(seed_from(&self.hello.collector_id));
        let mut failures = 0u32;
        while !self.finished().await {
            let mut healthy = false;
            match self.session(&mut healthy).await {
                Ok(()) => failures = 0,
                Err(error) => {
                    failures = failures_after(failures, healthy);
                    self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                    let base_ms = backoff_base_ms(failures);
                    let wait = Duration::from_millis(base_ms / 2 + rng.range(0, base_ms));
                    warn!(endpoint = %self.aggregator.endpoint, error = %error, retry_in_ms = wait.as_millis() as u64, "Aggregator session failed; batches stay in the spool.");
                    tokio::time::sleep(wait).await;
                }
            }
        }
        info!(collector = %self.hello.collector_id, "All batches acknowledged.");
    }

    /// One stream to the aggregator; `healthy` is set once it was welcomed and a batch was
    /// acknowledged on it.
    async fn session(&self, healthy: &mut bool) -> Result<(), SessionError> {
        let cannot_connect = |error: &dyn std::fmt::Display| SessionError::Connect {
            endpoint: self.aggregator.endpoint.clone(),
            message: error.to_string(),
        };
        let endpoint = tonic::transport::Endpoint::from_shared(self.aggregator.endpoint.clone())
            .map_err(|error| cannot_connect(&error))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        let channel = footprint_proto::tls::grpc_channel(endpoint, self.aggregator.tls.as_ref())
            .await
            .map_err(|error| cannot_connect(&crate::uplink::chain(&*error)))?;
        let mut client = IngestClient::new(channel)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        let (tx, rx) = mpsc::channel::<CollectorMessage>(IN_FLIGHT_WINDOW);
        tx.send(CollectorMessage {
            body: Some(Up::Hello(self.hello.clone())),
        })
        .await
        .map_err(|_| SessionError::Closed)?;
        let mut inbound = client.stream(ReceiverStream::new(rx)).await?.into_inner();
        let welcome = match tokio::time::timeout(Duration::from_secs(30), inbound.message()).await {
            Err(_) => return Err(SessionError::Protocol("no Welcome within 30 s".into())),
            Ok(message) => match message?.and_then(|m| m.body) {
                Some(Down::Welcome(welcome)) => welcome,
                Some(other) => {
                    return Err(SessionError::Protocol(format!(
                        "expected Welcome, got {other:?}"
                    )));
                }
                None => return Err(SessionError::Closed),
            },
        };
        let durable = welcome.last_durable_seq;
        with_spool(&self.spool, move |s| s.welcome(durable)).await?;
        debug!(collector = %self.hello.collector_id, durable, "Welcomed.");

        let mut in_flight: VecDeque<(u64, Instant, u64)> = VecDeque::new();
        let mut last_sent = durable;
        let mut reports = self.caps.reports.lock().await;
        loop {
            if in_flight.is_empty() && self.finished().await {
                // Half-close: the aggregator ends the stream when it has seen our end.
                drop(tx);
                while inbound.message().await?.is_some() {}
                return Ok(());
            }
            if in_flight.len() < IN_FLIGHT_WINDOW {
                let room = IN_FLIGHT_WINDOW - in_flight.len();
                let (batches, pending): (Vec<Batch>, u64) = with_spool(&self.spool, move |s| {
                    Ok((s.read_after(last_sent, room)?, s.len()?))
                })
                .await?;
                for mut batch in batches {
                    batch.spool_pending = pending;
                    last_sent = batch.seq;
                    in_flight.push_back((batch.seq, Instant::now(), batch.readings.len() as u64));
                    tx.send(CollectorMessage {
                        body: Some(Up::Batch(batch)),
                    })
                    .await
                    .map_err(|_| SessionError::Closed)?;
                }
            }
            tokio::select! {
                message = inbound.message() => {
                    match message?.and_then(|m| m.body) {
                        Some(Down::Ack(ack)) => {
                            *healthy = true;
                            let seq = ack.seq;
                            with_spool(&self.spool, move |s| s.acknowledge(seq)).await?;
                            while let Some(&(sent_seq, sent_at, readings)) = in_flight.front() {
                                if sent_seq > seq {
                                    break;
                                }
                                in_flight.pop_front();
                                self.stats.batches_acked.fetch_add(1, Ordering::Relaxed);
                                self.stats.readings_acked.fetch_add(readings, Ordering::Relaxed);
                                self.stats.record_ack_latency(sent_at.elapsed());
                            }
                            for rejection in &ack.rejections {
                                self.stats.readings_rejected.fetch_add(1, Ordering::Relaxed);
                                warn!(seq, meter = %rejection.meter_id, field = %rejection.field, reason = %rejection.reason, "Aggregator rejected a reading.");
                            }
                        }
                        Some(Down::Directive(directive)) => match directive.kind {
                            Some(DirectiveKind::PowerCap(cap)) => {
                                if self.caps.directives.try_send(cap).is_err() {
                                    warn!("Power-cap directive dropped: the capper is not taking them.");
                                }
                            }
                            None => warn!("A directive with no kind; ignored."),
                        },
                        Some(Down::Welcome(_)) => return Err(SessionError::Protocol("second Welcome".into())),
                        None => return Err(SessionError::Closed),
                    }
                }
                report = reports.recv() => {
                    if let Some(ack) = report {
                        tx.send(CollectorMessage { body: Some(Up::DirectiveAck(ack)) })
                            .await
                            .map_err(|_| SessionError::Closed)?;
                    }
                }
                () = self.appended.notified(), if in_flight.len() < IN_FLIGHT_WINDOW => {}
                () = self.sampling_done.cancelled(), if in_flight.is_empty() => {}
            }
        }
    }
}

/// Consecutive failures after a session that failed: one more, counted from zero again when
/// that session was healthy, so an hour of good streaming is not followed by the longest wait.
fn failures_after(failures: u32, healthy: bool) -> u32 {
    if healthy {
        1
    } else {
        failures.saturating_add(1)
    }
}

/// The middle of the jittered wait after `failures` consecutive failures, ms: 200 ms doubling to
/// 5 s.
fn backoff_base_ms(failures: u32) -> u64 {
    (100u64 << failures.min(6)).min(5_000)
}

fn seed_from(text: &str) -> u64 {
    // FNV-1a: a stable, dependency-free hash so collectors do not retry in lockstep.
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for byte in text.bytes() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    hash ^ u64::from(std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_healthy_session_starts_the_backoff_again() {
        // Six lost connections in a row reach the longest wait…
        let failures = (0..6).fold(0, |f, _| failures_after(f, false));
        assert_eq!(backoff_base_ms(failures), 5_000);
        // …and a session that streamed (welcomed, a batch acknowledged) before it failed waits
        // the shortest again.
        let failures = failures_after(failures, true);
        assert_eq!(backoff_base_ms(failures), 200);
        assert_eq!(backoff_base_ms(failures_after(failures, false)), 400);
    }
}
