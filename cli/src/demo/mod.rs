//! `footprint demo`: a whole simulated site on loopback, on a simulated clock.
//!
//! Starts an aggregator (ledger in DATA_DIR) and one collector per simulated host plus the facility
//! meter's, all in this process but talking real gRPC over 127.0.0.1. When the simulated span is
//! over and every batch is acknowledged, it asks the aggregator's `Query` API for the facility
//! total and the jobs, prints the per-job table and writes DATA_DIR/summary.json.

pub mod site;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use footprint_aggregator::config::{PlacementConfig, PpaConfig};
use footprint_aggregator::{AggregatorConfig, server};
use footprint_collector::config::SourceConfig;
use footprint_collector::daemon::{self, CollectorStats};
use footprint_core::UnixNanos;
use footprint_core::time::{format_rfc3339, parse_rfc3339};
use footprint_exporters::report::disclosure::{DataCentreType, PowerBasis, Redundancy, Structure};
use footprint_exporters::report::signing;
use footprint_exporters::report::{DisclosureConfig, Format};
use footprint_exporters::summary::Summary;
use footprint_exporters::{chart, table};
use footprint_proto::v1::query_client::QueryClient;
use footprint_proto::v1::{FacilityTotalsRequest, ListJobsRequest};
use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

use site::SitePlan;

/// What `footprint demo` was asked to do.
#[derive(Clone, Debug, clap::Args)]
pub struct DemoOptions {
    /// Where the ledger, the spools, the generated collector configs, summary.json and the chart
    /// go. Default: a new temporary directory (kept, and printed).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Simulated hours.
    #[arg(long, default_value_t = 24)]
    pub hours: u32,
    /// Seed of the site's jobs; the same seed gives the same site.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Simulated seconds per real second (1440: a day in a minute).
    #[arg(long, default_value_t = 1440.0)]
    pub speed: f64,
    /// Simulated hosts.
    #[arg(long, default_value_t = 4)]
    pub hosts: u32,
    /// GPUs per host (even).
    #[arg(long, default_value_t = 8)]
    pub gpus_per_host: u32,
    /// Start of the simulated span (RFC 3339).
    #[arg(long, default_value = "2023-11-06T00:00:00Z")]
    pub start: String,
    /// Days of window detail the ledger keeps behind the settled hours (`ledger.window_detail_days`);
    /// 0 keeps only hourly roll-ups of every settled hour.
    #[arg(long, default_value_t = 35)]
    pub window_detail_days: u32,
    /// Where the web page, `/metrics` and the HTTP APIs are served (loopback, any free port,
    /// unless given).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub listen: std::net::SocketAddr,
    /// End when the simulated time is over, instead of serving the page until Ctrl-C.
    #[arg(long)]
    pub exit: bool,
}

/// The real German grid intensity of the demo's default fortnight (`cli/data/README.md`).
const DEMO_INTENSITY_CSV: &str = include_str!("../../data/grid-intensity-de-2023-11.csv");
/// Peak delivery of the demo site's solar PPA, kW.
const DEMO_SOLAR_PPA_PEAK_KW: f64 = 9.0;
/// Constant delivery of the demo site's wind PPA, kW (a flat contract shape).
const DEMO_WIND_PPA_KW: f64 = 2.0;

