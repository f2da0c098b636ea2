//! `[input_limits]` over real gRPC on loopback, and what a collector that lost its acks sends
//! again: each message over a limit ends its stream with the limit named and counted; a long
//! text costs only its item; a fast sender is paced and loses nothing; a batch sent again is
//! acknowledged as a duplicate and stored once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{SECOND, Session, http_get, reading};
use footprint_aggregator::{AggregatorConfig, RunningAggregator, server};
use footprint_proto::v1::collector_message::Body as Up;
use footprint_proto::v1::{
    Allocation, Batch, CollectorMessage, Hello, Job, JobKind, MeterInfo, MeterKind,
};

/// 2024-11-01T00:00:00Z
const T0: i64 = 1_730_419_200 * SECOND;

async fn start(
    adjust: impl FnOnce(&mut AggregatorConfig),
) -> (RunningAggregator, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = AggregatorConfig::with_data_dir(dir.path().to_path_buf());
    config.grpc_listen = "127.0.0.1:0".parse().unwrap();
    config.http_listen = "127.0.0.1:0".parse().unwrap();
    adjust(&mut config);
    (server::start(&config).await.unwrap(), dir)
}

fn hello() -> Hello {
    Hello {
        collector_id: "c1".into(),
        host: "host-a".into(),
        software_version: "test".into(),
        meters: vec![MeterInfo {
            meter_id: "gpu0".into(),
            kind: MeterKind::GpuEnergy as i32,
            device: "gpu0".into(),
            ..Default::default()
        }],
    }
}

fn batch(seq: u64, readings: usize) -> Batch {
    Batch {
        collector_id: "c1".into(),
        seq,
        readings: (0..readings)
            .map(|i| {
                let at = (seq as usize * readings + i) as i64;
                reading("gpu0", at as u64 * 1_000, T0 + at * SECOND)
            })
            .collect(),
        ..Batch::default()
    }
}

/// The value of one sample of the aggregator's `/metrics`.
async fn metric(aggregator: &RunningAggregator, sample: &str) -> f64 {
    let body = http_get(aggregator.http_addr, "/metrics").await;
    body.lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}

/// Streams refused for a limit so far.
async fn over_limit_refusals(aggregator: &RunningAggregator) -> f64 {
    metric(
        aggregator,
        "footprint_aggregator_streams_refused_total{reason=\"over_limit\"}",
    )
    .await
}

/// Sends `batch` and returns how the stream answered: an error status, if it ended.
async fn send_expecting_refusal(session: Session, batch: Batch) -> tonic::Status {
    let Session { tx, mut inbound } = session;
    tx.send(CollectorMessage {
        body: Some(Up::Batch(batch)),
    })
    .await
    .unwrap();
    inbound
        .message()
        .await
        .expect_err("the stream must end with a refusal")
}

#[tokio::test]
async fn a_batch_over_a_count_is_refused_naming_the_limit_and_counted() {
    let (aggregator, _dir) = start(|config| config.input_limits.max_items_per_batch = 10).await;
    let (mut session, _) = Session::open(&aggregator, hello()).await.unwrap();
    assert_eq!(session.send(batch(1, 10)).await.seq, 1);
    let refused = send_expecting_refusal(session, batch(2, 11)).await;
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        refused.message(),
        "batch: 11 is over input_limits.max_items_per_batch = 10"
    );
    assert_eq!(over_limit_refusals(&aggregator).await, 1.0);
    // Nothing of the refused batch was stored; the collector still holds it.
    let (_, last) = Session::open(&aggregator, hello()).await.unwrap();
    assert_eq!(last, 1);
    aggregator.stop().await.unwrap();
}

#[tokio::test]
async fn a_message_over_the_size_limit_is_refused_and_counted() {
    let (aggregator, _dir) = start(|config| {
        config.input_limits.max_message_bytes = footprint_aggregator::limits::MIN_MESSAGE_BYTES;
    })
    .await;
    let (session, _) = Session::open(&aggregator, hello()).await.unwrap();
    // About 30 bytes a reading: 700 000 readings are past 16 MiB.
    let refused = send_expecting_refusal(session, batch(1, 700_000)).await;
    assert_eq!(refused.code(), tonic::Code::OutOfRange, "{refused:?}");
    assert!(refused.message().contains("too large"), "{refused:?}");
    assert_eq!(over_limit_refusals(&aggregator).await, 1.0);
    aggregator.stop().await.unwrap();
}

