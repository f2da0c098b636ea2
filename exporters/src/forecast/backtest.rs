//! Rolling-origin backtests: each model forecasts from origins it has not seen past, and every
//! forecast step with a measured value is scored.

use std::time::Instant;

use serde::Serialize;

use super::{AnalogModel, ForecastError, Quantiles, Series, baselines};

/// Which origins to forecast from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origins {
    /// Time of day of every origin, seconds after midnight of the series' clock.
    pub time_of_day_s: i64,
    /// Seconds between origins.
    pub every_s: i64,
    /// At most this many, the latest the series allows.
    pub count: usize,
    /// Steps forecast from each.
    pub horizon: usize,
}

impl Origins {
    /// The definition: 00:00 every 7 days over the last 52 weeks, 48 hours ahead.
    pub fn weekly(series: &Series) -> Self {
        Self {
            time_of_day_s: 0,
            every_s: 7 * 86_400,
            count: 52,
            horizon: series.steps_in(48 * 3_600),
        }
    }

    /// The origin steps, oldest first: the latest whose horizon ends within the series, then
    /// back by `every_s`, stopping at the series' start.
    pub fn of(&self, series: &Series) -> Vec<usize> {
        const DAY_NS: i64 = 86_400_000_000_000;
        let last_end = series.end_ns() - self.horizon as i64 * series.step_ns;
        let midnight = last_end.div_euclid(DAY_NS) * DAY_NS;
        let mut at = midnight + self.time_of_day_s * 1_000_000_000;
        if at > last_end {
            at -= DAY_NS;
        }
        let mut origins = Vec::new();
        while origins.len() < self.count && at >= series.start_ns {
            if let Some(index) = series.index_of(at) {
                origins.push(index);
            }
            at = at.saturating_sub(self.every_s.saturating_mul(1_000_000_000));
        }
        origins.reverse();
        origins
    }
}

/// How well one model did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Scores {
    /// Mean pinball loss over the scored points and the three quantiles, in the series' unit.
    pub pinball_loss: f64,
    /// Mean |actual − P50| / |actual| over the points whose actual is not zero.
    pub mape_p50: f64,
    /// Share of the points with P10 ≤ actual ≤ P90 (0.8 when calibrated).
    pub coverage_p10_p90: f64,
    /// Seconds the model took over all origins (fit and forecast).
    pub seconds: f64,
}

/// The backtest's answer: the model's scores, the baselines' on the same points, and how it
/// was run.
#[derive(Clone, Debug, Serialize)]
pub struct BacktestSummary {
    pub pinball_loss: f64,
    pub mape_p50: f64,
    pub coverage_p10_p90: f64,
    pub seconds: f64,
    /// Median milliseconds of one fit and forecast of the model.
    pub median_ms_per_forecast: f64,
    pub seasonal_naive: Scores,
    pub persistence: Scores,
    /// The model's pinball loss over each baseline's.
    pub pinball_ratio_seasonal_naive: f64,
    pub pinball_ratio_persistence: f64,
    pub model: &'static str,
    pub origins: usize,
    /// Origins left out, each with why (history too short, no recent value).
    pub origins_skipped: Vec<String>,
    /// Forecast steps scored (with a measured value), and those without one.
    pub points_scored: u64,
    pub points_unmeasured: u64,
    /// Steps zero actuals left out of the MAPE.
    pub mape_zero_actuals: u64,
}

/// One scored step of the model's forecasts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    pub origin: usize,
    pub step: usize,
    pub quantiles: Quantiles,
    pub actual: f64,
}

