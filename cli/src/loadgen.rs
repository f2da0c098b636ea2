//! `footprint loadgen`: many simulated collectors (the real collector: sources, spool, uplink)
//! streaming synthetic counters to an aggregator over gRPC, on the wall clock. Reports durable
//! readings/s (acknowledged only after the aggregator's commit), ack latency, and CPU and memory of
//! this process and, given its PID, of the aggregator.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use footprint_aggregator::{AggregatorConfig, server};
use footprint_collector::config::{CollectorConfig, SourceConfig};
use footprint_collector::daemon::{self, CollectorStats};
use footprint_collector::sources::synthetic::SyntheticConfig;
use footprint_core::config::ConfigFile;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// What `footprint loadgen` was asked to do.
#[derive(Clone, Debug, clap::Args)]
pub struct LoadOptions {
    /// Instead of an aggregator, send the same readings as InfluxDB 2 line protocol to this HTTP
    /// base URL (e.g. http://127.0.0.1:8428 for VictoriaMetrics), for comparison.
    #[arg(long, value_name = "URL", conflicts_with = "aggregator")]
    pub line_protocol: Option<String>,
    /// The aggregator's gRPC endpoint. Default: one started in this process.
    #[arg(long, value_name = "URL")]
    pub aggregator: Option<String>,
    /// Seconds each collector may take, once sampling stops, to deliver what its spool holds
    /// (`after_drain` in the report says whether everything arrived).
    #[arg(long = "drain-timeout", default_value_t = 120)]
    pub drain_timeout_s: u64,
    /// Mutual TLS to an `https://` `--aggregator`: a directory as `footprint certs init --hosts
    /// load-00000,load-00001,… --out DIR` writes it (ca.pem, hosts/load-NNNNN.pem and key).
    #[arg(long, value_name = "DIR", requires = "aggregator")]
    pub tls_dir: Option<PathBuf>,
    /// The receiving process's id (aggregator or database), to report its CPU time and peak
    /// memory.
    #[arg(long, value_name = "PID")]
    pub aggregator_pid: Option<u32>,
    /// Simulated collectors.
    #[arg(long, default_value_t = 1000)]
    pub collectors: u32,
    /// Meters per collector.
    #[arg(long, default_value_t = 80)]
    pub meters: u32,
    /// Samples per second per meter.
    #[arg(long = "rate", default_value_t = 1.0)]
    pub rate_hz: f64,
    /// Seconds to measure, after the warm-up.
    #[arg(long = "duration", default_value_t = 30)]
    pub duration_s: u64,
    /// Seconds of warm-up before measuring: connecting every collector and draining the backlog
    /// of their first batches, so the figures are of the steady state.
    #[arg(long = "warmup", default_value_t = 10)]
    pub warmup_s: u64,
    /// Samples per batch.
    #[arg(long, default_value_t = 1)]
    pub samples_per_batch: u32,
    /// Tick every collector at the same instant (the old behaviour), instead of each at its own
    /// phase within the interval.
    #[arg(long)]
    pub aligned_ticks: bool,
    /// After the warm-up, cap every synthetic GPU of every collector at once (the in-process
    /// aggregator's directives) and report how long until each cap was applied and until every
    /// outcome was in the ledger.
    #[arg(long, conflicts_with = "aggregator")]
    pub caps: bool,
}

/// How a burst of GPU caps went.
#[derive(Clone, Debug, Default, Serialize)]
struct CapsReport {
    sent: u64,
    /// Outcomes recorded in the ledger, and of them applied.
    recorded: u64,
    applied: u64,
    /// From sending each cap to the collector applying it, ms.
    apply_latency_ms_p50: f64,
    apply_latency_ms_p99: f64,
    apply_latency_ms_max: f64,
    /// From the first cap sent to the last outcome recorded in the ledger, s.
    all_recorded_s: f64,
}

