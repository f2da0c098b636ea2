//! The collector's main loop: sample every source at each tick, group ticks into batches, append
//! each to the spool (durable), and on stop let the uplink flush the spool within a time limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use footprint_core::UnixNanos;
use footprint_proto::v1::Hello;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::clock::Clock;
use crate::config::{CollectorConfig, SourceConfig};
use crate::source::{BuildContext, Sample, Source};
use crate::spool::Spool;
use crate::time::wall_clock_now;
use crate::uplink::{SharedSpool, Uplink, with_spool};
use crate::{Error, Result, SOFTWARE_VERSION};
use footprint_core::time::parse_rfc3339;

/// Live counters of a running collector (for progress displays and self-metrics).
#[derive(Debug, Default)]
pub struct CollectorStats {
    pub readings_sampled: AtomicU64,
    pub source_errors: AtomicU64,
    pub batches_acked: AtomicU64,
    /// Readings in acknowledged batches (sent by this process; rejected ones included).
    pub readings_acked: AtomicU64,
    pub readings_rejected: AtomicU64,
    pub reconnects: AtomicU64,
    /// The clock's instant of the last tick, ns.
    pub last_tick_ns: AtomicI64,
    /// Time from sending a batch to its ack, µs, for the first [`MAX_LATENCY_SAMPLES`] acks.
    pub ack_latencies_us: std::sync::Mutex<Vec<u32>>,
}

/// Ack latencies kept per collector at most (a benchmark's worth; memory stays bounded).
pub const MAX_LATENCY_SAMPLES: usize = 1 << 20;

impl CollectorStats {
    pub(crate) fn record_ack_latency(&self, latency: std::time::Duration) {
        let mut samples = self
            .ack_latencies_us
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if samples.len() < MAX_LATENCY_SAMPLES {
            samples.push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
        }
    }
}

/// Builds the sources of a config.
///
/// # Errors
/// [`Error::Source`] naming the source that could not be built.
pub fn build_sources(config: &CollectorConfig, origin: UnixNanos) -> Result<Vec<Box<dyn Source>>> {
    config
        .sources
        .iter()
        .enumerate()
        .map(|(index, source)| {
            build_source(source, &config.host, origin).map_err(|message| Error::Source {
                source_name: format!("sources[{index}]"),
                message,
            })
        })
        .collect()
}

/// Builds one configured source of `host`; `origin` is where simulated sources start.
///
/// # Errors
/// A message saying why the source cannot run here.
pub fn build_source(
    source: &SourceConfig,
    host: &str,
    origin: UnixNanos,
) -> std::result::Result<Box<dyn Source>, String> {
    source
        .settings()
        .build_source(&BuildContext { host, origin })
}

