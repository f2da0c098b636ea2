//! Bytes on disk per stored reading, before and after the ledger packs readings into hourly
//! chunks, for three kinds of counter: one collector with `METERS` GPU energy meters (100) read
//! every second for `HOURS` hours (3), through the real store (validation, intervals, SQLite):
//!
//! - `steady`: constant power per meter, as `footprint loadgen`'s synthetic source draws;
//! - `biohpc`: the real hourly average power of the BioHPC H100 server
//!   (`collector/traces/biohpc_gpu_power_2024_nov_dec.csv`), linear between hours;
//! - `noisy`: the same hours with each second's power drawn uniformly between that hour's real
//!   minimum and maximum — no sub-hour trace exists, so this is a worst case, not a measurement.
//!
//! `cargo bench -p footprint-aggregator --bench ledger_bytes`

// A benchmark reports setup failures by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Instant;

use footprint_aggregator::AggregatorConfig;
use footprint_aggregator::metrics::AggregatorMetrics;
use footprint_aggregator::store::StoreHandle;
use footprint_aggregator::tables::{LEDGER_FILE, schema};
use footprint_proto::v1::{Batch, Hello, MeterInfo, MeterKind, Quality, Reading};

const SECOND: i64 = 1_000_000_000;
/// 2024-11-01T00:00:00Z, the trace's first hour.
const START: i64 = 1_730_419_200 * SECOND;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// (average, minimum, maximum) W of each hour of the H100 host.
fn trace_hours() -> Vec<(f64, f64, f64)> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../collector/traces/biohpc_gpu_power_2024_nov_dec.csv"
    );
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .filter(|line| line.contains(",cbsugpu08,"))
        .map(|line| {
            let fields: Vec<f64> = line
                .split(',')
                .skip(2)
                .take(3)
                .map(|f| f.parse().unwrap())
                .collect();
            (fields[0], fields[1], fields[2])
        })
        .collect()
}

/// xorshift64*: a fixed, dependency-free stream of noise.
struct Noise(u64);

impl Noise {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Clone, Copy)]
enum Profile {
    Steady,
    Biohpc,
    Noisy,
}

impl Profile {
    fn name(self) -> &'static str {
        match self {
            Profile::Steady => "steady",
            Profile::Biohpc => "biohpc",
            Profile::Noisy => "noisy",
        }
    }

    /// Power of `meter` in second `second`, mW.
    fn power_mw(
        self,
        meter: usize,
        second: usize,
        hours: &[(f64, f64, f64)],
        noise: &mut Noise,
    ) -> u64 {
        let hour = (second / 3_600 + meter * 7) % (hours.len() - 1);
        let (average, minimum, maximum) = hours[hour];
        let watts = match self {
            Profile::Steady => 300.0 + (meter % 50) as f64,
            Profile::Biohpc => {
                let along = (second % 3_600) as f64 / 3_600.0;
                average + (hours[hour + 1].0 - average) * along
            }
            Profile::Noisy => minimum + (maximum - minimum) * noise.unit(),
        };
        (watts * 1_000.0).round() as u64
    }
}

