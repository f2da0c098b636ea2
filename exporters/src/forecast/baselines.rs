//! The two forecasts any model must beat, exactly as the backtest's users define them.
//!
//! - *Seasonal-naive*: P50 is the value at the same time one week earlier (a missing one: the
//!   last value before it); P10/P90 are P50 plus the 10th/90th percentile of that rule's errors
//!   over the four weeks before the origin.
//! - *Persistence*: P50 is the last value before the origin; P10/P90 are P50 plus the
//!   10th/90th percentile of every change over 1 to 48 hours seen within those four weeks.
//!
//! As defined, a baseline's P50 can fall outside its band (every error of one sign); it is
//! scored as it is.
//!
//! Where the history is shorter than four weeks (plus the week the seasonal rule looks back),
//! the errors and changes come from what there is, down to one day.

use super::analog::quantile_of_sorted;
use super::{ForecastError, Quantiles, Series};

const DAY_S: i64 = 86_400;
const WEEK_S: i64 = 7 * DAY_S;
/// How far back the baselines learn their spread.
const ERROR_WINDOW_S: i64 = 4 * WEEK_S;
/// The longest change persistence's spread counts.
const MAX_CHANGE_S: i64 = 48 * 3_600;

/// The seasonal-naive forecast for `horizon` steps from `origin`.
///
/// # Errors
/// [`ForecastError::History`] with less than a week and a day of history before `origin`.
pub fn seasonal_naive(
    series: &Series,
    origin: usize,
    horizon: usize,
) -> Result<Vec<Quantiles>, ForecastError> {
    let week = series.steps_in(WEEK_S);
    let day = series.steps_in(DAY_S);
    if origin < week + day {
        return Err(ForecastError::History(format!(
            "{origin} steps before the origin; seasonal-naive needs a week and a day ({})",
            week + day
        )));
    }
    let from = origin
        .saturating_sub(series.steps_in(ERROR_WINDOW_S))
        .max(week);
    let mut errors: Vec<f64> = (from..origin)
        .filter_map(|s| Some(series.values[s]? - series.values[s - week]?))
        .collect();
    let (low, high) = spread(&mut errors, "seasonal-naive errors")?;
    (0..horizon)
        .map(|h| {
            let lagged = origin + h - week;
            let p50 = match series.values[lagged] {
                Some(value) => value,
                None => series.last_before(lagged).map(|(_, v)| v).ok_or_else(|| {
                    ForecastError::History("no value a week before the horizon".into())
                })?,
            };
            Ok(Quantiles::around(p50, low, high))
        })
        .collect()
}

/// The persistence forecast for `horizon` steps from `origin`.
///
/// # Errors
/// [`ForecastError::History`] with less than a day of history or no value before `origin`.
pub fn persistence(
    series: &Series,
    origin: usize,
    horizon: usize,
) -> Result<Vec<Quantiles>, ForecastError> {
    let day = series.steps_in(DAY_S);
    if origin < day {
        return Err(ForecastError::History(format!(
            "{origin} steps before the origin; persistence needs a day ({day})"
        )));
    }
    let (_, last) = series
        .last_before(origin)
        .ok_or_else(|| ForecastError::History("no value before the origin".into()))?;
    let window = &series.values[origin.saturating_sub(series.steps_in(ERROR_WINDOW_S))..origin];
    let longest = series.steps_in(MAX_CHANGE_S);
    let mut changes = Vec::with_capacity(window.len() * longest);
    for (s, before) in window.iter().enumerate() {
        let Some(before) = before else { continue };
        for after in window.iter().skip(s + 1).take(longest).flatten() {
            changes.push(after - before);
        }
    }
    let (low, high) = spread(&mut changes, "persistence changes")?;
    Ok(vec![Quantiles::around(last, low, high); horizon])
}

/// The 10th and 90th percentiles of `values`.
fn spread(values: &mut [f64], what: &str) -> Result<(f64, f64), ForecastError> {
    if values.is_empty() {
        return Err(ForecastError::History(format!(
            "no {what} in the weeks before the origin"
        )));
    }
    values.sort_unstable_by(f64::total_cmp);
    Ok((
        quantile_of_sorted(values, 0.1),
        quantile_of_sorted(values, 0.9),
    ))
}

#[cfg(test)]
mod tests {
    use super::super::series::hourly;
    use super::*;

    /// Five weeks where each week repeats the last plus 7 kW, and every hour adds 1 kW within a
    /// week: every seasonal error over the four weeks is exactly 7, so the band is P50 + 7.
    #[test]
    fn seasonal_naive_is_last_week_plus_its_own_error_percentiles() {
        let values = (0..24 * 7 * 5)
            .map(|h| Some((h / 168) as f64 * 7.0 + (h % 168) as f64))
            .collect();
        let series = hourly(values);
        let origin = 24 * 7 * 5;
        let forecast = seasonal_naive(&series, origin, 48).unwrap();
        for (h, q) in forecast.iter().enumerate() {
            let p50 = 4.0 * 7.0 + h as f64;
            assert_eq!(*q, Quantiles::around(p50, 7.0, 7.0), "step {h}");
        }
    }

    /// Persistence on 0,1,2,…: the last value, and changes of 1…48 within the 4-week window, so
    /// the band is last + the 10th/90th percentile of that list, computed here by hand.
    #[test]
    fn persistence_is_the_last_value_plus_change_percentiles() {
        let n = 24 * 7 * 5;
        let series = hourly((0..n).map(|h| Some(h as f64)).collect());
        let forecast = persistence(&series, n, 48).unwrap();
        // Window 672 values; from each value, the next min(48, rest) values change by 1..=k.
        let mut changes = Vec::new();
        for s in 0..672 {
            for k in 1..=48usize.min(671 - s) {
                changes.push(k as f64);
            }
        }
        changes.sort_by(f64::total_cmp);
        let low = quantile_of_sorted(&changes, 0.1);
        let high = quantile_of_sorted(&changes, 0.9);
        let last = (n - 1) as f64;
        assert_eq!(forecast.len(), 48);
        assert!(
            forecast
                .iter()
                .all(|q| *q == Quantiles::around(last, low, high))
        );
        assert_eq!((low, high), (5.0, 44.0));
    }

    #[test]
    fn a_missing_week_ago_falls_back_to_the_value_before_it() {
        let mut values: Vec<Option<f64>> = (0..24 * 9).map(|h| Some(h as f64)).collect();
        values[24 * 2] = None;
        let forecast = seasonal_naive(&hourly(values), 24 * 9, 1).unwrap();
        assert_eq!(forecast[0].p50, (24 * 2 - 1) as f64);
    }

    #[test]
    fn short_histories_are_refused_by_name() {
        let series = hourly(vec![Some(1.0); 30]);
        let message = seasonal_naive(&series, 30, 48).unwrap_err().to_string();
        assert!(message.contains("seasonal-naive needs"), "{message}");
        let message = persistence(&series, 10, 48).unwrap_err().to_string();
        assert!(message.contains("persistence needs"), "{message}");
    }
}
