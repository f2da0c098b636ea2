//! The forecaster: analog quantiles. For a forecast made at an origin, every earlier instant of
//! the history is a candidate "analog"; the ones whose recent state looked most like the
//! origin's (last value, mean of the last day and week, how long the load has held its level,
//! the time of day) are taken, and the quantiles of what happened next *to them*, as changes
//! from their last value, added to the origin's last value, are the forecast.
//!
//! Why this and not an exponential-smoothing or seasonal-decomposition model: a GPU site's draw
//! is a few levels (idle, jobs running) joined by jumps, close to a random walk at one server,
//! so its next two days are a mixture ("the job goes on" or "it ends"), not a level plus a
//! symmetric band. Conditioning on similar states gives that mixture's quantiles directly, and
//! from out-of-sample outcomes, so the P10–P90 band is calibrated without a distribution
//! assumed; quantiles come from one sorted sample, so they never cross. Measured against
//! statsforecast's AutoETS and MSTL in `BENCHMARKS.md`.

use super::{ForecastError, Quantiles, Series};

/// The model's settings; [`Default`] holds the ones measured in `BENCHMARKS.md`.
#[derive(Clone, Debug, PartialEq)]
pub struct AnalogModel {
    /// Analogs per horizon step.
    pub neighbours: usize,
    /// Weights of the state features in the distance: last value, mean of the last day, mean
    /// of the last week, log of the hours the level has held.
    pub weights: [f64; 4],
    /// Distance added per hour of difference in time of day.
    pub time_of_day_weight: f64,
    /// A step within this share of the series' standard deviation keeps the level.
    pub level_tolerance: f64,
}

impl Default for AnalogModel {
    fn default() -> Self {
        Self {
            neighbours: 100,
            weights: [1.0, 0.5, 0.25, 0.3],
            time_of_day_weight: 0.03,
            level_tolerance: 0.15,
        }
    }
}

const DAY_S: i64 = 86_400;

impl AnalogModel {
    /// Short name for outputs.
    pub const NAME: &str = "analog-quantiles";

    /// The fewest steps of history before an origin for a forecast of `horizon` steps.
    pub fn min_history(&self, series: &Series, horizon: usize) -> usize {
        series.steps_in(DAY_S) + horizon + self.neighbours
    }

    /// Quantiles for the `horizon` steps from step `origin` of `series`, from the values before
    /// `origin` only. Never negative (a draw is not).
    ///
    /// # Errors
    /// [`ForecastError::History`] when the history is too short or has no value in the day
    /// before the origin.
    pub fn forecast(
        &self,
        series: &Series,
        origin: usize,
        horizon: usize,
    ) -> Result<Vec<Quantiles>, ForecastError> {
        let origin = origin.min(series.values.len());
        let day = series.steps_in(DAY_S);
        let week = series.steps_in(7 * DAY_S);
        if origin < self.min_history(series, horizon) {
            return Err(ForecastError::History(format!(
                "{origin} steps before the origin; the model needs at least {} (a day, the \
                 horizon and {} analogs)",
                self.min_history(series, horizon),
                self.neighbours
            )));
        }
        let history = &series.values[..origin];
        let state = State::of(history, self.level_tolerance);
        let Some(last) = state.held[origin - 1].filter(|_| {
            series
                .last_before(origin)
                .is_some_and(|(i, _)| origin - i <= day)
        }) else {
            return Err(ForecastError::History(
                "no value in the day before the origin".into(),
            ));
        };
        let hours_per_step = series.step_ns as f64 / 3.6e12;
        let features = |t: usize| -> [f64; 4] {
            [
                state.held[t - 1].unwrap_or(f64::NAN),
                state.mean(t, day),
                state.mean(t, week),
                (state.level_steps[t] as f64 * hours_per_step).ln_1p(),
            ]
        };
        let scale = state.deviation.max(1e-9);
        let scales = [scale, scale, scale, 1.0];
        let here = features(origin);
        let hour_of =
            |t: usize| (series.time_of(t).rem_euclid(DAY_S * 1_000_000_000)) as f64 / 3.6e12;
        let origin_hour = hour_of(origin);
        let mut candidates: Vec<(f64, usize)> = (day..=origin - horizon)
            .filter_map(|t| {
                let there = features(t);
                let squares: f64 = (0..4)
                    .map(|i| self.weights[i] * ((there[i] - here[i]) / scales[i]).powi(2))
                    .sum();
                let apart = (hour_of(t) - origin_hour).abs();
                let distance = squares.sqrt() + self.time_of_day_weight * apart.min(24.0 - apart);
                distance.is_finite().then_some((distance, t))
            })
            .collect();
        candidates.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let mut changes = Vec::with_capacity(self.neighbours);
        let mut out = Vec::with_capacity(horizon);
        for h in 0..horizon {
            changes.clear();
            for &(_, t) in &candidates {
                if let (Some(next), Some(then)) = (history[t + h], state.held[t - 1]) {
                    changes.push(next - then);
                    if changes.len() == self.neighbours {
                        break;
                    }
                }
            }
            if changes.is_empty() {
                return Err(ForecastError::History(format!(
                    "no analog has a value {h} steps on"
                )));
            }
            changes.sort_unstable_by(f64::total_cmp);
            let at = |q: f64| (last + quantile_of_sorted(&changes, q)).max(0.0);
            out.push(Quantiles {
                p10: at(0.1),
                p50: at(0.5),
                p90: at(0.9),
            });
        }
        Ok(out)
    }
}

