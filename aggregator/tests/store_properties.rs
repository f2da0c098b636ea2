//! Properties of the store on random input: no panic, an answer for every batch, duplicates
//! change nothing, batches and readings out of order are placed where they belong, and what is
//! stored is a consistent chain per meter.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use footprint_aggregator::AggregatorConfig;
use footprint_aggregator::codec::{Movement, Step};
use footprint_aggregator::metrics::AggregatorMetrics;
use footprint_aggregator::store::StoreHandle;
use footprint_aggregator::tables::{LEDGER_FILE, schema, series};
use footprint_core::{Span, UnixNanos};
use footprint_proto::v1::{Batch, Hello, MeterInfo, MeterKind, Reading};
use proptest::prelude::*;

const SECOND: i64 = 1_000_000_000;
const T0: i64 = 1_730_678_400 * SECOND;
const RAPL_MAX: u64 = 1_000_000;
const METERS: [&str; 4] = ["gpu0", "gpu1", "rapl", "not-announced"];

fn hello() -> Hello {
    let meter = |id: &str, kind: MeterKind, counter_max: u64| MeterInfo {
        meter_id: id.into(),
        kind: kind as i32,
        device: id.into(),
        counter_max,
        cpus: vec![0, 1],
        method: "test".into(),
        model: String::new(),
        job: String::new(),
        resolution: 0,
    };
    Hello {
        collector_id: "random".into(),
        host: "h".into(),
        software_version: "test".into(),
        meters: vec![
            meter("gpu0", MeterKind::GpuEnergy, 0),
            meter("gpu1", MeterKind::GpuEnergy, 0),
            meter("rapl", MeterKind::CpuPackageEnergy, RAPL_MAX),
        ],
    }
}

/// One generated reading: which meter, seconds since the previous reading, and how to make the value.
#[derive(Clone, Debug)]
enum ValueRule {
    /// A plausible increment on the meter's running value.
    Grow(u64),
    /// Anything at all.
    Any(u64),
    /// A small value: a reset, a wrap or a fall, depending on where the counter was.
    Small(u64),
}

