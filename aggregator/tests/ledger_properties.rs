//! Conservation through the whole ledger on random sites: random hosts (with or without an outlet
//! meter), random jobs holding random GPUs and cores over random spans, random power, a site meter
//! that may read below the IT meters, a water meter, an intensity feed with gaps and a PPA. After
//! building and settling, for the site and for every host, energy, water and each carbon method
//! balance exactly (site = jobs + idle + unattributed), the jobs listed add up to the jobs' share,
//! and the site's energy and water are exactly the meters' deltas. Delivered late and out of
//! order, the same site gives exactly the same ledger.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use footprint_aggregator::AggregatorConfig;
use footprint_aggregator::config::{PlacementConfig, PpaConfig};
use footprint_aggregator::ledger::{self, FacilityWindow, Grouping, JobFilter, SeriesStep};
use footprint_aggregator::metrics::AggregatorMetrics;
use footprint_aggregator::store::StoreHandle;
use footprint_aggregator::tables::{self, LEDGER_FILE, schema};
use footprint_core::{Span, UnixNanos};
use footprint_proto::v1::{Allocation, Batch, Hello, Job, MeterInfo, MeterKind, Reading};
use proptest::prelude::*;

const SECOND: i64 = 1_000_000_000;
/// 2024-06-03T00:00:00Z.
const T0: i64 = 1_717_372_800 * SECOND;
const STEP_S: i64 = 60;
const STEPS: i64 = 120;

#[derive(Clone, Debug)]
struct HostPlan {
    outlet: bool,
    /// mW per GPU (2 GPUs), per package, and the unmetered remainder seen only by the outlet.
    gpu_mw: [u64; 2],
    package_mw: u64,
    unmetered_mw: u64,
    /// (job, gpus mask, first core, cores, start step, end step).
    jobs: Vec<(u32, u8, u32, u32, i64, i64)>,
}

fn host_plan() -> impl Strategy<Value = HostPlan> {
    (
        any::<bool>(),
        [0u64..700_000, 0u64..700_000],
        0u64..300_000,
        0u64..200_000,
        prop::collection::vec(
            (0u32..4, 0u8..4, 0u32..8, 0u32..8, 0i64..STEPS, 1i64..STEPS),
            0..4,
        ),
    )
        .prop_map(
            |(outlet, gpu_mw, package_mw, unmetered_mw, jobs)| HostPlan {
                outlet,
                gpu_mw,
                package_mw,
                unmetered_mw,
                jobs,
            },
        )
}

fn meter(id: &str, kind: MeterKind, device: &str, cpus: Vec<u32>) -> MeterInfo {
    MeterInfo {
        meter_id: id.into(),
        kind: kind as i32,
        device: device.into(),
        cpus,
        ..Default::default()
    }
}

fn reading(meter: &str, value: u64, at: i64) -> Reading {
    Reading {
        meter_id: meter.to_owned().into(),
        value,
        timestamp_ns: at,
        quality: 1,
        method: String::new(),
    }
}

/// A random site: what every test case builds a ledger of.
#[derive(Clone, Debug)]
struct SitePlan {
    hosts: Vec<HostPlan>,
    pue_permille: u64,
    water_ml_per_step: u64,
    intensity_hours: Vec<Option<u64>>,
    ppa_kw: f64,
    /// A PPA and a residual mix; without, market-based carbon is the grid average.
    contracts: bool,
    host_overhead: bool,
}

/// How the site's data reaches the aggregator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Delivery {
    /// In time order, each host's allocations with its first readings.
    InTime,
    /// Late and out of order: each host's odd steps first and its even steps after its windows
    /// were built (batches and readings out of order); the site meters' second hour after the
    /// site settled it without them (`max_wait_s = 0`); the allocations last of all. Readings are
    /// packed into chunks as soon as nothing needs their rows (`compact_after_s = 0`).
    Late,
}

fn site_plan() -> impl Strategy<Value = SitePlan> {
    (
        prop::collection::vec(host_plan(), 1..3),
        700u64..1_500,
        0u64..400,
        prop::collection::vec(prop::option::of(50u64..600), 3),
        0.0f64..20.0,
        prop::bool::ANY,
    )
        .prop_map(
            |(hosts, pue_permille, water_ml_per_step, intensity_hours, ppa_kw, host_overhead)| {
                SitePlan {
                    hosts,
                    pue_permille,
                    water_ml_per_step,
                    intensity_hours,
                    ppa_kw,
                    contracts: true,
                    host_overhead,
                }
            },
        )
}

