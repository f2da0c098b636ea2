//! `footprint-collector --config FILE`: the per-host collector.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser};
use footprint_collector::config::{CollectorConfig, SOURCE_TYPES};
use footprint_collector::daemon::{self, CollectorStats};
use footprint_collector::probe;
use footprint_core::config::ConfigFile;
use tokio_util::sync::CancellationToken;

#[path = "../logging.rs"]
mod logging;

/// Reads this host's meters at every tick and streams them to the aggregator, keeping every batch
/// until the aggregator acknowledges it as durable.
///
/// `footprint-collector probe --config FILE` reads every source twice, one interval apart, and
/// prints one JSON line per reading, then one per source that failed, with the reason; it exits
/// non-zero only when no source worked.
///
/// With a [clock] table the collector runs on a simulated clock and exits after `stop_at`, once
/// everything is acknowledged. Otherwise it runs until SIGTERM or Ctrl-C, then flushes for up to
/// `flush_timeout_s`. Exit status 0 means every batch was acknowledged.
#[derive(Debug, Parser)]
#[command(version, about, long_about, verbatim_doc_comment)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// The config file (TOML); see deploy/examples/ for every source.
    #[arg(long, value_name = "FILE", required = false)]
    config: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Reads every configured source twice, one interval apart, and prints what it read.
    Probe {
        /// The config file (TOML).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let matches = Args::command()
        .after_long_help(sources_help())
        .get_matches();
    let args = Args::from_arg_matches(&matches)?;
    if let Some(Command::Probe { config }) = args.command {
        logging::init("warn");
        let config = CollectorConfig::load(&config)
            .with_context(|| format!("config {}", config.display()))?;
        let lines = probe::probe(&config).await;
        for line in &lines {
            println!("{}", serde_json::to_string(line)?);
        }
        if !probe::any_worked(&lines) {
            anyhow::bail!("no source could be read");
        }
        return Ok(());
    }
    logging::init("info");
    let path = args
        .config
        .context("--config FILE is needed (or `probe --config FILE`)")?;
    let config =
        CollectorConfig::load(&path).with_context(|| format!("config {}", path.display()))?;
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

/// The source types of the registry, each with what it reads, wrapped for a terminal.
fn sources_help() -> String {
    const NAME_WIDTH: usize = 13;
    const WIDTH: usize = 100;
    let mut help = String::from("Sources (the `type` of each `[[sources]]` table):\n");
    for (name, what) in SOURCE_TYPES {
        let mut line = format!("  {name:<NAME_WIDTH$}");
        for word in what.split_whitespace() {
            if line.len() + 1 + word.len() > WIDTH && line.trim_end().len() > NAME_WIDTH {
                help.push_str(line.trim_end());
                help.push('\n');
                line = " ".repeat(NAME_WIDTH + 2);
            } else if !line.ends_with(' ') {
                line.push(' ');
            }
            line.push_str(word);
        }
        help.push_str(&line);
        help.push('\n');
    }
    help
}
