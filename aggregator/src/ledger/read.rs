//! Reading the ledger: jobs' footprints and the facility's balances.

use footprint_core::{EnergyByQuality, Span, UnixNanos};
use footprint_proto::v1::JobKind;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use super::site;
use crate::{Error, Result};

/// A job's footprint over a span of time.
#[derive(Clone, Debug, PartialEq)]
pub struct JobFootprint {
    pub id: String,
    pub scheduler: String,
    pub name: String,
    pub user: String,
    pub project: String,
    pub kind: String,
    pub model: String,
    pub functional_unit: String,
    /// The units the job reported; over a span that cuts the job, the part for the windows it
    /// held devices in the span.
    pub functional_units: u64,
    /// Facility energy: `it_energy_mj + overhead_mj`.
    pub energy_mj: u64,
    /// GPU + CPU package + DRAM + host remainder.
    pub it_energy_mj: u64,
    pub gpu_energy_mj: u64,
    pub cpu_energy_mj: u64,
    pub dram_energy_mj: u64,
    pub remainder_mj: u64,
    pub overhead_mj: u64,
    /// How the IT energy was obtained (the parts add up to `it_energy_mj`).
    pub energy_quality: EnergyByQuality,
    pub water_ml: u64,
    pub co2e_location_mg: u64,
    pub co2e_market_mg: u64,
    pub co2e_embodied_mg: u64,
    /// SCI per functional unit: (location-based + embodied) / units, mg CO2e; facility overhead
    /// included. 0 when the job reported no units.
    pub sci_mg_per_unit: f64,
    pub gpu_hours: f64,
    pub hosts: Vec<String>,
    pub first_window_ns: i64,
    pub last_window_ns: i64,
    /// How the figures were obtained.
    pub method: String,
    /// Windows of the job built again because late data changed them (`window_revisions`).
    pub revised_windows: u64,
}

/// Method note carried by every job figure.
pub const JOB_METHOD: &str = "GPU: counter delta of each held GPU, split by time overlap when the holder changes, \
by NVML per-process utilisation when shared (evenly without it, estimated), by slices for MIG (estimated); \
CPU package and DRAM: counter delta, dynamic part by CPU time and baseline by policy, else by cores held x time (estimated); \
host remainder: outlet meter - components, else the configured overhead factor (estimated), shared by component energy; \
facility overhead and water: site meters' delta per window minus IT, shared by IT energy (the window's measured PUE and WUE); \
location-based carbon: facility energy x the hour's grid intensity of the site's zone; \
market-based: hourly PPA matching, then guarantees of origin, then residual mix; \
embodied: device table amortised over lifetime by time held; SCI: (location-based + embodied) / functional units, facility overhead included; \
a span that cuts a job counts the part of its reported units for the windows it held devices in the span (estimated: units are reported as one total)";

/// Which jobs to list: a time span (0 = unbounded) and exact-match filters (empty = any).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobFilter {
    pub from_ns: i64,
    pub to_ns: i64,
    pub id: Option<String>,
    pub user: String,
    pub project: String,
    pub model: String,
    /// `training`, `inference` or `other`; empty = any.
    pub kind: String,
}

