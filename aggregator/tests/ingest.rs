//! The ingest path over real gRPC on loopback: acks, rejections, duplicates, windows.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{SECOND, Session, http_get, http_json, reading};
use footprint_aggregator::tables::{LEDGER_FILE, schema};
use footprint_aggregator::{AggregatorConfig, RunningAggregator, server};
use footprint_core::{Span, UnixNanos};
use footprint_proto::v1::collector_message::Body as Up;
use footprint_proto::v1::{
    Allocation, Batch, CollectorMessage, Hello, Job, JobKind, MeterInfo, MeterKind, Quality,
    Reading,
};
/// 2024-11-01T00:00:00Z
const T0: i64 = 1_730_419_200 * SECOND;

async fn start() -> (RunningAggregator, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = AggregatorConfig::with_data_dir(dir.path().to_path_buf());
    config.grpc_listen = "127.0.0.1:0".parse().unwrap();
    config.http_listen = "127.0.0.1:0".parse().unwrap();
    (server::start(&config).await.unwrap(), dir)
}

fn hello(host: &str) -> Hello {
    Hello {
        collector_id: "c1".into(),
        host: host.into(),
        software_version: "test".into(),
        meters: vec![
            MeterInfo {
                meter_id: "gpu0".into(),
                kind: MeterKind::GpuEnergy as i32,
                device: "gpu0".into(),
                ..Default::default()
            },
            MeterInfo {
                meter_id: "gpu1".into(),
                kind: MeterKind::GpuEnergy as i32,
                device: "gpu1".into(),
                ..Default::default()
            },
        ],
    }
}

