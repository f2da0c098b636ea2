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
