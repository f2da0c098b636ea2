//! The hand-worked example of `docs/worked-example.md`, run for real: one host, two jobs, one
//! hour, fed over gRPC to a real aggregator. Every figure in the document's table is read back
//! from the aggregator's HTTP API and must match to the unit.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{SECOND, Session, http_json, reading};
use footprint_aggregator::config::PpaConfig;
use footprint_aggregator::{AggregatorConfig, server};
use footprint_proto::v1::{Allocation, Batch, Hello, Job, JobKind, MeterInfo, MeterKind};

/// 2024-03-01T10:00:00Z.
const T: i64 = 1_709_287_200 * SECOND;
const HALF_HOUR: i64 = 1_800 * SECOND;

fn meter(id: &str, kind: MeterKind, cpus: Vec<u32>, model: &str) -> MeterInfo {
    MeterInfo {
        meter_id: id.into(),
        kind: kind as i32,
        device: id.into(),
        cpus,
        model: model.into(),
        ..Default::default()
    }
}

fn job(id: &str, kind: JobKind, units: u64) -> Job {
    Job {
        id: id.into(),
        kind: kind as i32,
        functional_unit: "1k tokens".into(),
        functional_units: units,
        ..Default::default()
    }
}

/// The `| key | value |` rows between the document's figure markers.
fn documented_figures() -> Vec<(String, String)> {
    let text = include_str!("../../docs/worked-example.md");
    let start = text.find("<!-- figures -->").expect("start marker");
    let end = text.find("<!-- /figures -->").expect("end marker");
    text[start..end]
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let key = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            Some((key.to_owned(), cells.get(2)?.replace(['\u{a0}', ' '], "")))
        })
        .collect()
}

