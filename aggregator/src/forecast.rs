//! The facility's draw over the next 48 hours ([`footprint_exporters::forecast`]), from the
//! ledger's site series: 15-minute steps from the site windows where their detail is kept, and
//! the hourly roll-ups (each hour's mean power over its four quarters) before that.

use std::collections::BTreeMap;
use std::path::Path;

use footprint_exporters::forecast::{
    self, Clock, Forecast, ForecastContext, ForecastError, NotUsed, Series,
};
use rusqlite::Connection;

use crate::report::stored_config;
use crate::tables::schema;
use crate::{Error, Result};

/// A forecast step.
pub const STEP_NS: i64 = 900_000_000_000;
/// 48 hours of steps.
pub const HORIZON: usize = 192;
const HOUR_NS: i64 = 3_600_000_000_000;

/// What to forecast.
#[derive(Clone, Debug, Default)]
pub struct ForecastRequest {
    /// Forecast from this instant (rounded down to a quarter hour), with the history before it
    /// only; `None`: from the end of the last complete quarter hour in the ledger.
    pub from_ns: Option<i64>,
}

/// The facility's energy per quarter hour, and what it was measured with.
#[derive(Clone, Copy, Debug, Default)]
struct Quarter {
    energy_mj: i64,
    /// Seconds of windows behind `energy_mj`.
    seconds: i64,
    /// Windows by where their facility energy came from: site meter, IT only, IT × PUE.
    metered: i64,
    it_only: i64,
    assumed_pue: i64,
}

impl Quarter {
    fn kw(&self) -> f64 {
        self.energy_mj as f64 / (self.seconds as f64 * 1e6)
    }
}

/// Forecasts the facility's draw from the ledger at `path`.
///
/// # Errors
/// [`Error::BadRequest`] when the history cannot support a forecast (saying why), a database
/// error.
pub fn make_forecast(path: &Path, request: &ForecastRequest) -> Result<Forecast> {
    let connection = schema::open_reader(path)?;
    let config = stored_config(&connection)?;
    let window_s = i64::from(config.window_seconds.max(1));
    let until = match request.from_ns {
        Some(at) => at
            .div_euclid(STEP_NS)
            .checked_mul(STEP_NS)
            .ok_or_else(|| Error::BadRequest("from: out of range".into()))?,
        None => i64::MAX,
    };
    let quarters = quarters(&connection, window_s, until)?;
    let origin_ns = match request.from_ns {
        Some(_) => until,
        // The end of the last quarter whose windows are all built.
        None => quarters
            .iter()
            .rev()
            .find(|(_, q)| q.seconds * 1_000_000_000 >= STEP_NS)
            .map(|(at, _)| at + STEP_NS)
            .ok_or_else(|| Error::BadRequest("forecast: the ledger has no site windows".into()))?,
    };
    let points: Vec<(i64, f64)> = quarters
        .range(..origin_ns)
        .filter(|(_, q)| q.seconds * 2_000_000_000 >= STEP_NS)
        .map(|(at, q)| (*at, q.kw()))
        .collect();
    if points.is_empty() {
        return Err(Error::BadRequest(
            "from: before the ledger's first window".into(),
        ));
    }
    let bad = |error: ForecastError| Error::BadRequest(format!("forecast: {error}"));
    let (mut series, notes) = Series::from_points(&points, STEP_NS, Clock::Utc).map_err(bad)?;
    let origin = origin_ns
        .checked_sub(series.start_ns)
        .and_then(|offset| usize::try_from(offset / STEP_NS).ok())
        .ok_or_else(|| Error::BadRequest("from: before the ledger's first window".into()))?;
    // The model needs a value in the day before its origin: refuse a later one before padding
    // the series out to it.
    if origin > series.values.len() + 96 {
        return Err(Error::BadRequest(format!(
            "from: more than a day after the ledger's last quarter hour ({})",
            footprint_core::time::format_rfc3339(footprint_core::UnixNanos(series.end_ns()))
        )));
    }
    series.values.resize(origin, None);
    let context = context(&config, &quarters, origin_ns, window_s);
    forecast::forecast(&series, notes, origin, HORIZON, context).map_err(bad)
}