#[tokio::test]
async fn bad_readings_are_rejected_by_field_counted_and_the_rest_is_stored() {
    let (aggregator, _dir) = start().await;
    let (mut session, last) = Session::open(&aggregator, hello("host-a")).await.unwrap();
    assert_eq!(last, 0);
    let baseline = Batch {
        collector_id: "c1".into(),
        seq: 1,
        compacted: false,
        meters: Vec::new(),
        readings: vec![
            reading("gpu0", 1_000_000, T0),
            reading("gpu1", 9_000_000_000, T0),
        ],
        allocations: vec![Allocation {
            job: Some(Job {
                id: "job-1".into(),
                kind: JobKind::Training as i32,
                ..Default::default()
            }),
            gpus: vec!["gpu0".into()],
            cpus: vec![],
            start_ns: T0,
            end_ns: 0,
            mig: vec![],
        }],
        spool_pending: 0,
    };
    let ack = session.send(baseline).await;
    assert_eq!(
        (ack.seq, ack.duplicate, ack.rejections.len()),
        (1, false, 0)
    );

    let at = T0 + 10 * SECOND;
    let mixed = Batch {
        collector_id: "c1".into(),
        seq: 2,
        compacted: false,
        meters: Vec::new(),
        readings: vec![
            reading("gpu0", 1_000_000 + 3_000_000, at), // 300 W for 10 s: fine
            reading("gpu1", 8_000_000_000, at),         // fell by 1 GJ: not a wrap, not a reset
            reading("gpu9", 1, at),                     // never announced
            reading("gpu0", 1_000_000 + 3_000_000 + 60_000_000, at + 10 * SECOND), // 6 kW
            reading(
                "gpu0",
                1_000_000 + 3_000_000 + 1,
                now_ns() + 2 * 86_400 * SECOND,
            ), // two days ahead
            Reading {
                meter_id: b"gpu0\xff"[..].to_vec().into(),
                ..reading("", 1, at)
            }, // not UTF-8: no announced meter's id
        ],
        allocations: vec![Allocation {
            job: None,
            gpus: vec![],
            cpus: vec![],
            start_ns: T0,
            end_ns: 0,
            mig: vec![],
        }],
        spool_pending: 0,
    };
    let ack = session.send(mixed).await;
    let fields: Vec<(&str, &str)> = ack
        .rejections
        .iter()
        .map(|r| (r.field.as_str(), r.meter_id.as_str()))
        .collect();
    assert_eq!(
        fields,
        vec![
            ("readings[1].value", "gpu1"),
            ("readings[2].meter_id", "gpu9"),
            ("readings[3].value", "gpu0"),
            ("readings[4].timestamp_ns", "gpu0"),
            ("readings[5].meter_id", "gpu0\u{fffd}"),
            ("allocations[0].job.id", ""),
        ]
    );
    assert!(
        ack.rejections[0].reason.contains("went backwards"),
        "{:?}",
        ack.rejections[0]
    );
    assert!(
        ack.rejections[2].reason.contains("limit"),
        "{:?}",
        ack.rejections[2]
    );

    // The same batch again is a duplicate: acknowledged, nothing stored twice.
    let again = session
        .send(Batch {
            collector_id: "c1".into(),
            seq: 2,
            compacted: false,
            meters: Vec::new(),
            readings: vec![reading("gpu0", 99, at)],
            allocations: vec![],
            spool_pending: 0,
        })
        .await;
    assert!(again.duplicate);

    let metrics = http_get(aggregator.http_addr, "/metrics").await;
    for line in [
        "footprint_aggregator_readings_stored_total 3",
        "footprint_aggregator_readings_rejected_total{reason=\"went_backwards\"} 1",
        "footprint_aggregator_readings_rejected_total{reason=\"unknown_meter\"} 2",
        "footprint_aggregator_readings_rejected_total{reason=\"implausible_rate\"} 1",
        "footprint_aggregator_readings_rejected_total{reason=\"future_timestamp\"} 1",
        "footprint_aggregator_allocations_rejected_total{reason=\"missing_job\"} 1",
        "footprint_aggregator_batches_total{outcome=\"duplicate\"} 1",
        // Two stored batches and one duplicate were acknowledged so far.
        "footprint_aggregator_ack_latency_seconds_count 3",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }

    // gpu0 is still usable after its rejected readings: the baseline stayed at the last good one.
    let later = T0 + 30 * SECOND;
    let ack = session
        .send(Batch {
            collector_id: "c1".into(),
            seq: 3,
            compacted: false,
            meters: Vec::new(),
            readings: vec![
                reading("gpu0", 1_000_000 + 9_000_000, later),
                reading("gpu1", 9_000_000_000 + 2_000_000, later),
            ],
            allocations: vec![],
            spool_pending: 0,
        })
        .await;
    assert!(ack.rejections.is_empty(), "{:?}", ack.rejections);
    aggregator.store.build_windows().await.unwrap();
    let job = http_json(aggregator.http_addr, "/api/v1/jobs/job-1").await;
    // gpu0 counted 9 000 000 mJ from T0 to T0+30 s, all while job-1 held it.
    assert_eq!(job["energy_mj"], 9_000_000, "{job}");
    // T0..+10 s lies in one window (measured); +10..+30 s spans two, so its split between them
    // assumes constant power (interpolated).
    assert_eq!(job["energy_quality"]["measured_mj"], 3_000_000, "{job}");
    assert_eq!(job["energy_quality"]["interpolated_mj"], 6_000_000, "{job}");
    // Facility figures cover settled hours only: close the hour (10 W on each GPU till then).
    let hour_end = T0 + 3_600 * SECOND;
    let ack = session
        .send(Batch {
            collector_id: "c1".into(),
            seq: 4,
            compacted: false,
            meters: Vec::new(),
            readings: vec![
                reading("gpu0", 1_000_000 + 9_000_000 + 35_700_000, hour_end),
                reading("gpu1", 9_000_000_000 + 2_000_000 + 35_700_000, hour_end),
            ],
            allocations: vec![],
            spool_pending: 0,
        })
        .await;
    assert!(ack.rejections.is_empty(), "{:?}", ack.rejections);
    aggregator.store.build_windows().await.unwrap();
    let facility = http_json(aggregator.http_addr, "/api/v1/facility").await;
    let energy = &facility["windows"][0]["energy_mj"];
    // No site meter: the site's energy is its IT energy.
    assert_eq!(energy["site"], 82_400_000, "{facility}");
    assert_eq!(energy["jobs"], 9_000_000 + 35_700_000);
    assert_eq!(energy["idle"], 2_000_000 + 35_700_000);
    assert_eq!(energy["unattributed"], 0);
    // No site meter and no assumed PUE: facility energy is IT energy, no water, no PPA.
    let window = &facility["windows"][0];
    assert_eq!(window["it_mj"], 82_400_000, "{facility}");
    assert_eq!(window["pue"], 1.0, "{facility}");
    assert_eq!(window["wue_l_per_kwh"], 0.0, "{facility}");
    assert_eq!(window["cfe_share"], 0.0, "{facility}");
    // No contracts: the whole load is uncovered, priced with the grid average (no residual mix).
    let market = &window["market"];
    assert_eq!(market["uncovered_mj"], 82_400_000, "{facility}");
    assert_eq!(market["ppa_delivered_mj"], 0, "{facility}");
    assert_eq!(market["go_used_mj"], 0, "{facility}");
    assert!(market["residual_mix"].is_null(), "{facility}");
    // No feed was imported: the hour says so rather than inventing a figure.
    let path = format!("/api/v1/intensity?zone=XX&from={T0}&to={hour_end}");
    let intensity = http_json(aggregator.http_addr, &path).await;
    let hours = intensity["hours"].as_array().unwrap();
    assert_eq!(hours.len(), 1, "{intensity}");
    assert_eq!(hours[0]["hour_start_ns"], T0, "{intensity}");
    assert!(hours[0]["g_per_kwh"].is_null(), "{intensity}");
    assert_eq!(
        hours[0]["method"], "no feed covers this zone",
        "{intensity}"
    );
    drop(session);
    aggregator.stop().await.unwrap();
}