#[tokio::test]
async fn too_many_meters_or_a_long_host_name_refuse_the_hello() {
    let (aggregator, _dir) = start(|config| config.input_limits.max_meters_per_message = 1).await;
    let mut crowded = hello();
    crowded.meters.push(crowded.meters[0].clone());
    let refused = Session::open(&aggregator, crowded).await.err().unwrap();
    assert_eq!(
        refused.message(),
        "hello.meters: 2 is over input_limits.max_meters_per_message = 1"
    );
    let long = Hello {
        host: "h".repeat(2_000),
        ..hello()
    };
    let refused = Session::open(&aggregator, long).await.err().unwrap();
    assert!(
        refused.message().starts_with("hello.host: 2000 bytes"),
        "{refused:?}"
    );
    assert_eq!(over_limit_refusals(&aggregator).await, 2.0);
    aggregator.stop().await.unwrap();
}

#[tokio::test]
async fn a_long_job_name_costs_its_allocation_only() {
    let (aggregator, _dir) = start(|_| {}).await;
    let (mut session, _) = Session::open(&aggregator, hello()).await.unwrap();
    let mut with_long_name = batch(1, 5);
    with_long_name.allocations.push(Allocation {
        job: Some(Job {
            id: "j1".into(),
            name: "n".repeat(5_000),
            kind: JobKind::Training as i32,
            ..Default::default()
        }),
        gpus: vec!["gpu0".into()],
        start_ns: T0,
        ..Default::default()
    });
    let ack = session.send(with_long_name).await;
    assert_eq!(ack.rejections.len(), 1, "{ack:?}");
    assert_eq!(ack.rejections[0].field, "allocations[0].job.name");
    assert!(
        ack.rejections[0]
            .reason
            .contains("5000 bytes is over the limit of 1024 bytes"),
        "{ack:?}"
    );
    assert_eq!(
        metric(&aggregator, "footprint_aggregator_readings_stored_total").await,
        5.0
    );
    drop(session);
    aggregator.stop().await.unwrap();
}

#[tokio::test]
async fn a_fast_sender_is_paced_and_loses_nothing() {
    let (aggregator, _dir) = start(|config| config.input_limits.max_batches_per_s = 5).await;
    let (mut session, _) = Session::open(&aggregator, hello()).await.unwrap();
    for seq in 1..=12 {
        let ack = session.send(batch(seq, 2)).await;
        assert_eq!(ack.seq, seq);
        assert!(ack.rejections.is_empty(), "{ack:?}");
    }
    // The first second's five went at once; of the other seven, those the bucket had not
    // refilled for by then (all of them on a quick machine) waited their turn.
    let paced = metric(&aggregator, "footprint_aggregator_batches_paced_total").await;
    assert!((1.0..=7.0).contains(&paced), "{paced} batches paced");
    assert_eq!(
        metric(&aggregator, "footprint_aggregator_readings_stored_total").await,
        24.0
    );
    drop(session);
    aggregator.stop().await.unwrap();
}

/// A collector whose acks were lost (its connection was not) sends the same batches again, on
/// the same stream and after reconnecting without heeding Welcome: each is acknowledged as a
/// duplicate and nothing is stored twice.
#[tokio::test]
async fn batches_sent_again_after_lost_acks_are_acknowledged_as_duplicates_and_stored_once() {
    let (aggregator, _dir) = start(|_| {}).await;
    let (mut session, _) = Session::open(&aggregator, hello()).await.unwrap();
    for seq in 1..=3 {
        let ack = session.send(batch(seq, 4)).await;
        assert!(!ack.duplicate);
    }
    // The same stream: batch 3 again, as if its ack never arrived.
    let again = session.send(batch(3, 4)).await;
    assert!(again.duplicate, "{again:?}");
    assert_eq!(again.seq, 3);
    drop(session);

    // Reconnected, ignoring that Welcome says 3 is durable: 1..3 again, then a new one.
    let mut reopened = None;
    for _ in 0..50 {
        if let Ok(session) = Session::open(&aggregator, hello()).await {
            reopened = Some(session);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (mut session, last) = reopened.expect("the id is free again");
    assert_eq!(last, 3);
    for seq in 1..=3 {
        assert!(session.send(batch(seq, 4)).await.duplicate);
    }
    assert!(!session.send(batch(4, 4)).await.duplicate);

    assert_eq!(
        metric(
            &aggregator,
            "footprint_aggregator_batches_total{outcome=\"duplicate\"}"
        )
        .await,
        4.0
    );
    assert_eq!(
        metric(
            &aggregator,
            "footprint_aggregator_batches_total{outcome=\"stored\"}"
        )
        .await,
        4.0
    );
    assert_eq!(
        metric(&aggregator, "footprint_aggregator_readings_stored_total").await,
        16.0
    );
    drop(session);
    aggregator.stop().await.unwrap();
}
