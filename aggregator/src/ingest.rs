//! The `Ingest` service: one bidirectional stream per collector.
//!
//! A stream reads batches and hands each to the store's writer as soon as it arrives; a separate
//! task awaits their outcomes in order and sends the acks. So a collector can have many batches in
//! flight while each ack still means "durable". Both hops are bounded channels: when the writer
//! falls behind, the stream stops reading and HTTP/2 flow control pushes back on the collector;
//! and all streams share one [`IngestBudget`] of bytes awaiting commit: past it, a stream is
//! answered `RESOURCE_EXHAUSTED` and its collector backs off.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use footprint_proto::v1::aggregator_message::Body as Down;
use footprint_proto::v1::collector_message::Body as Up;
use footprint_proto::v1::ingest_server::Ingest;
use footprint_proto::v1::{Ack, AggregatorMessage, CollectorMessage, Welcome};
use prost::Message as _;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};

use crate::budget::IngestBudget;
use crate::limits::InputLimits;
use crate::metrics::AggregatorMetrics;
use crate::store::{BatchOutcome, StoreHandle};
use crate::{Error, Result};

/// Batches of one stream waiting for their commit.
const IN_FLIGHT_PER_STREAM: usize = 256;

/// Collector ids with an open stream: where each stream comes from, and its way down.
type OpenStreams = Arc<Mutex<HashMap<String, (String, Outbound)>>>;

/// Sends directives down the open streams (GPU power caps).
#[derive(Clone, Debug)]
pub struct Directives(OpenStreams);

impl Directives {
    /// Sends `cap` to collector `collector_id`'s stream.
    ///
    /// # Errors
    /// [`Error::NotFound`] when it has no open stream; [`Error::Server`] when its stream is
    /// full or closing.
    pub fn send_cap(&self, collector_id: &str, cap: footprint_proto::v1::PowerCap) -> Result<()> {
        let streams = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (_, outbound) = streams.get(collector_id).ok_or_else(|| {
            Error::NotFound(format!("collector {collector_id:?} has no open stream"))
        })?;
        let directive = footprint_proto::v1::Directive {
            kind: Some(footprint_proto::v1::directive::Kind::PowerCap(cap)),
        };
        outbound
            .try_send(Ok(AggregatorMessage {
                body: Some(Down::Directive(directive)),
            }))
            .map_err(|error| Error::Server(format!("collector {collector_id:?}: {error}")))
    }

    /// The collectors with an open stream.
    pub fn connected(&self) -> Vec<String> {
        let streams = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut ids: Vec<String> = streams.keys().cloned().collect();
        ids.sort();
        ids
    }
}

#[derive(Clone, Debug)]
pub struct IngestService {
    store: StoreHandle,
    metrics: Arc<AggregatorMetrics>,
    open: OpenStreams,
    budget: Arc<IngestBudget>,
    limits: Arc<InputLimits>,
}

impl IngestService {
    /// The handle that sends directives down this service's streams.
    pub fn directives(&self) -> Directives {
        Directives(Arc::clone(&self.open))
    }

    pub fn new(
        store: StoreHandle,
        metrics: Arc<AggregatorMetrics>,
        budget: Arc<IngestBudget>,
        limits: InputLimits,
    ) -> Self {
        Self {
            store,
            metrics,
            open: OpenStreams::default(),
            budget,
            limits: Arc::new(limits),
        }
    }
}

/// A collector id's claim on the ingest path, released when its stream ends.
struct StreamClaim {
    open: OpenStreams,
    collector_id: String,
}

impl StreamClaim {
    /// Claims `collector_id` for the stream from `peer`, unless another stream holds it: two
    /// collectors sharing an id would interleave sequence numbers and lose each other's batches.
    fn take(
        open: &OpenStreams,
        collector_id: &str,
        peer: &str,
        outbound: &Outbound,
    ) -> Result<Self, Status> {
        let mut streams = open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((holder, _)) = streams.get(collector_id) {
            return Err(Status::already_exists(format!(
                "hello.collector_id: {collector_id:?} already has an open stream (from {holder}); \
                 two collectors cannot share an id — give each host its own collector_id"
            )));
        }
        streams.insert(collector_id.to_owned(), (peer.to_owned(), outbound.clone()));
        Ok(Self {
            open: Arc::clone(open),
            collector_id: collector_id.to_owned(),
        })
    }
}

