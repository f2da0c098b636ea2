//! The disclosure report made from real ledgers: random sites built through the store, reported
//! and verified. The same readings give the same bytes however they arrive (in another order,
//! twice); a changed byte of the report, a changed reading of the ledger or another ledger is
//! found and named by `verify`; every report validates against the JSON Schema in `docs/`
//! (checked by Python's `jsonschema`, a validator written by others); bad requests are refused
//! naming what is wrong.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{SECOND, reading};
use footprint_aggregator::AggregatorConfig;
use footprint_aggregator::config::PpaConfig;
use footprint_aggregator::metrics::AggregatorMetrics;
use footprint_aggregator::report::{self, ReportRequest, VerifyOptions};
use footprint_aggregator::store::StoreHandle;
use footprint_aggregator::tables::{LEDGER_FILE, chunk};
use footprint_core::config::ConfigFile;
use footprint_exporters::report::Format;
use footprint_exporters::report::signing::SigningKey;
use footprint_proto::v1::{Allocation, Batch, Hello, Job, MeterInfo, MeterKind};
use proptest::prelude::*;

/// 2024-06-02T23:00:00Z: the site's two hours straddle a UTC day's end, so that one day closes.
const T0: i64 = 1_717_369_200 * SECOND;
const STEP_S: i64 = 60;
/// Two hours.
const STEPS: i64 = 120;

/// A host: outlet meter or not, mW per GPU (2) and package, and jobs (gpu mask, start step,
/// length).
type HostPlan = (bool, [u64; 3], Vec<(u8, i64, i64)>);

#[derive(Clone, Debug)]
struct Site {
    hosts: Vec<HostPlan>,
    pue_permille: u64,
    water_ml_per_step: u64,
    /// Steps in which the first host sends nothing (a gap when longer than five minutes).
    silent: Option<(i64, i64)>,
}

fn site() -> impl Strategy<Value = Site> {
    (
        prop::collection::vec(
            (
                any::<bool>(),
                [1_000u64..600_000, 1_000u64..600_000, 1_000u64..200_000],
                prop::collection::vec((1u8..4, 0i64..STEPS, 1i64..STEPS), 1..3),
            ),
            1..3,
        ),
        1_050u64..1_500,
        0u64..300,
        prop::option::of((1i64..STEPS - 20, 2i64..20)),
    )
        .prop_map(|(hosts, pue_permille, water_ml_per_step, silent)| Site {
            hosts,
            pue_permille,
            water_ml_per_step,
            silent,
        })
}

/// How the site's batches reach the aggregator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Delivery {
    InOrder,
    /// The hosts' batches shuffled by this seed (the site meters after them, in order).
    Shuffled(u64),
    /// Every batch twice.
    Twice,
}

fn meter(id: &str, kind: MeterKind, cpus: Vec<u32>) -> MeterInfo {
    MeterInfo {
        meter_id: id.into(),
        kind: kind as i32,
        device: id.into(),
        cpus,
        ..Default::default()
    }
}

/// A fixed signing key in `dir`: the same key signs each ledger's report, so whole files compare.
fn key_file(dir: &Path) -> PathBuf {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    let path = dir.join("report.key");
    let key = SigningKey::from_bytes(&[7; 32]);
    let pem = key
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .unwrap();
    std::fs::write(&path, pem.as_bytes()).unwrap();
    path
}

fn config(dir: &Path) -> AggregatorConfig {
    let intensity = dir.join("intensity.csv");
    std::fs::write(
        &intensity,
        "datetime,zone,carbon_intensity_gco2_per_kwh\n2024-06-02T23:00:00Z,Z,310\n2024-06-03T00:00:00Z,Z,280\n",
    )
    .unwrap();
    let mut config = AggregatorConfig::with_data_dir(dir.join("ledger"));
    config.group_commit_wait_ms = 0;
    config.window_seconds = 60;
    config.carbon.zone = "Z".into();
    config.carbon.intensity_files = vec![intensity];
    config.carbon.residual_mix_g_per_kwh = Some(450.0);
    config.carbon.ppa = vec![PpaConfig {
        name: "wind".into(),
        flat_kw: 1.5,
        hourly_kwh_csv: None,
    }];
    config.attribution.host_overhead_factor = 0.05;
    config.facility.require_site_meter = true;
    config.disclosure.name = Some("test site".into());
    config.disclosure.water_category = Some(2);
    config.disclosure.installed_it_power_kw = Some(12.5);
    config.disclosure.signing_key = Some(key_file(dir));
    config
}

