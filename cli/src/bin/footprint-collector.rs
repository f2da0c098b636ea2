//! `footprint-collector --config FILE`: the per-host collector.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use footprint_collector::config::CollectorConfig;
use footprint_collector::daemon::{self, CollectorStats};
use footprint_core::config::ConfigFile;
use tokio_util::sync::CancellationToken;

#[path = "../logging.rs"]
mod logging;

/// Reads this host's meters at every tick and streams them to the aggregator, keeping every batch
/// until the aggregator acknowledges it as durable.
///
/// Sources (the `type` of each `[[sources]]` table):
///   replay       a simulated host: GPU energy counters integrated from a recorded power trace
///                (default: Cornell BioHPC, Nov-Dec 2024) while jobs hold the GPUs, RAPL package
///                and DRAM counters (idle + per held core) that wrap like the real ones; the jobs
///                are announced as allocations.
///   site_replay  a simulated facility meter: the IT load of the hosts it lists × an hourly PUE.
///
/// With a [clock] table the collector runs on a simulated clock and exits after `stop_at`, once
/// everything is acknowledged. Otherwise it runs until SIGTERM or Ctrl-C, then flushes for up to
/// `flush_timeout_s`. Exit status 0 means every batch was acknowledged.
#[derive(Debug, Parser)]
#[command(version, about, long_about, verbatim_doc_comment)]
struct Args {
    /// The config file (TOML); see deploy/examples/ for every source.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    logging::init("info");
    let args = Args::parse();
    let config = CollectorConfig::load(&args.config)
        .with_context(|| format!("config {}", args.config.display()))?;
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        logging::stop_signal().await;
        on_signal.cancel();
    });
    daemon::run(config, shutdown, Arc::new(CollectorStats::default()))
        .await
        .context("collector")?;
    Ok(())
}