fn reading_strategy() -> impl Strategy<Value = (usize, i64, ValueRule, i32)> {
    (
        0usize..METERS.len(),
        -2i64..30,
        prop_oneof![
            6 => (0u64..200_000).prop_map(ValueRule::Grow),
            1 => any::<u64>().prop_map(ValueRule::Any),
            2 => (0u64..2_000).prop_map(ValueRule::Small),
        ],
        prop_oneof![8 => Just(1i32), 1 => -1i32..6],
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_batches_leave_a_consistent_ledger(
        batches in prop::collection::vec((1u64..12, prop::collection::vec(reading_strategy(), 0..20)), 1..14)
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut config = AggregatorConfig::with_data_dir(dir.path().to_path_buf());
        // One batch at a time, each awaited: there is never a second one to wait for.
        config.group_commit_wait_ms = 0;
        let metrics = Arc::new(AggregatorMetrics::default());
        let (stored_or_rejected, submitted) = runtime.block_on(async {
            let store = StoreHandle::open(&config, Arc::clone(&metrics)).unwrap();
            let accepted = store.hello(hello()).await.unwrap();
            let mut running: BTreeMap<usize, u64> = BTreeMap::new();
            let mut at = T0;
            let mut answered = 0u64;
            let mut submitted = 0u64;
            let mut stored_seqs = std::collections::BTreeSet::new();
            for (seq, readings) in &batches {
                let readings: Vec<Reading> = readings
                    .iter()
                    .map(|(meter, step_s, rule, quality)| {
                        at += step_s * SECOND;
                        let value = running.entry(*meter).or_insert(0);
                        *value = match rule {
                            ValueRule::Grow(by) => value.saturating_add(*by) % (RAPL_MAX + 1),
                            ValueRule::Any(v) | ValueRule::Small(v) => *v,
                        };
                        Reading { meter_id: METERS[*meter].into(), value: *value, timestamp_ns: at, quality: *quality, method: String::new() }
                    })
                    .collect();
                let count = readings.len() as u64;
                let outcome = store
                    .submit(accepted.collector, Batch { collector_id: "random".into(), seq: *seq, readings, allocations: vec![], compacted: false, meters: vec![] , spool_pending: 0 })
                    .await
                    .unwrap()
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(outcome.seq, *seq);
                // A sequence number stored before is a duplicate and changes nothing; one below the
                // highest stored but never stored itself is a batch arriving out of order, stored.
                assert_eq!(outcome.duplicate, stored_seqs.contains(seq), "seq {seq} after {stored_seqs:?}");
                if outcome.duplicate {
                    assert!(outcome.rejections.is_empty());
                } else {
                    stored_seqs.insert(*seq);
                    submitted += count;
                    answered += count - outcome.rejections.len() as u64;
                    for rejection in &outcome.rejections {
                        assert!(rejection.field.starts_with("readings["), "{rejection:?}");
                        assert!(!rejection.reason.is_empty());
                    }
                }
            }
            store.build_windows().await.unwrap();
            assert!(store.close(std::time::Duration::from_secs(30)).await, "the writer did not finish");
            (answered, submitted)
        });

        let connection = schema::open_reader(&dir.path().join(LEDGER_FILE)).unwrap();
        // Read as every reader reads: through store::series, wherever the readings were laid out.
        let staged: i64 = connection.query_row("SELECT COUNT(*) FROM staged_readings", [], |r| r.get(0)).unwrap();
        prop_assert_eq!(staged, 0, "a closed ledger has nothing staged");
        let meters: Vec<(i64, i64)> = connection
            .prepare("SELECT id, counter_max FROM meters ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let everything = Span::new(UnixNanos(i64::MIN + 1), UnixNanos(i64::MAX));
        type Row = (i64, i64, i64, i64, Option<i64>, Option<i64>, Option<i64>);
        let mut rows: Vec<Row> = Vec::new();
        for (meter, counter_max) in meters {
            for r in series::readings_in(&connection, meter, everything).unwrap() {
                rows.push((meter, counter_max, r.ts_ns, r.value, r.from_ns, r.delta, r.step));
            }
        }
        let stored = rows.len() as u64;
        let rejected: u64 = connection.query_row("SELECT COUNT(*) FROM rejections", [], |r| r.get::<_, i64>(0)).unwrap() as u64;
        prop_assert_eq!(stored, stored_or_rejected);
        prop_assert_eq!(stored + rejected, submitted);
        prop_assert_eq!(metrics.readings_stored.get(), stored);

        // Per meter, stored readings chain: each closes the interval since the previous one, and
        // its delta is what its step code says.
        let mut previous: Option<(i64, i64, u64)> = None;
        for (meter, counter_max, ts, value, from, delta, step) in rows {
            let value = value as u64;
            match (previous, from) {
                (Some((prev_meter, prev_ts, prev_value)), Some(from)) => {
                    prop_assert_eq!(prev_meter, meter, "a meter's first reading must be a baseline");
                    prop_assert_eq!(from, prev_ts);
                    let delta = delta.unwrap() as u64;
                    let expected = match Step::decode(step.unwrap()).movement {
                        Movement::Advanced => value - prev_value,
                        Movement::Wrapped => (counter_max as u64 - prev_value) + 1 + value,
                        Movement::Reset => value,
                    };
                    prop_assert_eq!(delta, expected);
                }
                // The first reading of a meter is its baseline.
                (_, None) => {
                    prop_assert!(delta.is_none());
                    prop_assert!(previous.is_none_or(|(prev_meter, _, _)| prev_meter != meter));
                }
                (None, Some(_)) => prop_assert!(false, "a meter's first reading must be a baseline"),
            }
            previous = Some((meter, ts, value));
        }
        // Windows built from this ledger balance exactly.
        let (it, idle, unattributed, jobs): (i64, i64, i64, i64) = connection
            .query_row(
                "SELECT COALESCE(SUM(it_mj),0), COALESCE(SUM(idle_mj),0), COALESCE(SUM(unattributed_mj),0),
                        (SELECT COALESCE(SUM(gpu_mj + cpu_mj + dram_mj),0) FROM window_jobs) FROM window_hosts",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        prop_assert_eq!(jobs + idle + unattributed, it);
    }
}