/// Builds the ledger of `site` delivered as `delivery` in `dir/ledger`.
fn build(site: &Site, delivery: Delivery, dir: &Path) {
    build_packing(site, delivery, dir, false);
}

/// [`build`], packing every hour of readings as soon as its windows are built when `pack_all`.
fn build_packing(site: &Site, delivery: Delivery, dir: &Path, pack_all: bool) {
    let mut config = config(dir);
    if pack_all {
        config.compact_after_s = 0;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = StoreHandle::open(&config, Arc::new(AggregatorMetrics::default())).unwrap();
        let mut batches: Vec<(i64, String, Batch)> = Vec::new();
        let mut site_mw = 0u64;
        for (index, (outlet, mw, jobs)) in site.hosts.iter().enumerate() {
            let name = format!("h{index}");
            let mut meters = vec![
                meter("gpu0", MeterKind::GpuEnergy, vec![]),
                meter("gpu1", MeterKind::GpuEnergy, vec![]),
                meter("package", MeterKind::CpuPackageEnergy, (0..8).collect()),
            ];
            if *outlet {
                meters.push(meter("outlet", MeterKind::OutletEnergy, vec![]));
            }
            let accepted = store
                .hello(Hello {
                    collector_id: name.clone(),
                    host: name.clone(),
                    software_version: "t".into(),
                    meters,
                })
                .await
                .unwrap();
            let host_mw = (mw[0] + mw[1] + mw[2]) * 11 / 10;
            site_mw += host_mw;
            let allocations: Vec<Allocation> = jobs
                .iter()
                .enumerate()
                .map(|(number, &(gpus, start, length))| Allocation {
                    job: Some(Job {
                        id: format!("{name}-job{number}"),
                        model: format!("model-{}", number % 2),
                        project: format!("project-{index}"),
                        user: "ada".into(),
                        ..Default::default()
                    }),
                    gpus: (0..2)
                        .filter(|g| gpus & (1 << g) != 0)
                        .map(|g| format!("gpu{g}"))
                        .collect(),
                    cpus: vec![0, 1],
                    start_ns: T0 + start * STEP_S * SECOND,
                    end_ns: T0 + (start + length).min(STEPS) * STEP_S * SECOND,
                    mig: vec![],
                })
                .collect();
            for step in 0..=STEPS {
                if index == 0
                    && site
                        .silent
                        .is_some_and(|(from, length)| (from..from + length).contains(&step))
                {
                    continue;
                }
                let at = T0 + step * STEP_S * SECOND;
                let elapsed = (step * STEP_S) as u64;
                let mut readings = vec![
                    reading("gpu0", mw[0] * elapsed, at),
                    reading("gpu1", mw[1] * elapsed, at),
                    reading("package", mw[2] * elapsed, at),
                ];
                if *outlet {
                    readings.push(reading("outlet", host_mw * elapsed, at));
                }
                batches.push((
                    accepted.collector,
                    name.clone(),
                    Batch {
                        collector_id: name.clone(),
                        seq: step as u64 + 1,
                        readings,
                        allocations: if step == 0 {
                            allocations.clone()
                        } else {
                            vec![]
                        },
                        compacted: false,
                        meters: vec![],
                        spool_pending: 0,
                    },
                ));
            }
        }
        match delivery {
            Delivery::InOrder => {}
            Delivery::Shuffled(seed) => {
                let mut rng = footprint_core::rng::SplitMix64::new(seed);
                for index in (1..batches.len()).rev() {
                    let other = (rng.next_u64() % (index as u64 + 1)) as usize;
                    batches.swap(index, other);
                }
            }
            Delivery::Twice => {
                let again = batches.clone();
                batches = batches
                    .into_iter()
                    .zip(again)
                    .flat_map(|(a, b)| [a, b])
                    .collect();
            }
        }
        for (collector, _, batch) in batches {
            store
                .submit(collector, batch)
                .await
                .unwrap()
                .await
                .unwrap()
                .unwrap();
        }
        store.build_windows().await.unwrap();
        let accepted = store
            .hello(Hello {
                collector_id: "site".into(),
                host: "site".into(),
                software_version: "t".into(),
                meters: vec![
                    meter("energy", MeterKind::SiteEnergy, vec![]),
                    meter("water", MeterKind::SiteWater, vec![]),
                ],
            })
            .await
            .unwrap();
        let site_mw = site_mw * site.pue_permille / 1_000;
        for step in 0..=STEPS {
            let at = T0 + step * STEP_S * SECOND;
            let elapsed = (step * STEP_S) as u64;
            let batch = Batch {
                collector_id: "site".into(),
                seq: step as u64 + 1,
                readings: vec![
                    reading("energy", site_mw * elapsed, at),
                    reading("water", site.water_ml_per_step * step as u64, at),
                ],
                allocations: vec![],
                compacted: false,
                meters: vec![],
                spool_pending: 0,
            };
            let times = if delivery == Delivery::Twice { 2 } else { 1 };
            for _ in 0..times {
                store
                    .submit(accepted.collector, batch.clone())
                    .await
                    .unwrap()
                    .await
                    .unwrap()
                    .unwrap();
            }
        }
        store.build_windows().await.unwrap();
        store.compact().await.unwrap();
    });
}