/// Caps every GPU of `collectors` collectors of `gpus` each at 400 W, then waits (at most a
/// minute) until every outcome is in the ledger.
async fn cap_every_gpu(
    running: &server::RunningAggregator,
    collectors: u32,
    gpus: u32,
) -> anyhow::Result<CapsReport> {
    let now_ns = || footprint_collector::time::wall_clock_now().0;
    let started = Instant::now();
    let mut sent_at = std::collections::HashMap::new();
    let mut id = 0u64;
    for collector in 0..collectors {
        let name = format!("load-{collector:05}");
        for gpu in 0..gpus {
            id += 1;
            let cap = footprint_proto::v1::PowerCap {
                device: format!("synthetic-{gpu}"),
                watts: 400,
                until_ns: now_ns() + 600_000_000_000,
                id,
                reason: "loadgen burst".into(),
                release: false,
            };
            sent_at.insert(id, now_ns());
            running.directives.send_cap(&name, cap)?;
        }
    }
    let sent = id;
    let rows = loop {
        let rows: Vec<(i64, i64, String)> = running
            .reader
            .with(footprint_aggregator::grid::caps::list)
            .await?
            .into_iter()
            .filter(|record| record.directive > 0)
            .map(|record| (record.directive as i64, record.at_ns, record.outcome))
            .collect();
        if rows.len() as u64 >= sent || started.elapsed() > Duration::from_secs(60) {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let all_recorded_s = started.elapsed().as_secs_f64();
    let mut latencies: Vec<u32> = rows
        .iter()
        .filter(|(_, _, outcome)| outcome == "applied")
        .filter_map(|(directive, at, _)| {
            let sent = sent_at.get(&(*directive as u64))?;
            u32::try_from((at - sent).max(0) / 1_000).ok()
        })
        .collect();
    latencies.sort_unstable();
    Ok(CapsReport {
        sent,
        recorded: rows.len() as u64,
        applied: latencies.len() as u64,
        apply_latency_ms_p50: percentile(&latencies, 0.50),
        apply_latency_ms_p99: percentile(&latencies, 0.99),
        apply_latency_ms_max: percentile(&latencies, 1.0),
        all_recorded_s,
    })
}

/// CPU time (user + system) and peak resident memory of a process, from /proc.
#[derive(Clone, Copy, Debug, Default, Serialize)]
struct ProcessUsage {
    cpu_s: f64,
    peak_rss_mib: f64,
}

fn process_usage(pid: u32) -> Option<ProcessUsage> {
    use footprint_collector::process_usage::{cpu_ns, status_kib};
    Some(ProcessUsage {
        cpu_s: cpu_ns(pid)? as f64 / 1e9,
        peak_rss_mib: status_kib(pid, "VmHWM")? as f64 / 1024.0,
    })
}

/// CPU and memory of this process and of the receiving one over a measured window.
struct UsageWindow {
    own_pid: u32,
    target_pid: Option<u32>,
    own_start: Option<ProcessUsage>,
    target_start: Option<ProcessUsage>,
}

impl UsageWindow {
    fn start(target_pid: Option<u32>) -> Self {
        let own_pid = std::process::id();
        Self {
            own_start: process_usage(own_pid),
            target_start: target_pid.and_then(process_usage),
            own_pid,
            target_pid,
        }
    }

    /// (this process, the receiving process) since `start`.
    fn finish(&self) -> (ProcessUsage, Option<ProcessUsage>) {
        let since = |start: Option<ProcessUsage>, end: Option<ProcessUsage>| {
            start.zip(end).map(|(s, e)| ProcessUsage {
                cpu_s: e.cpu_s - s.cpu_s,
                peak_rss_mib: e.peak_rss_mib,
            })
        };
        let own = since(self.own_start, process_usage(self.own_pid)).unwrap_or_default();
        let target = since(self.target_start, self.target_pid.and_then(process_usage));
        (own, target)
    }
}

#[derive(Debug, Serialize)]
struct LoadReport {
    collectors: u32,
    meters_per_collector: u32,
    rate_hz: f64,
    offered_readings_per_s: f64,
    durable_readings_per_s: f64,
    duration_s: f64,
    readings_acked: u64,
    readings_rejected: u64,
    /// Sessions the collectors had to reopen (refused, cut, RESOURCE_EXHAUSTED …).
    reconnects: u64,
    /// Source reads that failed.
    source_errors: u64,
    ack_latency_ms_p50: f64,
    ack_latency_ms_p99: f64,
    ack_latency_ms_max: f64,
    loadgen: ProcessUsage,
    aggregator: Option<ProcessUsage>,
    aggregator_durable_readings_per_cpu_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    caps: Option<CapsReport>,
    /// Once sampling stopped and every collector flushed its spool: whether anything was lost.
    #[serde(skip_serializing_if = "Option::is_none")]
    after_drain: Option<Drained>,
}

/// Every reading sampled since the start, against every reading acknowledged durable or
/// rejected, after the collectors flushed their spools (`--drain-timeout` each).
#[derive(Debug, Serialize)]
struct Drained {
    readings_sampled: u64,
    readings_acked: u64,
    readings_rejected: u64,
    /// Sampled and neither acknowledged nor rejected: still in a spool when the flush gave up.
    readings_unacknowledged: u64,
    /// Collectors whose flush did not finish.
    collectors_not_drained: usize,
    drain_s: f64,
}

fn percentile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    f64::from(sorted[index.min(sorted.len() - 1)]) / 1000.0
}

pub async fn run(options: LoadOptions) -> anyhow::Result<()> {
    if let Some(url) = options.line_protocol.clone() {
        return line_protocol::run(options, &url).await;
    }
    if options.collectors == 0
        || options.meters == 0
        || !(options.rate_hz > 0.0 && options.rate_hz <= 1000.0)
    {
        bail!("--collectors and --meters must be above 0, --rate between 0 and 1000 Hz");
    }
    let (endpoint, local) = match &options.aggregator {
        Some(endpoint) => (endpoint.clone(), None),
        None => {
            let dir = tempfile::Builder::new()
                .prefix("footprint-loadgen-")
                .tempdir()?
                .keep();
            let mut config = AggregatorConfig::with_data_dir(dir.clone());
            config.grpc_listen = "127.0.0.1:0".parse()?;
            config.http_listen = "127.0.0.1:0".parse()?;
            let running = server::start(&config).await?;
            println!(
                "In-process aggregator on {}, ledger in {}",
                running.grpc_addr,
                dir.display()
            );
            (format!("http://{}", running.grpc_addr), Some(running))
        }
    };
    let interval_ms = (1000.0 / options.rate_hz).round().max(1.0) as u64;
    let shutdown = CancellationToken::new();
    let mut tasks = Vec::new();
    let mut stats = Vec::new();
    for index in 0..options.collectors {
        let name = format!("load-{index:05}");
        let tls = options
            .tls_dir
            .as_ref()
            .map(|dir| footprint_proto::tls::ClientFiles {
                ca_file: dir.join("ca.pem"),
                cert_file: Some(dir.join(format!("hosts/{name}.pem"))),
                key_file: Some(dir.join(format!("hosts/{name}-key.pem"))),
                server_name: None,
            });
        let config = CollectorConfig {
            collector_id: Some(name.clone()),
            host: name,
            aggregator: endpoint.clone(),
            tls,
            insecure: false,
            sample_interval_ms: interval_ms,
            samples_per_batch: options.samples_per_batch,
            spread_ticks: !options.aligned_ticks,
            spool_dir: None,
            spool_max_bytes: 1 << 30,
            spool_max_age_s: footprint_collector::config::default_spool_max_age_s(),
            spool_aged_step_s: footprint_collector::config::default_spool_aged_step_s(),
            flush_timeout_s: options.drain_timeout_s,
            metrics_listen: None,
            clock: None,
            sources: vec![SourceConfig::Synthetic(SyntheticConfig {
                meters: options.meters,
                power_w: 300.0,
            })],
        };
        config.validate().context("generated collector config")?;
        let collector_stats = Arc::new(CollectorStats::default());
        stats.push(Arc::clone(&collector_stats));
        tasks.push(tokio::spawn(daemon::run(
            config,
            shutdown.clone(),
            collector_stats,
        )));
    }
    // Warm up (connections, the first batches' backlog), then measure the steady state.
    tokio::time::sleep(
        Duration::from_millis(2 * interval_ms * u64::from(options.samples_per_batch))
            .max(Duration::from_secs(options.warmup_s)),
    )
    .await;
    let caps = match (&local, options.caps) {
        (Some(running), true) => {
            eprintln!(
                "capping {} GPUs ({} collectors × {})",
                u64::from(options.collectors) * u64::from(options.meters),
                options.collectors,
                options.meters
            );
            Some(cap_every_gpu(running, options.collectors, options.meters).await?)
        }
        _ => None,
    };
    let acked = |stats: &[Arc<CollectorStats>]| {
        stats
            .iter()
            .map(|s| s.readings_acked.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    let (start_acked, window) = (acked(&stats), UsageWindow::start(options.aggregator_pid));
    for latencies in &stats {
        latencies
            .ack_latencies_us
            .lock()
            .map(|mut l| l.clear())
            .ok();
    }
    let started = Instant::now();
    let mut next_report = Duration::from_secs(5);
    while started.elapsed() < Duration::from_secs(options.duration_s) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if started.elapsed() >= next_report {
            next_report += Duration::from_secs(5);
            let done = acked(&stats) - start_acked;
            eprintln!(
                "  {:>4.0} s  {:>10.0} durable readings/s",
                started.elapsed().as_secs_f64(),
                done as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (end_acked, (loadgen, aggregator)) = (acked(&stats), window.finish());
    let mut latencies: Vec<u32> = stats
        .iter()
        .flat_map(|s| {
            s.ack_latencies_us
                .lock()
                .map(|l| l.clone())
                .unwrap_or_default()
        })
        .collect();
    latencies.sort_unstable();
    shutdown.cancel();
    let drain_started = Instant::now();
    let mut not_drained = 0;
    for task in tasks {
        if !matches!(task.await, Ok(Ok(()))) {
            not_drained += 1;
        }
    }
    let durable = (end_acked - start_acked) as f64 / elapsed;
    let total = |counter: fn(&CollectorStats) -> &std::sync::atomic::AtomicU64| {
        stats
            .iter()
            .map(|s| counter(s).load(Ordering::Relaxed))
            .sum::<u64>()
    };
    let report = LoadReport {
        collectors: options.collectors,
        meters_per_collector: options.meters,
        rate_hz: options.rate_hz,
        offered_readings_per_s: f64::from(options.collectors) * f64::from(options.meters) * 1000.0
            / interval_ms as f64,
        durable_readings_per_s: durable,
        duration_s: elapsed,
        readings_acked: end_acked - start_acked,
        readings_rejected: total(|s| &s.readings_rejected),
        reconnects: total(|s| &s.reconnects),
        source_errors: total(|s| &s.source_errors),
        ack_latency_ms_p50: percentile(&latencies, 0.50),
        ack_latency_ms_p99: percentile(&latencies, 0.99),
        ack_latency_ms_max: percentile(&latencies, 1.0),
        loadgen,
        aggregator_durable_readings_per_cpu_s: aggregator
            .map(|a| (end_acked - start_acked) as f64 / a.cpu_s.max(1e-9)),
        aggregator,
        caps,
        after_drain: Some(Drained {
            readings_sampled: total(|s| &s.readings_sampled),
            readings_acked: total(|s| &s.readings_acked),
            readings_rejected: total(|s| &s.readings_rejected),
            readings_unacknowledged: total(|s| &s.readings_sampled)
                .saturating_sub(total(|s| &s.readings_acked) + total(|s| &s.readings_rejected)),
            collectors_not_drained: not_drained,
            drain_s: drain_started.elapsed().as_secs_f64(),
        }),
    };
    println!("{}", serde_json::to_string(&report)?);
    if let Some(running) = local {
        running.stop().await?;
    }
    Ok(())
}

/// The same load as InfluxDB 2 line protocol (`POST /api/v2/write`), for comparing with a
/// time-series database on the same machine. Its 204 means "accepted", not "durable".
mod line_protocol {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    use anyhow::{Context, bail};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio_util::sync::CancellationToken;

    use super::{LoadOptions, LoadReport, UsageWindow, percentile};

    struct Connection {
        stream: TcpStream,
        host: String,
    }

    impl Connection {
        async fn open(authority: &str) -> anyhow::Result<Self> {
            let stream = TcpStream::connect(authority)
                .await
                .with_context(|| format!("connecting to {authority}"))?;
            stream.set_nodelay(true)?;
            Ok(Self {
                stream,
                host: authority.to_owned(),
            })
        }

        /// POSTs `body`; returns the HTTP status. Keeps the connection open.
        async fn post(&mut self, path: &str, body: &[u8]) -> anyhow::Result<u16> {
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
                self.host,
                body.len()
            );
            self.stream.write_all(head.as_bytes()).await?;
            self.stream.write_all(body).await?;
            let mut response = Vec::new();
            let mut buffer = [0u8; 4096];
            loop {
                let n = self.stream.read(&mut buffer).await?;
                if n == 0 {
                    bail!("connection closed");
                }
                response.extend_from_slice(&buffer[..n]);
                if let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&response[..end]).to_string();
                    let status: u16 = head
                        .split_whitespace()
                        .nth(1)
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    let mut have = response.len() - end - 4;
                    while have < length {
                        have += self.stream.read(&mut buffer).await?;
                    }
                    return Ok(status);
                }
            }
        }
    }

    pub async fn run(options: LoadOptions, url: &str) -> anyhow::Result<()> {
        let authority = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let interval = Duration::from_secs_f64(1.0 / options.rate_hz);
        let accepted = Arc::new(AtomicU64::new(0));
        let latencies = Arc::new(std::sync::Mutex::new(Vec::<u32>::new()));
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        for collector in 0..options.collectors {
            let (authority, accepted, latencies, stop) = (
                authority.clone(),
                Arc::clone(&accepted),
                Arc::clone(&latencies),
                stop.clone(),
            );
            let meters = options.meters;
            tasks.push(tokio::spawn(async move {
                let mut connection = Connection::open(&authority).await?;
                let mut counters = vec![0u64; meters as usize];
                let mut ticker = tokio::time::interval(interval);
                while !stop.is_cancelled() {
                    ticker.tick().await;
                    let at = footprint_collector::time::wall_clock_now().0;
                    let mut body = String::with_capacity(meters as usize * 80);
                    for (meter, counter) in counters.iter_mut().enumerate() {
                        *counter += 300_000 + meter as u64 % 50 * 1_000;
                        body.push_str(&format!("footprint_energy,collector=load-{collector:05},meter=synthetic-{meter} mj={counter}i {at}\n"));
                    }
                    let sent = Instant::now();
                    let status = connection.post("/api/v2/write?org=footprint&bucket=footprint&precision=ns", body.as_bytes()).await?;
                    if status / 100 == 2 {
                        accepted.fetch_add(u64::from(meters), Ordering::Relaxed);
                        if let Ok(mut l) = latencies.lock() {
                            l.push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
                        }
                    }
                }
                anyhow::Ok(())
            }));
        }
        tokio::time::sleep(Duration::from_secs(options.warmup_s)).await;
        let (start_accepted, window) = (
            accepted.load(Ordering::Relaxed),
            UsageWindow::start(options.aggregator_pid),
        );
        latencies.lock().map(|mut l| l.clear()).ok();
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs(options.duration_s)).await;
        let elapsed = started.elapsed().as_secs_f64();
        let (end_accepted, (loadgen, target)) = (accepted.load(Ordering::Relaxed), window.finish());
        stop.cancel();
        for task in tasks {
            let _ = task.await;
        }
        let mut sorted = latencies.lock().map(|l| l.clone()).unwrap_or_default();
        sorted.sort_unstable();
        let done = end_accepted - start_accepted;
        let report = LoadReport {
            collectors: options.collectors,
            meters_per_collector: options.meters,
            rate_hz: options.rate_hz,
            offered_readings_per_s: f64::from(options.collectors)
                * f64::from(options.meters)
                * options.rate_hz,
            durable_readings_per_s: done as f64 / elapsed,
            duration_s: elapsed,
            readings_acked: done,
            readings_rejected: 0,
            reconnects: 0,
            source_errors: 0,
            ack_latency_ms_p50: percentile(&sorted, 0.50),
            ack_latency_ms_p99: percentile(&sorted, 0.99),
            ack_latency_ms_max: percentile(&sorted, 1.0),
            loadgen,
            aggregator_durable_readings_per_cpu_s: target.map(|t| done as f64 / t.cpu_s.max(1e-9)),
            aggregator: target,
            caps: None,
            after_drain: None,
        };
        println!("{}", serde_json::to_string(&report)?);
        Ok(())
    }
}