/// Submits one batch and insists nothing in it is refused.
async fn submit(
    store: &StoreHandle,
    collector: i64,
    name: &str,
    seq: u64,
    readings: Vec<Reading>,
    allocations: Vec<Allocation>,
) {
    let outcome = store
        .submit(
            collector,
            Batch {
                collector_id: name.into(),
                seq,
                readings,
                allocations,
                compacted: false,
                meters: Vec::new(),
                spool_pending: 0,
            },
        )
        .await
        .unwrap()
        .await
        .unwrap()
        .unwrap();
    assert!(outcome.rejections.is_empty(), "{:?}", outcome.rejections);
    assert!(
        !outcome.duplicate,
        "seq {seq} of {name} taken for a duplicate"
    );
}

/// Builds the ledger of `plan` delivered as `delivery` in `dir`; returns the site's energy and
/// water as its meters measured them.
fn build_ledger(plan: &SitePlan, delivery: Delivery, dir: &std::path::Path) -> (u64, u64) {
    build_ledger_keeping(plan, delivery, dir, None)
}

/// [`build_ledger`] keeping window detail for `detail_days` (default: the config's default).
fn build_ledger_keeping(
    plan: &SitePlan,
    delivery: Delivery,
    dir: &std::path::Path,
    detail_days: Option<u32>,
) -> (u64, u64) {
    let intensity = dir.join("intensity.csv");
    let mut csv = String::from("datetime,zone,carbon_intensity_gco2_per_kwh\n");
    for (hour, value) in plan.intensity_hours.iter().enumerate() {
        if let Some(value) = value {
            let at = jiff_free_hour(hour as i64);
            csv.push_str(&format!("{at},Z,{value}\n"));
        }
    }
    std::fs::write(&intensity, csv).unwrap();
    let mut config = AggregatorConfig::with_data_dir(dir.join("ledger"));
    // One batch at a time, each awaited: there is never a second one to wait for.
    config.group_commit_wait_ms = 0;
    config.window_seconds = 60;
    config.carbon.zone = "Z".into();
    config.carbon.intensity_files = vec![intensity];
    if plan.contracts {
        config.carbon.residual_mix_g_per_kwh = Some(450.0);
        config.carbon.ppa = vec![PpaConfig {
            name: "p".into(),
            flat_kw: plan.ppa_kw,
            hourly_kwh_csv: None,
        }];
    }
    config.attribution.host_overhead_factor = if plan.host_overhead { 0.07 } else { 0.0 };
    config.facility.require_site_meter = true;
    if let Some(days) = detail_days {
        config.ledger.window_detail_days = days;
    }
    if delivery == Delivery::Late {
        config.facility.max_wait_s = 0;
        config.compact_after_s = 0;
    }
    config.placement = vec![PlacementConfig {
        host: "h0".into(),
        hall: "A".into(),
        rack: "A1".into(),
    }];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = StoreHandle::open(&config, Arc::new(AggregatorMetrics::default())).unwrap();
        let mut site_mj_per_step = 0u64;
        let mut late_allocations = Vec::new();
        for (index, host) in plan.hosts.iter().enumerate() {
            let name = format!("h{index}");
            let mut meters = vec![
                meter("gpu0", MeterKind::GpuEnergy, "gpu0", vec![]),
                meter("gpu1", MeterKind::GpuEnergy, "gpu1", vec![]),
                meter(
                    "package",
                    MeterKind::CpuPackageEnergy,
                    "package",
                    (0..8).collect(),
                ),
            ];
            if host.outlet {
                meters.push(meter("outlet", MeterKind::OutletEnergy, "outlet", vec![]));
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
            let components = host.gpu_mw[0] + host.gpu_mw[1] + host.package_mw;
            site_mj_per_step += (components + host.unmetered_mw) * STEP_S as u64;
            let allocations: Vec<Allocation> = host
                .jobs
                .iter()
                .map(|&(job, gpus, first, cores, start, length)| Allocation {
                    job: Some(Job {
                        id: format!("job{job}"),
                        ..Default::default()
                    }),
                    gpus: (0..2)
                        .filter(|g| gpus & (1 << g) != 0)
                        .map(|g| format!("gpu{g}"))
                        .collect(),
                    cpus: (first..(first + cores).min(8)).collect(),
                    start_ns: T0 + start * STEP_S * SECOND,
                    end_ns: T0 + (start + length) * STEP_S * SECOND,
                    mig: vec![],
                })
                .collect();
            let readings_at = |step: i64| {
                let at = T0 + step * STEP_S * SECOND;
                let elapsed = step as u64 * STEP_S as u64;
                let mut readings = vec![
                    reading("gpu0", host.gpu_mw[0] * elapsed, at),
                    reading("gpu1", host.gpu_mw[1] * elapsed, at),
                    reading("package", host.package_mw * elapsed, at),
                ];
                if host.outlet {
                    readings.push(reading(
                        "outlet",
                        (components + host.unmetered_mw) * elapsed,
                        at,
                    ));
                }
                readings
            };
            // In time: every step in order, the allocations with the first. Late: the odd steps,
            // then (after their windows were built) the even ones; the allocations come last.
            let rounds: Vec<Vec<i64>> = match delivery {
                Delivery::InTime => vec![(0..=STEPS).collect()],
                Delivery::Late => vec![
                    (1..=STEPS)
                        .step_by(2)
                        .chain(std::iter::once(STEPS))
                        .collect(),
                    (0..STEPS).step_by(2).collect(),
                ],
            };
            for (round, steps) in rounds.into_iter().enumerate() {
                if round == 1 {
                    store.build_windows().await.unwrap();
                }
                for step in steps {
                    let in_time = delivery == Delivery::InTime && step == 0;
                    let with = if in_time { allocations.clone() } else { vec![] };
                    submit(
                        &store,
                        accepted.collector,
                        &name,
                        step as u64 + 1,
                        readings_at(step),
                        with,
                    )
                    .await;
                }
            }
            if delivery == Delivery::Late {
                late_allocations.push((accepted.collector, name.clone(), allocations));
            }
        }
        let site_mj_per_step = site_mj_per_step * plan.pue_permille / 1_000;
        if delivery == Delivery::Late {
            // Everything built is packed (by this call, or already by the writer in its idle
            // time): the late allocations below rebuild from chunks.
            store.build_windows().await.unwrap();
            store.compact().await.unwrap();
            let ledger = schema::open_reader(&dir.join("ledger").join(LEDGER_FILE)).unwrap();
            let chunks: i64 = ledger
                .query_row("SELECT COUNT(*) FROM reading_chunks", [], |r| r.get(0))
                .unwrap();
            assert!(chunks > 0, "nothing was packed");
        }
        let accepted = store
            .hello(Hello {
                collector_id: "site".into(),
                host: "site".into(),
                software_version: "t".into(),
                meters: vec![
                    meter("energy", MeterKind::SiteEnergy, "site", vec![]),
                    meter("water", MeterKind::SiteWater, "site", vec![]),
                ],
            })
            .await
            .unwrap();
        let site_readings = |step: i64| {
            let at = T0 + step * STEP_S * SECOND;
            vec![
                reading("energy", site_mj_per_step * step as u64, at),
                reading("water", plan.water_ml_per_step * step as u64, at),
            ]
        };
        let first_hour = 3_600 / STEP_S;
        for step in 0..=STEPS {
            if delivery == Delivery::Late && step == first_hour + 1 {
                // The site meters fall silent: both hours settle, the second without them, and
                // the site readings so far are packed.
                store.build_windows().await.unwrap();
                store.compact().await.unwrap();
                for (collector, name, allocations) in &late_allocations {
                    submit(
                        &store,
                        *collector,
                        name,
                        STEPS as u64 + 2,
                        vec![],
                        allocations.clone(),
                    )
                    .await;
                }
            }
            submit(
                &store,
                accepted.collector,
                "site",
                step as u64 + 1,
                site_readings(step),
                vec![],
            )
            .await;
        }
        store.build_windows().await.unwrap();
        if delivery == Delivery::Late {
            store.compact().await.unwrap();
        }
        (
            site_mj_per_step * STEPS as u64,
            plan.water_ml_per_step * STEPS as u64,
        )
    })
}