#[tokio::test]
async fn a_second_host_claiming_a_collector_id_is_refused() {
    let (aggregator, _dir) = start().await;
    let (session, _) = Session::open(&aggregator, hello("host-a")).await.unwrap();
    drop(session);
    let refused = Session::open(&aggregator, hello("host-b"))
        .await
        .err()
        .expect("another host must be refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("registered for host \"host-a\""),
        "{}",
        refused.message()
    );
    aggregator.stop().await.unwrap();
}

#[tokio::test]
async fn welcome_reports_the_last_durable_sequence_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = AggregatorConfig::with_data_dir(dir.path().to_path_buf());
    config.grpc_listen = "127.0.0.1:0".parse().unwrap();
    config.http_listen = "127.0.0.1:0".parse().unwrap();
    let aggregator = server::start(&config).await.unwrap();
    let (mut session, _) = Session::open(&aggregator, hello("host-a")).await.unwrap();
    for seq in 1..=3 {
        let ack = session
            .send(Batch {
                collector_id: "c1".into(),
                seq,
                compacted: false,
                meters: Vec::new(),
                readings: vec![reading("gpu0", seq * 1000, T0 + seq as i64 * SECOND)],
                allocations: vec![],
                spool_pending: 0,
            })
            .await;
        assert_eq!(ack.seq, seq);
    }
    drop(session);
    aggregator.stop().await.unwrap();
    let aggregator = server::start(&config).await.unwrap();
    let (_, last) = Session::open(&aggregator, hello("host-a")).await.unwrap();
    assert_eq!(last, 3);
    aggregator.stop().await.unwrap();
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

/// A minimal HTTP/1.1 GET over loopback (no client library needed for a test).

#[tokio::test]
async fn two_collectors_claiming_one_id_at_once_are_refused() {
    let (aggregator, _dir) = start().await;
    let (first, _) = Session::open(&aggregator, hello("host-a")).await.unwrap();
    let refused = Session::open(&aggregator, hello("host-a"))
        .await
        .err()
        .expect("the id is in use");
    assert_eq!(refused.code(), tonic::Code::AlreadyExists);
    assert!(
        refused.message().contains("already has an open stream"),
        "{}",
        refused.message()
    );
    // Once the first stream ends, the id is free again (a restarted collector reconnects).
    drop(first);
    let mut reopened = None;
    for _ in 0..50 {
        if let Ok(session) = Session::open(&aggregator, hello("host-a")).await {
            reopened = Some(session);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        reopened.is_some(),
        "the id stayed claimed after its stream ended"
    );
    let metrics = http_get(aggregator.http_addr, "/metrics").await;
    assert!(
        metrics.contains("footprint_aggregator_streams_refused_total{reason=\"id_in_use\"} 1"),
        "{metrics}"
    );
    drop(reopened);
    aggregator.stop().await.unwrap();
}

#[tokio::test]
async fn a_batch_beyond_the_ingest_budget_is_answered_resource_exhausted() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = AggregatorConfig::with_data_dir(dir.path().to_path_buf());
    config.grpc_listen = "127.0.0.1:0".parse().unwrap();
    config.http_listen = "127.0.0.1:0".parse().unwrap();
    config.ingest_budget_bytes = 64 << 10;
    let aggregator = server::start(&config).await.unwrap();
    let (session, _) = Session::open(&aggregator, hello("host-a")).await.unwrap();
    let Session { tx, mut inbound } = session;
    let readings = (0..4_000)
        .map(|i| reading("gpu0", i, T0 + i as i64 * SECOND))
        .collect();
    tx.send(CollectorMessage {
        body: Some(Up::Batch(Batch {
            collector_id: "c1".into(),
            seq: 1,
            readings,
            allocations: vec![],
            compacted: false,
            meters: Vec::new(),
            spool_pending: 0,
        })),
    })
    .await
    .unwrap();
    let status = inbound
        .message()
        .await
        .expect_err("the stream must end with RESOURCE_EXHAUSTED");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(
        status.message().contains("ingest budget"),
        "{}",
        status.message()
    );
    aggregator.stop().await.unwrap();
}

