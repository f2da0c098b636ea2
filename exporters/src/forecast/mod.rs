//! The utility's view: the facility's draw over the next 48 hours with P10/P50/P90.
//!
//! [`analog`] is the model, [`baselines`] the two forecasts it must beat, [`backtest`] scores
//! them on rolling origins, [`series`] and [`csv_input`] turn real exports into a regular
//! series, and [`output`] writes a forecast as JSON, CSV or an OpenADR 3 report.

pub mod analog;
pub mod backtest;
pub mod baselines;
pub mod chart;
pub mod csv_input;
pub mod output;
pub mod series;

use serde::Serialize;

pub use analog::AnalogModel;
pub use backtest::{BacktestSummary, Origins};
pub use series::{Clock, Series, SeriesNotes};

/// Why a forecast or backtest could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ForecastError {
    /// The input is malformed: the message names the column, row or parameter.
    #[error("{0}")]
    Input(String),
    /// The history cannot support a forecast: the message says what is missing.
    #[error("history too short or sparse to fit: {0}")]
    History(String),
}

/// One step's quantiles, in the series' unit. The model's always hold `p10 ≤ p50 ≤ p90`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Quantiles {
    pub p10: f64,
    pub p50: f64,
    pub p90: f64,
}

impl Quantiles {
    /// A centre and a band around it: `p10 = p50 + low`, `p90 = p50 + high`, as given.
    pub fn around(p50: f64, low: f64, high: f64) -> Self {
        Self {
            p10: p50 + low,
            p50,
            p90: p50 + high,
        }
    }

    /// The three values in order, whichever way they were given.
    pub fn ordered(a: f64, b: f64, c: f64) -> Self {
        let mut v = [a, b, c];
        v.sort_unstable_by(f64::total_cmp);
        Self {
            p10: v[0],
            p50: v[1],
            p90: v[2],
        }
    }
}

/// What the forecast is of and from: filled by whoever read the series.
#[derive(Clone, Debug, Serialize)]
pub struct ForecastContext {
    pub site: String,
    /// What is forecast, e.g. "facility power (site meter)".
    pub target: String,
    /// How the history was read, e.g. which parts are windows and which hourly roll-ups.
    pub history: String,
    /// The inputs the model used.
    pub inputs_used: Vec<String>,
    /// Inputs a forecast of this kind can use that this one did not, each with why.
    pub inputs_not_used: Vec<NotUsed>,
}

/// An input left out, and why.
#[derive(Clone, Debug, Serialize)]
pub struct NotUsed {
    pub input: String,
    pub reason: String,
}

/// A forecast as it is served: the points and everything needed to judge them.
#[derive(Clone, Debug, Serialize)]
pub struct Forecast {
    pub site: String,
    /// The first forecast step's start (RFC 3339); the history ends here.
    pub origin: String,
    /// ISO 8601 duration of a step.
    pub step: String,
    pub unit: &'static str,
    pub target: String,
    pub model: ModelInfo,
    pub training: Training,
    pub inputs_used: Vec<String>,
    pub inputs_not_used: Vec<NotUsed>,
    /// The model against the baselines on this same series, from daily origins over the last
    /// four weeks before this forecast's origin; absent (with the reason) where the history is
    /// too short.
    pub backtest: Option<BacktestSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backtest_unavailable: Option<String>,
    pub points: Vec<ForecastPoint>,
    /// The origin and step in ns, and the measured kW of the 48 hours before the origin, for
    /// the chart ([`chart`]); not part of the JSON (`training` says where the history is).
    #[serde(skip)]
    pub origin_ns: i64,
    #[serde(skip)]
    pub step_ns: i64,
    #[serde(skip)]
    pub recent: Vec<(i64, f64)>,
}

/// The model and its settings.
#[derive(Clone, Debug, Serialize)]
pub struct ModelInfo {
    pub name: &'static str,
    pub method: &'static str,
    pub neighbours: usize,
}

/// The history the model learned from.
#[derive(Clone, Debug, Serialize)]
pub struct Training {
    pub from: String,
    pub to: String,
    pub history: String,
    #[serde(flatten)]
    pub notes: SeriesNotes,
}

/// One forecast step, in kW.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ForecastPoint {
    pub timestamp: String,
    pub p10_kw: f64,
    pub p50_kw: f64,
    pub p90_kw: f64,
}

/// Forecasts `series` (in kW) for `horizon` steps from step `origin`, and backtests the model on
/// the same series from the daily origins of the four weeks before.
///
/// # Errors
/// [`ForecastError::History`] when the model cannot forecast from `origin`.
pub fn forecast(
    series: &Series,
    notes: SeriesNotes,
    origin: usize,
    horizon: usize,
    context: ForecastContext,
) -> Result<Forecast, ForecastError> {
    let model = AnalogModel::default();
    let quantiles = model.forecast(series, origin, horizon)?;
    let history = Series {
        values: series.values[..origin].to_vec(),
        ..series.clone()
    };
    let daily = Origins {
        time_of_day_s: 0,
        every_s: 86_400,
        count: 28,
        horizon,
    };
    let (backtest, backtest_unavailable) = match backtest::run(&history, &model, &daily, |_, _| {})
    {
        Ok((summary, _)) => (Some(summary), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let kw = |v: f64| (v * 1_000.0).round() / 1_000.0;
    let points = quantiles
        .iter()
        .enumerate()
        .map(|(h, q)| ForecastPoint {
            timestamp: series.format_time(series.time_of(origin + h)),
            p10_kw: kw(q.p10),
            p50_kw: kw(q.p50),
            p90_kw: kw(q.p90),
        })
        .collect();
    let first = series.values.iter().position(Option::is_some).unwrap_or(0);
    let recent = (origin.saturating_sub(horizon)..origin)
        .filter_map(|t| series.values[t].map(|kw| (series.time_of(t), kw)))
        .collect();
    Ok(Forecast {
        site: context.site,
        origin: series.format_time(series.time_of(origin)),
        step: output::iso_duration(series.step_ns),
        unit: "kW",
        target: context.target,
        model: ModelInfo {
            name: AnalogModel::NAME,
            method: "quantiles of the outcomes of the most similar past states (last value, \
                     day and week means, time at level, time of day), from the history before \
                     the origin only",
            neighbours: model.neighbours,
        },
        training: Training {
            from: series.format_time(series.time_of(first)),
            to: series.format_time(series.time_of(origin)),
            history: context.history,
            notes,
        },
        inputs_used: context.inputs_used,
        inputs_not_used: context.inputs_not_used,
        backtest,
        backtest_unavailable,
        points,
        origin_ns: series.time_of(origin),
        step_ns: series.step_ns,
        recent,
    })
}