#[tokio::test]
async fn every_figure_of_the_worked_example_is_what_the_ledger_says() {
    let dir = tempfile::tempdir().unwrap();
    let intensity = dir.path().join("intensity.csv");
    std::fs::write(
        &intensity,
        "datetime,zone,carbon_intensity_gco2_per_kwh\n2024-03-01T10:00:00Z,DE,300\n",
    )
    .unwrap();
    let mut config = AggregatorConfig::with_data_dir(dir.path().join("ledger"));
    config.grpc_listen = "127.0.0.1:0".parse().unwrap();
    config.http_listen = "127.0.0.1:0".parse().unwrap();
    config.window_seconds = 3_600;
    config.max_sample_gap_s = 3_600;
    config.carbon.zone = "DE".into();
    config.carbon.intensity_files = vec![intensity];
    config.carbon.residual_mix_g_per_kwh = Some(420.0);
    config.carbon.ppa = vec![PpaConfig {
        name: "wind".into(),
        flat_kw: 0.5,
        hourly_kwh_csv: None,
    }];
    let aggregator = server::start(&config).await.unwrap();

    let h100 = "NVIDIA H100 80GB HBM3";
    let (mut host, _) = Session::open(
        &aggregator,
        Hello {
            collector_id: "h1".into(),
            host: "h1".into(),
            software_version: "test".into(),
            meters: vec![
                meter("gpu0", MeterKind::GpuEnergy, vec![], h100),
                meter("gpu1", MeterKind::GpuEnergy, vec![], h100),
                meter(
                    "package-0",
                    MeterKind::CpuPackageEnergy,
                    (0..8).collect(),
                    "",
                ),
                meter("outlet", MeterKind::OutletEnergy, vec![], ""),
            ],
        },
    )
    .await
    .unwrap();
    let (mut site, _) = Session::open(
        &aggregator,
        Hello {
            collector_id: "site".into(),
            host: "site".into(),
            software_version: "test".into(),
            meters: vec![
                meter("site-energy", MeterKind::SiteEnergy, vec![], ""),
                meter("site-water", MeterKind::SiteWater, vec![], ""),
            ],
        },
    )
    .await
    .unwrap();

    let a_holds = |end_ns: i64, units: u64| Allocation {
        job: Some(job("A", JobKind::Training, units)),
        gpus: vec!["gpu0".into()],
        cpus: vec![0, 1, 2, 3],
        start_ns: T,
        end_ns,
        mig: vec![],
    };
    let b_holds = |end_ns: i64| Allocation {
        job: Some(job("B", JobKind::Inference, 0)),
        gpus: vec!["gpu1".into()],
        cpus: vec![4, 5],
        start_ns: T,
        end_ns,
        mig: vec![],
    };
    let host_batches = [
        (T, [0, 0, 0, 0], vec![a_holds(0, 0), b_holds(0)]),
        (
            T + HALF_HOUR,
            [1_260_000_000, 720_000_000, 180_000_000, 2_000_000_000],
            vec![b_holds(T + HALF_HOUR)],
        ),
        (
            T + 2 * HALF_HOUR,
            [2_520_000_000, 900_000_000, 360_000_000, 4_158_000_000],
            vec![a_holds(T + 2 * HALF_HOUR, 1_000)],
        ),
    ];
    for (seq, (at, [gpu0, gpu1, package, outlet], allocations)) in
        host_batches.into_iter().enumerate()
    {
        let ack = host
            .send(Batch {
                collector_id: "h1".into(),
                seq: seq as u64 + 1,
                compacted: false,
                meters: Vec::new(),
                readings: vec![
                    reading("gpu0", gpu0, at),
                    reading("gpu1", gpu1, at),
                    reading("package-0", package, at),
                    reading("outlet", outlet, at),
                ],
                allocations,
                spool_pending: 0,
            })
            .await;
        assert!(ack.rejections.is_empty(), "{:?}", ack.rejections);
    }
    for (seq, (at, energy, water)) in [(T, 0, 0), (T + 2 * HALF_HOUR, 5_821_200_000, 2_520)]
        .into_iter()
        .enumerate()
    {
        let ack = site
            .send(Batch {
                collector_id: "site".into(),
                seq: seq as u64 + 1,
                compacted: false,
                meters: Vec::new(),
                readings: vec![
                    reading("site-energy", energy, at),
                    reading("site-water", water, at),
                ],
                allocations: vec![],
                spool_pending: 0,
            })
            .await;
        assert!(ack.rejections.is_empty(), "{:?}", ack.rejections);
    }
    aggregator.store.build_windows().await.unwrap();

    let a = http_json(aggregator.http_addr, "/api/v1/jobs/A").await;
    let b = http_json(aggregator.http_addr, "/api/v1/jobs/B").await;
    let facility = http_json(aggregator.http_addr, "/api/v1/facility").await;
    let site_total = &facility["windows"][0];
    let figures = documented_figures();
    assert!(figures.len() >= 30, "only {} figures found", figures.len());
    for (key, documented) in figures {
        let (root, path) = key.split_once('.').unwrap();
        let source = match root {
            "A" => &a,
            "B" => &b,
            "site" => site_total,
            other => panic!("unknown root {other:?} in {key}"),
        };
        let pointer = format!("/{}", path.replace('.', "/"));
        let actual = source
            .pointer(&pointer)
            .unwrap_or_else(|| panic!("{key} missing in {source}"));
        let actual = match actual.as_f64() {
            Some(value) if actual.is_f64() => format!("{value:.3}"),
            _ => actual.to_string(),
        };
        assert_eq!(actual, documented, "{key}");
    }

    // The hour rebuilt from the readings sums to its roll-up, over HTTP as on the command line.
    let explained = http_json(
        aggregator.http_addr,
        &format!("/api/v1/explain?job=A&hour={T}"),
    )
    .await;
    assert_eq!(explained["matches"], true, "{explained}");
    assert_eq!(explained["windows_sum"], explained["rolled_up"]);
    assert_eq!(
        explained["windows_sum"]["gpu_mj"], a["gpu_energy_mj"],
        "{explained}"
    );
    // The disclosure report of the hour, over HTTP (RFC 3339 or ns) and gRPC: its annex holds
    // the jobs exactly as the jobs API gives them, and its books balance.
    let signed = http_json(
        aggregator.http_addr,
        &format!("/api/v1/report?from={T}&to={}", T + 2 * HALF_HOUR),
    )
    .await;
    let report = &signed["report"];
    assert_eq!(report["period"]["status"], "final", "{}", report["period"]);
    for (job, answer) in [("A", &a), ("B", &b)] {
        let line = report["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|line| line["id"] == job)
            .unwrap_or_else(|| panic!("{job} not in the annex"));
        assert_eq!(line["energy_mj"]["total"], answer["energy_mj"], "{job}");
        assert_eq!(line["energy_mj"]["gpu"], answer["gpu_energy_mj"], "{job}");
        assert_eq!(line["water_ml"], answer["water_ml"], "{job}");
        assert_eq!(
            line["co2e_mg"]["market_based"], answer["co2e_market_mg"],
            "{job}"
        );
    }
    for (quantity, line) in report["conservation"].as_object().unwrap() {
        assert_eq!(line["balanced"], true, "{quantity}: {line}");
    }
    assert_eq!(
        report["conservation"]["energy"]["site"],
        site_total["energy_mj"]["site"]
    );
    let mut query = footprint_proto::v1::query_client::QueryClient::connect(format!(
        "http://{}",
        aggregator.grpc_addr
    ))
    .await
    .unwrap();
    let file = query
        .report(footprint_proto::v1::ReportRequest {
            from_ns: T,
            to_ns: T + 2 * HALF_HOUR,
            format: "json".into(),
            require_settled: true,
        })
        .await
        .unwrap()
        .into_inner();
    let over_grpc: serde_json::Value = serde_json::from_slice(&file.data).unwrap();
    assert_eq!(over_grpc, signed, "the same report over gRPC and HTTP");
    let refused = query
        .report(footprint_proto::v1::ReportRequest {
            from_ns: T + 1,
            to_ns: T + 2 * HALF_HOUR,
            format: "json".into(),
            require_settled: false,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().starts_with("from: "), "{refused:?}");

    let stats = http_json(aggregator.http_addr, "/api/v1/ledger/stats").await;
    assert_eq!(stats["hosts"], 1, "{stats}");
    assert!(stats["readings"].as_u64().unwrap() > 0, "{stats}");
    drop((host, site));
    aggregator.stop().await.unwrap();
}
