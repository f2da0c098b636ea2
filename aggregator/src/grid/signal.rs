//! One answer for schedulers that want one number: the zone's intensity now and over the next
//! 48 hours, the demand-response events in force, the facility's power budget, and a `level` —
//! `normal`, `reduce` or `curtail` — with the reason in words.

use footprint_core::units::NANOS_PER_HOUR;
use rusqlite::Connection;
use serde::Serialize;

use super::{GridConfig, Hour, Source};
use crate::Result;

/// What a scheduler should do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Normal,
    Reduce,
    Curtail,
}

impl Level {
    /// `normal`, `reduce` or `curtail`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "normal" => Some(Self::Normal),
            "reduce" => Some(Self::Reduce),
            "curtail" => Some(Self::Curtail),
            _ => None,
        }
    }
}

/// An hour of the signal's outlook.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OutlookHour {
    pub start: String,
    pub g_per_kwh: f64,
    pub source: Source,
}

/// The signal.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Signal {
    /// The instant it is for (RFC 3339).
    pub at: String,
    pub location: String,
    /// The intensity of the hour holding `at`, g/kWh, and where it came from; `None` when no
    /// feed or forecast covers it.
    pub intensity_now: Option<OutlookHour>,
    /// The 48 hours from the hour holding `at`.
    pub next_48h: Vec<OutlookHour>,
    /// The cleanest hour of the next 24.
    pub cleanest_next_24h: Option<OutlookHour>,
    /// Demand-response events in force at `at`, each with the intervals in force.
    pub active_events: Vec<super::events::StoredEvent>,
    /// The site's draw just before `at`, kW: its settled windows of the last quarter hour, else
    /// the hosts' IT draw over the last two minutes (the current hour settles at its end);
    /// `None` where neither is built.
    pub facility_power_kw: Option<f64>,
    /// The facility's power budget from those events, kW; `None` when none limits it.
    pub facility_power_budget_kw: Option<f64>,
    pub budget_reason: String,
    pub level: Level,
    /// Why this level, with the figures it was decided on, and any event source that is not
    /// answering (its last valid events stay in force).
    pub reason: String,
    /// The VTNs events are polled from (`grid::sources`), as they stand.
    pub event_sources: Vec<super::sources::SourceStatus>,
}

fn outlook(hour: &Hour) -> OutlookHour {
    OutlookHour {
        start: footprint_core::time::format_rfc3339(footprint_core::UnixNanos(hour.start_ns)),
        g_per_kwh: hour.g_per_kwh,
        source: hour.source,
    }
}

/// The signal for `zone` at `at_ns`.
///
/// # Errors
/// A database error.
pub fn signal(
    connection: &Connection,
    config: &crate::config::AggregatorConfig,
    zone: &str,
    at_ns: i64,
) -> Result<Signal> {
    let origin = at_ns.div_euclid(NANOS_PER_HOUR) * NANOS_PER_HOUR;
    // The hour holding `at` as stored (measured or a feed's), else as forecast; then the rest of
    // the outlook as it can be known at `at`.
    let stored_now = super::stored_hours(connection, zone, at_ns, at_ns)?
        .into_iter()
        .find(|h| h.start_ns == origin);
    let (mut hours, _) = super::forecast(connection, zone, at_ns)?;
    if let Some(now) = stored_now {
        match hours.first_mut() {
            Some(first) if first.start_ns == origin => *first = now,
            _ => hours.insert(0, now),
        }
    }
    let now = hours.first().filter(|h| h.start_ns == origin).cloned();
    let day: Vec<&Hour> = hours
        .iter()
        .filter(|h| h.start_ns < origin + 24 * NANOS_PER_HOUR)
        .collect();
    let cleanest = day
        .iter()
        .min_by(|a, b| a.g_per_kwh.total_cmp(&b.g_per_kwh))
        .map(|h| (*h).clone());
    let (grid_level, grid_reason) = decide(&config.grid, now.as_ref(), &day, cleanest.as_ref());
    let active_events = super::events::list(connection, Some(at_ns))?;
    let facility_power_kw = facility_power_kw(connection, config, at_ns)?;
    let demand = demand(&active_events, facility_power_kw);
    let (level, reason) = match &demand {
        Some((level, reason)) if *level >= grid_level => {
            (*level, format!("{reason}; grid: {grid_reason}"))
        }
        Some((_, reason)) => (grid_level, format!("{grid_reason}; events: {reason}")),
        None => (grid_level, grid_reason),
    };
    let event_sources = super::sources::list(connection, crate::now_ns())?;
    let reason = event_sources
        .iter()
        .filter_map(super::sources::SourceStatus::warning)
        .fold(reason, |reason, warning| format!("{reason}; {warning}"));
    let budget = budget_of(&active_events);
    Ok(Signal {
        at: footprint_core::time::format_rfc3339(footprint_core::UnixNanos(at_ns)),
        location: zone.to_owned(),
        intensity_now: now.as_ref().map(outlook),
        next_48h: hours.iter().map(outlook).collect(),
        cleanest_next_24h: cleanest.as_ref().map(outlook),
        facility_power_budget_kw: budget.as_ref().map(|(kw, _)| *kw),
        budget_reason: budget.map_or_else(
            || "no demand-response event limits the site's draw now".to_owned(),
            |(kw, event)| format!("IMPORT_CAPACITY_LIMIT of {kw} kW from event {event}"),
        ),
        active_events,
        facility_power_kw,
        level,
        reason,
        event_sources,
    })
}