#[tokio::test]
async fn usage_counters_announced_in_hello_split_a_shared_gpu_and_a_cpu_package() {
    usage_counters_split_a_shared_gpu_and_a_cpu_package(UsageAnnounced::InHello).await;
}

#[tokio::test]
async fn usage_counters_announced_in_a_batch_split_the_same_way() {
    usage_counters_split_a_shared_gpu_and_a_cpu_package(UsageAnnounced::InFirstBatch).await;
}

#[derive(Clone, Copy, PartialEq)]
enum UsageAnnounced {
    InHello,
    /// As a collector does when a job appears after it started.
    InFirstBatch,
}

async fn usage_counters_split_a_shared_gpu_and_a_cpu_package(announced: UsageAnnounced) {
    let (aggregator, _dir) = start().await;
    let usage = |id: &str, kind: MeterKind, device: &str, job: &str| MeterInfo {
        meter_id: id.into(),
        kind: kind as i32,
        device: device.into(),
        job: job.into(),
        ..Default::default()
    };
    let mut meters = vec![
        usage("gpu0", MeterKind::GpuEnergy, "gpu0", ""),
        MeterInfo {
            cpus: vec![0, 1, 2, 3],
            ..usage("package-0", MeterKind::CpuPackageEnergy, "package-0", "")
        },
        usage("busy-a", MeterKind::GpuJobBusy, "gpu0", "A"),
        usage("busy-b", MeterKind::GpuJobBusy, "gpu0", "B"),
        usage("cpu-a", MeterKind::JobCpuTime, "", "A"),
        usage("cpu-b", MeterKind::JobCpuTime, "", "B"),
    ];
    // A usage meter must say whose use it counts.
    let mut nameless = hello("h1");
    nameless.meters = vec![usage("cpu-x", MeterKind::JobCpuTime, "", "")];
    let refused = Session::open(&aggregator, nameless).await.err().unwrap();
    assert!(
        refused.message().contains("hello.meters[0].job"),
        "{refused}"
    );

    let mut announce = hello("h1");
    let mut in_batch = Vec::new();
    match announced {
        UsageAnnounced::InHello => announce.meters = std::mem::take(&mut meters),
        UsageAnnounced::InFirstBatch => {
            in_batch = meters.split_off(2);
            announce.meters = meters;
            // Refused by field, counted, and the rest of the batch still stored.
            in_batch.push(usage("cpu-x", MeterKind::JobCpuTime, "", ""));
            in_batch.push(usage("busy-x", MeterKind::GpuJobBusy, "gpu7", "A"));
        }
    }
    let (mut session, _) = Session::open(&aggregator, announce).await.unwrap();
    let holds = |job: &str, cpus: Vec<u32>| Allocation {
        job: Some(Job {
            id: job.into(),
            ..Default::default()
        }),
        gpus: vec!["gpu0".into()],
        cpus,
        start_ns: T0,
        end_ns: 0,
        mig: vec![],
    };
    let values = [
        (T0, [0, 0, 0, 0, 0, 0]),
        // 10 s: the GPU counted 4 000 mJ, A's processes kept it 75 % busy and B's 25 %; the
        // package counted 1 000 mJ while A used 6 s of CPU and B 2 s.
        (
            T0 + 10 * SECOND,
            [
                4_000,
                1_000,
                7_500_000_000,
                2_500_000_000,
                6_000_000_000,
                2_000_000_000,
            ],
        ),
    ];
    let ids = ["gpu0", "package-0", "busy-a", "busy-b", "cpu-a", "cpu-b"];
    for (seq, (at, values)) in values.into_iter().enumerate() {
        let ack = session
            .send(Batch {
                collector_id: "c1".into(),
                seq: seq as u64 + 1,
                compacted: false,
                meters: if seq == 0 {
                    std::mem::take(&mut in_batch)
                } else {
                    Vec::new()
                },
                readings: ids
                    .iter()
                    .zip(values)
                    .map(|(id, value)| reading(id, value, at))
                    .collect(),
                allocations: if seq == 0 {
                    vec![holds("A", vec![0, 1]), holds("B", vec![2, 3])]
                } else {
                    vec![]
                },
                spool_pending: 0,
            })
            .await;
        let refused: Vec<&str> = ack.rejections.iter().map(|r| r.field.as_str()).collect();
        if announced == UsageAnnounced::InFirstBatch && seq == 0 {
            assert_eq!(refused, ["meters[4].job", "meters[5].device"]);
        } else {
            assert!(refused.is_empty(), "{refused:?}");
        }
    }
    if announced == UsageAnnounced::InFirstBatch {
        let metrics = http_get(aggregator.http_addr, "/metrics").await;
        assert!(
            metrics.contains("footprint_aggregator_meters_rejected_total{reason=\"bad_meter\"} 2"),
            "{metrics}"
        );
    }
    aggregator.store.build_windows().await.unwrap();
    for (job, gpu, cpu) in [("A", 3_000, 750), ("B", 1_000, 250)] {
        let footprint = http_json(aggregator.http_addr, &format!("/api/v1/jobs/{job}")).await;
        assert_eq!(footprint["gpu_energy_mj"], gpu, "{footprint}");
        assert_eq!(footprint["cpu_energy_mj"], cpu, "{footprint}");
        // Split by measured utilisation: interpolated, not estimated; the package is estimated.
        assert_eq!(footprint["energy_quality"]["interpolated_mj"], gpu);
        assert_eq!(footprint["energy_quality"]["estimated_mj"], cpu);
    }
    drop(session);
    aggregator.stop().await.unwrap();
}