/// The quantile `q` of sorted `values`, interpolated linearly between order statistics (as
/// numpy's default).
pub fn quantile_of_sorted(values: &[f64], q: f64) -> f64 {
    match values.len() {
        0 => f64::NAN,
        1 => values[0],
        n => {
            let position = q.clamp(0.0, 1.0) * (n - 1) as f64;
            let below = position.floor() as usize;
            let above = (below + 1).min(n - 1);
            let fraction = position - below as f64;
            values[below] + (values[above] - values[below]) * fraction
        }
    }
}

/// What the model reads of the history at every step.
struct State {
    /// The last value at or before each step (a gap holds the value before it).
    held: Vec<Option<f64>>,
    /// Running sums and counts of the values, for means over any span.
    sums: Vec<f64>,
    counts: Vec<u32>,
    /// Steps the level has held before each step.
    level_steps: Vec<u32>,
    /// Standard deviation of the history's values.
    deviation: f64,
}

impl State {
    fn of(history: &[Option<f64>], tolerance: f64) -> Self {
        let mut held = Vec::with_capacity(history.len());
        let mut sums = Vec::with_capacity(history.len() + 1);
        let mut counts = Vec::with_capacity(history.len() + 1);
        sums.push(0.0);
        counts.push(0);
        let mut last = None;
        for value in history {
            last = value.or(last);
            held.push(last);
            sums.push(sums[sums.len() - 1] + value.unwrap_or(0.0));
            counts.push(counts[counts.len() - 1] + u32::from(value.is_some()));
        }
        let n = f64::from(counts[counts.len() - 1].max(1));
        let mean = sums[sums.len() - 1] / n;
        let deviation = (history
            .iter()
            .flatten()
            .map(|v| (v - mean).powi(2))
            .sum::<f64>()
            / n)
            .sqrt();
        let mut level_steps = vec![0u32; history.len() + 1];
        for t in 2..=history.len() {
            let same = match (held[t - 1], held[t - 2]) {
                (Some(a), Some(b)) => (a - b).abs() < tolerance * deviation,
                _ => false,
            };
            level_steps[t] = if same { level_steps[t - 1] + 1 } else { 0 };
        }
        Self {
            held,
            sums,
            counts,
            level_steps,
            deviation,
        }
    }

    /// The mean of the values in the `span` steps before `t` (fewer at the start).
    fn mean(&self, t: usize, span: usize) -> f64 {
        let from = t.saturating_sub(span);
        let count = self.counts[t] - self.counts[from];
        if count == 0 {
            f64::NAN
        } else {
            (self.sums[t] - self.sums[from]) / f64::from(count)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::series::hourly;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_steady_load_is_forecast_steady() {
        let series = hourly(vec![Some(250.0); 24 * 20]);
        let forecast = AnalogModel::default()
            .forecast(&series, 24 * 20, 48)
            .unwrap();
        assert_eq!(forecast.len(), 48);
        assert!(forecast.iter().all(|q| q.p10 == 250.0 && q.p90 == 250.0));
    }

    #[test]
    fn a_daily_pattern_is_learned_from_analogs() {
        // 100 kW by day (08:00–20:00), 40 kW at night: from midnight the P50 follows the day.
        let values = (0..24 * 30)
            .map(|h| {
                Some(if (8..20).contains(&(h % 24)) {
                    100.0
                } else {
                    40.0
                })
            })
            .collect();
        let forecast = AnalogModel::default()
            .forecast(&hourly(values), 24 * 30, 48)
            .unwrap();
        assert_eq!(forecast[3].p50, 40.0);
        assert_eq!(forecast[12].p50, 100.0);
        assert_eq!(forecast[36].p50, 100.0);
    }

    #[test]
    fn too_short_or_stale_a_history_is_refused() {
        let model = AnalogModel::default();
        let short = hourly(vec![Some(1.0); 100]);
        let message = model.forecast(&short, 100, 48).unwrap_err().to_string();
        assert!(message.contains("needs at least 172"), "{message}");
        let mut stale = vec![Some(1.0); 24 * 20];
        stale[24 * 18..].fill(None);
        let message = model
            .forecast(&hourly(stale), 24 * 20, 48)
            .unwrap_err()
            .to_string();
        assert!(message.contains("no value in the day before"), "{message}");
    }

    #[test]
    fn quantiles_interpolate_like_numpy() {
        let sorted = [1.0, 2.0, 3.0, 4.0, 10.0];
        assert_eq!(quantile_of_sorted(&sorted, 0.5), 3.0);
        assert!((quantile_of_sorted(&sorted, 0.9) - 7.6).abs() < 1e-12);
        assert!((quantile_of_sorted(&sorted, 0.1) - 1.4).abs() < 1e-12);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// On any history, with any gaps: P10 ≤ P50 ≤ P90, none negative, one row per step.
        #[test]
        fn quantiles_never_cross(
            values in prop::collection::vec(prop::option::weighted(0.9, 0.0f64..5_000.0), 300..700),
            horizon in 1usize..60,
        ) {
            let origin = values.len();
            let mut values = values;
            values[origin - 1] = Some(1.0);
            let series = hourly(values);
            let forecast = AnalogModel::default().forecast(&series, origin, horizon);
            prop_assert!(forecast.is_ok(), "{forecast:?}");
            let forecast = forecast.unwrap_or_default();
            prop_assert_eq!(forecast.len(), horizon);
            for q in forecast {
                prop_assert!(0.0 <= q.p10 && q.p10 <= q.p50 && q.p50 <= q.p90, "{q:?}");
            }
        }
    }
}
