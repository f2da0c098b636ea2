//! Helpers shared by the aggregator's integration tests: a collector's side of an `Ingest`
//! stream over real gRPC.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use footprint_aggregator::RunningAggregator;
use footprint_proto::v1::aggregator_message::Body as Down;
use footprint_proto::v1::collector_message::Body as Up;
use footprint_proto::v1::ingest_client::IngestClient;
use footprint_proto::v1::{Ack, Batch, CollectorMessage, Hello, Quality, Reading};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

pub const SECOND: i64 = 1_000_000_000;

pub fn reading(meter: &str, value: u64, at: i64) -> Reading {
    Reading {
        meter_id: meter.to_owned().into(),
        value,
        timestamp_ns: at,
        quality: Quality::Measured as i32,
        method: String::new(),
    }
}

pub struct Session {
    pub tx: mpsc::Sender<CollectorMessage>,
    pub inbound: tonic::Streaming<footprint_proto::v1::AggregatorMessage>,
}

impl Session {
    pub async fn open(
        aggregator: &RunningAggregator,
        hello: Hello,
    ) -> Result<(Self, u64), tonic::Status> {
        let mut client = IngestClient::connect(format!("http://{}", aggregator.grpc_addr))
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel(16);
        tx.send(CollectorMessage {
            body: Some(Up::Hello(hello)),
        })
        .await
        .unwrap();
        let mut inbound = client.stream(ReceiverStream::new(rx)).await?.into_inner();
        match inbound.message().await?.and_then(|m| m.body) {
            Some(Down::Welcome(welcome)) => Ok((Self { tx, inbound }, welcome.last_durable_seq)),
            other => panic!("expected Welcome, got {other:?}"),
        }
    }

    pub async fn send(&mut self, batch: Batch) -> Ack {
        self.tx
            .send(CollectorMessage {
                body: Some(Up::Batch(batch)),
            })
            .await
            .unwrap();
        match self.inbound.message().await.unwrap().and_then(|m| m.body) {
            Some(Down::Ack(ack)) => ack,
            other => panic!("expected Ack, got {other:?}"),
        }
    }
}

/// GET `path` over plain HTTP/1.1; returns the whole response (which must be 200).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

/// GET `path` and parse the body of the (200) response as JSON.
pub async fn http_json(addr: std::net::SocketAddr, path: &str) -> serde_json::Value {
    let response = http_get(addr, path).await;
    serde_json::from_str(response.split("\r\n\r\n").nth(1).unwrap()).unwrap()
}

/// 100 W, as a cumulative energy counter read once a minute: the reading at minute `m`.
pub const MJ_PER_MINUTE_AT_100_W: u64 = 6_000_000;

/// Registers `collector` (its own host) with one energy meter `energy` of `kind` on device `d0`
/// directly with the store's writer; returns its key.
pub async fn register_one_meter(
    store: &footprint_aggregator::store::StoreHandle,
    collector: &str,
    kind: footprint_proto::v1::MeterKind,
) -> i64 {
    let hello = Hello {
        collector_id: collector.into(),
        host: collector.into(),
        software_version: "t".into(),
        meters: vec![footprint_proto::v1::MeterInfo {
            meter_id: "energy".into(),
            kind: kind as i32,
            device: "d0".into(),
            ..footprint_proto::v1::MeterInfo::default()
        }],
    };
    store.hello(hello).await.unwrap().collector
}

/// Stores batch `seq` of `collector`: its meter `energy` at 100 W, read every minute from minute
/// `from` to `to` after `t0` (inclusive); every reading must be accepted, and durable on return.
pub async fn submit_minutes(
    store: &footprint_aggregator::store::StoreHandle,
    (key, collector): (i64, &str),
    seq: u64,
    t0: i64,
    (from, to): (i64, i64),
) {
    let batch = Batch {
        collector_id: collector.into(),
        seq,
        readings: (from..=to)
            .map(|minute| {
                reading(
                    "energy",
                    MJ_PER_MINUTE_AT_100_W * minute as u64,
                    t0 + minute * 60 * SECOND,
                )
            })
            .collect(),
        ..Batch::default()
    };
    let durable = store.submit(key, batch).await.unwrap();
    let outcome = durable.await.unwrap().unwrap();
    assert!(outcome.rejections.is_empty(), "{:?}", outcome.rejections);
}