/// Runs a collector until its simulated clock passes `stop_at` or `shutdown` is cancelled, then
/// flushes. Returns once every batch is acknowledged.
///
/// # Errors
/// A source that cannot be built, or batches still unacknowledged when the flush time ran out.
pub async fn run(
    config: CollectorConfig,
    shutdown: CancellationToken,
    stats: Arc<CollectorStats>,
) -> Result<()> {
    // A simulated clock's counters integrate from its configured start, so a replay gives the
    // same counter values on every run; the wall clock's from now.
    let clock_key = |key: &'static str| {
        move |message: String| {
            Error::Config(footprint_core::config::ConfigError::Parse {
                path: format!("clock.{key}"),
                message,
            })
        }
    };
    let (clock, origin, stop_at) = match &config.clock {
        Some(sim) => {
            let start = parse_rfc3339(&sim.start).map_err(clock_key("start"))?;
            let stop = sim
                .stop_at
                .as_deref()
                .map(parse_rfc3339)
                .transpose()
                .map_err(clock_key("stop_at"))?;
            let real_start = sim
                .real_start
                .as_deref()
                .map(parse_rfc3339)
                .transpose()
                .map_err(clock_key("real_start"))?;
            (Clock::simulated(start, sim.speed, real_start), start, stop)
        }
        None => (Clock::Wall, wall_clock_now(), None),
    };
    let mut sources = build_sources(&config, origin)?;
    let hello = Hello {
        collector_id: config.collector_id().to_owned(),
        host: config.host.clone(),
        software_version: SOFTWARE_VERSION.to_owned(),
        meters: sources.iter().flat_map(|s| s.meters()).collect(),
    };
    if config.spool_dir.is_none() {
        warn!(
            "No spool_dir: unacknowledged batches are kept in memory and lost if the collector stops."
        );
    }
    let mut spool = Spool::open(
        config.spool_dir.as_deref(),
        &hello.collector_id,
        config.spool_max_bytes,
    )?;
    spool.set_age_limit(
        Duration::from_secs(config.spool_max_age_s),
        Duration::from_secs(config.spool_aged_step_s),
    );
    let spool: SharedSpool = Arc::new(std::sync::Mutex::new(spool));
    info!(collector = %hello.collector_id, host = %hello.host, meters = hello.meters.len(), aggregator = %config.aggregator, "Collector starting.");

    let appended = Arc::new(Notify::new());
    let sampling_done = CancellationToken::new();
    // GPU power caps: applied by the capper, reported up by the uplink.
    let (directives_tx, directives_rx) = tokio::sync::mpsc::channel(256);
    let (reports_tx, reports_rx) = tokio::sync::mpsc::channel(4_096);
    let limiter = sources
        .iter()
        .find_map(|s| s.power_limiter())
        .unwrap_or_else(|| Box::new(crate::power_cap::NoGpuControl));
    let caps_file = config.spool_dir.as_deref().map_or_else(
        || std::env::temp_dir().join(format!("footprint-{}-power-caps.json", hello.collector_id)),
        |dir| dir.join("power-caps.json"),
    );
    let caps_stop = CancellationToken::new();
    let capper = tokio::spawn(crate::power_cap::serve(
        limiter,
        caps_file,
        directives_rx,
        reports_tx,
        caps_stop.clone(),
    ));
    let uplink = Uplink::new(
        crate::uplink::Aggregator {
            endpoint: config.aggregator.clone(),
            tls: config.tls.clone(),
        },
        hello.clone(),
        Arc::clone(&spool),
        Arc::clone(&appended),
        sampling_done.clone(),
        Arc::clone(&stats),
        crate::uplink::CapLink {
            directives: directives_tx,
            reports: tokio::sync::Mutex::new(reports_rx),
        },
    );
    let mut uplink_task = tokio::spawn(uplink.run());
    let metrics_stop = CancellationToken::new();
    if let Some(addr) = config.metrics_listen {
        let bound = crate::metrics_server::serve(
            addr,
            Arc::clone(&stats),
            Arc::clone(&spool),
            metrics_stop.clone(),
        )
        .await
        .map_err(|e| {
            Error::Config(footprint_core::config::ConfigError::Parse {
                path: "metrics_listen".into(),
                message: format!("{addr}: {e}"),
            })
        })?;
        info!(%bound, "Serving the collector's /metrics.");
    }
    let _stop_metrics = metrics_stop.drop_guard();

    let interval_ns = i64::try_from(config.sample_interval_ms)
        .unwrap_or(i64::MAX / 2_000_000)
        .saturating_mul(1_000_000);
    // On the wall clock a fleet's collectors would all tick at the same instant and their
    // batches arrive together; each takes its own, stable place within the interval instead.
    let grid = TickGrid {
        interval_ns,
        phase_ns: if matches!(clock, Clock::Wall) && config.spread_ticks {
            tick_phase(&hello.collector_id, interval_ns)
        } else {
            0
        },
    };
    // First tick: a fresh simulated clock starts at its start, whatever its pace; the wall clock,
    // or a simulated clock anchored to it, at the tick holding "now". Never at or before the last
    // tick this collector spooled before a restart.
    let anchored = config.clock.as_ref().is_none_or(|c| c.real_start.is_some());
    let mut tick = if anchored {
        grid.at_or_before(clock.now()).max(origin)
    } else {
        origin
    };
    let resume_after = with_spool(&spool, |s| Ok(s.last_tick_ns())).await?;
    if let Some(last) = resume_after
        && tick.0 <= last
    {
        tick = grid.after(UnixNanos(last));
    }
    let mut outgoing = Sample::default();
    let mut ticks_in_batch = 0u32;
    let mut spool_failure = None;
    loop {
        if stop_at.is_some_and(|stop| tick > stop) {
            break;
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = clock.sleep_until(tick) => {}
        }
        for source in &mut sources {
            match source.sample(tick).await {
                Ok(sample) => {
                    stats
                        .readings_sampled
                        .fetch_add(sample.readings.len() as u64, Ordering::Relaxed);
                    outgoing.readings.extend(sample.readings);
                    outgoing.allocations.extend(sample.allocations);
                    outgoing.meters.extend(sample.meters);
                }
                Err(message) => {
                    stats.source_errors.fetch_add(1, Ordering::Relaxed);
                    warn!(source = source.name(), error = %message, "Source read failed; its next reading covers the gap.");
                }
            }
        }
        stats.last_tick_ns.store(tick.0, Ordering::Relaxed);
        ticks_in_batch += 1;
        if ticks_in_batch >= config.samples_per_batch {
            ticks_in_batch = 0;
            if let Err(error) = append(&spool, &appended, std::mem::take(&mut outgoing)).await {
                spool_failure = Some(error);
                break;
            }
        }
        tick = UnixNanos(tick.0 + interval_ns);
        if matches!(clock, Clock::Wall) {
            // After a stall, resume at the next tick instead of sampling in a burst.
            let now = wall_clock_now();
            if tick.0 + interval_ns < now.0 {
                tick = grid.after(now);
            }
        }
    }
    if spool_failure.is_none()
        && (!outgoing.readings.is_empty()
            || !outgoing.allocations.is_empty()
            || !outgoing.meters.is_empty())
    {
        spool_failure = append(&spool, &appended, outgoing).await.err();
    }
    // Caps come off before the collector goes.
    caps_stop.cancel();
    let _ = capper.await;
    sampling_done.cancel();
    if let Some(error) = spool_failure {
        uplink_task.abort();
        return Err(Error::Spool(error));
    }
    info!("Sampling stopped; flushing the spool.");
    let flush = Duration::from_secs(config.flush_timeout_s);
    match tokio::time::timeout(flush, &mut uplink_task).await {
        Ok(_) => Ok(()),
        Err(_) => {
            uplink_task.abort();
            let left = with_spool(&spool, |s| s.len()).await.unwrap_or(0);
            Err(Error::Uplink(format!(
                "{left} batch(es) still unacknowledged after {} s of flushing; they stay in the spool and are sent at the next start",
                config.flush_timeout_s
            )))
        }
    }
}

