//! The forecaster on real series: both BioHPC GPU servers, backtested exactly as
//! `footprint forecast backtest` does (origins at 00:00 every 7 days over the last 52 weeks,
//! 48 h ahead). The bounds are the goals `BENCHMARKS.md` reports against, so a change to the
//! model that loses them fails here.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use footprint_exporters::forecast::csv_input::{self, CsvColumns};
use footprint_exporters::forecast::{AnalogModel, Origins, Series, backtest};

const FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/gpu_power_biohpc_hourly.csv"
);

fn backtest_of(host: &str) -> backtest::BacktestSummary {
    let columns = CsvColumns {
        time: "hour_start_local".into(),
        value: "gpu_power_avg_w".into(),
        only: Some(("host".into(), host.into())),
    };
    let read = csv_input::read(std::fs::File::open(FILE).unwrap(), &columns).unwrap();
    let (series, _) = Series::from_points(&read.points, 3_600_000_000_000, read.clock).unwrap();
    let origins = Origins::weekly(&series);
    let (summary, points) =
        backtest::run(&series, &AnalogModel::default(), &origins, |_, _| {}).unwrap();
    assert_eq!(summary.origins, 52, "{host}");
    assert_eq!(points.len() as u64, summary.points_scored);
    for point in &points {
        let q = point.quantiles;
        assert!(
            0.0 <= q.p10 && q.p10 <= q.p50 && q.p50 <= q.p90,
            "{host}: {point:?}"
        );
    }
    summary
}

#[test]
fn the_model_beats_both_baselines_with_a_calibrated_band_on_both_servers() {
    for (host, seasonal_bound) in [("cbsugpu05", 0.5), ("cbsugpu08", 0.55)] {
        let summary = backtest_of(host);
        assert!(
            summary.pinball_ratio_persistence <= 0.9,
            "{host}: {summary:?}"
        );
        // cbsugpu08 reaches 0.53× seasonal-naive, short of the 0.5 goal (`BENCHMARKS.md`).
        assert!(
            summary.pinball_ratio_seasonal_naive <= seasonal_bound,
            "{host}: {summary:?}"
        );
        assert!(
            (0.75..=0.85).contains(&summary.coverage_p10_p90),
            "{host}: {summary:?}"
        );
        assert!(summary.mape_p50 < summary.persistence.mape_p50, "{host}");
    }
}
