//! The grid as schedulers see it: a zone's carbon intensity hour by hour, what it will be over
//! the next two days, and one signal to act on.
//!
//! Intensity comes from the stored feeds (`intensity`, one row per zone and hour). A forecast as
//! of an instant takes the stored hours at or after it whose feed was imported by then (a
//! forecast feed, imported ahead of time), and fills the rest of the 48 hours with Footprint's
//! own forecast of the zone's intensity from the hours before it (the load forecast's model,
//! [`footprint_exporters::forecast::AnalogModel`]), each hour saying which it is. [`sdk`] serves
//! these in the Carbon Aware SDK's shapes; [`signal`] as one level for schedulers.

pub mod caps;
pub mod events;
pub mod planner;
pub mod sdk;
pub mod signal;
pub mod sources;

use footprint_core::units::NANOS_PER_HOUR;
use footprint_exporters::forecast::{AnalogModel, Clock, Series};
use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};

use crate::Result;

/// Hours a forecast covers.
pub const FORECAST_HOURS: i64 = 48;

/// `[grid]`: how the signal turns intensity into a level, and where each zone is.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GridConfig {
    /// Intensity above which the signal says `reduce`, g/kWh. Unset: `reduce` when this hour is
    /// in the dirtiest third of the next 24 and an hour at least 20 % cleaner lies ahead.
    pub reduce_above_g_per_kwh: Option<f64>,
    /// Intensity above which the signal says `curtail`, g/kWh. Unset: only a demand-response
    /// event curtails.
    pub curtail_above_g_per_kwh: Option<f64>,
    /// The least the site must draw whatever an event asks (cooling, storage, the control
    /// plane), kW: an `IMPORT_CAPACITY_LIMIT` below it is held at it, and said.
    pub min_facility_kw: Option<f64>,
    /// Cap the GPUs jobs hold by themselves while an `IMPORT_CAPACITY_LIMIT` is in force
    /// ([`planner`]); off by default: caps change what jobs get, so a site turns them on.
    #[serde(default)]
    pub cap_gpus: bool,
    /// Seconds between plans while caps are on (each renews the caps' leases).
    #[serde(default = "default_cap_interval_s")]
    pub cap_interval_s: u32,
    /// Lease of each cap, s: without a renewal, the collector restores the GPU then.
    #[serde(default = "default_cap_lease_s")]
    pub cap_lease_s: u32,
    /// Which GPUs give way first: `proportional` (all, by draw above their minimum),
    /// `training_first`, `inference_first` or `by_priority` (`job_priorities`).
    #[serde(default)]
    pub cap_policy: planner::CapPolicy,
    /// Jobs' priorities for `cap_policy = "by_priority"`: rules matched in order on a job's
    /// project, user, name prefix, kind and scheduler (`[[grid.job_priorities]]`).
    #[serde(default)]
    pub job_priorities: Vec<planner::JobPriority>,
    /// Zones' coordinates for `/locations` (the Carbon Aware SDK's list of known locations).
    #[serde(default)]
    pub locations: Vec<LocationConfig>,
}

fn default_cap_interval_s() -> u32 {
    15
}
fn default_cap_lease_s() -> u32 {
    60
}

impl Default for GridConfig {
    fn default() -> Self {
        Self {
            reduce_above_g_per_kwh: None,
            curtail_above_g_per_kwh: None,
            min_facility_kw: None,
            cap_gpus: false,
            cap_interval_s: default_cap_interval_s(),
            cap_lease_s: default_cap_lease_s(),
            cap_policy: planner::CapPolicy::default(),
            job_priorities: Vec::new(),
            locations: Vec::new(),
        }
    }
}

/// `[[grid.locations]]`: one zone's name and where it is.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LocationConfig {
    /// The zone as the feeds name it.
    pub name: String,
    /// Degrees north.
    pub latitude: f64,
    /// Degrees east.
    pub longitude: f64,
}

/// Where an hour's figure came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A stored feed row for an hour before the instant asked about (measured or estimated by
    /// the feed's publisher).
    Feed,
    /// A stored feed row for an hour at or after the instant, imported by then: a forecast feed.
    FeedForecast,
    /// Footprint's own forecast from the zone's history (P50).
    FootprintForecast,
}

/// One hour of a zone's intensity.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Hour {
    pub start_ns: i64,
    pub g_per_kwh: f64,
    pub source: Source,
}

