//! `footprint-aggregator --config FILE`: the ingest server, ledger and query API.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use footprint_aggregator::{AggregatorConfig, server};
use footprint_core::config::ConfigFile;

#[path = "../logging.rs"]
mod logging;

/// Receives the collectors' streams, keeps the ledger (SQLite, in `data_dir`), attributes
/// energy to jobs per window and serves it over gRPC (`Query`) and HTTP (`/api/v1/…`, `/metrics`).
///
/// Once listening it prints one JSON line on stdout with the bound addresses, e.g.
/// {"grpc":"127.0.0.1:7411","http":"127.0.0.1:7412"}. Stop it with SIGTERM or Ctrl-C.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// The config file (TOML); see deploy/examples/aggregator.toml for every key.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    logging::init("info");
    let args = Args::parse();
    let config = AggregatorConfig::load(&args.config)
        .with_context(|| format!("config {}", args.config.display()))?;
    let running = server::start(&config)
        .await
        .context("starting the aggregator")?;
    println!(
        "{}",
        serde_json::json!({"grpc": running.grpc_addr.to_string(), "http": running.http_addr.to_string()})
    );
    tokio::select! {
        () = logging::stop_signal() => {}
        () = running.failed() => {}
    }
    running.stop().await.context("stopping the aggregator")?;
    Ok(())
}