/// What the ledger says, with the revision counts (which only late delivery has) left out.
#[derive(Debug, PartialEq)]
struct Figures {
    jobs: Vec<ledger::JobFootprint>,
    site: FacilityWindow,
    windows: Vec<FacilityWindow>,
    per_host: Vec<FacilityWindow>,
}

/// Checks that every quantity balances in the ledger at `dir` and returns its figures.
fn balanced_figures(
    dir: &std::path::Path,
    plan: &SitePlan,
    site_mj: u64,
    water_ml: u64,
) -> Result<(Figures, u64), TestCaseError> {
    balanced_figures_by(dir, plan, site_mj, water_ml, 600)
}

/// [`balanced_figures`] with the site's series in steps of `step_s` (whole hours where window
/// detail has aged out).
fn balanced_figures_by(
    dir: &std::path::Path,
    plan: &SitePlan,
    site_mj: u64,
    water_ml: u64,
    step_s: i64,
) -> Result<(Figures, u64), TestCaseError> {
    let connection = schema::open_reader(&dir.join("ledger").join(LEDGER_FILE)).unwrap();
    let settled = ledger::settled_span(&connection)
        .unwrap()
        .expect("two hours settle");
    prop_assert_eq!(
        settled,
        Span::new(UnixNanos(T0), UnixNanos(T0 + STEPS * STEP_S * SECOND))
    );
    let site = ledger::facility_totals(&connection, settled, SeriesStep::Total, Grouping::Site)
        .unwrap()
        .remove(0);
    prop_assert_eq!(site.energy_mj.site, site_mj as i64);
    prop_assert_eq!(site.water_ml.site, water_ml as i64);
    let jobs = ledger::list_jobs(&connection, &JobFilter::default()).unwrap();
    let windows = ledger::facility_totals(
        &connection,
        settled,
        SeriesStep::Every(step_s * SECOND),
        Grouping::Site,
    )
    .unwrap();
    let per_host =
        ledger::facility_totals(&connection, settled, SeriesStep::Total, Grouping::Host).unwrap();
    prop_assert_eq!(per_host.len(), plan.hosts.len());
    // h0 stands in hall A; any other host is unplaced: one or two halls.
    let per_hall =
        ledger::facility_totals(&connection, settled, SeriesStep::Total, Grouping::Hall).unwrap();
    prop_assert_eq!(per_hall.len(), plan.hosts.len());
    prop_assert_eq!(&per_hall[0].host, "A");
    for total in windows
        .iter()
        .chain(&per_host)
        .chain(&per_hall)
        .chain(std::iter::once(&site))
    {
        for (name, balance) in [
            ("energy", total.energy_mj),
            ("water", total.water_ml),
            ("location", total.co2e_location_mg),
            ("market", total.co2e_market_mg),
            ("embodied", total.co2e_embodied_mg),
        ] {
            prop_assert_eq!(balance.imbalance(), 0, "{} of {:?}", name, total);
        }
    }
    let listed =
        |figure: fn(&ledger::JobFootprint) -> u64| jobs.iter().map(figure).sum::<u64>() as i64;
    prop_assert_eq!(listed(|j| j.energy_mj), site.energy_mj.jobs);
    prop_assert_eq!(listed(|j| j.water_ml), site.water_ml.jobs);
    prop_assert_eq!(listed(|j| j.co2e_location_mg), site.co2e_location_mg.jobs);
    prop_assert_eq!(listed(|j| j.co2e_market_mg), site.co2e_market_mg.jobs);
    prop_assert_eq!(listed(|j| j.co2e_embodied_mg), site.co2e_embodied_mg.jobs);
    let hosts_sum: i64 = per_host.iter().map(|h| h.energy_mj.site).sum();
    prop_assert_eq!(
        hosts_sum + site.energy_mj.unattributed
            - per_host
                .iter()
                .map(|h| h.energy_mj.unattributed)
                .sum::<i64>(),
        site.energy_mj.site
    );
    let revised_hours = site.revised_hours;
    let unrevised = |mut window: FacilityWindow| {
        window.revised_windows = 0;
        window.revised_hours = 0;
        window
    };
    let figures = Figures {
        jobs: jobs
            .into_iter()
            .map(|job| ledger::JobFootprint {
                revised_windows: 0,
                ..job
            })
            .collect(),
        site: unrevised(site),
        windows: windows.into_iter().map(unrevised).collect(),
        per_host: per_host.into_iter().map(unrevised).collect(),
    };
    Ok((figures, revised_hours))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn every_quantity_balances_for_the_site_and_every_host(plan in site_plan()) {
        let dir = tempfile::tempdir().unwrap();
        let (site_mj, water_ml) = build_ledger(&plan, Delivery::InTime, dir.path());
        balanced_figures(dir.path(), &plan, site_mj, water_ml)?;
    }

    /// Late allocations, batches and readings out of order, and site meters that fell silent
    /// and came back give exactly the ledger that in-time delivery gives; the site hours
    /// settled without the meters are marked revised.
    #[test]
    fn late_and_out_of_order_data_give_the_same_ledger(plan in site_plan()) {
        let in_time = tempfile::tempdir().unwrap();
        let (site_mj, water_ml) = build_ledger(&plan, Delivery::InTime, in_time.path());
        let (expected, revised) = balanced_figures(in_time.path(), &plan, site_mj, water_ml)?;
        prop_assert_eq!(revised, 0);
        let late = tempfile::tempdir().unwrap();
        let measured = build_ledger(&plan, Delivery::Late, late.path());
        prop_assert_eq!(measured, (site_mj, water_ml));
        let (figures, revised) = balanced_figures(late.path(), &plan, site_mj, water_ml)?;
        prop_assert_eq!(figures, expected);
        prop_assert!(revised >= 1, "the hour settled without its site meters is not marked revised");
    }
}