/// Every job with energy in the filter's span, largest first.
///
/// # Errors
/// [`Error::BadRequest`] for an unknown kind, or a database error.
pub fn list_jobs(connection: &Connection, filter: &JobFilter) -> Result<Vec<JobFootprint>> {
    let to_ns = if filter.to_ns <= 0 {
        i64::MAX
    } else {
        filter.to_ns
    };
    let kind = match filter.kind.as_str() {
        "" => None,
        other => Some(
            JobKind::from_short_name(other)
                .map(|k| k as i32)
                .ok_or_else(|| {
                    Error::BadRequest(format!(
                        "kind: {other:?} is not training, inference or other"
                    ))
                })?,
        ),
    };
    let mut statement = connection.prepare_cached(
        "SELECT j.id, j.job_id, j.scheduler, j.name, j.user, j.project, j.kind, j.model, j.functional_unit, j.functional_units,
                SUM(w.gpu_mj), SUM(w.cpu_mj), SUM(w.dram_mj), SUM(w.remainder_mj), SUM(w.overhead_mj),
                SUM(w.measured_mj), SUM(w.interpolated_mj), SUM(w.estimated_mj),
                SUM(w.gpu_ns), MIN(w.start_ns), MAX(w.start_ns),
                SUM(w.water_ml), SUM(w.co2e_location_mg), SUM(w.co2e_market_mg), SUM(w.embodied_mg),
                SUM(EXISTS (SELECT 1 FROM window_revisions v WHERE v.collector = w.collector AND v.start_ns = w.start_ns)),
                COUNT(DISTINCT w.start_ns),
                (SELECT COUNT(DISTINCT a.start_ns) FROM window_jobs a WHERE a.job = j.id)
         FROM window_jobs w JOIN jobs j ON j.id = w.job
         WHERE w.start_ns >= ?1 AND w.start_ns < ?2 AND (?3 IS NULL OR j.job_id = ?3)
           AND (?4 = '' OR j.user = ?4) AND (?5 = '' OR j.project = ?5) AND (?6 = '' OR j.model = ?6)
           AND (?7 IS NULL OR j.kind = ?7)
         GROUP BY j.id",
    )?;
    let rows = statement.query_map(
        params![
            filter.from_ns,
            to_ns,
            filter.id,
            filter.user,
            filter.project,
            filter.model,
            kind
        ],
        |row| {
            let as_u64 = |index: usize| row.get::<_, i64>(index).map(|v| v as u64);
            let (gpu, cpu, dram, remainder, overhead) = (
                as_u64(10)?,
                as_u64(11)?,
                as_u64(12)?,
                as_u64(13)?,
                as_u64(14)?,
            );
            let units = as_u64(9)?;
            // A job reports its functional units as one total: a span that cuts the job gets
            // the part of them it held its devices for (at window granularity), as if produced
            // evenly.
            let units = units_in_span(units, as_u64(26)?, as_u64(27)?);
            let (location, embodied) = (as_u64(22)?, as_u64(24)?);
            let it = gpu + cpu + dram + remainder;
            Ok((
                row.get::<_, i64>(0)?,
                JobFootprint {
                    id: row.get(1)?,
                    scheduler: row.get(2)?,
                    name: row.get(3)?,
                    user: row.get(4)?,
                    project: row.get(5)?,
                    kind: JobKind::name_of(row.get(6)?).to_owned(),
                    model: row.get(7)?,
                    functional_unit: row.get(8)?,
                    functional_units: units,
                    energy_mj: it + overhead,
                    it_energy_mj: it,
                    gpu_energy_mj: gpu,
                    cpu_energy_mj: cpu,
                    dram_energy_mj: dram,
                    remainder_mj: remainder,
                    overhead_mj: overhead,
                    energy_quality: EnergyByQuality {
                        measured_mj: as_u64(15)?,
                        interpolated_mj: as_u64(16)?,
                        estimated_mj: as_u64(17)?,
                    },
                    water_ml: as_u64(21)?,
                    co2e_location_mg: location,
                    co2e_market_mg: as_u64(23)?,
                    co2e_embodied_mg: embodied,
                    sci_mg_per_unit: if units == 0 {
                        0.0
                    } else {
                        (location + embodied) as f64 / units as f64
                    },
                    gpu_hours: as_u64(18)? as f64 / 3.6e12,
                    hosts: Vec::new(),
                    first_window_ns: row.get(19)?,
                    last_window_ns: row.get(20)?,
                    method: JOB_METHOD.to_owned(),
                    revised_windows: as_u64(25)?,
                },
            ))
        },
    )?;
    let mut jobs = Vec::new();
    let mut hosts_of = connection.prepare_cached(
        "SELECT DISTINCT c.host FROM allocations a JOIN collectors c ON c.id = a.collector WHERE a.job = ?1 ORDER BY c.host",
    )?;
    for row in rows {
        let (key, mut job) = row?;
        job.hosts = hosts_of
            .query_map([key], |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        jobs.push(job);
    }
    jobs.sort_by(|a, b| b.energy_mj.cmp(&a.energy_mj).then_with(|| a.id.cmp(&b.id)));
    Ok(jobs)
}

/// The part of a job's `units` that falls in a span holding `in_span` of its `windows`, rounded
/// to the nearest unit; all of them when the span holds every window.
fn units_in_span(units: u64, in_span: u64, windows: u64) -> u64 {
    if windows == 0 || in_span >= windows {
        return units;
    }
    let wide = u128::from(units) * u128::from(in_span);
    ((wide + u128::from(windows) / 2) / u128::from(windows)) as u64
}

/// One job's footprint.
///
/// # Errors
/// [`Error::NotFound`] for an unknown job, or a database error.
pub fn get_job(connection: &Connection, id: &str) -> Result<JobFootprint> {
    let filter = JobFilter {
        id: Some(id.to_owned()),
        ..JobFilter::default()
    };
    list_jobs(connection, &filter)?
        .into_iter()
        .next()
        .ok_or_else(|| Error::NotFound(format!("job {id:?}")))
}

/// A quantity over a span and where it went: `site = jobs + idle + unattributed`, exactly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Balance {
    pub site: i64,
    pub jobs: i64,
    pub idle: i64,
    pub unattributed: i64,
}