fn file_bytes(path: &std::path::Path) -> u64 {
    let connection = schema::open(path).unwrap();
    // In WAL mode VACUUM writes its copy to the WAL: checkpoint after it.
    connection.execute_batch("VACUUM").unwrap();
    connection
        .pragma_update(None, "wal_checkpoint", "TRUNCATE")
        .unwrap();
    std::fs::metadata(path).unwrap().len()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Feeds `profile`'s readings through the store at `config` and builds the windows; returns the
/// readings stored.
fn ingest(
    config: &AggregatorConfig,
    profile: Profile,
    meters: usize,
    hours: usize,
    trace: &[(f64, f64, f64)],
) -> u64 {
    runtime().block_on(async {
        let store = StoreHandle::open(config, Arc::new(AggregatorMetrics::default())).unwrap();
        let ids: Vec<String> = (0..meters).map(|m| format!("gpu{m}")).collect();
        let accepted = store
            .hello(Hello {
                collector_id: "bench".into(),
                host: "bench".into(),
                software_version: "bench".into(),
                meters: ids
                    .iter()
                    .map(|id| MeterInfo {
                        meter_id: id.clone(),
                        kind: MeterKind::GpuEnergy as i32,
                        device: id.clone(),
                        ..Default::default()
                    })
                    .collect(),
            })
            .await
            .unwrap();
        let mut counters = vec![0u64; meters];
        let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
        let mut stored = 0u64;
        // One more second than the span, so that the last hour's windows are built.
        for second in 0..=hours * 3_600 {
            let at = START + second as i64 * SECOND;
            let readings: Vec<Reading> = (0..meters)
                .map(|meter| {
                    if second > 0 {
                        counters[meter] += profile.power_mw(meter, second, trace, &mut noise);
                    }
                    Reading {
                        meter_id: ids[meter].clone().into(),
                        value: counters[meter],
                        timestamp_ns: at,
                        quality: Quality::Measured as i32,
                        method: String::new(),
                    }
                })
                .collect();
            stored += readings.len() as u64;
            let outcome = store
                .submit(
                    accepted.collector,
                    Batch {
                        collector_id: "bench".into(),
                        seq: second as u64 + 1,
                        readings,
                        allocations: vec![],
                        compacted: false,
                        meters: vec![],
                        spool_pending: 0,
                    },
                )
                .await
                .unwrap()
                .await
                .unwrap()
                .unwrap();
            assert!(outcome.rejections.is_empty(), "{:?}", outcome.rejections);
        }
        store.build_windows().await.unwrap();
        assert!(store.close(std::time::Duration::from_secs(60)).await);
        stored
    })
}

/// Opens the store at `config` and packs everything old enough; returns the seconds it took,
/// opening included (the writer starts packing in its first idle moment, before any request).
fn compact_now(config: &AggregatorConfig) -> f64 {
    runtime().block_on(async {
        let started = Instant::now();
        let store = StoreHandle::open(config, Arc::new(AggregatorMetrics::default())).unwrap();
        store.compact().await.unwrap();
        let elapsed = started.elapsed().as_secs_f64();
        assert!(store.close(std::time::Duration::from_secs(60)).await);
        elapsed
    })
}

fn run(profile: Profile, meters: usize, hours: usize, trace: &[(f64, f64, f64)]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(LEDGER_FILE);
    let mut config = AggregatorConfig::with_data_dir(dir.path().to_path_buf());
    // One batch at a time, each awaited: there is never a second one to wait for.
    config.group_commit_wait_ms = 0;
    // Unpacked only (staged records, runs, rows): nothing is ever old enough to pack.
    config.compact_after_s = u64::MAX / 4;
    let readings = ingest(&config, profile, meters, hours, trace);
    let unpacked_bytes = file_bytes(&path);
    config.compact_after_s = 0;
    let compact_s = compact_now(&config);
    let connection = schema::open_reader(&path).unwrap();
    let (packed, unpacked, payload): (i64, i64, i64) = connection
        .query_row(
            "SELECT (SELECT COALESCE(SUM(readings), 0) FROM reading_chunks WHERE packed = 1),
                    (SELECT COUNT(*) FROM readings)
                      + (SELECT COALESCE(SUM(readings), 0) FROM reading_chunks WHERE packed = 0),
                    (SELECT COALESCE(SUM(length(data)), 0) FROM reading_chunks WHERE packed = 1)",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .unwrap();
    drop(connection);
    let packed_bytes = file_bytes(&path);
    println!(
        "{{\"profile\": \"{}\", \"readings\": {readings}, \"packed\": {packed}, \"unpacked_left\": {unpacked}, \
\"file_bytes_per_reading_unpacked\": {:.2}, \"file_bytes_per_reading_packed\": {:.3}, \
\"chunk_bytes_per_reading\": {:.3}, \"compact_s\": {compact_s:.2}, \"packed_per_s\": {:.0}}}",
        profile.name(),
        unpacked_bytes as f64 / readings as f64,
        packed_bytes as f64 / readings as f64,
        payload as f64 / packed.max(1) as f64,
        packed as f64 / compact_s,
    );
}

fn main() {
    // `cargo test --benches` runs benchmarks once as tests; keep that quick.
    let quick = std::env::args().any(|a| a == "--test");
    let meters = env("METERS", if quick { 4 } else { 100 });
    let hours = env("HOURS", if quick { 1 } else { 3 });
    let trace = trace_hours();
    for profile in [Profile::Steady, Profile::Biohpc, Profile::Noisy] {
        run(profile, meters, hours, &trace);
    }
}