#[tokio::test]
async fn a_late_allocation_rebuilds_its_windows_and_reports_say_so() {
    let (aggregator, dir) = start().await;
    let (mut session, _) = Session::open(&aggregator, hello("host-a")).await.unwrap();
    let interpolated = |meter: &str, value: u64, at: i64| Reading {
        quality: Quality::Interpolated as i32,
        ..reading(meter, value, at)
    };
    for (seq, step) in (1..=3).zip(0..3u64) {
        let at = T0 + step as i64 * 10 * SECOND;
        let ack = session
            .send(Batch {
                collector_id: "c1".into(),
                seq,
                compacted: false,
                meters: Vec::new(),
                readings: vec![
                    reading("gpu0", step * 1_000_000, at),
                    interpolated("gpu1", step * 2_000_000, at),
                ],
                allocations: vec![],
                spool_pending: 0,
            })
            .await;
        assert!(ack.rejections.is_empty(), "{:?}", ack.rejections);
    }
    aggregator.store.build_windows().await.unwrap();
    // The job's allocation arrives after both of its windows were built.
    let ack = session
        .send(Batch {
            collector_id: "c1".into(),
            seq: 4,
            compacted: false,
            meters: Vec::new(),
            readings: vec![],
            allocations: vec![
                Allocation {
                    job: Some(Job {
                        id: "job-late".into(),
                        ..Default::default()
                    }),
                    gpus: vec!["gpu0".into()],
                    cpus: vec![],
                    start_ns: T0,
                    end_ns: T0 + 20 * SECOND,
                    mig: vec![],
                },
                Allocation {
                    // Claims to have started in 1970: the rebuild starts at the host's first reading.
                    job: Some(Job {
                        id: "job-ancient".into(),
                        ..Default::default()
                    }),
                    gpus: vec!["gpu1".into()],
                    cpus: vec![],
                    start_ns: 1,
                    end_ns: T0 + 10 * SECOND,
                    mig: vec![],
                },
            ],
            spool_pending: 0,
        })
        .await;
    assert!(ack.rejections.is_empty(), "{:?}", ack.rejections);
    aggregator.store.build_windows().await.unwrap();
    let ancient = http_json(aggregator.http_addr, "/api/v1/jobs/job-ancient").await;
    assert_eq!(ancient["energy_mj"], 2_000_000, "{ancient}");
    assert_eq!(ancient["first_window_ns"], T0, "{ancient}");
    let job = http_json(aggregator.http_addr, "/api/v1/jobs/job-late").await;
    assert_eq!(job["energy_mj"], 2_000_000, "{job}");
    assert_eq!(job["energy_quality"]["measured_mj"], 2_000_000, "{job}");
    assert_eq!(job["revised_windows"], 2, "{job}");
    let metrics = http_get(aggregator.http_addr, "/metrics").await;
    for line in [
        "footprint_aggregator_late_data_total{reason=\"allocation\"} 2",
        "footprint_aggregator_windows_revised_total 2",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }
    drop(session);
    aggregator.stop().await.unwrap();

    let connection = schema::open_reader(&dir.path().join(LEDGER_FILE)).unwrap();
    // gpu1's readings were interpolated (power integrated by its collector): so is its energy.
    let (measured, interpolated): (i64, i64) = connection
        .query_row(
            "SELECT SUM(measured_mj), SUM(interpolated_mj) FROM window_hosts",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    assert_eq!((measured, interpolated), (2_000_000, 4_000_000));
    let revisions = footprint_aggregator::ledger::revisions(
        &connection,
        Span::new(UnixNanos(T0), UnixNanos(T0 + 3_600 * SECOND)),
        10 * SECOND,
    )
    .unwrap();
    assert_eq!(revisions.len(), 2, "{revisions:?}");
    assert!(
        revisions.iter().all(|r| r.scope == "host_window"
            && r.host == "host-a"
            && r.reason == "late allocation"),
        "{revisions:?}"
    );
}

/// A PDU's 0.1 kWh register may show a whole step a second after its last move: accepted from a
/// meter that announced that resolution, refused as too fast from one that did not; and a
/// resolution beyond a wrapping counter's range is refused in `Hello` by name.
#[tokio::test]
async fn an_announced_resolution_lets_a_coarse_register_step() {
    const STEP_MJ: u64 = 360_000_000;
    let (aggregator, _dir) = start().await;
    let outlet = |meter_id: &str, resolution: u64, counter_max: u64| MeterInfo {
        meter_id: meter_id.into(),
        kind: MeterKind::OutletEnergy as i32,
        device: meter_id.into(),
        counter_max,
        resolution,
        ..Default::default()
    };
    let mut too_coarse = hello("host-a");
    too_coarse.meters = vec![outlet("pdu:outlet-1", 1_000, 999)];
    let refused = Session::open(&aggregator, too_coarse).await.err().unwrap();
    assert!(
        refused.message().contains("hello.meters[0].resolution"),
        "{}",
        refused.message()
    );

    let mut pdu = hello("host-a");
    pdu.meters = vec![
        outlet("pdu:outlet-1", STEP_MJ, 0),
        outlet("pdu:outlet-2", 0, 0),
    ];
    let (mut session, _) = Session::open(&aggregator, pdu).await.unwrap();
    let batch = |seq: u64, steps: u64, at: i64| Batch {
        collector_id: "c1".into(),
        seq,
        readings: vec![
            reading("pdu:outlet-1", steps * STEP_MJ, at),
            reading("pdu:outlet-2", steps * STEP_MJ, at),
        ],
        ..Default::default()
    };
    assert!(session.send(batch(1, 30, T0)).await.rejections.is_empty());
    let ack = session.send(batch(2, 31, T0 + SECOND)).await;
    let refused: Vec<(&str, &str)> = ack
        .rejections
        .iter()
        .map(|r| (r.field.as_str(), r.meter_id.as_str()))
        .collect();
    assert_eq!(refused, [("readings[1].value", "pdu:outlet-2")]);
}