/// Every quarter hour before `until` with its energy: the hourly roll-ups spread over their
/// quarters, replaced by the site windows wherever those are kept.
fn quarters(connection: &Connection, window_s: i64, until: i64) -> Result<BTreeMap<i64, Quarter>> {
    let mut quarters = BTreeMap::new();
    let mut hours = connection.prepare(
        "SELECT hour_ns, facility_mj, windows_metered, windows_it_only, windows_assumed_pue
         FROM rollup_site WHERE hour_ns < ?1 ORDER BY hour_ns",
    )?;
    let rows = hours.query_map([until], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, i64>(1)?,
            [
                row.get::<_, i64>(2)?,
                row.get::<_, i64>(3)?,
                row.get::<_, i64>(4)?,
            ],
        ))
    })?;
    for row in rows {
        let (hour, energy, [metered, it_only, assumed_pue]) = row?;
        let windows = metered + it_only + assumed_pue;
        for quarter in 0..4 {
            // A quarter of the hour's energy and windows, the remainder on the first.
            let share = |total: i64| total / 4 + i64::from(quarter == 0) * (total % 4);
            quarters.insert(
                hour + quarter * (HOUR_NS / 4),
                Quarter {
                    energy_mj: share(energy),
                    seconds: share(windows) * window_s,
                    metered: share(metered),
                    it_only: share(it_only),
                    assumed_pue: share(assumed_pue),
                },
            );
        }
    }
    let mut windows = connection.prepare(
        "SELECT start_ns, facility_mj, overhead_source FROM site_windows
         WHERE start_ns < ?1 ORDER BY start_ns",
    )?;
    let rows = windows.query_map([until], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, i64>(1)?,
            row.get::<_, i64>(2)?,
        ))
    })?;
    let mut detailed: BTreeMap<i64, Quarter> = BTreeMap::new();
    for row in rows {
        let (start, energy, source) = row?;
        let quarter = detailed
            .entry(start.div_euclid(STEP_NS) * STEP_NS)
            .or_default();
        quarter.energy_mj += energy;
        quarter.seconds += window_s;
        match source {
            0 => quarter.it_only += 1,
            1 => quarter.metered += 1,
            _ => quarter.assumed_pue += 1,
        }
    }
    quarters.extend(detailed);
    Ok(quarters)
}

/// What the forecast is of, from which history, and which inputs it could not use.
fn context(
    config: &crate::config::AggregatorConfig,
    quarters: &BTreeMap<i64, Quarter>,
    origin_ns: i64,
    window_s: i64,
) -> ForecastContext {
    let mut sources = [0i64; 3];
    for quarter in quarters.range(..origin_ns).map(|(_, q)| q) {
        sources[0] += quarter.metered;
        sources[1] += quarter.it_only;
        sources[2] += quarter.assumed_pue;
    }
    let total = sources.iter().sum::<i64>().max(1);
    let share = |n: i64| n as f64 * 100.0 / total as f64;
    let target = match sources {
        [_, 0, 0] => "facility power, from the site meter (measured)".to_owned(),
        [0, _, 0] => "IT power: there is no site meter, so the facility's draw is the IT \
                      meters' (measured) without cooling and losses"
            .to_owned(),
        [0, 0, _] => "IT power × the configured PUE: there is no site meter (estimated)".to_owned(),
        [metered, it_only, assumed] => format!(
            "facility power: site meter for {:.1} % of the history's windows, IT meters alone \
             for {:.1} %, IT × configured PUE for {:.1} %",
            share(metered),
            share(it_only),
            share(assumed)
        ),
    };
    let detail_days = config.ledger.window_detail_days;
    ForecastContext {
        site: config
            .disclosure
            .name
            .clone()
            .unwrap_or_else(|| "site".to_owned()),
        target,
        history: format!(
            "15-minute sums of the site's {window_s}-second windows where their detail is kept \
             (the last {detail_days} days before the settled hours, and hours not settled yet); \
             before that, each settled hour's roll-up as its mean power over its four quarters; \
             a quarter with under half its windows is a gap"
        ),
        inputs_used: vec!["the facility's draw before the origin (the ledger)".to_owned()],
        inputs_not_used: vec![
            NotUsed {
                input: "scheduled job starts and ends".to_owned(),
                reason: "the job sources report jobs as they run; none reports planned starts \
                         or time limits to the ledger"
                    .to_owned(),
            },
            NotUsed {
                input: "active power caps".to_owned(),
                reason: "the ledger records no power caps".to_owned(),
            },
        ],
    }
}
