//! The ledger's figures as Prometheus metrics, read at each scrape of `/metrics` beside the
//! aggregator's own counters ([`crate::metrics`]): the facility (power, energy, PUE, WUE, water,
//! carbon, grid intensity), each host (labelled with its hall and rack, so halls and racks are a
//! `sum by`), each recent job, and the pipeline (collectors connected, age of their last batch
//! and reading, windows and hours waiting to be built and settled).
//!
//! Job series are bounded: a job is exposed while it runs and for `metrics.job_series_retention_s`
//! after it ends, and at most `metrics.max_job_series` of them (the most recently active); the
//! rest are counted in `footprint_job_series_dropped`, never silently multiplied.
//!
//! "Now" for retention and for "last" figures is the ledger's newest built window, so a ledger
//! replayed from the past (the demo) is exposed as it was then; the ages are against the clock.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use std::sync::atomic::AtomicU64;

use crate::Result;

/// `[metrics]`: what `/metrics` exposes of the ledger.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Seconds a job's series stay after the job ends (then they are no longer exposed; a
    /// Prometheus keeps what it scraped).
    #[serde(default = "default_retention_s")]
    pub job_series_retention_s: u64,
    /// The most jobs exposed at once: the most recently active; the others are counted in
    /// `footprint_job_series_dropped`.
    #[serde(default = "default_max_job_series")]
    pub max_job_series: usize,
}

fn default_retention_s() -> u64 {
    3_600
}

fn default_max_job_series() -> usize {
    500
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            job_series_retention_s: default_retention_s(),
            max_job_series: default_max_job_series(),
        }
    }
}

/// A host's figures.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HostFigures {
    pub host: String,
    pub hall: String,
    pub rack: String,
    /// Mean IT draw over its newest built window, W.
    pub power_w: f64,
    /// IT energy of its settled hours, J.
    pub energy_j: f64,
}

/// A job's figures, over its whole life so far.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct JobFigures {
    pub job: String,
    pub project: String,
    pub kind: String,
    pub energy_j: f64,
    pub it_energy_j: f64,
    pub water_l: f64,
    pub co2e_location_g: f64,
    pub co2e_market_g: f64,
    pub co2e_embodied_g: f64,
}

/// A collector's pipeline health.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CollectorFigures {
    pub collector: String,
    pub host: String,
    /// Seconds since its last batch was received; `None` before the first.
    pub last_batch_age_s: Option<f64>,
    /// Seconds since the newest reading it sent was taken; `None` before the first.
    pub last_reading_age_s: Option<f64>,
    /// Windows between its newest reading and the first window not yet built.
    pub windows_pending: f64,
}