/// The stored rows of `zone` for the hours overlapping `[from_ns, to_ns]` (an instant when they
/// are equal: the hour holding it), oldest first.
///
/// # Errors
/// A database error.
pub fn stored_hours(
    connection: &Connection,
    zone: &str,
    from_ns: i64,
    to_ns: i64,
) -> Result<Vec<Hour>> {
    let first = from_ns.div_euclid(NANOS_PER_HOUR) * NANOS_PER_HOUR;
    let mut statement = connection.prepare_cached(
        "SELECT hour_ns, mg_per_kwh FROM intensity
         WHERE zone = ?1 AND hour_ns >= ?2 AND (hour_ns < ?3 OR hour_ns = ?2) ORDER BY hour_ns",
    )?;
    let rows = statement.query_map(params![zone, first, to_ns], |row| {
        Ok(Hour {
            start_ns: row.get(0)?,
            g_per_kwh: row.get::<_, i64>(1)? as f64 / 1_000.0,
            source: Source::Feed,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The zones with stored intensity.
///
/// # Errors
/// A database error.
pub fn zones(connection: &Connection) -> Result<Vec<String>> {
    let mut statement =
        connection.prepare_cached("SELECT DISTINCT zone FROM intensity ORDER BY zone")?;
    let zones = statement.query_map([], |row| row.get(0))?;
    Ok(zones.collect::<rusqlite::Result<_>>()?)
}

/// A zone's intensity for the 48 hours from the hour holding `as_of_ns`, as it could be known
/// then, with when it was generated (the newest forecast feed used, else `as_of_ns`).
///
/// # Errors
/// A database error.
pub fn forecast(connection: &Connection, zone: &str, as_of_ns: i64) -> Result<(Vec<Hour>, i64)> {
    let origin = as_of_ns.div_euclid(NANOS_PER_HOUR) * NANOS_PER_HOUR;
    let end = origin.saturating_add(FORECAST_HOURS * NANOS_PER_HOUR);
    let mut from_feeds = connection.prepare_cached(
        "SELECT i.hour_ns, i.mg_per_kwh, f.imported_ns FROM intensity i JOIN feeds f ON f.id = i.feed
         WHERE i.zone = ?1 AND i.hour_ns >= ?2 AND i.hour_ns < ?3 AND f.imported_ns <= ?4
         ORDER BY i.hour_ns",
    )?;
    let mut generated = None;
    let mut by_hour = std::collections::BTreeMap::new();
    for row in from_feeds.query_map(params![zone, origin, end, as_of_ns], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, i64>(1)?,
            row.get::<_, i64>(2)?,
        ))
    })? {
        let (hour, mg, imported) = row?;
        generated = generated.max(Some(imported));
        by_hour.insert(
            hour,
            Hour {
                start_ns: hour,
                g_per_kwh: mg as f64 / 1_000.0,
                source: Source::FeedForecast,
            },
        );
    }
    if by_hour.len() < FORECAST_HOURS as usize {
        for hour in own_forecast(connection, zone, origin)? {
            by_hour.entry(hour.start_ns).or_insert(hour);
        }
    }
    Ok((
        by_hour.into_values().collect(),
        generated.unwrap_or(as_of_ns),
    ))
}

/// Footprint's P50 of the zone's intensity for the 48 hours from `origin`, from the stored hours
/// before it (the last year); empty where the history is too short to fit.
fn own_forecast(connection: &Connection, zone: &str, origin: i64) -> Result<Vec<Hour>> {
    let history = stored_hours(
        connection,
        zone,
        origin.saturating_sub(365 * 24 * NANOS_PER_HOUR),
        origin,
    )?;
    let points: Vec<(i64, f64)> = history
        .iter()
        .filter(|h| h.start_ns < origin)
        .map(|h| (h.start_ns, h.g_per_kwh))
        .collect();
    let Ok((mut series, _)) = Series::from_points(&points, NANOS_PER_HOUR, Clock::Utc) else {
        return Ok(Vec::new());
    };
    let Some(steps) = usize::try_from((origin - series.start_ns) / NANOS_PER_HOUR).ok() else {
        return Ok(Vec::new());
    };
    series.values.resize(steps, None);
    let Ok(quantiles) = AnalogModel::default().forecast(&series, steps, FORECAST_HOURS as usize)
    else {
        return Ok(Vec::new());
    };
    Ok(quantiles
        .iter()
        .enumerate()
        .map(|(h, q)| Hour {
            start_ns: origin + h as i64 * NANOS_PER_HOUR,
            g_per_kwh: (q.p50 * 1_000.0).round() / 1_000.0,
            source: Source::FootprintForecast,
        })
        .collect())
}