fn ledger(dir: &Path) -> PathBuf {
    dir.join("ledger").join(LEDGER_FILE)
}

fn period() -> ReportRequest {
    ReportRequest {
        from_ns: T0,
        to_ns: T0 + STEPS * STEP_S * SECOND,
        ..ReportRequest::default()
    }
}

/// The report of the ledger in `dir` in every format.
fn reports(dir: &Path) -> Vec<Vec<u8>> {
    let signed = report::make_report(&ledger(dir), &period()).unwrap();
    [Format::Json, Format::Html, Format::Csv]
        .into_iter()
        .map(|format| report::render(&signed, format).unwrap())
        .collect()
}

fn verify(dir: &Path, bytes: &[u8]) -> report::Verification {
    report::verify(
        &ledger(dir),
        bytes,
        &VerifyOptions {
            expected_key: None,
            readings: true,
        },
        |_, _| {},
    )
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(6))]

    /// Same readings, same bytes — in JSON, HTML and CSV — however they arrive; each report
    /// verifies against its ledger, and balances.
    #[test]
    fn same_readings_give_the_same_bytes(site in site(), seed in any::<u64>()) {
        let in_order = tempfile::tempdir().unwrap();
        build(&site, Delivery::InOrder, in_order.path());
        let expected = reports(in_order.path());
        let verification = verify(in_order.path(), &expected[0]);
        prop_assert!(verification.holds(), "{:?}", verification.problems);
        let json: serde_json::Value = serde_json::from_slice(&expected[0]).unwrap();
        for (quantity, line) in json["report"]["conservation"].as_object().unwrap() {
            prop_assert_eq!(&line["balanced"], &serde_json::json!(true), "{}", quantity);
        }
        // The report's totals (summed from its months) are the ledger's own totals.
        let connection = footprint_aggregator::tables::schema::open_reader(&ledger(in_order.path())).unwrap();
        let span = footprint_core::Span::new(
            footprint_core::UnixNanos(T0),
            footprint_core::UnixNanos(T0 + STEPS * STEP_S * SECOND),
        );
        let totals = footprint_aggregator::ledger::facility_totals(
            &connection,
            span,
            footprint_aggregator::ledger::SeriesStep::Total,
            footprint_aggregator::ledger::Grouping::Site,
        )
        .unwrap()
        .remove(0);
        let conservation = &json["report"]["conservation"];
        prop_assert_eq!(conservation["energy"]["site"].as_i64(), Some(totals.energy_mj.site));
        prop_assert_eq!(conservation["water"]["idle"].as_i64(), Some(totals.water_ml.idle));
        prop_assert_eq!(
            conservation["co2e_market_based"]["jobs"].as_i64(),
            Some(totals.co2e_market_mg.jobs)
        );
        for delivery in [Delivery::Shuffled(seed), Delivery::Twice] {
            let dir = tempfile::tempdir().unwrap();
            build(&site, delivery, dir.path());
            let got = reports(dir.path());
            for (format, (a, b)) in ["json", "html", "csv"].iter().zip(expected.iter().zip(&got)) {
                prop_assert!(a == b, "{} differs after {:?} delivery: {:?}", format, delivery,
                    footprint_exporters::report::verify::differences(
                        &String::from_utf8_lossy(b), &String::from_utf8_lossy(a)));
            }
        }
    }
}

