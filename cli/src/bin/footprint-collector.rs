//! `footprint-collector --config FILE`: the per-host collector.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use footprint_collector::config::CollectorConfig;
use footprint_collector::daemon::{self, CollectorStats};
use footprint_collector::probe;
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
///   site_replay  a simulated facility meter (and water meter): the IT load of the hosts it
///                lists × an hourly PUE (WUE).
///   synthetic    many GPU meters at a steady power, for load tests.
///   rapl         this host's CPU packages, DRAM, core and uncore energy from the kernel's powercap
///                tree (/sys/class/powercap/intel-rapl:*); energy_uj is readable by root only since
///                Linux 5.10, and zones that cannot be read are left out with a warning.
///   nvml         NVIDIA GPUs through the driver's libnvidia-ml: board energy counters (power
///                integrated where a GPU has none, flagged interpolated), power limits, the jobs
///                of their compute processes as allocations, per-job busy time for sharing a
///                GPU, MIG instances. Without a driver the source says NVML is absent.
///   snmp         a PDU over SNMP v2c/v3 (APC rPDU2, Raritan PDU2, ServerTech Sentry4, Eaton
///                ePDU, or OIDs from config): this host's outlets, and for inspection others
///                and the whole PDU; coarse energy registers filled in with power between steps.
///   modbus       site meters over Modbus TCP (facility energy, water): the register map
///                (function, address, type, word order, scale, unit) in config.
///   slurm        which Slurm job holds which GPUs and CPUs here: the prolog/epilog hooks of
///                deploy/slurm/, the job's cgroup (v1 or v2) or processes for CPUs and CPU time.
///   process      plain processes as jobs (FOOTPRINT_JOB=<id> in their environment, or a
///                configured command line), with their CPU time.
///   kubernetes   pods holding GPUs or exclusive CPUs, from the kubelet's pod-resources socket.
///   ipmi         whole-host power from the BMC (IPMI DCMI through ipmitool), integrated, for
///                hosts with neither a metered PDU outlet nor RAPL.
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
    let args = Args::parse();
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