/// The lowest capacity limit in force, and the event that set it.
pub(crate) fn budget_of(events: &[super::events::StoredEvent]) -> Option<(f64, String)> {
    events
        .iter()
        .flat_map(|e| e.intervals.iter().map(move |i| (i, &e.id)))
        .filter(|(i, _)| i.kind == "IMPORT_CAPACITY_LIMIT")
        .min_by(|a, b| a.0.value.total_cmp(&b.0.value))
        .map(|(i, id)| (i.value, id.clone()))
}

/// The level the events in force ask for, with why: a `SIMPLE` level (1 moderate: reduce; 2
/// high or 3 special: curtail); a capacity limit (reduce, or curtail while the site draws more
/// than it).
fn demand(
    events: &[super::events::StoredEvent],
    facility_kw: Option<f64>,
) -> Option<(Level, String)> {
    let mut strongest: Option<(Level, String)> = None;
    let mut consider = |level: Level, reason: String| {
        if strongest.as_ref().is_none_or(|(l, _)| level > *l) {
            strongest = Some((level, reason));
        }
    };
    for event in events {
        for interval in &event.intervals {
            match interval.kind.as_str() {
                "SIMPLE" => {
                    let level = match interval.value as i64 {
                        0 => Level::Normal,
                        1 => Level::Reduce,
                        _ => Level::Curtail,
                    };
                    consider(
                        level,
                        format!("event {} asks SIMPLE level {}", event.id, interval.value),
                    );
                }
                "IMPORT_CAPACITY_LIMIT" => match facility_kw {
                    Some(kw) if kw > interval.value => consider(
                        Level::Curtail,
                        format!(
                            "the site draws {kw:.1} kW, above event {}'s capacity limit of {} kW",
                            event.id, interval.value
                        ),
                    ),
                    _ => consider(
                        Level::Reduce,
                        format!(
                            "event {} limits the site to {} kW",
                            event.id, interval.value
                        ),
                    ),
                },
                _ => {}
            }
        }
    }
    strongest
}

