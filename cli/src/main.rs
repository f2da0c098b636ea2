//! `footprint`: the demo, the ledger's jobs and totals, the disclosure report, and config checks.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use footprint_aggregator::AggregatorConfig;
use footprint_aggregator::ledger;
use footprint_aggregator::query::LedgerReader;
use footprint_collector::config::CollectorConfig;
use footprint_core::carbon::HourConvention;
use footprint_core::config::ConfigFile;
use footprint_exporters::intensity::IntensityLine;
use footprint_exporters::summary::{JobLine, TotalsLine};
use footprint_exporters::table;
use footprint_proto::v1 as pb;

mod access;
mod books;
mod certs;
mod config_docs;
mod demo;
mod export;
mod forecast;
mod grid;
mod loadgen;
mod logging;
mod report;

/// Footprint measures what AI work costs the physical world — energy per job, conserved to the
/// millijoule — and proves it.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs a whole simulated site on loopback (aggregator, one collector per host, a facility
    /// meter) on a simulated clock, then prints each job's energy and writes DATA_DIR/summary.json.
    Demo(demo::DemoOptions),
    /// Load generator: many simulated collectors (the real collector code, synthetic meters, wall
    /// clock) streaming to an aggregator; prints durable readings/s, ack latency, CPU and memory.
    Loadgen(loadgen::LoadOptions),
    /// Lists jobs with their energy, water and carbon, from a ledger directory or a running
    /// aggregator.
    Jobs {
        #[command(flatten)]
        source: LedgerSource,
        #[command(flatten)]
        filter: JobFilterArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The site's (or each host's) energy, water and carbon, each balanced: site = jobs + idle +
    /// unattributed, with PUE, WUE and hourly CFE.
    Totals {
        #[command(flatten)]
        source: LedgerSource,
        /// Start (RFC 3339); default: the first settled hour.
        #[arg(long)]
        from: Option<String>,
        /// End (RFC 3339, exclusive); default: the last settled hour.
        #[arg(long)]
        to: Option<String>,
        /// Step of the series: `hour`, `day`, `month` (UTC calendar months) or a number of
        /// seconds; default: one total.
        #[arg(long)]
        step: Option<String>,
        /// One series per `host`, `rack` or `hall` instead of one for the site.
        #[arg(long, value_parser = ["site", "hall", "rack", "host"])]
        group_by: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Shows one job's footprint.
    Job {
        /// The job's id.
        id: String,
        #[command(flatten)]
        source: LedgerSource,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Imports a grid carbon-intensity file into a ledger (CSV in any supported layout, WattTime v3
    /// or Electricity Maps JSON); hours already there are replaced. Hours are priced when they
    /// settle, so import before then: an hour settled without its intensity keeps the gap rule's
    /// value, flagged.
    ImportIntensity {
        /// The aggregator's data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// The feed file.
        file: PathBuf,
        /// Which hour a timestamp names: `starting` or `ending` (EIA's own files). Needed for a
        /// layout that does not say (the EIA-930 re-export); others default to their own.
        #[arg(long, value_parser = ["starting", "ending"])]
        hour_convention: Option<String>,
    },
    /// A zone's grid intensity hour by hour, as the ledger prices it: the figure, its quality,
    /// how it was obtained (the feed's row, interpolated, held) and the feed it came from (file,
    /// SHA-256, layout, hour convention); for settled hours, what their carbon was priced with.
    Intensity {
        #[command(flatten)]
        source: LedgerSource,
        /// The grid zone, as the feeds name it.
        #[arg(long)]
        zone: String,
        /// The first hour (RFC 3339).
        #[arg(long)]
        from: String,
        /// The end (RFC 3339, exclusive).
        #[arg(long)]
        to: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One job's settled hour rebuilt from the stored readings, window by window, beside the
    /// hour's roll-up in the ledger: they agree exactly, whether the window detail is still kept
    /// or has aged out. Exits non-zero if they do not.
    Explain {
        /// The aggregator's data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// The job's id.
        #[arg(long)]
        job: String,
        /// The hour's start (RFC 3339), e.g. 2023-11-06T10:00:00Z.
        #[arg(long)]
        hour: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The disclosure report (EU data-centre KPIs, dual carbon, per-job annex, data quality),
    /// signed and re-derivable: `footprint report --data-dir D --out report.html`, and
    /// `footprint report verify FILE --data-dir D`.
    Report(report::ReportArgs),
    /// The facility's draw over the next 48 hours at 15-minute steps with P10/P50/P90, from a
    /// ledger (`footprint forecast --data-dir D`), and the model's backtest on any series
    /// (`footprint forecast backtest --input CSV …`).
    Forecast(forecast::ForecastArgs),
    /// The grid signal (`footprint grid signal`) and a wait for it (`footprint grid wait`), for
    /// batch scripts and init containers.
    #[command(subcommand)]
    Grid(grid::GridCommand),
    /// Makes an Ed25519 key pair for signing reports.
    Keygen(report::KeygenArgs),
    /// Looks into the ledger itself.
    #[command(subcommand)]
    Ledger(books::LedgerCommand),
    /// Writes the ledger's history for other tools: `footprint export parquet --data-dir D --out DIR`.
    #[command(subcommand)]
    Export(export::ExportCommand),
    /// A small CA and the certificates for mutual TLS (`footprint certs init --hosts … --out
    /// DIR`), and more from it later (`footprint certs issue`).
    #[command(subcommand)]
    Certs(certs::CertsCommand),
    /// Bearer tokens for the aggregator's HTTP API and Query service.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Writes the reference of every config key (docs/configuration.md), generated from the
    /// config types.
    ConfigDocs {
        /// Where to write it; default: standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Loads a config file and reports every problem with its key path.
    CheckConfig {
        /// An aggregator config.
        #[arg(long, value_name = "FILE")]
        aggregator: Option<PathBuf>,
        /// A collector config.
        #[arg(long, value_name = "FILE")]
        collector: Option<PathBuf>,
        /// An aggregator's web config (HTTP TLS and bearer tokens, docs/SECURITY.md); the files
        /// it names are loaded when the aggregator config that names it is checked.
        #[arg(long, value_name = "FILE")]
        web_config: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Makes a new random token and prints the web-config entry (its SHA-256 and scopes) that
    /// admits it.
    New(access::TokenArgs),
}

/// Which jobs to list.
#[derive(Debug, Default, clap::Args)]
struct JobFilterArgs {
    /// Only this user's jobs.
    #[arg(long)]
    user: Option<String>,
    /// Only this project's jobs.
    #[arg(long)]
    project: Option<String>,
    /// Only jobs of this model.
    #[arg(long)]
    model: Option<String>,
    /// Only jobs of this kind: training, inference or other.
    #[arg(long, value_parser = ["training", "inference", "other"])]
    kind: Option<String>,
    /// Only jobs active at or after this time (RFC 3339).
    #[arg(long)]
    from: Option<String>,
    /// Only jobs active before this time (RFC 3339).
    #[arg(long)]
    to: Option<String>,
}

fn time_arg(name: &str, value: Option<&String>) -> anyhow::Result<i64> {
    value.map_or(Ok(0), |text| {
        footprint_core::time::parse_rfc3339(text)
            .map(|at| at.0)
            .map_err(|e| anyhow::anyhow!("--{name}: {e}"))
    })
}

impl JobFilterArgs {
    fn request(&self) -> anyhow::Result<pb::ListJobsRequest> {
        Ok(pb::ListJobsRequest {
            from_ns: time_arg("from", self.from.as_ref())?,
            to_ns: time_arg("to", self.to.as_ref())?,
            user: self.user.clone().unwrap_or_default(),
            project: self.project.clone().unwrap_or_default(),
            model: self.model.clone().unwrap_or_default(),
            kind: self.kind.clone().unwrap_or_default(),
        })
    }
}

/// `--step`: `hour`, `day`, `month` (calendar, UTC) or seconds, as the request's `step_s` and
/// `step`.
fn step_of(step: Option<&String>) -> anyhow::Result<(u64, String)> {
    match step.map(String::as_str) {
        None => Ok((0, String::new())),
        Some("hour") => Ok((3_600, String::new())),
        Some("day") => Ok((86_400, String::new())),
        Some("month") => Ok((0, "month".to_owned())),
        Some(other) => other
            .parse()
            .ok()
            .filter(|s| *s > 0)
            .map(|s| (s, String::new()))
            .ok_or_else(|| {
                anyhow::anyhow!("--step: {other:?} is not hour, day, month or a number of seconds")
            }),
    }
}

/// Where to read the ledger from.
#[derive(Debug, clap::Args)]
struct LedgerSource {
    /// The aggregator's data directory (holding footprint.sqlite), e.g. a demo's DATA_DIR.
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "server",
        conflicts_with = "server"
    )]
    data_dir: Option<PathBuf>,
    /// A running aggregator's gRPC endpoint, e.g. http://127.0.0.1:7411.
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    #[command(flatten)]
    connect: access::ConnectArgs,
}

async fn fetch_jobs(
    source: &LedgerSource,
    only: Option<&str>,
    filter: pb::ListJobsRequest,
) -> anyhow::Result<Vec<pb::JobFootprint>> {
    if let Some(server) = &source.server {
        let mut client = access::query_client(server, &source.connect).await?;
        return Ok(match only {
            Some(id) => vec![
                client
                    .get_job(pb::GetJobRequest { id: id.to_owned() })
                    .await?
                    .into_inner(),
            ],
            None => client.list_jobs(filter).await?.into_inner().jobs,
        });
    }
    let reader = LedgerReader::for_data_dir(source.data_dir()?)?;
    let jobs = match only {
        Some(id) => {
            let id = id.to_owned();
            vec![reader.with(move |c| ledger::get_job(c, &id)).await?]
        }
        None => {
            let filter = ledger::JobFilter::from(filter);
            reader.with(move |c| ledger::list_jobs(c, &filter)).await?
        }
    };
    Ok(jobs.into_iter().map(Into::into).collect())
}

async fn fetch_totals(
    source: &LedgerSource,
    request: pb::FacilityTotalsRequest,
) -> anyhow::Result<Vec<pb::FacilityWindow>> {
    if let Some(server) = &source.server {
        let mut client = access::query_client(server, &source.connect).await?;
        return Ok(client.facility_totals(request).await?.into_inner().windows);
    }
    let reader = LedgerReader::for_data_dir(source.data_dir()?)?;
    let step = ledger::SeriesStep::parse(&request.step, request.step_s)?;
    let windows = reader
        .facility(request.from_ns, request.to_ns, step, &request.group_by)
        .await?;
    Ok(windows.into_iter().map(Into::into).collect())
}

async fn fetch_intensity(
    source: &LedgerSource,
    request: pb::IntensityRequest,
) -> anyhow::Result<Vec<pb::IntensityHour>> {
    if let Some(server) = &source.server {
        let mut client = access::query_client(server, &source.connect).await?;
        return Ok(client.intensity(request).await?.into_inner().hours);
    }
    let reader = LedgerReader::for_data_dir(source.data_dir()?)?;
    let hours = reader
        .intensity(request.zone, request.from_ns, request.to_ns)
        .await?;
    Ok(hours.into_iter().map(Into::into).collect())
}

/// The site over `[from_ns, to_ns)` (0: unbounded) as far as its hours are settled, if any are.
async fn settled_site(
    source: &LedgerSource,
    from_ns: i64,
    to_ns: i64,
) -> anyhow::Result<Option<pb::FacilityWindow>> {
    let request = pb::FacilityTotalsRequest {
        from_ns,
        to_ns,
        step_s: 0,
        step: String::new(),
        group_by: String::new(),
    };
    Ok(fetch_totals(source, request).await?.into_iter().next())
}

/// The site's measured energy to take a job's share of: known when every window of the job lies
/// in the settled span the site total covers (the job's figures then cover the same hours).
fn site_energy_for(site: Option<&pb::FacilityWindow>, job: &pb::JobFootprint) -> Option<u64> {
    let site = site?;
    (job.first_ns >= site.start_ns && job.last_ns < site.end_ns).then_some(site.measured_mj)
}

impl LedgerSource {
    fn data_dir(&self) -> anyhow::Result<&std::path::Path> {
        self.data_dir
            .as_deref()
            .context("--data-dir or --server is needed")
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo(options) => {
            logging::init("warn");
            demo::run(options).await?;
        }
        Command::Loadgen(options) => {
            logging::init("error");
            loadgen::run(options).await?;
        }
        Command::Jobs {
            source,
            filter,
            json,
        } => {
            logging::init("warn");
            let request = filter.request()?;
            let site = settled_site(&source, request.from_ns, request.to_ns).await?;
            let jobs = fetch_jobs(&source, None, request).await?;
            let lines: Vec<JobLine> = jobs
                .iter()
                .map(|job| JobLine::from_footprint(job, site_energy_for(site.as_ref(), job)))
                .collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&lines)?);
            } else {
                print!("{}", table::render_jobs(&lines));
            }
        }
        Command::Job { id, source, json } => {
            logging::init("warn");
            let jobs = fetch_jobs(&source, Some(&id), pb::ListJobsRequest::default()).await?;
            let job = jobs.first().context("no such job")?;
            let site = settled_site(&source, 0, 0).await?;
            let line = JobLine::from_footprint(job, site_energy_for(site.as_ref(), job));
            if json {
                println!("{}", serde_json::to_string_pretty(&line)?);
            } else {
                print!("{}", table::render_job(&line));
            }
        }
        Command::Totals {
            source,
            from,
            to,
            step,
            group_by,
            json,
        } => {
            logging::init("warn");
            let (step_s, step) = step_of(step.as_ref())?;
            let request = pb::FacilityTotalsRequest {
                from_ns: time_arg("from", from.as_ref())?,
                to_ns: time_arg("to", to.as_ref())?,
                step_s,
                step,
                group_by: group_by.unwrap_or_default(),
            };
            let windows = fetch_totals(&source, request).await?;
            if json {
                let lines: Vec<TotalsLine> = windows.iter().map(TotalsLine::from).collect();
                println!("{}", serde_json::to_string_pretty(&lines)?);
            } else {
                print!("{}", table::render_totals(&windows));
            }
        }
        Command::ImportIntensity {
            data_dir,
            file,
            hour_convention,
        } => {
            logging::init("warn");
            let path = data_dir.join(footprint_aggregator::tables::LEDGER_FILE);
            anyhow::ensure!(path.exists(), "no ledger in {}", data_dir.display());
            let connection = footprint_aggregator::tables::schema::open(&path)
                .with_context(|| path.display().to_string())?;
            let convention = hour_convention
                .as_deref()
                .map(HourConvention::parse)
                .transpose()
                .map_err(anyhow::Error::msg)?;
            let now = footprint_collector::time::wall_clock_now().0;
            let (feed, record) = footprint_aggregator::ledger::intensity::import(
                &connection,
                &file,
                convention,
                now,
            )?;
            let zones: std::collections::BTreeSet<&str> =
                feed.hours.iter().map(|h| h.zone.as_str()).collect();
            println!(
                "{}: {} hours ({}, hour-{}) for zone(s) {}, {} gap(s) left to the gap rule; sha256 {}",
                file.display(),
                record.hours,
                record.layout,
                record.hour_convention.name(),
                zones.into_iter().collect::<Vec<_>>().join(", "),
                record.gaps,
                record.sha256
            );
            if let Some((zone, first)) = &record.first_changed {
                println!(
                    "{} hour(s) stored before got another figure (the first: {zone} {}); the settled hours they price are reopened and priced again, recorded as revised",
                    record.changed_hours,
                    footprint_core::time::format_rfc3339(footprint_core::UnixNanos(*first))
                );
            }
        }
        Command::Intensity {
            source,
            zone,
            from,
            to,
            json,
        } => {
            logging::init("warn");
            let request = pb::IntensityRequest {
                zone,
                from_ns: time_arg("from", Some(&from))?,
                to_ns: time_arg("to", Some(&to))?,
            };
            let hours = fetch_intensity(&source, request).await?;
            let lines: Vec<IntensityLine> = hours.iter().map(IntensityLine::from).collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&lines)?);
            } else {
                print!("{}", footprint_exporters::intensity::render(&lines));
            }
        }
        Command::Explain {
            data_dir,
            job,
            hour,
            json,
        } => {
            logging::init("warn");
            books::run_explain(&data_dir, &job, &hour, json)?;
        }
        Command::Report(args) => {
            logging::init("warn");
            report::run(args).await?;
        }
        Command::Forecast(args) => {
            logging::init("warn");
            forecast::run(args).await?;
        }
        Command::Grid(command) => {
            logging::init("warn");
            let code = grid::run(command).await?;
            if code != 0 {
                std::process::exit(code);
            }
        }
        Command::Keygen(args) => report::run_keygen(&args)?,
        Command::Certs(command) => certs::run(command)?,
        Command::ConfigDocs { out } => {
            let page = config_docs::render();
            match out {
                Some(path) => std::fs::write(&path, page)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => print!("{page}"),
            }
        }
        Command::Token(TokenCommand::New(args)) => access::new_token(&args)?,
        Command::Export(command) => {
            logging::init("warn");
            export::run(command).await?;
        }
        Command::Ledger(command) => {
            logging::init("warn");
            books::run_ledger(command)?;
        }
        Command::CheckConfig {
            aggregator,
            collector,
            web_config,
        } => {
            anyhow::ensure!(
                aggregator.is_some() || collector.is_some() || web_config.is_some(),
                "give --aggregator, --collector or --web-config"
            );
            if let Some(path) = web_config {
                footprint_aggregator::auth::WebConfig::load(&path)?;
                println!("{}: ok", path.display());
            }
            if let Some(path) = aggregator {
                AggregatorConfig::load(&path).with_context(|| path.display().to_string())?;
                println!("{}: ok", path.display());
            }
            if let Some(path) = collector {
                CollectorConfig::load(&path).with_context(|| path.display().to_string())?;
                println!("{}: ok", path.display());
            }
        }
    }
    Ok(())
}
