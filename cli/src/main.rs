//! `footprint`: the demo, the ledger's jobs, and config checks.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use footprint_aggregator::AggregatorConfig;
use footprint_collector::config::CollectorConfig;
use footprint_core::config::ConfigFile;
use footprint_exporters::summary::JobLine;
use footprint_exporters::table;
use footprint_proto::v1 as pb;
use footprint_proto::v1::query_client::QueryClient;

mod demo;
mod loadgen;
mod logging;

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
    /// Lists jobs and their energy, from a ledger directory or a running aggregator.
    Jobs {
        #[command(flatten)]
        source: LedgerSource,
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
    /// Loads a config file and reports every problem with its key path.
    CheckConfig {
        /// An aggregator config.
        #[arg(
            long,
            value_name = "FILE",
            conflicts_with = "collector",
            required_unless_present = "collector"
        )]
        aggregator: Option<PathBuf>,
        /// A collector config.
        #[arg(long, value_name = "FILE")]
        collector: Option<PathBuf>,
    },
}

/// Where to read the ledger from.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
struct LedgerSource {
    /// The aggregator's data directory (holding footprint.sqlite), e.g. a demo's DATA_DIR.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// A running aggregator's gRPC endpoint, e.g. http://127.0.0.1:7411.
    #[arg(long, value_name = "URL")]
    server: Option<String>,
}

async fn fetch_jobs(
    source: &LedgerSource,
    only: Option<&str>,
) -> anyhow::Result<Vec<pb::JobFootprint>> {
    if let Some(server) = &source.server {
        let mut client = QueryClient::connect(server.clone())
            .await
            .with_context(|| format!("connecting to {server}"))?;
        return Ok(match only {
            Some(id) => vec![
                client
                    .get_job(pb::GetJobRequest { id: id.to_owned() })
                    .await?
                    .into_inner(),
            ],
            None => {
                client
                    .list_jobs(pb::ListJobsRequest::default())
                    .await?
                    .into_inner()
                    .jobs
            }
        });
    }
    let dir = source
        .data_dir
        .as_deref()
        .context("--data-dir or --server is needed")?;
    let jobs = footprint_aggregator::query::jobs_in_data_dir(dir, only)?;
    Ok(jobs.into_iter().map(Into::into).collect())
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
        Command::Jobs { source, json } => {
            logging::init("warn");
            let jobs = fetch_jobs(&source, None).await?;
            let lines: Vec<JobLine> = jobs.iter().map(|j| JobLine::from_footprint(j, 0)).collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&lines)?);
            } else {
                print!("{}", table::render_jobs(&lines));
            }
        }
        Command::Job { id, source, json } => {
            logging::init("warn");
            let jobs = fetch_jobs(&source, Some(&id)).await?;
            let job = jobs.first().context("no such job")?;
            let line = JobLine::from_footprint(job, 0);
            if json {
                println!("{}", serde_json::to_string_pretty(&line)?);
            } else {
                print!("{}", table::render_job(&line));
            }
        }
        Command::CheckConfig {
            aggregator,
            collector,
        } => {
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