/// The demo aggregator: loopback on free ports; German grid intensity; a flat wind PPA and a solar
/// PPA (hourly profile written next to the config), 15 MWh a year of guarantees of origin and an
/// illustrative residual mix (600 g/kWh, not an AIB figure); an 8 % host overhead for hosts
/// without an outlet meter.
fn demo_aggregator_config(
    data_dir: &std::path::Path,
    config_dir: &std::path::Path,
    start: UnixNanos,
    hours: u32,
    hosts: u32,
) -> anyhow::Result<AggregatorConfig> {
    let intensity = config_dir.join("grid-intensity-de-2023-11.csv");
    std::fs::write(&intensity, DEMO_INTENSITY_CSV)?;
    let ppa = config_dir.join("ppa-solar.csv");
    std::fs::write(&ppa, solar_profile_csv(start, hours))?;
    let mut config = AggregatorConfig::with_data_dir(data_dir.to_path_buf());
    config.grpc_listen = "127.0.0.1:0".parse()?;
    config.http_listen = "127.0.0.1:0".parse()?;
    config.attribution.host_overhead_factor = 0.08;
    config.facility.require_site_meter = true;
    // Two hosts to a rack, all in one hall.
    config.placement = (0..hosts)
        .map(|index| PlacementConfig {
            host: SitePlan::host_name(index),
            hall: "hall-1".to_owned(),
            rack: format!("rack-{:02}", index / 2 + 1),
        })
        .collect();
    config.carbon.zone = "DE".to_owned();
    config.carbon.intensity_files = vec![intensity];
    config.carbon.residual_mix_g_per_kwh = Some(600.0);
    config.carbon.residual_mix_source =
        "illustrative for the demo, not a published residual mix".to_owned();
    config.carbon.residual_mix_year = Some(2023);
    // Certificates accrue from 1 January: 5 kWh a year leaves about 4 kWh in hand in November,
    // which the first hours use up before the residual mix prices the rest.
    config.carbon.guarantees_of_origin_mwh_per_year = 0.005;
    config.disclosure = demo_disclosure(data_dir)?;
    config.carbon.ppa = vec![
        PpaConfig {
            name: "demo wind PPA".to_owned(),
            flat_kw: DEMO_WIND_PPA_KW,
            hourly_kwh_csv: None,
        },
        PpaConfig {
            name: "demo solar PPA".to_owned(),
            flat_kw: 0.0,
            hourly_kwh_csv: Some(ppa),
        },
    ];
    Ok(config)
}

/// The facility's next 48 hours from the end of the run, written as forecast.json,
/// forecast.csv and forecast.svg; the line to print, saying why where the run is too short to forecast from.
fn write_forecast(ledger_path: &Path, data_dir: &Path) -> String {
    use footprint_exporters::forecast::output::{self, Format, OpenAdrIds};
    let request = footprint_aggregator::forecast::ForecastRequest::default();
    let forecast = match footprint_aggregator::forecast::make_forecast(ledger_path, &request) {
        Ok(forecast) => forecast,
        Err(error) => {
            let error = match error {
                footprint_aggregator::Error::BadRequest(why) => why,
                other => other.to_string(),
            };
            return format!(
                "Load forecast: none ({error}); a run of --hours 100 or more gives the next 48 h \
                 with P10/P50/P90, and of 240 or more the model's backtest beside the baselines"
            );
        }
    };
    for (format, name) in [
        (Format::Json, "forecast.json"),
        (Format::Csv, "forecast.csv"),
        (Format::Svg, "forecast.svg"),
    ] {
        let bytes = output::render(&forecast, format, &OpenAdrIds::default());
        if let Err(error) = std::fs::write(data_dir.join(name), bytes) {
            return format!("Load forecast: writing {name}: {error}");
        }
    }
    let peak = forecast
        .points
        .iter()
        .max_by(|a, b| a.p90_kw.total_cmp(&b.p90_kw));
    let mean_p50 =
        forecast.points.iter().map(|p| p.p50_kw).sum::<f64>() / forecast.points.len().max(1) as f64;
    let backtest = forecast.backtest.as_ref().map_or_else(
        || {
            "no backtest: that needs 240 h, a week and a day before an origin and 48 h after"
                .to_owned()
        },
        |b| {
            format!(
                "backtest pinball {:.2}× persistence's, P10–P90 coverage {:.0} %",
                b.pinball_ratio_persistence,
                b.coverage_p10_p90 * 100.0
            )
        },
    );
    format!(
        "Load forecast from {}: mean P50 {mean_p50:.2} kW, P90 peak {} ({backtest}): {}, {} and \
         the chart {}",
        forecast.origin,
        peak.map_or_else(String::new, |p| format!(
            "{:.2} kW at {}",
            p.p90_kw, p.timestamp
        )),
        data_dir.join("forecast.json").display(),
        data_dir.join("forecast.csv").display(),
        data_dir.join("forecast.svg").display()
    )
}