impl Balance {
    /// `jobs + idle + unattributed − site`; zero when the books balance.
    pub fn imbalance(&self) -> i64 {
        self.jobs + self.idle + self.unattributed - self.site
    }
}

/// The facility (or one host) over a span: energy, water and carbon, each balanced.
#[derive(Clone, Debug, PartialEq)]
pub struct FacilityWindow {
    pub start_ns: i64,
    pub end_ns: i64,
    /// The host of a per-host series; empty for the site.
    pub host: String,
    pub energy_mj: Balance,
    pub measured_method: String,
    /// Energy at the IT boundary: outlets, or components + overhead factor.
    pub it_mj: u64,
    /// Facility overhead shared out.
    pub overhead_mj: u64,
    pub water_ml: Balance,
    pub co2e_location_mg: Balance,
    pub co2e_market_mg: Balance,
    pub co2e_embodied_mg: Balance,
    pub ppa_matched_mj: u64,
    pub go_matched_mj: u64,
    /// Market-based inputs (the site's; zero for a host or a group): the PPA energy delivered
    /// in the span's hours, and the part no load of the same hour used (forfeited: matching is
    /// hourly).
    pub ppa_delivered_mj: u64,
    pub ppa_forfeited_mj: u64,
    /// Guarantees of origin left after the span's last settled hour.
    pub go_balance_mj: u64,
    /// Energy no instrument covered: priced with the residual mix, else the grid average.
    pub uncovered_mj: u64,
    /// The residual-mix factor, where the span's uncovered energy was priced with it.
    pub residual_mix: Option<ResidualMix>,
    /// Host windows in the span built again because late data changed them.
    pub revised_windows: u64,
    /// Site hours in the span settled again with different figures (the site only).
    pub revised_hours: u64,
}

impl FacilityWindow {
    pub fn pue(&self) -> f64 {
        if self.it_mj == 0 {
            0.0
        } else {
            self.energy_mj.site as f64 / self.it_mj as f64
        }
    }

    pub fn wue_l_per_kwh(&self) -> f64 {
        if self.it_mj == 0 {
            0.0
        } else {
            (self.water_ml.site as f64 / 1_000.0)
                / (self.it_mj as f64 / footprint_core::Millijoules::PER_KWH as f64)
        }
    }

    /// Share of the load covered by PPA supply in the same hour.
    pub fn cfe_share(&self) -> f64 {
        if self.energy_mj.site <= 0 {
            0.0
        } else {
            self.ppa_matched_mj as f64 / self.energy_mj.site as f64
        }
    }
}

