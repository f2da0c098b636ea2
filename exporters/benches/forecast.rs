//! One fit and forecast of the analog-quantile model (48 h ahead), beside the two baselines, on
//! the real hourly BioHPC series (cbsugpu05, 3.2 years with gaps) and on a year of a synthetic
//! 15-minute site series (a daily shape, jobs as random level shifts): the aggregator's worst
//! case, a year of quarter hours.
//!
//! `cargo bench -p footprint-exporters --bench forecast`

// A benchmark reports setup failures by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use footprint_exporters::forecast::csv_input::{self, CsvColumns};
use footprint_exporters::forecast::{AnalogModel, Clock, Series, baselines};

fn biohpc() -> Series {
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/gpu_power_biohpc_hourly.csv"
    );
    let columns = CsvColumns {
        time: "hour_start_local".into(),
        value: "gpu_power_avg_w".into(),
        only: Some(("host".into(), "cbsugpu05".into())),
    };
    let read = csv_input::read(std::fs::File::open(file).unwrap(), &columns).unwrap();
    Series::from_points(&read.points, 3_600_000_000_000, read.clock)
        .unwrap()
        .0
}

/// A year of quarter hours: 400 kW base, +150 kW by day, and job load changing every few hours
/// (a fixed linear-congruential sequence, so every run measures the same series).
fn synthetic_year() -> Series {
    let mut state = 12_345u64;
    let mut jobs = 0.0;
    let values = (0..365 * 96)
        .map(|i| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            if state >> 60 == 0 {
                jobs = ((state >> 20) % 300) as f64;
            }
            let quarter_of_day = i % 96;
            let day = if (32..80).contains(&quarter_of_day) {
                150.0
            } else {
                0.0
            };
            Some(400.0 + day + jobs)
        })
        .collect();
    Series {
        start_ns: 1_672_531_200_000_000_000,
        step_ns: 900_000_000_000,
        values,
        clock: Clock::Utc,
    }
}

fn forecasts(c: &mut Criterion) {
    let model = AnalogModel::default();
    for (name, series) in [
        ("biohpc_hourly", biohpc()),
        ("site_15min_year", synthetic_year()),
    ] {
        let horizon = series.steps_in(48 * 3_600);
        let origin = series.values.len() - horizon;
        let mut group = c.benchmark_group(name);
        group.bench_function("analog_quantiles", |b| {
            b.iter(|| model.forecast(&series, origin, horizon).unwrap());
        });
        group.bench_function("seasonal_naive", |b| {
            b.iter(|| baselines::seasonal_naive(&series, origin, horizon).unwrap());
        });
        group.bench_function("persistence", |b| {
            b.iter(|| baselines::persistence(&series, origin, horizon).unwrap());
        });
        group.finish();
    }
}

criterion_group!(benches, forecasts);
criterion_main!(benches);