/// A meter's coverage as compared: host, meter, readings, covered ns, gaps, first and last
/// reading.
type Coverage = (String, String, i64, i64, Vec<(i64, i64)>, i64, i64);

/// Each meter's coverage of `span` the slow way: every reading decoded, each interval clipped
/// to the span; silence at either end longer than `max_gap_ns` a gap.
fn coverage_by_decoding(
    connection: &rusqlite::Connection,
    span: footprint_core::Span,
    max_gap_ns: i64,
) -> Vec<Coverage> {
    use footprint_aggregator::tables::series;
    let meters: Vec<(i64, String, String)> = connection
        .prepare(
            "SELECT m.id, c.host, m.meter_id FROM meters m JOIN collectors c ON c.id = m.collector
             WHERE m.kind BETWEEN 1 AND 7 ORDER BY c.host, m.meter_id",
        )
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    let wide = footprint_core::Span::new(
        footprint_core::UnixNanos(span.start.0 - 1),
        footprint_core::UnixNanos(span.end.0 + 3_600 * SECOND),
    );
    meters
        .into_iter()
        .map(|(id, host, meter)| {
            let (mut readings, mut covered, mut gaps) = (0, 0, Vec::new());
            let (mut first, mut last) = (None, None);
            for reading in series::readings_in(connection, id, wide).unwrap() {
                let inside = reading.ts_ns >= span.start.0 && reading.ts_ns < span.end.0;
                if inside {
                    readings += 1;
                    first = first.or(Some(reading.ts_ns));
                    last = Some(reading.ts_ns);
                }
                let Some(from) = reading.from_ns else {
                    continue;
                };
                let (start, end) = (from.max(span.start.0), reading.ts_ns.min(span.end.0));
                if end > start {
                    if reading.step.unwrap_or(0) & 8 != 0 {
                        gaps.push((start, end));
                    } else {
                        covered += end - start;
                    }
                }
            }
            let lead_end = first.unwrap_or(span.end.0);
            if lead_end - span.start.0 > max_gap_ns
                && gaps.first().is_none_or(|g: &(i64, i64)| g.0 > span.start.0)
            {
                gaps.insert(0, (span.start.0, lead_end));
            }
            if let Some(last) = last
                && span.end.0 - last > max_gap_ns
                && gaps.last().is_none_or(|g| g.1 < span.end.0)
            {
                gaps.push((last, span.end.0));
            }
            (
                host,
                meter,
                readings,
                covered,
                gaps,
                first.unwrap_or(0),
                last.unwrap_or(0),
            )
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// The report's coverage read from closed days' summaries (and the other hours' readings)
    /// is what decoding every reading gives: over each hour, both, a closed day, an open day,
    /// and days around them.
    #[test]
    fn coverage_from_day_summaries_is_what_the_readings_give(site in site(), pack_all in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        build_packing(&site, Delivery::InOrder, dir.path(), pack_all);
        let connection = footprint_aggregator::tables::schema::open_reader(&ledger(dir.path())).unwrap();
        let closed: i64 = connection
            .query_row("SELECT COUNT(*) FROM meter_days", [], |row| row.get(0))
            .unwrap();
        prop_assert!(closed > 0, "no day closed: the summaries went untested");
        let unpacked: i64 = connection
            .query_row("SELECT COUNT(*) FROM reading_chunks WHERE packed = 0", [], |row| row.get(0))
            .unwrap();
        prop_assert!(pack_all || unpacked > 0, "every hour was packed: the readings' path went untested");
        let max_gap_ns = 300 * SECOND;
        // The two hours, each and together; the closed first day; the open second day; three
        // days around both; hours around the first day.
        for (from, to) in [(0, 1), (1, 2), (0, 2), (-23, 1), (1, 25), (-47, 49), (-24, 2)] {
            let span = footprint_core::Span::new(
                footprint_core::UnixNanos(T0 + from * 3_600 * SECOND),
                footprint_core::UnixNanos(T0 + to * 3_600 * SECOND),
            );
            let fast: Vec<_> = footprint_aggregator::ledger::coverage::meter_coverage(&connection, span, max_gap_ns)
                .unwrap()
                .into_iter()
                .map(|m| (m.host, m.meter_id, m.readings, m.covered_ns, m.gaps,
                    m.first_reading_ns.unwrap_or(0), m.last_reading_ns.unwrap_or(0)))
                .collect();
            let slow = coverage_by_decoding(&connection, span, max_gap_ns);
            prop_assert_eq!(fast, slow, "hours {}..{}", from, to);
        }
    }
}

fn plain_site() -> Site {
    Site {
        hosts: vec![
            (
                true,
                [300_000, 250_000, 90_000],
                vec![(3, 0, 80), (1, 70, 50)],
            ),
            (false, [200_000, 400_000, 60_000], vec![(2, 10, 100)]),
        ],
        pue_permille: 1_250,
        water_ml_per_step: 40,
        silent: Some((50, 10)),
    }
}

#[test]
fn a_changed_byte_a_changed_reading_and_another_ledger_are_named() {
    let dir = tempfile::tempdir().unwrap();
    build(&plain_site(), Delivery::InOrder, dir.path());
    let json = reports(dir.path()).remove(0);
    assert!(verify(dir.path(), &json).holds());

    // One byte of a figure in the annex.
    let text = String::from_utf8(json.clone()).unwrap();
    let at = text.find("\"water_ml\":").unwrap() + "\"water_ml\":".len();
    let mut changed = json.clone();
    changed[at] = if changed[at] == b'9' { b'8' } else { b'9' };
    let problems = verify(dir.path(), &changed).problems.join("\n");
    assert!(problems.contains("report: its SHA-256"), "{problems}");
    assert!(
        problems.contains("report.jobs[0].water_ml: the file has"),
        "{problems}"
    );

    // One reading's energy in the ledger (a GPU's interval in the first hour).
    let connection = rusqlite::Connection::open(ledger(dir.path())).unwrap();
    let (meter, first, data): (i64, i64, Vec<u8>) = connection
        .query_row(
            "SELECT k.meter, k.first_ns, k.data FROM reading_chunks k JOIN meters m ON m.id = k.meter
             WHERE m.meter_id = 'gpu0' AND k.first_ns < ?1 ORDER BY k.meter, k.first_ns LIMIT 1",
            [T0 + 3_600 * SECOND],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .unwrap();
    let mut readings = chunk::decode(&data).unwrap();
    let middle = readings.len() / 2;
    readings[middle].delta = readings[middle].delta.map(|delta| delta + 5_000_000);
    connection
        .execute(
            "UPDATE reading_chunks SET data = ?1 WHERE meter = ?2 AND first_ns = ?3",
            rusqlite::params![chunk::encode(&readings).unwrap(), meter, first],
        )
        .unwrap();
    drop(connection);
    let problems = verify(dir.path(), &json).problems.join("\n");
    assert!(problems.contains("readings: "), "{problems}");
    assert!(
        problems.contains("2024-06-02T23:00:00Z rollup_hosts, host h0: ")
            && problems.contains("from the readings"),
        "{problems}"
    );

    // Another site's ledger.
    let other = tempfile::tempdir().unwrap();
    let mut site = plain_site();
    site.hosts.pop();
    build(&site, Delivery::InOrder, other.path());
    let problems = verify(other.path(), &json).problems.join("\n");
    assert!(problems.contains("made from another ledger"), "{problems}");
    assert!(!problems.contains("SHA-256"), "{problems}");
}

#[test]
fn every_report_validates_against_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    build(&plain_site(), Delivery::InOrder, dir.path());
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/report.schema.json");
    let mut files = vec![dir.path().join("period.json")];
    std::fs::write(&files[0], reports(dir.path()).remove(0)).unwrap();
    // A provisional year with empty fields, unsigned.
    let year = report::make_report(
        &ledger(dir.path()),
        &ReportRequest {
            unsigned: true,
            ..ReportRequest::default()
        },
    )
    .unwrap();
    assert_eq!(year.report.period.status, "provisional");
    files.push(dir.path().join("year.json"));
    std::fs::write(&files[1], &year.json).unwrap();
    for file in &files {
        let output = std::process::Command::new("python3")
            .args([
                "-c",
                "import json, sys, jsonschema\n\
                 schema = json.load(open(sys.argv[1]))\n\
                 jsonschema.Draft202012Validator.check_schema(schema)\n\
                 errors = list(jsonschema.Draft202012Validator(schema).iter_errors(json.load(open(sys.argv[2]))))\n\
                 for e in errors[:10]: print(list(e.absolute_path), e.message)\n\
                 sys.exit(1 if errors else 0)",
            ])
            .arg(&schema)
            .arg(file)
            .output()
            .expect("python3 runs (scripts/test installs jsonschema)");
        assert!(
            output.status.success(),
            "{}: {}{}",
            file.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn bad_requests_are_refused_naming_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    build(&plain_site(), Delivery::InOrder, dir.path());
    let path = ledger(dir.path());
    let hour = 3_600 * SECOND;
    let refused = |request: ReportRequest| {
        report::make_report(&path, &request)
            .unwrap_err()
            .to_string()
    };
    let error = refused(ReportRequest {
        from_ns: T0 + hour,
        to_ns: T0,
        ..period()
    });
    assert!(
        error.contains("to: ") && error.contains("inverted"),
        "{error}"
    );
    let error = refused(ReportRequest {
        from_ns: T0 + 60 * SECOND,
        ..period()
    });
    assert!(
        error.contains("from: ") && error.contains("not on the hour"),
        "{error}"
    );
    let error = refused(ReportRequest {
        from_ns: T0 + 10 * hour,
        to_ns: T0 + 12 * hour,
        ..period()
    });
    assert!(error.contains("no settled hour"), "{error}");
    let error = refused(ReportRequest {
        to_ns: T0 + 3 * hour,
        require_settled: true,
        ..period()
    });
    assert!(error.contains("require_settled"), "{error}");
    let error = refused(ReportRequest {
        signing_key: Some(dir.path().join("missing.key")),
        ..period()
    });
    assert!(
        error.contains("signing_key") && error.contains("missing.key"),
        "{error}"
    );

    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        "data_dir = \"/tmp/x\"\n[disclosure]\nfloor_area_m2 = \"large\"\n",
    )
    .unwrap();
    let error = format!("{:#}", AggregatorConfig::load(&config).unwrap_err());
    assert!(error.contains("disclosure.floor_area_m2"), "{error}");
    std::fs::write(
        &config,
        "data_dir = \"/tmp/x\"\n[disclosure]\nin_operation_since = \"April 2021\"\nwater_category = 3\n",
    )
    .unwrap();
    let error = format!("{:#}", AggregatorConfig::load(&config).unwrap_err());
    assert!(
        error.contains("disclosure.in_operation_since")
            && error.contains("disclosure.water_category"),
        "{error}"
    );
}

/// `docs/verify_report.py`: Python's standard library rewrites the file in the canonical form and
/// recomputes both hashes, OpenSSL verifies the signature — no Footprint code involved.
#[test]
fn an_auditor_checks_the_signed_file_without_footprint() {
    let dir = tempfile::tempdir().unwrap();
    build(&plain_site(), Delivery::InOrder, dir.path());
    let file = dir.path().join("report.json");
    let json = reports(dir.path()).remove(0);
    std::fs::write(&file, &json).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/verify_report.py");
    let check = |path: &Path| {
        std::process::Command::new("python3")
            .arg(&script)
            .arg(path)
            .output()
            .expect("python3 runs")
    };
    let output = check(&file);
    let said = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{said}");
    assert!(
        said.contains("signature verified by OpenSSL, arithmetic redone"),
        "{said}"
    );

    let tampered = dir.path().join("tampered.json");
    let text = String::from_utf8(json).unwrap();
    std::fs::write(
        &tampered,
        text.replacen("\"user\":\"ada\"", "\"user\":\"bob\"", 1),
    )
    .unwrap();
    let output = check(&tampered);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("report: its SHA-256 differs"),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}