/// A residual-mix factor and where it is from (`carbon.residual_mix_*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResidualMix {
    pub mg_per_kwh: u64,
    /// Publisher and edition; empty when the config gives none.
    pub source: String,
    pub year: Option<u16>,
}

/// The span the site stage has settled: from the first built window to the settled hour.
///
/// # Errors
/// A database error.
pub fn settled_span(connection: &Connection) -> Result<Option<Span>> {
    let Some(UnixNanos(end)) = site::settled_until(connection)? else {
        return Ok(None);
    };
    let start: Option<i64> =
        connection.query_row("SELECT MIN(start_ns) FROM site_windows", [], |row| {
            row.get(0)
        })?;
    Ok(start.filter(|start| *start < end).map(|start| {
        Span::new(
            footprint_core::UnixNanos(start),
            footprint_core::UnixNanos(end),
        )
    }))
}

/// Sums of one bucket's rows.
#[derive(Default)]
struct HostSums {
    jobs_it: i64,
    jobs_overhead: i64,
    jobs_water: i64,
    jobs_location: i64,
    jobs_market: i64,
    jobs_embodied: i64,
    idle: i64,
    idle_overhead: i64,
    unattributed: i64,
    unattributed_overhead: i64,
    deficit: i64,
    host_mj: i64,
    idle_water: i64,
    unattributed_water: i64,
    idle_location: i64,
    unattributed_location: i64,
    idle_market: i64,
    unattributed_market: i64,
    idle_embodied: i64,
}

fn host_sums(connection: &Connection, bucket: Span, collector: Option<i64>) -> Result<HostSums> {
    let mut sums = HostSums::default();
    connection
        .prepare_cached(
            "SELECT COALESCE(SUM(gpu_mj + cpu_mj + dram_mj + remainder_mj), 0), COALESCE(SUM(overhead_mj), 0),
                    COALESCE(SUM(water_ml), 0), COALESCE(SUM(co2e_location_mg), 0), COALESCE(SUM(co2e_market_mg), 0),
                    COALESCE(SUM(embodied_mg), 0)
             FROM window_jobs WHERE start_ns >= ?1 AND start_ns < ?2 AND (?3 IS NULL OR collector = ?3)",
        )?
        .query_row(params![bucket.start.0, bucket.end.0, collector], |row| {
            sums.jobs_it = row.get(0)?;
            sums.jobs_overhead = row.get(1)?;
            sums.jobs_water = row.get(2)?;
            sums.jobs_location = row.get(3)?;
            sums.jobs_market = row.get(4)?;
            sums.jobs_embodied = row.get(5)?;
            Ok(())
        })?;
    connection
        .prepare_cached(
            "SELECT COALESCE(SUM(idle_mj), 0), COALESCE(SUM(idle_overhead_mj), 0), COALESCE(SUM(unattributed_mj), 0),
                    COALESCE(SUM(unattributed_overhead_mj), 0), COALESCE(SUM(remainder_deficit_mj), 0), COALESCE(SUM(host_mj), 0),
                    COALESCE(SUM(idle_water_ml), 0), COALESCE(SUM(unattributed_water_ml), 0),
                    COALESCE(SUM(idle_co2e_location_mg), 0), COALESCE(SUM(unattributed_co2e_location_mg), 0),
                    COALESCE(SUM(idle_co2e_market_mg), 0), COALESCE(SUM(unattributed_co2e_market_mg), 0),
                    COALESCE(SUM(idle_embodied_mg), 0)
             FROM window_hosts WHERE start_ns >= ?1 AND start_ns < ?2 AND (?3 IS NULL OR collector = ?3)",
        )?
        .query_row(params![bucket.start.0, bucket.end.0, collector], |row| {
            sums.idle = row.get(0)?;
            sums.idle_overhead = row.get(1)?;
            sums.unattributed = row.get(2)?;
            sums.unattributed_overhead = row.get(3)?;
            sums.deficit = row.get(4)?;
            sums.host_mj = row.get(5)?;
            sums.idle_water = row.get(6)?;
            sums.unattributed_water = row.get(7)?;
            sums.idle_location = row.get(8)?;
            sums.unattributed_location = row.get(9)?;
            sums.idle_market = row.get(10)?;
            sums.unattributed_market = row.get(11)?;
            sums.idle_embodied = row.get(12)?;
            Ok(())
        })?;
    Ok(sums)
}