/// The demo site's description for its disclosure report: illustrative figures for a small
/// enterprise data centre, some fields left empty with a stated reason (as a first reporting
/// period may), and a signing key made in the data directory.
fn demo_disclosure(data_dir: &std::path::Path) -> anyhow::Result<DisclosureConfig> {
    let key = data_dir.join("report-signing.key");
    signing::generate_key_pair(&key, &crate::report::public_path(&key))?;
    Ok(DisclosureConfig {
        signing_key: Some(key),
        name: Some("Footprint demo site (simulated)".into()),
        owner_name: Some("Example Compute GmbH (illustrative)".into()),
        owner_contact: Some("energy@example.invalid".into()),
        operator_name: Some("Example Compute GmbH (illustrative)".into()),
        operator_contact: Some("noc@example.invalid".into()),
        location_lau: Some("DE_06412000".into()),
        data_centre_type: Some(DataCentreType::Enterprise),
        structure: Some(Structure::Single),
        in_operation_since: Some("2021-04".into()),
        redundancy: Redundancy {
            electrical_high_voltage: Some("N".into()),
            electrical_low_voltage: Some("2N".into()),
            electrical_rack: Some("2N".into()),
            cooling_room: Some("N+1".into()),
            cooling_rack: Some("N".into()),
        },
        installed_it_power_kw: Some(40.0),
        installed_it_power_basis: Some(PowerBasis::Rated),
        floor_area_m2: Some(120.0),
        computer_room_area_m2: Some(60.0),
        grid_functions: Some(Vec::new()),
        water_category: Some(2),
        it_intake_air_set_point_c: Some(24.0),
        refrigerants: Some(vec!["R-1234ze(E)".into()]),
        reasons: [
            (
                "cooling_degree_days",
                "no weather station on the simulated site",
            ),
            (
                "waste_heat_reused_kwh",
                "no heat is reused: there is no heat meter",
            ),
        ]
        .into_iter()
        .map(|(key, reason)| (key.to_owned(), reason.to_owned()))
        .collect(),
        ..DisclosureConfig::default()
    })
}

/// A clear-sky solar shape over the demo's hours (sunrise 07:00, sunset 16:00 UTC in a German
/// November), `datetime,kwh` per hour.
fn solar_profile_csv(start: UnixNanos, hours: u32) -> String {
    let hour_ns = footprint_core::units::NANOS_PER_HOUR;
    let first = start.0.div_euclid(hour_ns) * hour_ns;
    let mut csv = String::from("datetime,kwh\n");
    for index in 0..=i64::from(hours) {
        let at = first + index * hour_ns;
        let hour_of_day = at.rem_euclid(24 * hour_ns) / hour_ns;
        let daylight = (hour_of_day as f64 + 0.5 - 7.0) / 9.0;
        let kwh = if (0.0..=1.0).contains(&daylight) {
            DEMO_SOLAR_PPA_PEAK_KW * (std::f64::consts::PI * daylight).sin()
        } else {
            0.0
        };
        csv.push_str(&format!("{},{kwh:.3}\n", format_rfc3339(UnixNanos(at))));
    }
    csv
}

