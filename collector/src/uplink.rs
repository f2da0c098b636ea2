//! The uplink: streams numbered batches to the aggregator and forgets a batch only when the
//! aggregator acknowledges it as durable.
//!
//! Guarantees:
//! - batches are sent in sequence order, and after a reconnect every unacknowledged batch is
//!   sent again, in order (the aggregator drops the copies it already has);
//! - sequence numbers continue after the aggregator's last durable one (`Welcome`), so a restarted
//!   collector never reuses a number;
//! - memory is bounded: at most `max_pending` batches wait; beyond that the uplink stops taking
//!   batches and the sampler waits (a counter's next reading still covers the energy).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use footprint_core::rng::SplitMix64;
use footprint_proto::v1::aggregator_message::Body as Down;
use footprint_proto::v1::collector_message::Body as Up;
use footprint_proto::v1::ingest_client::IngestClient;
use footprint_proto::v1::{Allocation, Batch, CollectorMessage, Hello, Reading};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, info, warn};

use crate::daemon::CollectorStats;

/// Readings and allocations of one or more ticks, not yet numbered.
#[derive(Clone, Debug, Default)]
pub struct Outgoing {
    pub readings: Vec<Reading>,
    pub allocations: Vec<Allocation>,
}

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
}

/// Batches sent but not yet acknowledged, plus those waiting for a sequence number.
#[derive(Debug, Default)]
struct Backlog {
    numbered: VecDeque<Batch>,
    unnumbered: VecDeque<Outgoing>,
    next_seq: Option<u64>,
    input_closed: bool,
}

impl Backlog {
    fn len(&self) -> usize {
        self.numbered.len() + self.unnumbered.len()
    }

    fn is_done(&self) -> bool {
        self.input_closed && self.len() == 0
    }

    fn number_waiting(&mut self, collector_id: &str) {
        let Some(next) = self.next_seq.as_mut() else {
            return;
        };
        while let Some(outgoing) = self.unnumbered.pop_front() {
            self.numbered.push_back(Batch {
                collector_id: collector_id.to_owned(),
                seq: *next,
                readings: outgoing.readings,
                allocations: outgoing.allocations,
                compacted: false,
            });
            *next += 1;
        }
    }
}

/// Streams batches to one aggregator.
#[derive(Debug)]
pub struct Uplink {
    endpoint: String,
    hello: Hello,
    max_pending: usize,
    stats: Arc<CollectorStats>,
}

const IN_FLIGHT_WINDOW: usize = 64;

impl Uplink {
    pub fn new(
        endpoint: String,
        hello: Hello,
        max_pending: usize,
        stats: Arc<CollectorStats>,
    ) -> Self {
        Self {
            endpoint,
            hello,
            max_pending,
            stats,
        }
    }

    /// Runs until `input` is closed and every batch has been acknowledged. Reconnects with
    /// jittered exponential backoff on any failure. Cancel it (drop the future) to give up.
    pub async fn run(self, mut input: mpsc::Receiver<Outgoing>) {
        let mut backlog = Backlog::default();
        let mut rng = SplitMix64::new(seed_from(&self.hello.collector_id));
        let mut failures = 0u32;
        while !backlog.is_done() {
            match self.session(&mut backlog, &mut input).await {
                Ok(()) => failures = 0,
                Err(error) => {
                    failures = failures.saturating_add(1);
                    self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                    let base_ms = (100u64 << failures.min(6)).min(5_000);
                    let wait = Duration::from_millis(base_ms / 2 + rng.range(0, base_ms));
                    warn!(endpoint = %self.endpoint, error = %error, retry_in_ms = wait.as_millis() as u64, pending = backlog.len(), "Aggregator session failed.");
                    let deadline = tokio::time::sleep(wait);
                    tokio::pin!(deadline);
                    // Keep accepting batches while waiting, within the bound.
                    loop {
                        tokio::select! {
                            () = &mut deadline => break,
                            received = input.recv(), if !backlog.input_closed && backlog.len() < self.max_pending => {
                                match received {
                                    Some(outgoing) => backlog.unnumbered.push_back(outgoing),
                                    None => backlog.input_closed = true,
                                }
                            }
                        }
                    }
                }
            }
        }
        info!(collector = %self.hello.collector_id, "All batches acknowledged.");
    }

    async fn session(
        &self,
        backlog: &mut Backlog,
        input: &mut mpsc::Receiver<Outgoing>,
    ) -> Result<(), SessionError> {
        let channel = tonic::transport::Endpoint::from_shared(self.endpoint.clone())
            .map_err(|e| SessionError::Connect {
                endpoint: self.endpoint.clone(),
                message: e.to_string(),
            })?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| SessionError::Connect {
                endpoint: self.endpoint.clone(),
                message: e.to_string(),
            })?;
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
        backlog.numbered.retain(|batch| batch.seq > durable);
        let next = backlog.next_seq.unwrap_or(1).max(durable + 1);
        backlog.next_seq = Some(next);
        backlog.number_waiting(&self.hello.collector_id);
        debug!(collector = %self.hello.collector_id, durable, resend = backlog.numbered.len(), "Welcomed.");

        let mut sent = 0usize;
        loop {
            if backlog.is_done() {
                // Half-close: the aggregator ends the stream when it has seen our end.
                drop(tx);
                while inbound.message().await?.is_some() {}
                return Ok(());
            }
            tokio::select! {
                message = inbound.message() => {
                    match message?.and_then(|m| m.body) {
                        Some(Down::Ack(ack)) => {
                            while backlog.numbered.front().is_some_and(|b| b.seq <= ack.seq) {
                                backlog.numbered.pop_front();
                                sent = sent.saturating_sub(1);
                                self.stats.batches_acked.fetch_add(1, Ordering::Relaxed);
                            }
                            self.stats.acked_seq.fetch_max(ack.seq, Ordering::Relaxed);
                            for rejection in &ack.rejections {
                                self.stats.readings_rejected.fetch_add(1, Ordering::Relaxed);
                                warn!(seq = ack.seq, meter = %rejection.meter_id, field = %rejection.field, reason = %rejection.reason, "Aggregator rejected a reading.");
                            }
                        }
                        Some(Down::Directive(directive)) => {
                            warn!(?directive, "Directives are not supported by this collector yet; ignored.");
                        }
                        Some(Down::Welcome(_)) => return Err(SessionError::Protocol("second Welcome".into())),
                        None => return Err(SessionError::Closed),
                    }
                }
                permit = tx.reserve(), if sent < backlog.numbered.len() => {
                    let permit = permit.map_err(|_| SessionError::Closed)?;
                    permit.send(CollectorMessage { body: Some(Up::Batch(backlog.numbered[sent].clone())) });
                    sent += 1;
                }
                received = input.recv(), if !backlog.input_closed && backlog.len() < self.max_pending => {
                    match received {
                        Some(outgoing) => {
                            backlog.unnumbered.push_back(outgoing);
                            backlog.number_waiting(&self.hello.collector_id);
                        }
                        None => backlog.input_closed = true,
                    }
                }
            }
        }
    }
}

fn seed_from(text: &str) -> u64 {
    // FNV-1a: a stable, dependency-free hash so collectors do not retry in lockstep.
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for byte in text.bytes() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    hash ^ u64::from(std::process::id())
}