/// Balances of the site over `bucket`.
fn site_bucket(connection: &Connection, bucket: Span) -> Result<FacilityWindow> {
    let sums = host_sums(connection, bucket, None)?;
    let mut window = FacilityWindow {
        start_ns: bucket.start.0,
        end_ns: bucket.end.0,
        host: String::new(),
        energy_mj: Balance::default(),
        measured_method: String::new(),
        it_mj: sums.host_mj as u64,
        overhead_mj: (sums.jobs_overhead + sums.idle_overhead + sums.unattributed_overhead) as u64,
        water_ml: Balance::default(),
        co2e_location_mg: Balance::default(),
        co2e_market_mg: Balance::default(),
        co2e_embodied_mg: Balance {
            site: sums.jobs_embodied + sums.idle_embodied,
            jobs: sums.jobs_embodied,
            idle: sums.idle_embodied,
            unattributed: 0,
        },
        ppa_matched_mj: 0,
        go_matched_mj: 0,
        ppa_delivered_mj: 0,
        ppa_forfeited_mj: 0,
        go_balance_mj: 0,
        uncovered_mj: 0,
        residual_mix: None,
        revised_windows: revised_windows(connection, bucket, None)?,
        revised_hours: 0,
    };
    let mut methods = [0i64; 3];
    let mut residual_used = false;
    connection
        .prepare_cached(
            "SELECT COALESCE(SUM(facility_mj), 0), COALESCE(SUM(unattributed_mj), 0), COALESCE(SUM(water_ml), 0),
                    COALESCE(SUM(unattributed_water_ml), 0), COALESCE(SUM(co2e_location_mg), 0),
                    COALESCE(SUM(unattributed_co2e_location_mg), 0), COALESCE(SUM(co2e_market_mg), 0),
                    COALESCE(SUM(unattributed_co2e_market_mg), 0),
                    COALESCE(SUM(overhead_source = 0), 0), COALESCE(SUM(overhead_source = 1), 0), COALESCE(SUM(overhead_source = 2), 0)
             FROM site_windows WHERE start_ns >= ?1 AND start_ns < ?2",
        )?
        .query_row(params![bucket.start.0, bucket.end.0], |row| {
            window.energy_mj = Balance {
                site: row.get(0)?,
                jobs: sums.jobs_it + sums.jobs_overhead,
                idle: sums.idle + sums.idle_overhead,
                unattributed: sums.unattributed + sums.unattributed_overhead + row.get::<_, i64>(1)?,
            };
            window.water_ml = Balance {
                site: row.get(2)?,
                jobs: sums.jobs_water,
                idle: sums.idle_water,
                unattributed: sums.unattributed_water + row.get::<_, i64>(3)?,
            };
            window.co2e_location_mg = Balance {
                site: row.get(4)?,
                jobs: sums.jobs_location,
                idle: sums.idle_location,
                unattributed: sums.unattributed_location + row.get::<_, i64>(5)?,
            };
            window.co2e_market_mg = Balance {
                site: row.get(6)?,
                jobs: sums.jobs_market,
                idle: sums.idle_market,
                unattributed: sums.unattributed_market + row.get::<_, i64>(7)?,
            };
            methods = [row.get(8)?, row.get(9)?, row.get(10)?];
            Ok(())
        })?;
    window.measured_method = match methods {
        [0, _, 0] => "site energy meter delta per window (split at window edges assuming constant power between readings)".to_owned(),
        [_, 0, 0] => "no site meter: IT energy (outlets, else GPU + CPU + DRAM + host overhead factor)".to_owned(),
        [0, 0, _] => "no site meter: IT energy x the configured PUE (estimated)".to_owned(),
        [none, meter, assumed] => format!(
            "mixed: {meter} window(s) from the site meter, {assumed} from the assumed PUE, {none} from IT energy alone"
        ),
    };
    connection
        .prepare_cached(
            "SELECT COALESCE(SUM(ppa_mj), 0), COALESCE(SUM(go_mj), 0),
                    (SELECT COUNT(*) FROM hour_revisions WHERE hour_ns >= ?1 AND hour_ns < ?2),
                    COALESCE(SUM(ppa_delivered_mj), 0), COALESCE(SUM(uncovered_mj), 0),
                    COALESCE(MAX(residual_mix), 0),
                    (SELECT go_balance_after_mj FROM site_hours WHERE hour_ns >= ?1 AND hour_ns < ?2
                     ORDER BY hour_ns DESC LIMIT 1)
             FROM site_hours WHERE hour_ns >= ?1 AND hour_ns < ?2",
        )?
        .query_row(params![bucket.start.0, bucket.end.0], |row| {
            let as_u64 = |index: usize| row.get::<_, i64>(index).map(|v| v as u64);
            window.ppa_matched_mj = as_u64(0)?;
            window.go_matched_mj = as_u64(1)?;
            window.revised_hours = as_u64(2)?;
            window.ppa_delivered_mj = as_u64(3)?;
            window.ppa_forfeited_mj = window
                .ppa_delivered_mj
                .saturating_sub(window.ppa_matched_mj);
            window.uncovered_mj = as_u64(4)?;
            residual_used = row.get::<_, i64>(5)? != 0;
            window.go_balance_mj = row.get::<_, Option<i64>>(6)?.unwrap_or(0) as u64;
            Ok(())
        })?;
    if residual_used {
        window.residual_mix = connection
            .query_row(
                "SELECT mg_per_kwh, source, year FROM residual_mix",
                [],
                |row| {
                    Ok(ResidualMix {
                        mg_per_kwh: row.get::<_, i64>(0)? as u64,
                        source: row.get(1)?,
                        year: row.get(2)?,
                    })
                },
            )
            .optional()?;
    }
    Ok(window)
}