pub async fn run(options: DemoOptions) -> anyhow::Result<()> {
    if options.hours == 0
        || options.hosts == 0
        || options.gpus_per_host < 2
        || !options.gpus_per_host.is_multiple_of(2)
    {
        bail!("--hours and --hosts must be above 0, --gpus-per-host even and at least 2");
    }
    let data_dir = match &options.data_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            if dir.join(footprint_aggregator::tables::LEDGER_FILE).exists() {
                bail!(
                    "{} already holds a ledger; give the demo an empty or new directory",
                    dir.display()
                );
            }
            dir.clone()
        }
        None => tempfile::Builder::new()
            .prefix("footprint-demo-")
            .tempdir()?
            .keep(),
    };
    println!("Footprint demo: data directory {}", data_dir.display());
    let started = Instant::now();

    let config_dir = data_dir.join("config");
    std::fs::create_dir_all(&config_dir)?;
    let start = parse_rfc3339(&options.start).map_err(anyhow::Error::msg)?;
    let mut config =
        demo_aggregator_config(&data_dir, &config_dir, start, options.hours, options.hosts)?;
    config.ledger.window_detail_days = options.window_detail_days;
    config.http_listen = options.listen;
    // Asked for beyond loopback on the command line: accepted, and warned about at start.
    config.insecure = !options.listen.ip().is_loopback();
    std::fs::write(
        config_dir.join("aggregator.toml"),
        toml::to_string(&config)?,
    )?;
    let aggregator = server::start(&config)
        .await
        .context("starting the aggregator")?;
    let endpoint = format!("http://{}", aggregator.grpc_addr);
    let page = format!("http://{}/", aggregator.http_addr);
    println!("Live page: {page} (also /metrics and /api/v1/…)");

    let plan = SitePlan {
        hosts: options.hosts,
        gpus_per_host: options.gpus_per_host,
        start,
        hours: options.hours,
        seed: options.seed,
        speed: options.speed,
        sample_interval_ms: 5_000,
        samples_per_batch: 12,
        spool_root: Some(data_dir.join("spool")),
    };
    let collectors = plan.collectors(&endpoint);
    for (name, collector) in &collectors {
        std::fs::write(
            config_dir.join(format!("{name}.toml")),
            toml::to_string(collector)?,
        )?;
    }
    let job_count = collectors
        .iter()
        .flat_map(|(_, c)| &c.sources)
        .filter_map(|source| match source {
            SourceConfig::Replay(replay) => Some(replay.jobs.iter().map(|j| j.id.as_str())),
            _ => None,
        })
        .flatten()
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    println!(
        "Simulating {} h from {} at {}x: {} hosts x {} GPUs, {} jobs, one facility meter; aggregator on {}",
        plan.hours,
        format_rfc3339(plan.start),
        plan.speed,
        plan.hosts,
        plan.gpus_per_host,
        job_count,
        aggregator.grpc_addr
    );

    let shutdown = CancellationToken::new();
    let mut runs = Vec::new();
    let mut stats = Vec::new();
    for (name, collector) in collectors {
        let collector_stats = Arc::new(CollectorStats::default());
        stats.push(Arc::clone(&collector_stats));
        let token = shutdown.clone();
        runs.push((
            name,
            tokio::spawn(daemon::run(collector, token, collector_stats)),
        ));
    }

    let span_s = u64::from(plan.hours) * 3_600;
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::new(span_s)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:36} {percent:>3}% {msg}")?
            .progress_chars("=> "),
    );
    let mut last_reported_decile = 0;
    let interrupted = loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
            () = crate::logging::stop_signal() => break true,
        }
        let slowest = stats
            .iter()
            .map(|s| s.last_tick_ns.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0);
        let done_s = u64::try_from((slowest - plan.start.0).max(0) / 1_000_000_000)
            .unwrap_or(0)
            .min(span_s);
        let readings: u64 = stats
            .iter()
            .map(|s| s.readings_sampled.load(Ordering::Relaxed))
            .sum();
        let per_second = readings as f64 / started.elapsed().as_secs_f64().max(1e-3);
        let message = format!(
            "{} · {readings} readings · {per_second:.0}/s",
            format_rfc3339(UnixNanos(slowest.max(plan.start.0)))
        );
        bar.set_position(done_s);
        bar.set_message(message.clone());
        let decile = done_s * 10 / span_s.max(1);
        if bar.is_hidden() && decile > last_reported_decile {
            last_reported_decile = decile;
            eprintln!("  {:>3}% {message}", decile * 10);
        }
        if runs.iter().all(|(_, handle)| handle.is_finished()) {
            break false;
        }
    };
    if interrupted {
        shutdown.cancel();
        bar.abandon_with_message("interrupted; flushing what was read");
    } else {
        bar.finish_and_clear();
    }
    for (name, handle) in runs {
        handle
            .await
            .context("collector task")?
            .with_context(|| format!("collector {name}"))?;
    }
    let readings: u64 = stats
        .iter()
        .map(|s| s.readings_sampled.load(Ordering::Relaxed))
        .sum();
    aggregator
        .store
        .build_windows()
        .await
        .context("building the last windows")?;

    let mut query = QueryClient::connect(endpoint.clone()).await?;
    let facility = query
        .facility_totals(FacilityTotalsRequest {
            from_ns: plan.start.0,
            to_ns: plan.end().0,
            step_s: 0,
            step: String::new(),
            group_by: String::new(),
        })
        .await?
        .into_inner()
        .windows
        .into_iter()
        .next()
        .context("the aggregator has no settled facility total")?;
    let jobs = query
        .list_jobs(ListJobsRequest {
            from_ns: facility.start_ns,
            to_ns: facility.end_ns,
            ..ListJobsRequest::default()
        })
        .await?
        .into_inner()
        .jobs;
    let summary = Summary::build(&facility, &jobs)?;
    std::fs::write(data_dir.join("summary.json"), summary.to_json()?)?;
    let hourly = query
        .facility_totals(FacilityTotalsRequest {
            from_ns: facility.start_ns,
            to_ns: facility.end_ns,
            step_s: 3_600,
            step: String::new(),
            group_by: String::new(),
        })
        .await?
        .into_inner()
        .windows;
    let title = format!(
        "Simulated site, {} h from {}: power by use",
        plan.hours,
        format_rfc3339(plan.start)
    );
    std::fs::write(
        data_dir.join("site-power.svg"),
        chart::facility_power_svg(&hourly, &title),
    )?;
    let ledger_path = data_dir.join(footprint_aggregator::tables::LEDGER_FILE);
    let report = footprint_aggregator::report::make_report(
        &ledger_path,
        &footprint_aggregator::report::ReportRequest {
            from_ns: facility.start_ns,
            to_ns: facility.end_ns,
            ..Default::default()
        },
    )
    .context("making the disclosure report")?;
    for (format, name) in [(Format::Json, "report.json"), (Format::Html, "report.html")] {
        std::fs::write(
            data_dir.join(name),
            footprint_aggregator::report::render(&report, format)?,
        )?;
    }
    let forecast = write_forecast(&ledger_path, &data_dir);
    let wall = started.elapsed();

    println!();
    print!("{}", table::render_summary(&summary));
    println!();
    println!(
        "Conservation: jobs + idle + unattributed - measured = {} mJ (measured: {})",
        summary.imbalance_mj(),
        summary.site.measured_method
    );
    println!(
        "{readings} readings in {:.1} s ({:.0} readings/s); summary: {}; chart: {}",
        wall.as_secs_f64(),
        readings as f64 / wall.as_secs_f64().max(1e-3),
        data_dir.join("summary.json").display(),
        data_dir.join("site-power.svg").display()
    );
    if let Some(largest) = jobs.iter().max_by_key(|job| job.energy_mj) {
        let hour = largest.first_ns.div_euclid(3_600_000_000_000) * 3_600_000_000_000;
        println!(
            "The books: footprint ledger stats --data-dir {dir}; one job's hour rebuilt from the readings: footprint explain --data-dir {dir} --job {} --hour {}",
            largest.job.as_ref().map_or("", |job| job.id.as_str()),
            format_rfc3339(UnixNanos(hour)),
            dir = data_dir.display()
        );
    }
    println!(
        "Disclosure report ({}, signed by key {}): {} and {}; check it: footprint report verify {} --data-dir {}",
        report.report.period.status,
        report
            .signature
            .as_ref()
            .map_or("none", |s| s.key_id.as_str()),
        data_dir.join("report.html").display(),
        data_dir.join("report.json").display(),
        data_dir.join("report.json").display(),
        data_dir.display()
    );
    println!("{forecast}");
    let imbalance = summary.imbalance();
    if !options.exit && !interrupted {
        println!("The page, /metrics and the APIs: {page} (Ctrl-C ends the demo)");
        crate::logging::stop_signal().await;
    }
    aggregator.stop().await?;
    if imbalance.iter().any(|off| *off != 0) {
        bail!(
            "the books do not balance: {imbalance:?} (energy mJ, water mL, carbon mg location / market / embodied)"
        );
    }
    Ok(())
}