/// The instants a collector ticks at: `phase_ns + k × interval_ns`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TickGrid {
    pub interval_ns: i64,
    pub phase_ns: i64,
}

impl TickGrid {
    /// The latest tick at or before `at`.
    pub fn at_or_before(self, at: UnixNanos) -> UnixNanos {
        UnixNanos(at.0 - (at.0 - self.phase_ns).rem_euclid(self.interval_ns))
    }

    /// The first tick after `at`.
    pub fn after(self, at: UnixNanos) -> UnixNanos {
        UnixNanos(self.at_or_before(at).0 + self.interval_ns)
    }
}

/// A collector's stable offset within the sample interval, from its id (FNV-1a), so a restart
/// keeps its place and a fleet spreads evenly.
pub fn tick_phase(collector_id: &str, interval_ns: i64) -> i64 {
    let hash = collector_id
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
    i64::try_from(hash % interval_ns.max(1) as u64).unwrap_or(0)
}

/// Appends one batch to the spool (durable when this returns) and wakes the uplink.
async fn append(
    spool: &SharedSpool,
    appended: &Notify,
    sample: Sample,
) -> Result<u64, crate::spool::SpoolError> {
    let seq = with_spool(spool, move |s| s.append(sample)).await?;
    appended.notify_one();
    Ok(seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_keep_their_phase_and_a_fleet_spreads_over_the_interval() {
        let grid = TickGrid {
            interval_ns: 1_000,
            phase_ns: 250,
        };
        assert_eq!(grid.at_or_before(UnixNanos(10_249)), UnixNanos(9_250));
        assert_eq!(grid.at_or_before(UnixNanos(10_250)), UnixNanos(10_250));
        assert_eq!(grid.after(UnixNanos(10_250)), UnixNanos(11_250));
        assert_eq!(grid.at_or_before(UnixNanos(-1)), UnixNanos(-750));

        let interval = 1_000_000_000;
        assert_eq!(
            tick_phase("node-7", interval),
            tick_phase("node-7", interval)
        );
        // 1000 collectors over ten slices of the second: none holds more than twice its share.
        let mut slices = [0u32; 10];
        for index in 0..1_000 {
            let phase = tick_phase(&format!("loadgen-{index}"), interval);
            assert!((0..interval).contains(&phase));
            slices[(phase / (interval / 10)) as usize] += 1;
        }
        assert!(slices.iter().all(|&n| n < 200), "{slices:?}");
    }
}