/// Balances of one host over `bucket`: its outlet energy (or components + factor) plus its
/// facility shares.
fn host_bucket(
    connection: &Connection,
    bucket: Span,
    collector: i64,
    host: &str,
) -> Result<FacilityWindow> {
    let sums = host_sums(connection, bucket, Some(collector))?;
    let jobs = sums.jobs_it + sums.jobs_overhead;
    let idle = sums.idle + sums.idle_overhead;
    let unattributed = sums.unattributed + sums.unattributed_overhead - sums.deficit;
    let balance = |jobs: i64, idle: i64, unattributed: i64| Balance {
        site: jobs + idle + unattributed,
        jobs,
        idle,
        unattributed,
    };
    Ok(FacilityWindow {
        start_ns: bucket.start.0,
        end_ns: bucket.end.0,
        host: host.to_owned(),
        energy_mj: balance(jobs, idle, unattributed),
        measured_method: "the host's outlet meter (else its components + overhead factor) plus its share of the facility overhead".to_owned(),
        it_mj: sums.host_mj as u64,
        overhead_mj: (sums.jobs_overhead + sums.idle_overhead + sums.unattributed_overhead) as u64,
        water_ml: balance(sums.jobs_water, sums.idle_water, sums.unattributed_water),
        co2e_location_mg: balance(
            sums.jobs_location,
            sums.idle_location,
            sums.unattributed_location,
        ),
        co2e_market_mg: balance(sums.jobs_market, sums.idle_market, sums.unattributed_market),
        co2e_embodied_mg: balance(sums.jobs_embodied, sums.idle_embodied, 0),
        ppa_matched_mj: 0,
        go_matched_mj: 0,
        ppa_delivered_mj: 0,
        ppa_forfeited_mj: 0,
        go_balance_mj: 0,
        uncovered_mj: 0,
        residual_mix: None,
        revised_windows: revised_windows(connection, bucket, Some(collector))?,
        revised_hours: 0,
    })
}