/// Runs the model and both baselines from every origin, calling `progress(done, total)` after
/// each origin.
///
/// # Errors
/// [`ForecastError::History`] when no origin can be forecast by all three.
pub fn run(
    series: &Series,
    model: &AnalogModel,
    origins: &Origins,
    mut progress: impl FnMut(usize, usize),
) -> Result<(BacktestSummary, Vec<Point>), ForecastError> {
    let candidates = origins.of(series);
    let mut tallies = [Tally::default(), Tally::default(), Tally::default()];
    let mut seconds = [0.0f64; 3];
    let mut timings = Vec::with_capacity(candidates.len());
    let mut skipped = Vec::new();
    let mut points = Vec::new();
    let mut unmeasured = 0u64;
    for (done, &origin) in candidates.iter().enumerate() {
        let started = Instant::now();
        let ours = model.forecast(series, origin, origins.horizon);
        let ours_s = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let seasonal = baselines::seasonal_naive(series, origin, origins.horizon);
        let seasonal_s = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let persisted = baselines::persistence(series, origin, origins.horizon);
        let persisted_s = started.elapsed().as_secs_f64();
        match (ours, seasonal, persisted) {
            (Ok(ours), Ok(seasonal), Ok(persisted)) => {
                timings.push(ours_s * 1e3);
                for (i, s) in [ours_s, seasonal_s, persisted_s].into_iter().enumerate() {
                    seconds[i] += s;
                }
                for (step, quantiles) in ours.iter().enumerate() {
                    let Some(actual) = series.values.get(origin + step).copied().flatten() else {
                        unmeasured += 1;
                        continue;
                    };
                    tallies[0].add(quantiles, actual);
                    tallies[1].add(&seasonal[step], actual);
                    tallies[2].add(&persisted[step], actual);
                    points.push(Point {
                        origin,
                        step,
                        quantiles: *quantiles,
                        actual,
                    });
                }
            }
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                skipped.push(format!(
                    "{}: {e}",
                    series.format_time(series.time_of(origin))
                ));
            }
        }
        progress(done + 1, candidates.len());
    }
    if timings.is_empty() {
        return Err(ForecastError::History(match skipped.last() {
            Some(why) => format!("no origin could be forecast (the latest, {why})"),
            None => "the series is shorter than one horizon".into(),
        }));
    }
    let [ours, seasonal, persisted] = tallies.map(|t| t.scores());
    let with_time = |scores: Scores, seconds: f64| Scores { seconds, ..scores };
    timings.sort_unstable_by(f64::total_cmp);
    let summary = BacktestSummary {
        pinball_loss: ours.pinball_loss,
        mape_p50: ours.mape_p50,
        coverage_p10_p90: ours.coverage_p10_p90,
        seconds: seconds[0],
        median_ms_per_forecast: super::analog::quantile_of_sorted(&timings, 0.5),
        pinball_ratio_seasonal_naive: ratio(ours.pinball_loss, seasonal.pinball_loss),
        pinball_ratio_persistence: ratio(ours.pinball_loss, persisted.pinball_loss),
        seasonal_naive: with_time(seasonal, seconds[1]),
        persistence: with_time(persisted, seconds[2]),
        model: AnalogModel::NAME,
        origins: timings.len(),
        origins_skipped: skipped,
        points_scored: tallies[0].points,
        points_unmeasured: unmeasured,
        mape_zero_actuals: tallies[0].zero_actuals,
    };
    Ok((summary, points))
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { f64::NAN }
}

/// The pinball loss of `quantiles` for `actual`, averaged over the three quantiles.
pub fn pinball(quantiles: &Quantiles, actual: f64) -> f64 {
    [
        (0.1, quantiles.p10),
        (0.5, quantiles.p50),
        (0.9, quantiles.p90),
    ]
    .iter()
    .map(|&(q, predicted)| {
        let miss = actual - predicted;
        (q * miss).max((q - 1.0) * miss)
    })
    .sum::<f64>()
        / 3.0
}

#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    points: u64,
    pinball: f64,
    ape: f64,
    ape_points: u64,
    zero_actuals: u64,
    covered: u64,
}