/// Window rows left in the ledger at `dir`, and hours rolled up.
fn detail_and_rollups(dir: &std::path::Path) -> (i64, i64) {
    let connection = schema::open_reader(&dir.join("ledger").join(LEDGER_FILE)).unwrap();
    let count = |sql: &str| -> i64 { connection.query_row(sql, [], |r| r.get(0)).unwrap() };
    (
        count(
            "SELECT (SELECT COUNT(*) FROM window_jobs) + (SELECT COUNT(*) FROM window_hosts) + (SELECT COUNT(*) FROM site_windows)",
        ),
        count("SELECT COUNT(*) FROM rollup_site"),
    )
}

/// The roll-ups the site stage kept while settling are exactly what summing the window rows in
/// SQL (`tables::rollups::roll_up_hour`, as a migrated ledger is rolled up) gives.
fn rolled_up_as_sql_sums_the_windows(dir: &std::path::Path) -> Result<(), TestCaseError> {
    // Read-only, with empty TEMP tables shadowing the roll-ups for the SQL to write into.
    let connection = schema::open_reader(&dir.join("ledger").join(LEDGER_FILE)).unwrap();
    let tables = [
        "rollup_jobs",
        "rollup_hosts",
        "rollup_site",
        "rollup_jobs_days",
        "rollup_hosts_days",
    ];
    for table in tables {
        let sql: String = connection
            .query_row(
                "SELECT sql FROM main.sqlite_master WHERE name = ?1",
                [table],
                |r| r.get(0),
            )
            .unwrap();
        connection
            .execute_batch(&sql.replacen("CREATE TABLE", "CREATE TEMP TABLE", 1))
            .unwrap();
    }
    for hour in 0..2 {
        tables::rollups::roll_up_hour(&connection, T0 + hour * 3_600 * SECOND).unwrap();
    }
    let rows = |schema: &str, table: &str| -> Vec<Vec<rusqlite::types::Value>> {
        let mut statement = connection
            .prepare(&format!("SELECT * FROM {schema}.{table} ORDER BY 1, 2, 3"))
            .unwrap();
        let width = statement.column_count();
        let mut found = statement.query([]).unwrap();
        let mut rows = Vec::new();
        while let Some(row) = found.next().unwrap() {
            rows.push((0..width).map(|i| row.get(i).unwrap()).collect());
        }
        rows
    };
    for table in tables {
        let kept = rows("main", table);
        prop_assert!(
            !kept.is_empty() || table.contains("jobs"),
            "{} is empty",
            table
        );
        prop_assert_eq!(rows("temp", table), kept, "{}", table);
    }
    Ok(())
}