/// The site's draw just before `at_ns`, kW: the site windows of the quarter hour before it
/// where that hour is settled; otherwise (the site stage settles whole hours, so the current
/// hour has none yet) the hosts' IT draw over their windows of the two minutes before it,
/// without cooling and losses. `None` when neither is built.
pub(crate) fn facility_power_kw(
    connection: &Connection,
    config: &crate::config::AggregatorConfig,
    at_ns: i64,
) -> Result<Option<f64>> {
    let window_s = f64::from(config.window_seconds.max(1));
    let round = |kw: f64| (kw * 1_000.0).round() / 1_000.0;
    let quarter = 900_000_000_000;
    let (energy, windows): (Option<i64>, i64) = connection.query_row(
        "SELECT SUM(facility_mj), COUNT(*) FROM site_windows WHERE start_ns >= ?1 AND start_ns < ?2",
        rusqlite::params![at_ns - quarter, at_ns],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    if let Some(mj) = energy.filter(|_| windows > 0) {
        return Ok(Some(round(mj as f64 / (windows as f64 * window_s * 1e6))));
    }
    let mut hosts = connection.prepare_cached(
        "SELECT SUM(it_mj), COUNT(*) FROM window_hosts WHERE start_ns >= ?1 AND start_ns < ?2
         GROUP BY collector",
    )?;
    let per_host: Vec<(i64, i64)> = hosts
        .query_map(rusqlite::params![at_ns - 120_000_000_000, at_ns], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    if per_host.is_empty() {
        return Ok(None);
    }
    Ok(Some(round(
        per_host
            .iter()
            .map(|(mj, count)| *mj as f64 / (*count as f64 * window_s * 1e6))
            .sum(),
    )))
}

/// The level for intensity `now` with `day` ahead: configured thresholds first; without them,
/// `reduce` when this hour is in the dirtiest third of the next 24 and an hour at least 20 %
/// cleaner lies ahead.
fn decide(
    config: &GridConfig,
    now: Option<&Hour>,
    day: &[&Hour],
    cleanest: Option<&Hour>,
) -> (Level, String) {
    let Some(now) = now else {
        return (
            Level::Normal,
            "no intensity is known for this hour: nothing to act on".to_owned(),
        );
    };
    let value = now.g_per_kwh;
    if let Some(limit) = config.curtail_above_g_per_kwh
        && value > limit
    {
        return (
            Level::Curtail,
            format!("{value} g/kWh now, above grid.curtail_above_g_per_kwh ({limit})"),
        );
    }
    if let Some(limit) = config.reduce_above_g_per_kwh {
        return if value > limit {
            (
                Level::Reduce,
                format!("{value} g/kWh now, above grid.reduce_above_g_per_kwh ({limit})"),
            )
        } else {
            (
                Level::Normal,
                format!("{value} g/kWh now, at or below grid.reduce_above_g_per_kwh ({limit})"),
            )
        };
    }
    let mut values: Vec<f64> = day.iter().map(|h| h.g_per_kwh).collect();
    values.sort_unstable_by(f64::total_cmp);
    let two_thirds = footprint_exporters::forecast::analog::quantile_of_sorted(&values, 2.0 / 3.0);
    match cleanest {
        Some(best) if value >= two_thirds && best.g_per_kwh <= 0.8 * value => (
            Level::Reduce,
            format!(
                "{value} g/kWh now is in the dirtiest third of the next 24 h (from {two_thirds:.1}); \
                 {} g/kWh at {}",
                best.g_per_kwh,
                footprint_core::time::format_rfc3339(footprint_core::UnixNanos(best.start_ns))
            ),
        ),
        _ => (
            Level::Normal,
            format!(
                "{value} g/kWh now; no hour of the next 24 is at least 20 % cleaner while this one \
                 is in their dirtiest third"
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hour(index: i64, g: f64) -> Hour {
        Hour {
            start_ns: index * NANOS_PER_HOUR,
            g_per_kwh: g,
            source: Source::Feed,
        }
    }

    #[test]
    fn thresholds_decide_when_configured_else_the_day_ahead_does() {
        let day: Vec<Hour> = (0..24).map(|h| hour(h, 100.0 + h as f64 * 10.0)).collect();
        let refs: Vec<&Hour> = day.iter().collect();
        let cleanest = &day[0];
        let config = GridConfig {
            reduce_above_g_per_kwh: Some(300.0),
            curtail_above_g_per_kwh: Some(400.0),
            ..GridConfig::default()
        };
        assert_eq!(
            decide(&config, Some(&hour(0, 450.0)), &refs, Some(cleanest)).0,
            Level::Curtail
        );
        assert_eq!(
            decide(&config, Some(&hour(0, 350.0)), &refs, Some(cleanest)).0,
            Level::Reduce
        );
        assert_eq!(
            decide(&config, Some(&hour(0, 250.0)), &refs, Some(cleanest)).0,
            Level::Normal
        );
        // Relative: 300 g/kWh now against a day of 100–330, cleanest 100: reduce.
        let relative = GridConfig::default();
        let (level, reason) = decide(&relative, Some(&hour(0, 300.0)), &refs, Some(cleanest));
        assert_eq!(level, Level::Reduce, "{reason}");
        assert!(
            reason.contains("100 g/kWh at 1970-01-01T00:00:00Z"),
            "{reason}"
        );
        assert_eq!(
            decide(&relative, Some(&hour(0, 120.0)), &refs, Some(cleanest)).0,
            Level::Normal
        );
        assert_eq!(decide(&relative, None, &refs, None).0, Level::Normal);
    }
}