/// Host windows in `bucket` (of one collector, or all) built again after late data.
fn revised_windows(connection: &Connection, bucket: Span, collector: Option<i64>) -> Result<u64> {
    Ok(connection
        .prepare_cached(
            "SELECT COUNT(*) FROM window_revisions WHERE start_ns >= ?1 AND start_ns < ?2 AND (?3 IS NULL OR collector = ?3)",
        )?
        .query_row(params![bucket.start.0, bucket.end.0, collector], |row| {
            row.get::<_, i64>(0)
        })? as u64)
}

/// One revision: a host window or a site hour the ledger computed again because late data
/// changed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Revision {
    /// `host_window` or `site_hour`.
    pub scope: &'static str,
    /// The host of a host window; empty for a site hour.
    pub host: String,
    pub start_ns: i64,
    pub end_ns: i64,
    /// How many times it was computed again.
    pub revisions: u64,
    pub last_revised_ns: i64,
    /// What arrived late.
    pub reason: String,
}

/// Every revision of a window or hour starting inside `span`, oldest first (site hours before
/// host windows at the same start).
///
/// # Errors
/// A database error.
pub fn revisions(connection: &Connection, span: Span, window_ns: i64) -> Result<Vec<Revision>> {
    let mut found = Vec::new();
    let mut hours = connection.prepare_cached(
        "SELECT hour_ns, revisions, last_revised_ns, reason FROM hour_revisions
         WHERE hour_ns >= ?1 AND hour_ns < ?2 ORDER BY hour_ns",
    )?;
    let rows = hours.query_map(params![span.start.0, span.end.0], |row| {
        Ok(Revision {
            scope: "site_hour",
            host: String::new(),
            start_ns: row.get(0)?,
            end_ns: row.get::<_, i64>(0)? + footprint_core::units::NANOS_PER_HOUR,
            revisions: row.get::<_, i64>(1)? as u64,
            last_revised_ns: row.get(2)?,
            reason: row.get(3)?,
        })
    })?;
    for row in rows {
        found.push(row?);
    }
    let mut windows = connection.prepare_cached(
        "SELECT c.host, v.start_ns, v.revisions, v.last_revised_ns, v.reason
         FROM window_revisions v JOIN collectors c ON c.id = v.collector
         WHERE v.start_ns >= ?1 AND v.start_ns < ?2 ORDER BY v.start_ns, c.host",
    )?;
    let rows = windows.query_map(params![span.start.0, span.end.0], |row| {
        Ok(Revision {
            scope: "host_window",
            host: row.get(0)?,
            start_ns: row.get(1)?,
            end_ns: row.get::<_, i64>(1)? + window_ns,
            revisions: row.get::<_, i64>(2)? as u64,
            last_revised_ns: row.get(3)?,
            reason: row.get(4)?,
        })
    })?;
    for row in rows {
        found.push(row?);
    }
    found.sort_by_key(|r| (r.start_ns, r.scope != "site_hour"));
    Ok(found)
}

/// How facility totals are grouped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Grouping {
    #[default]
    Site,
    Hall,
    Rack,
    Host,
}

impl Grouping {
    /// `""` or `site`, `hall`, `rack`, `host`.
    ///
    /// # Errors
    /// [`Error::BadRequest`] naming the parameter.
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "" | "site" => Ok(Self::Site),
            "hall" => Ok(Self::Hall),
            "rack" => Ok(Self::Rack),
            "host" => Ok(Self::Host),
            other => Err(Error::BadRequest(format!(
                "group_by: {other:?} is not site, hall, rack or host"
            ))),
        }
    }
}

impl Balance {
    fn add(&mut self, other: &Balance) {
        self.site += other.site;
        self.jobs += other.jobs;
        self.idle += other.idle;
        self.unattributed += other.unattributed;
    }
}