/// `footprint explain` of every job in each settled hour: rebuilt from the readings, its windows
/// sum exactly to the roll-up; an hour it held nothing in is refused by name.
fn explained_hours_match(dir: &std::path::Path, figures: &Figures) -> Result<(), TestCaseError> {
    let path = dir.join("ledger").join(LEDGER_FILE);
    for job in &figures.jobs {
        let mut explained = 0;
        for hour in 0..2 {
            let hour_ns = T0 + hour * 3_600 * SECOND;
            match ledger::explain::explain(&path, &job.id, hour_ns) {
                Ok(explanation) => {
                    prop_assert!(explanation.matches, "{:?}", explanation);
                    prop_assert!(!explanation.windows.is_empty());
                    explained += 1;
                }
                Err(error) => {
                    let text = error.to_string();
                    prop_assert!(
                        text.contains("job:") && text.contains("held nothing"),
                        "{}",
                        text
                    );
                }
            }
        }
        // A listed job held something in some settled hour.
        prop_assert!(explained > 0, "{} explained in no hour", job.id);
        // The hour after the last settled one is refused by name.
        let error = ledger::explain::explain(&path, &job.id, T0 + 2 * 3_600 * SECOND).unwrap_err();
        prop_assert!(error.to_string().contains("hour:"), "{}", error);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// With window detail aged out as soon as each hour settles, every quantity still balances
    /// and every figure is exactly what the window detail gave; delivered late and out of order
    /// (late data then reopens hours kept as roll-ups only, which are rebuilt from readings),
    /// the same.
    #[test]
    fn roll_ups_give_exactly_what_window_detail_gives(plan in site_plan()) {
        let detailed = tempfile::tempdir().unwrap();
        let (site_mj, water_ml) = build_ledger_keeping(&plan, Delivery::InTime, detailed.path(), Some(35));
        let (expected, _) = balanced_figures_by(detailed.path(), &plan, site_mj, water_ml, 3_600)?;
        let (rows, hours) = detail_and_rollups(detailed.path());
        prop_assert!(rows > 0 && hours == 2, "{} window rows, {} hours rolled up", rows, hours);
        explained_hours_match(detailed.path(), &expected)?;
        rolled_up_as_sql_sums_the_windows(detailed.path())?;
        for delivery in [Delivery::InTime, Delivery::Late] {
            let aged = tempfile::tempdir().unwrap();
            let measured = build_ledger_keeping(&plan, delivery, aged.path(), Some(0));
            prop_assert_eq!(measured, (site_mj, water_ml));
            prop_assert_eq!(detail_and_rollups(aged.path()), (0, 2), "{:?}", delivery);
            let (figures, _) = balanced_figures_by(aged.path(), &plan, site_mj, water_ml, 3_600)?;
            prop_assert_eq!(&figures, &expected, "{:?}", delivery);
            explained_hours_match(aged.path(), &expected)?;
            let holds_in_first_hour = |&(_, gpus, first, cores, start, _): &(u32, u8, u32, u32, i64, i64)| {
                start < 3_600 / STEP_S && (gpus & 3 != 0 || (cores > 0 && first < 8))
            };
            if delivery == Delivery::Late && plan.hosts.iter().any(|h| h.jobs.iter().any(holds_in_first_hour)) {
                // The late allocations changed the first hour after it had aged: rebuilt from
                // readings, and said so.
                let connection = schema::open_reader(&aged.path().join("ledger").join(LEDGER_FILE)).unwrap();
                let said: i64 = connection
                    .query_row("SELECT COUNT(*) FROM window_revisions WHERE reason LIKE '%aged out%'", [], |r| r.get(0))
                    .unwrap();
                prop_assert!(said > 0, "no revision says the hour was rebuilt from readings");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    /// With no contracts (no PPA, no guarantees of origin, no residual mix) market-based carbon
    /// falls back to the grid average: it equals location-based exactly, hour by hour and job by
    /// job, since both are priced once per hour and shared the same way.
    #[test]
    fn with_no_contracts_market_based_equals_location_based(plan in site_plan()) {
        let plan = SitePlan { contracts: false, ..plan };
        let dir = tempfile::tempdir().unwrap();
        build_ledger(&plan, Delivery::InTime, dir.path());
        let connection = schema::open_reader(&dir.path().join("ledger").join(LEDGER_FILE)).unwrap();
        let settled = ledger::settled_span(&connection).unwrap().expect("two hours settle");
        let hours = ledger::facility_totals(&connection, settled, SeriesStep::Every(3_600 * SECOND), Grouping::Site).unwrap();
        prop_assert_eq!(hours.len(), 2);
        for hour in &hours {
            prop_assert_eq!(hour.co2e_market_mg, hour.co2e_location_mg);
        }
        for job in ledger::list_jobs(&connection, &JobFilter::default()).unwrap() {
            prop_assert_eq!(job.co2e_market_mg, job.co2e_location_mg, "{}", job.id);
        }
    }
}

/// RFC 3339 of hour `hour` after T0 (T0 is midnight, so the hour is the only field to write).
fn jiff_free_hour(hour: i64) -> String {
    format!("2024-06-03T{hour:02}:00:00Z")
}
