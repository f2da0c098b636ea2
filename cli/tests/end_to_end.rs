//! End to end: a real `footprint-aggregator` and two real `footprint-collector` processes on
//! loopback, replaying the embedded BioHPC trace on a simulated clock. The ledger's figures are
//! checked against the trace integrated here, independently of the collector's code.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    HOURS, INFER, Running, SECOND_NS, T0, TRAIN, collector_config, cpu_energy_mj, gpu_energy_mj,
    job_table,
};

use footprint_proto::v1::query_client::QueryClient;
use footprint_proto::v1::{FacilityTotalsRequest, GetJobRequest};

#[test]
fn collectors_and_aggregator_processes_account_for_every_millijoule_of_the_trace() {
    let dir = tempfile::tempdir().unwrap();
    let aggregator_config = dir.path().join("aggregator.toml");
    std::fs::write(
        &aggregator_config,
        format!(
            "data_dir = {:?}\ngrpc_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\n",
            dir.path().join("ledger")
        ),
    )
    .unwrap();
    let mut aggregator = Running(
        Command::new(env!("CARGO_BIN_EXE_footprint-aggregator"))
            .arg("--config")
            .arg(&aggregator_config)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(aggregator.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addresses: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    let endpoint = format!("http://{}", addresses["grpc"].as_str().unwrap());

    // Host A: 3 GPUs; the distributed job holds gpu0-1 and cores 0-3, an inference job gpu2 and core 4.
    let host_a = collector_config(
        "host-a",
        &endpoint,
        "",
        "",
        3600.0,
        &format!(
            "gpus = 3\n{}{}",
            job_table(&TRAIN, "[0, 1]", "0-3", "training"),
            job_table(&INFER, "[2]", "4", "inference")
        ),
    );
    // Host B: 2 GPUs, both and every core held by the distributed job.
    let host_b = collector_config(
        "host-b",
        &endpoint,
        "",
        "",
        3600.0,
        &format!(
            "gpus = 2\n{}",
            job_table(&TRAIN, "[0, 1]", "0-7", "training")
        ),
    );
    let mut collectors = Vec::new();
    for (name, text) in [("host-a", host_a), ("host-b", host_b)] {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        collectors.push((
            name,
            Running(
                Command::new(env!("CARGO_BIN_EXE_footprint-collector"))
                    .arg("--config")
                    .arg(&path)
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap(),
            ),
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    for (name, collector) in &mut collectors {
        loop {
            if let Some(status) = collector.0.try_wait().unwrap() {
                let mut log = String::new();
                std::io::Read::read_to_string(collector.0.stderr.as_mut().unwrap(), &mut log)
                    .unwrap();
                assert!(status.success(), "collector {name} failed: {status}\n{log}");
                assert!(
                    !log.contains("rejected"),
                    "collector {name} had readings rejected:\n{log}"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "collector {name} did not finish in time"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (train, infer, facility) = runtime.block_on(async {
        let mut query = QueryClient::connect(endpoint.clone()).await.unwrap();
        let train = query
            .get_job(GetJobRequest {
                id: "dist-train".into(),
            })
            .await
            .unwrap()
            .into_inner();
        let infer = query
            .get_job(GetJobRequest {
                id: "infer-a".into(),
            })
            .await
            .unwrap()
            .into_inner();
        let facility = query
            .facility_totals(FacilityTotalsRequest::default())
            .await
            .unwrap()
            .into_inner();
        (train, infer, facility)
    });

    let span = HOURS * 3600;
    // Four GPUs of the distributed job (two per host) drew the H100 trace while it ran.
    let train_gpu = 4 * gpu_energy_mj(Some(&TRAIN), 50_000, 0, span)
        - 4 * gpu_energy_mj(None, 50_000, 0, TRAIN.start_s)
        - 4 * gpu_energy_mj(None, 50_000, TRAIN.end_s, span);
    assert_eq!(
        u128::from(train.gpu_energy_mj),
        train_gpu,
        "GPU energy of dist-train"
    );
    assert_eq!(
        u128::from(infer.gpu_energy_mj),
        gpu_energy_mj(Some(&INFER), 50_000, 0, span),
        "GPU energy of infer-a"
    );
    assert_eq!(train.hosts, vec!["host-a".to_owned(), "host-b".to_owned()]);
    assert!(
        (train.gpu_hours - 4.0 * 1.5).abs() < 1e-9,
        "{}",
        train.gpu_hours
    );
    for job in [&train, &infer] {
        assert!(job.cpu_energy_mj > 0 && job.dram_energy_mj > 0, "{job:?}");
        assert_eq!(
            job.energy_mj,
            job.gpu_energy_mj + job.cpu_energy_mj + job.dram_energy_mj
        );
        let quality = job.energy_quality.unwrap();
        assert_eq!(
            quality.measured_mj + quality.interpolated_mj + quality.estimated_mj,
            job.energy_mj
        );
    }

    // Every meter's energy, integrated here: GPUs (idle outside their job) and the RAPL packages,
    // whose counters wrapped many times on the way.
    let gpus = 4
        * (gpu_energy_mj(None, 50_000, 0, TRAIN.start_s)
            + gpu_energy_mj(None, 50_000, TRAIN.end_s, span))
        + train_gpu
        + gpu_energy_mj(Some(&INFER), 50_000, 0, span);
    let a_package_0 = [(TRAIN.start_s, TRAIN.end_s, 4u128)];
    let a_package_1 = [(0, span, 1u128)];
    let b_package = [(TRAIN.start_s, TRAIN.end_s, 4u128)];
    let rapl: u128 = [
        &a_package_0[..],
        &a_package_1[..],
        &b_package[..],
        &b_package[..],
    ]
    .iter()
    .map(|held| {
        cpu_energy_mj(40_000, 5_000, held, 0, span) + cpu_energy_mj(4_000, 500, held, 0, span)
    })
    .sum();
    assert_eq!(facility.windows.len(), 1, "{facility:?}");
    let total = &facility.windows[0];
    assert_eq!((total.start_ns, total.end_ns), (T0, T0 + span * SECOND_NS));
    assert_eq!(
        u128::from(total.it_mj),
        gpus + rapl,
        "IT energy of all meters"
    );
    assert_eq!(
        total.measured_mj, total.it_mj,
        "no site meter: measured is the IT total"
    );
    assert_eq!(total.unattributed_mj, 0);
    assert_eq!(total.jobs_mj + total.idle_mj, total.measured_mj);
    let by_job: BTreeMap<&str, u64> = [
        ("dist-train", train.energy_mj),
        ("infer-a", infer.energy_mj),
    ]
    .into_iter()
    .collect();
    assert_eq!(by_job.values().sum::<u64>(), total.jobs_mj);

    // The disclosure report from the running aggregator (`--server`), verified against its ledger.
    let report = dir.path().join("report.json");
    let at = |ns: i64| footprint_core::time::format_rfc3339(footprint_core::UnixNanos(ns));
    let output = Command::new(env!("CARGO_BIN_EXE_footprint"))
        .args(["report", "--server", &endpoint, "--from", &at(T0), "--to"])
        .arg(at(T0 + span * SECOND_NS))
        .arg("--out")
        .arg(&report)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let signed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let annex = signed["report"]["jobs"].as_array().unwrap();
    for (id, energy) in &by_job {
        let line = annex.iter().find(|line| line["id"] == *id).unwrap();
        assert_eq!(line["energy_mj"]["total"], *energy, "{id}");
    }
    // No site meter here: EDC, and PUE with it, are empty, saying why.
    let kpis = &signed["report"]["facility"]["kpis"];
    assert!(kpis["edc"]["value"].is_null(), "{}", kpis["edc"]);
    assert!(
        kpis["edc"]["reason"]
            .as_str()
            .unwrap()
            .contains("no site energy meter"),
        "{}",
        kpis["edc"]
    );
    assert_eq!(
        signed["signature"],
        serde_json::Value::Null,
        "no key configured"
    );
    let output = Command::new(env!("CARGO_BIN_EXE_footprint"))
        .args(["report", "verify"])
        .arg(&report)
        .arg("--data-dir")
        .arg(dir.path().join("ledger"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        !output.status.success(),
        "an unsigned report does not verify: {said}"
    );
    assert!(
        said.contains("FAILED signature: the report is not signed"),
        "{said}"
    );
    assert!(!said.contains("report: made again"), "{said}");
    assert!(said.contains("every roll-up matches"), "{said}");
    drop(aggregator);
}