impl Drop for StreamClaim {
    fn drop(&mut self) {
        let mut streams = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        streams.remove(&self.collector_id);
    }
}

fn refuse(metrics: &AggregatorMetrics, reason: &str, status: Status) -> Status {
    metrics
        .streams_refused
        .get_or_create(&crate::metrics::ReasonLabel {
            reason: reason.to_owned(),
        })
        .inc();
    status
}

/// A message over `input_limits.max_message_bytes` is refused by tonic's decoder
/// (`OUT_OF_RANGE`); counted here with the other limits.
fn count_over_size(metrics: &AggregatorMetrics, status: Status) -> Status {
    if status.code() == tonic::Code::OutOfRange {
        return refuse(metrics, "over_limit", status);
    }
    status
}

type Outbound = mpsc::Sender<Result<AggregatorMessage, Status>>;

async fn serve_stream(
    mut inbound: Streaming<CollectorMessage>,
    outbound: Outbound,
    service: IngestService,
    peer: String,
    certified: Option<footprint_proto::tls::Peer>,
) -> Result<(), Status> {
    let IngestService {
        store,
        metrics,
        open,
        budget,
        limits,
    } = service;
    let hello = match inbound
        .message()
        .await
        .map_err(|s| count_over_size(&metrics, s))?
    {
        Some(CollectorMessage {
            body: Some(Up::Hello(hello)),
        }) => hello,
        Some(_) => {
            return Err(refuse(
                &metrics,
                "no_hello",
                Status::invalid_argument("the first message of a stream must be Hello"),
            ));
        }
        None => return Ok(()),
    };
    if let Some(certified) = &certified
        && !certified.certified_for(&hello.host)
    {
        return Err(refuse(
            &metrics,
            "host_not_in_certificate",
            Status::permission_denied(format!(
                "hello.host: {:?} is not named in this collector's certificate; a collector may \
                 only report for its own host",
                hello.host
            )),
        ));
    }
    limits
        .check_hello(&hello)
        .map_err(|status| refuse(&metrics, "over_limit", status))?;
    let collector_id = hello.collector_id.clone();
    let _claim = StreamClaim::take(&open, &collector_id, &peer, &outbound)
        .map_err(|status| refuse(&metrics, "id_in_use", status))?;
    let accepted = store.hello(hello).await.map_err(|error| match error {
        Error::Collector { .. } => refuse(
            &metrics,
            "bad_hello",
            Status::invalid_argument(error.to_string()),
        ),
        other => Status::unavailable(other.to_string()),
    })?;
    send(
        &outbound,
        Down::Welcome(Welcome {
            last_durable_seq: accepted.last_durable_seq,
        }),
    )
    .await?;

    // Each waiting batch: its outcome, its room in the budget, and when it arrived.
    let (pending_tx, mut pending_rx) = mpsc::channel::<(
        oneshot::Receiver<Result<BatchOutcome>>,
        OwnedSemaphorePermit,
        std::time::Instant,
    )>(IN_FLIGHT_PER_STREAM);
    let acker_outbound = outbound.clone();
    let acker_metrics = Arc::clone(&metrics);
    let acker = tokio::spawn(async move {
        // The permit travels with the outcome: the batch's room in the budget is freed once it
        // is committed and acknowledged.
        while let Some((outcome, _permit, received)) = pending_rx.recv().await {
            let message = match outcome.await {
                Ok(Ok(outcome)) => Ok(AggregatorMessage {
                    body: Some(Down::Ack(Ack {
                        seq: outcome.seq,
                        rejections: outcome.rejections,
                        duplicate: outcome.duplicate,
                    })),
                }),
                Ok(Err(error)) => Err(Status::unavailable(error.to_string())),
                Err(_) => Err(Status::unavailable("the ledger writer stopped")),
            };
            let failed = message.is_err();
            let sent = acker_outbound.send(message).await;
            acker_metrics
                .ack_latency
                .observe(received.elapsed().as_secs_f64());
            if sent.is_err() || failed {
                return;
            }
        }
    });

    let mut last_seq = 0u64;
    let mut pacer = limits.pacer();
    let result = loop {
        let message = match inbound.message().await {
            Ok(Some(message)) => message,
            Ok(None) => break Ok(()),
            Err(status) => break Err(count_over_size(&metrics, status)),
        };
        match message.body {
            Some(Up::Batch(batch)) => {
                if batch.collector_id != collector_id {
                    break Err(refuse(
                        &metrics,
                        "wrong_collector",
                        Status::invalid_argument(format!(
                            "batch.collector_id: {:?} on a stream opened by {collector_id:?}",
                            batch.collector_id
                        )),
                    ));
                }
                if batch.seq == 0 {
                    break Err(refuse(
                        &metrics,
                        "bad_seq",
                        Status::invalid_argument("batch.seq: sequence numbers start at 1"),
                    ));
                }
                if let Err(status) = limits.check_batch(&batch) {
                    break Err(refuse(&metrics, "over_limit", status));
                }
                let wait = pacer.next_wait(std::time::Instant::now());
                if !wait.is_zero() {
                    metrics.batches_paced.inc();
                    tokio::time::sleep(wait).await;
                }
                metrics.spool_pending(&collector_id, batch.spool_pending);
                // A repeated sequence number is not an error: the store acknowledges it as a
                // duplicate and stores nothing.
                last_seq = last_seq.max(batch.seq);
                let received = std::time::Instant::now();
                let permit = match budget.admit(batch.encoded_len()).await {
                    Ok(permit) => permit,
                    Err(status) => break Err(refuse(&metrics, "overloaded", status)),
                };
                match store.submit(accepted.collector, batch).await {
                    Ok(outcome) => {
                        if pending_tx.send((outcome, permit, received)).await.is_err() {
                            break Ok(());
                        }
                    }
                    Err(error) => break Err(Status::unavailable(error.to_string())),
                }
            }
            Some(Up::DirectiveAck(ack)) => {
                let collector = accepted.collector;
                let recorded = store
                    .write(move |connection| crate::grid::caps::record(connection, collector, &ack))
                    .await;
                if let Err(error) = recorded {
                    metrics
                        .streams_refused
                        .get_or_create(&crate::metrics::ReasonLabel {
                            reason: "bad_directive_ack".to_owned(),
                        })
                        .inc();
                    warn!(collector = %collector_id, %error, "Directive ack not recorded.");
                }
            }
            Some(Up::Hello(_)) => {
                break Err(refuse(
                    &metrics,
                    "second_hello",
                    Status::invalid_argument("Hello may only open a stream"),
                ));
            }
            None => {
                break Err(refuse(
                    &metrics,
                    "empty_message",
                    Status::invalid_argument("message has no body"),
                ));
            }
        }
    };
    // Let every batch already handed to the writer be acknowledged before the stream ends.
    drop(pending_tx);
    let _ = acker.await;
    info!(collector = %collector_id, last_seq, "Ingest stream ended.");
    result
}

async fn send(outbound: &Outbound, body: Down) -> Result<(), Status> {
    outbound
        .send(Ok(AggregatorMessage { body: Some(body) }))
        .await
        .map_err(|_| Status::cancelled("collector went away"))
}

#[tonic::async_trait]
impl Ingest for IngestService {
    type StreamStream = ReceiverStream<Result<AggregatorMessage, Status>>;

    async fn stream(
        &self,
        request: Request<Streaming<CollectorMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        // Over TLS the connection carries the verified client certificate.
        let certified = request
            .extensions()
            .get::<footprint_proto::tls::Peer>()
            .cloned();
        let peer = certified
            .as_ref()
            .map(|peer| peer.addr)
            .or_else(|| request.remote_addr())
            .map_or_else(|| "an unknown peer".to_owned(), |a| a.to_string());
        let inbound = request.into_inner();
        let (outbound, receiver) = mpsc::channel(IN_FLIGHT_PER_STREAM);
        let service = self.clone();
        tokio::spawn(async move {
            if let Err(status) =
                serve_stream(inbound, outbound.clone(), service, peer, certified).await
            {
                warn!(code = ?status.code(), message = status.message(), "Ingest stream failed.");
                let _ = outbound.send(Err(status)).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}