impl Tally {
    fn add(&mut self, quantiles: &Quantiles, actual: f64) {
        self.points += 1;
        self.pinball += pinball(quantiles, actual);
        if actual == 0.0 {
            self.zero_actuals += 1;
        } else {
            self.ape += ((actual - quantiles.p50) / actual).abs();
            self.ape_points += 1;
        }
        if quantiles.p10 <= actual && actual <= quantiles.p90 {
            self.covered += 1;
        }
    }

    fn scores(&self) -> Scores {
        let per = |sum: f64, n: u64| if n == 0 { f64::NAN } else { sum / n as f64 };
        Scores {
            pinball_loss: per(self.pinball, self.points),
            mape_p50: per(self.ape, self.ape_points),
            coverage_p10_p90: per(self.covered as f64, self.points),
            seconds: 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::series::Clock;
    use super::*;

    const HOUR: i64 = 3_600_000_000_000;

    #[test]
    fn origins_are_midnights_a_week_apart_ending_where_the_horizon_fits() {
        // 40 days from 1970-01-01 05:00, hourly: the last midnight with 48 h after it within the
        // series is day 38's; then back a week at a time while the series has them.
        let series = Series {
            start_ns: 5 * HOUR,
            step_ns: HOUR,
            values: vec![Some(1.0); 24 * 40],
            clock: Clock::Utc,
        };
        let origins = Origins::weekly(&series).of(&series);
        let days: Vec<i64> = origins
            .iter()
            .map(|&i| series.time_of(i) / (24 * HOUR))
            .collect();
        assert_eq!(days, vec![3, 10, 17, 24, 31, 38]);
        assert!(
            origins
                .iter()
                .all(|&i| series.time_of(i) % (24 * HOUR) == 0)
        );
        let last = *origins.last().unwrap();
        assert!(last + 48 <= series.values.len());
    }

    #[test]
    fn pinball_weighs_misses_by_their_quantile() {
        let q = Quantiles::ordered(10.0, 20.0, 30.0);
        // Above P90 by 10: (0.1·30 + 0.5·20 + 0.9·10) / 3.
        assert!((pinball(&q, 40.0) - (3.0 + 10.0 + 9.0) / 3.0).abs() < 1e-12);
        // Below P10 by 10: (0.9·10 + 0.5·20 + 0.1·30) / 3.
        assert!((pinball(&q, 0.0) - (9.0 + 10.0 + 3.0) / 3.0).abs() < 1e-12);
    }

    #[test]
    fn a_backtest_scores_every_measured_step_and_skips_what_it_cannot_forecast() {
        // Ten weeks of a daily pattern with a gap in the last forecast horizon.
        let mut values: Vec<Option<f64>> = (0..24 * 70)
            .map(|h| {
                Some(if (8..20).contains(&(h % 24)) {
                    100.0
                } else {
                    40.0
                })
            })
            .collect();
        values[24 * 70 - 10] = None;
        let series = super::super::series::hourly(values);
        let mut calls = 0;
        let (summary, points) = run(
            &series,
            &AnalogModel::default(),
            &Origins::weekly(&series),
            |_, _| calls += 1,
        )
        .unwrap();
        // Origins on days 5, 12, …, 68; the first lacks a week and a day of history.
        assert_eq!(calls, 10);
        assert_eq!(summary.origins, 9);
        assert_eq!(summary.origins_skipped.len(), 1);
        assert_eq!(summary.points_unmeasured, 1);
        assert_eq!(summary.points_scored, 9 * 48 - 1);
        assert_eq!(points.len() as u64, summary.points_scored);
        // A pure daily pattern: last week is exact; the analogs (more than there are midnights,
        // so some from the hours either side) miss only around the switching hours.
        assert_eq!(summary.seasonal_naive.pinball_loss, 0.0);
        assert!(summary.pinball_ratio_persistence < 0.15, "{summary:?}");
        assert!(summary.coverage_p10_p90 > 0.9, "{summary:?}");
    }
}