/// Everything `/metrics` exposes of the ledger at one scrape.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Snapshot {
    /// (period, W): the newest settled window and hour.
    pub facility_power_w: Vec<(&'static str, f64)>,
    pub pue: Vec<(&'static str, f64)>,
    pub wue_l_per_kwh: Vec<(&'static str, f64)>,
    pub facility_energy_j: f64,
    pub it_energy_j: f64,
    pub water_l: f64,
    pub co2e_location_g: f64,
    pub co2e_market_g: f64,
    /// (zone, g/kWh) of the hour holding the ledger's now.
    pub intensity: Option<(String, f64)>,
    pub hosts: Vec<HostFigures>,
    pub jobs: Vec<JobFigures>,
    pub jobs_dropped: usize,
    pub collectors: Vec<CollectorFigures>,
    pub hours_pending: f64,
    /// The start of the newest settled hour.
    pub newest_settled_hour_ns: Option<i64>,
}

const MJ_PER_J: f64 = 1_000.0;
const NS_PER_S: f64 = 1e9;

/// Reads the snapshot; `now_ns` is the wall clock (for ages).
///
/// # Errors
/// A database error.
pub fn read(
    connection: &Connection,
    config: &crate::config::AggregatorConfig,
    now_ns: i64,
) -> Result<Snapshot> {
    let window_s = f64::from(config.window_seconds.max(1));
    let mut snapshot = Snapshot::default();
    let ratio = |top: i64, bottom: i64| (bottom > 0).then(|| top as f64 / bottom as f64);

    // The newest settled window and hour of the site.
    let window: Option<(i64, i64, i64)> = connection
        .query_row(
            "SELECT facility_mj, it_mj, water_ml FROM site_windows ORDER BY start_ns DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let hour: Option<(i64, i64, i64, i64)> = connection
        .query_row(
            "SELECT facility_mj, it_mj, water_ml, hour_ns FROM rollup_site
             ORDER BY hour_ns DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    snapshot.newest_settled_hour_ns = hour.map(|h| h.3);
    let hour = hour.map(|(facility, it, water, _)| (facility, it, water));
    for (period, figures, seconds) in [("window", window, window_s), ("hour", hour, 3_600.0)] {
        let Some((facility_mj, it_mj, water_ml)) = figures else {
            continue;
        };
        snapshot
            .facility_power_w
            .push((period, facility_mj as f64 / MJ_PER_J / seconds));
        if let Some(pue) = ratio(facility_mj, it_mj) {
            snapshot.pue.push((period, pue));
        }
        // L per kWh of IT energy: mL / (mJ / 3.6e9).
        if it_mj > 0 {
            snapshot
                .wue_l_per_kwh
                .push((period, water_ml as f64 / 1_000.0 / (it_mj as f64 / 3.6e9)));
        }
    }
    let totals: (i64, i64, i64, i64, i64) = connection.query_row(
        "SELECT COALESCE(SUM(facility_mj), 0), COALESCE(SUM(it_mj), 0), COALESCE(SUM(water_ml), 0),
                COALESCE(SUM(co2e_location_mg), 0), COALESCE(SUM(co2e_market_mg), 0)
         FROM rollup_site",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
    )?;
    snapshot.facility_energy_j = totals.0 as f64 / MJ_PER_J;
    snapshot.it_energy_j = totals.1 as f64 / MJ_PER_J;
    snapshot.water_l = totals.2 as f64 / 1_000.0;
    snapshot.co2e_location_g = totals.3 as f64 / 1_000.0;
    snapshot.co2e_market_g = totals.4 as f64 / 1_000.0;

    let ledger_now: Option<i64> =
        connection.query_row("SELECT MAX(start_ns) FROM window_hosts", [], |r| r.get(0))?;
    let ledger_now = ledger_now.unwrap_or(now_ns);
    let zone = &config.carbon.zone;
    if !zone.is_empty() {
        let hour_ns = ledger_now.div_euclid(3_600_000_000_000) * 3_600_000_000_000;
        let mg: Option<i64> = connection
            .query_row(
                "SELECT mg_per_kwh FROM intensity WHERE zone = ?1 AND hour_ns = ?2",
                params![zone, hour_ns],
                |r| r.get(0),
            )
            .optional()?;
        snapshot.intensity = mg.map(|mg| (zone.clone(), mg as f64 / 1_000.0));
    }

    hosts(connection, window_s, &mut snapshot)?;
    jobs(connection, config, ledger_now, &mut snapshot)?;
    collectors(connection, window_s, now_ns, &mut snapshot)?;
    let settled = crate::ledger::site::settled_until(connection)?;
    let built_until: Option<i64> = connection.query_row(
        "SELECT MIN(built_until_ns) FROM collectors WHERE built_until_ns IS NOT NULL",
        [],
        |r| r.get(0),
    )?;
    if let (Some(settled), Some(built)) = (settled, built_until) {
        snapshot.hours_pending = ((built - settled.0).max(0) / 3_600_000_000_000) as f64;
    }
    Ok(snapshot)
}

fn hosts(connection: &Connection, window_s: f64, snapshot: &mut Snapshot) -> Result<()> {
    let mut statement = connection.prepare_cached(
        "SELECT c.host,
                COALESCE(p.hall, 'unplaced'), COALESCE(p.rack, 'unplaced'),
                (SELECT it_mj FROM window_hosts w WHERE w.collector = c.id
                 ORDER BY start_ns DESC LIMIT 1),
                (SELECT COALESCE(SUM(it_mj), 0) FROM rollup_hosts_days d WHERE d.collector = c.id)
         FROM collectors c LEFT JOIN placement p ON p.host = c.host
         WHERE EXISTS (SELECT 1 FROM window_hosts w WHERE w.collector = c.id)
            OR EXISTS (SELECT 1 FROM rollup_hosts_days d WHERE d.collector = c.id)
         ORDER BY c.host",
    )?;
    let rows = statement.query_map([], |r| {
        Ok(HostFigures {
            host: r.get(0)?,
            hall: r.get(1)?,
            rack: r.get(2)?,
            power_w: r.get::<_, Option<i64>>(3)?.unwrap_or(0) as f64 / MJ_PER_J / window_s,
            energy_j: r.get::<_, i64>(4)? as f64 / MJ_PER_J,
        })
    })?;
    for row in rows {
        let host = row?;
        // Two collectors on one host add up.
        match snapshot.hosts.last_mut() {
            Some(last) if last.host == host.host => {
                last.power_w += host.power_w;
                last.energy_j += host.energy_j;
            }
            _ => snapshot.hosts.push(host),
        }
    }
    Ok(())
}

fn jobs(
    connection: &Connection,
    config: &crate::config::AggregatorConfig,
    ledger_now: i64,
    snapshot: &mut Snapshot,
) -> Result<()> {
    let retention_ns = i64::try_from(config.metrics.job_series_retention_s)
        .unwrap_or(i64::MAX / 2_000_000_000)
        .saturating_mul(1_000_000_000);
    let since = ledger_now.saturating_sub(retention_ns);
    let mut recent = connection.prepare_cached(
        "SELECT j.job_id FROM allocations a JOIN jobs j ON j.id = a.job
         GROUP BY a.job
         HAVING MAX(COALESCE(a.end_ns, 9223372036854775807)) >= ?1
         ORDER BY MAX(COALESCE(a.end_ns, 9223372036854775807)) DESC, MAX(a.start_ns) DESC, j.job_id",
    )?;
    let ids: Vec<String> = recent
        .query_map([since], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let keep = ids.len().min(config.metrics.max_job_series);
    snapshot.jobs_dropped = ids.len() - keep;
    for id in &ids[..keep] {
        let job = match crate::ledger::read::get_job(connection, id) {
            Ok(job) => job,
            Err(crate::Error::NotFound(_)) => continue,
            Err(error) => return Err(error),
        };
        snapshot.jobs.push(JobFigures {
            job: job.id,
            project: job.project,
            kind: job.kind,
            energy_j: job.energy_mj as f64 / MJ_PER_J,
            it_energy_j: job.it_energy_mj as f64 / MJ_PER_J,
            water_l: job.water_ml as f64 / 1_000.0,
            co2e_location_g: job.co2e_location_mg as f64 / 1_000.0,
            co2e_market_g: job.co2e_market_mg as f64 / 1_000.0,
            co2e_embodied_g: job.co2e_embodied_mg as f64 / 1_000.0,
        });
    }
    Ok(())
}

fn collectors(
    connection: &Connection,
    window_s: f64,
    now_ns: i64,
    snapshot: &mut Snapshot,
) -> Result<()> {
    let mut statement = connection.prepare_cached(
        "SELECT c.name, c.host, c.built_until_ns,
                (SELECT received_ns FROM batches b WHERE b.collector = c.id ORDER BY seq DESC LIMIT 1),
                (SELECT MAX((SELECT last_ns FROM reading_chunks k WHERE k.meter = m.id
                             ORDER BY first_ns DESC LIMIT 1))
                 FROM meters m WHERE m.collector = c.id)
         FROM collectors c ORDER BY c.name",
    )?;
    let rows = statement.query_map([], |r| {
        let built: Option<i64> = r.get(2)?;
        let received: Option<i64> = r.get(3)?;
        let newest: Option<i64> = r.get(4)?;
        let age = |at: i64| ((now_ns - at) as f64 / NS_PER_S).max(0.0);
        let pending = match (built, newest) {
            (Some(built), Some(newest)) => {
                ((newest - built).max(0) as f64 / NS_PER_S / window_s).floor()
            }
            _ => 0.0,
        };
        Ok(CollectorFigures {
            collector: r.get(0)?,
            host: r.get(1)?,
            last_batch_age_s: received.map(age),
            last_reading_age_s: newest.map(age),
            windows_pending: pending,
        })
    })?;
    snapshot.collectors = rows.collect::<rusqlite::Result<_>>()?;
    Ok(())
}

type FloatGauge = Gauge<f64, AtomicU64>;
type FloatCounter = Counter<f64, AtomicU64>;
type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeriodLabel {
    period: String,
}

/// The snapshot as a registry under `footprint_`, with `connected` collectors (by name).
pub fn registry(snapshot: &Snapshot, connected: &[String]) -> Registry {
    let mut registry = Registry::with_prefix("footprint");
    let by_period = |values: &[(&'static str, f64)]| {
        let family = Family::<PeriodLabel, FloatGauge>::default();
        for (period, value) in values {
            family
                .get_or_create(&PeriodLabel {
                    period: (*period).to_owned(),
                })
                .set(*value);
        }
        family
    };
    registry.register_with_unit(
        "facility_power",
        "Facility power, mean over the newest settled window or hour (period)",
        Unit::Other("watts".into()),
        by_period(&snapshot.facility_power_w),
    );
    registry.register_with_unit(
        "pue",
        "Power usage effectiveness (facility ÷ IT energy) of the newest settled window or hour",
        Unit::Other("ratio".into()),
        by_period(&snapshot.pue),
    );
    registry.register(
        "wue_litres_per_kilowatt_hour",
        "Water usage effectiveness (site water ÷ IT energy) of the newest settled window or hour",
        by_period(&snapshot.wue_l_per_kwh),
    );
    let counter = |value: f64| {
        let counter = FloatCounter::default();
        counter.inc_by(value);
        counter
    };
    registry.register_with_unit(
        "facility_energy",
        "Facility energy of the settled hours",
        Unit::Joules,
        counter(snapshot.facility_energy_j),
    );
    registry.register_with_unit(
        "it_energy",
        "IT energy of the settled hours",
        Unit::Joules,
        counter(snapshot.it_energy_j),
    );
    registry.register_with_unit(
        "water",
        "Site water of the settled hours",
        Unit::Other("litres".into()),
        counter(snapshot.water_l),
    );
    let carbon = Family::<Labels, FloatCounter>::default();
    for (method, grams) in [
        ("location", snapshot.co2e_location_g),
        ("market", snapshot.co2e_market_g),
    ] {
        carbon
            .get_or_create(&labels(&[("method", method)]))
            .inc_by(grams);
    }
    registry.register_with_unit(
        "carbon",
        "CO2e of the settled hours' energy, location- or market-based (method)",
        Unit::Other("grams".into()),
        carbon,
    );
    let intensity = Family::<Labels, FloatGauge>::default();
    if let Some((zone, g)) = &snapshot.intensity {
        intensity.get_or_create(&labels(&[("zone", zone)])).set(*g);
    }
    registry.register(
        "grid_carbon_intensity_grams_per_kilowatt_hour",
        "The grid zone's carbon intensity for the hour of the newest built window",
        intensity,
    );

    let host_power = Family::<Labels, FloatGauge>::default();
    let host_energy = Family::<Labels, FloatCounter>::default();
    for host in &snapshot.hosts {
        let key = labels(&[
            ("host", &host.host),
            ("hall", &host.hall),
            ("rack", &host.rack),
        ]);
        host_power.get_or_create(&key).set(host.power_w);
        host_energy.get_or_create(&key).inc_by(host.energy_j);
    }
    registry.register_with_unit(
        "host_power",
        "A host's IT power, mean over its newest built window (sum by hall or rack for theirs)",
        Unit::Other("watts".into()),
        host_power,
    );
    registry.register_with_unit(
        "host_energy",
        "A host's IT energy in the settled hours",
        Unit::Joules,
        host_energy,
    );

    let job_energy = Family::<Labels, FloatCounter>::default();
    let job_it_energy = Family::<Labels, FloatCounter>::default();
    let job_water = Family::<Labels, FloatCounter>::default();
    let job_carbon = Family::<Labels, FloatCounter>::default();
    for job in &snapshot.jobs {
        let key = [
            ("job", job.job.as_str()),
            ("project", job.project.as_str()),
            ("kind", job.kind.as_str()),
        ];
        job_energy.get_or_create(&labels(&key)).inc_by(job.energy_j);
        job_it_energy
            .get_or_create(&labels(&key))
            .inc_by(job.it_energy_j);
        job_water.get_or_create(&labels(&key)).inc_by(job.water_l);
        for (method, grams) in [
            ("location", job.co2e_location_g),
            ("market", job.co2e_market_g),
            ("embodied", job.co2e_embodied_g),
        ] {
            let mut with_method = labels(&key);
            with_method.push(("method".into(), method.into()));
            job_carbon.get_or_create(&with_method).inc_by(grams);
        }
    }
    registry.register_with_unit(
        "job_energy",
        "A job's energy with its share of facility overhead (recent jobs only: metrics.job_series_retention_s, metrics.max_job_series)",
        Unit::Joules,
        job_energy,
    );
    registry.register_with_unit(
        "job_it_energy",
        "A job's IT energy: GPU, CPU package, DRAM and its share of the host remainder",
        Unit::Joules,
        job_it_energy,
    );
    registry.register_with_unit(
        "job_water",
        "A job's share of site water",
        Unit::Other("litres".into()),
        job_water,
    );
    registry.register_with_unit(
        "job_carbon",
        "A job's CO2e: location- or market-based energy, or embodied (method)",
        Unit::Other("grams".into()),
        job_carbon,
    );
    let gauge = |value: f64| {
        let gauge = FloatGauge::default();
        gauge.set(value);
        gauge
    };
    registry.register(
        "job_series",
        "Jobs whose series are exposed now",
        gauge(snapshot.jobs.len() as f64),
    );
    registry.register(
        "job_series_dropped",
        "Recent jobs not exposed because metrics.max_job_series was reached",
        gauge(snapshot.jobs_dropped as f64),
    );

    registry.register(
        "collectors_connected",
        "Collectors with an open ingest stream",
        gauge(connected.len() as f64),
    );
    let batch_age = Family::<Labels, FloatGauge>::default();
    let reading_age = Family::<Labels, FloatGauge>::default();
    let windows_pending = Family::<Labels, FloatGauge>::default();
    for collector in &snapshot.collectors {
        let key = labels(&[
            ("collector", &collector.collector),
            ("host", &collector.host),
        ]);
        if let Some(age) = collector.last_batch_age_s {
            batch_age.get_or_create(&key).set(age);
        }
        if let Some(age) = collector.last_reading_age_s {
            reading_age.get_or_create(&key).set(age);
        }
        windows_pending
            .get_or_create(&key)
            .set(collector.windows_pending);
    }
    registry.register_with_unit(
        "collector_last_batch_age",
        "Seconds since the collector's newest batch was received",
        Unit::Seconds,
        batch_age,
    );
    registry.register_with_unit(
        "collector_last_reading_age",
        "Seconds since the newest reading the collector sent was taken",
        Unit::Seconds,
        reading_age,
    );
    registry.register(
        "collector_windows_pending",
        "Windows between the collector's newest reading and its first window not yet built",
        windows_pending,
    );
    registry.register(
        "hour_settlements_pending",
        "Hours built on every host but not yet settled for the site",
        gauge(snapshot.hours_pending),
    );
    registry
}

/// Horizons the forecast is exposed at, hours.
const FORECAST_HORIZONS_H: [i64; 4] = [1, 6, 24, 48];

/// Adds the facility's load forecast to `registry`: P10, P50 and P90 of the draw at 1, 6, 24 and
/// 48 hours from its origin, and the origin itself.
pub fn register_forecast(
    registry: &mut Registry,
    forecast: &footprint_exporters::forecast::Forecast,
) {
    let power = Family::<Labels, FloatGauge>::default();
    let steps_per_hour = (3_600_000_000_000 / forecast.step_ns.max(1)).max(1);
    for hours in FORECAST_HORIZONS_H {
        let Some(point) = usize::try_from(hours * steps_per_hour - 1)
            .ok()
            .and_then(|index| forecast.points.get(index))
        else {
            continue;
        };
        let horizon = format!("{hours}h");
        for (quantile, kw) in [
            ("0.1", point.p10_kw),
            ("0.5", point.p50_kw),
            ("0.9", point.p90_kw),
        ] {
            power
                .get_or_create(&labels(&[("horizon", &horizon), ("quantile", quantile)]))
                .set(kw * 1_000.0);
        }
    }
    registry.register_with_unit(
        "forecast_facility_power",
        "The facility's draw forecast for the quarter hour ending at each horizon from the origin, by quantile (docs/FORECAST.md)",
        Unit::Other("watts".into()),
        power,
    );
    let origin = FloatGauge::default();
    origin.set(forecast.origin_ns as f64 / NS_PER_S);
    registry.register_with_unit(
        "forecast_origin_timestamp",
        "Where the forecast's history ends and its first step starts",
        Unit::Seconds,
        origin,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_ledger_exposes_no_figures_and_no_jobs() {
        let dir = tempfile::tempdir().unwrap();
        let connection = crate::tables::schema::open(&dir.path().join("ledger.sqlite")).unwrap();
        let config = crate::config::AggregatorConfig::with_data_dir(dir.path().to_path_buf());
        let snapshot = read(&connection, &config, 0).unwrap();
        assert!(snapshot.facility_power_w.is_empty() && snapshot.jobs.is_empty());
        assert_eq!(snapshot.newest_settled_hour_ns, None);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry(&snapshot, &[])).unwrap();
        assert!(text.contains("footprint_job_series 0"), "{text}");
    }
}