impl FacilityWindow {
    /// Adds another group member's figures (same span).
    fn absorb(&mut self, other: &FacilityWindow) {
        self.energy_mj.add(&other.energy_mj);
        self.water_ml.add(&other.water_ml);
        self.co2e_location_mg.add(&other.co2e_location_mg);
        self.co2e_market_mg.add(&other.co2e_market_mg);
        self.co2e_embodied_mg.add(&other.co2e_embodied_mg);
        self.it_mj += other.it_mj;
        self.overhead_mj += other.overhead_mj;
        self.revised_windows += other.revised_windows;
    }
}

/// Most steps one facility query returns: a year of hours is 8 784.
const MAX_STEPS: u64 = 100_000;

/// Facility totals over `span`, in steps of `step_ns` (0: one total), for the site or per hall,
/// rack or host.
///
/// # Errors
/// [`Error::BadRequest`] for more than 100 000 steps, or a database error.
pub fn facility_totals(
    connection: &Connection,
    span: Span,
    step_ns: i64,
    grouping: Grouping,
) -> Result<Vec<FacilityWindow>> {
    let step = if step_ns <= 0 {
        span.len_ns() as i64
    } else {
        step_ns
    };
    if span.len_ns() / step.max(1) as u64 > MAX_STEPS {
        return Err(Error::BadRequest(format!(
            "step_s: {} s steps over {} s are more than {MAX_STEPS} steps",
            step / 1_000_000_000,
            span.len_ns() / 1_000_000_000
        )));
    }
    // Each host with its group's name, in group order.
    let hosts: Vec<(i64, String, String)> = if grouping == Grouping::Site {
        Vec::new()
    } else {
        connection
            .prepare_cached(
                "SELECT c.id, c.host, COALESCE(p.hall, 'unplaced'), COALESCE(p.rack, 'unplaced')
                 FROM collectors c LEFT JOIN placement p ON p.host = c.host
                 WHERE c.built_until_ns IS NOT NULL",
            )?
            .query_map([], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                ))
            })?
            .map(|row| {
                row.map(|(id, host, hall, rack)| {
                    let group = match grouping {
                        Grouping::Hall => hall,
                        Grouping::Rack => format!("{hall}/{rack}"),
                        _ => host.clone(),
                    };
                    (id, host, group)
                })
            })
            .collect::<rusqlite::Result<_>>()?
    };
    let mut windows = Vec::new();
    let mut bucket_start = span.start.0;
    while bucket_start < span.end.0 {
        let bucket = Span::new(
            footprint_core::UnixNanos(bucket_start),
            footprint_core::UnixNanos(bucket_start.saturating_add(step).min(span.end.0)),
        );
        if grouping == Grouping::Site {
            windows.push(site_bucket(connection, bucket)?);
        } else {
            let mut groups: std::collections::BTreeMap<&str, FacilityWindow> =
                std::collections::BTreeMap::new();
            for (collector, host, group) in &hosts {
                let figures = host_bucket(connection, bucket, *collector, host)?;
                match groups.get_mut(group.as_str()) {
                    Some(total) => total.absorb(&figures),
                    None => {
                        groups.insert(
                            group,
                            FacilityWindow {
                                host: group.clone(),
                                ..figures
                            },
                        );
                    }
                }
            }
            windows.extend(groups.into_values());
        }
        bucket_start = bucket.end.0;
    }
    Ok(windows)
}

#[cfg(test)]
mod tests {
    use super::units_in_span;

    #[test]
    fn a_span_that_cuts_a_job_gets_its_share_of_the_units() {
        // 12 000 units over 360 windows; an hour of 10-second windows holds 30 of them.
        assert_eq!(units_in_span(12_000, 360, 360), 12_000);
        assert_eq!(units_in_span(12_000, 30, 360), 1_000);
        // Rounded to the nearest unit, never more than the job reported.
        assert_eq!(units_in_span(10, 1, 3), 3);
        assert_eq!(units_in_span(10, 2, 3), 7);
        assert_eq!(units_in_span(10, 5, 3), 10);
        assert_eq!(units_in_span(u64::MAX, 1, 2), u64::MAX / 2 + 1);
        assert_eq!(units_in_span(7, 0, 0), 7);
    }
}
