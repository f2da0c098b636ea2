//! Reading the ledger: jobs' footprints and the facility's balances.

use footprint_core::{EnergyByQuality, Span, UnixNanos};
use footprint_proto::v1::JobKind;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

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
a span that cuts a job counts the part of its reported units for the host-windows it held devices in the span (estimated: units are reported as one total)";

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

/// A job's windows as the jobs query reads them, from roll-ups and from window detail alike
/// (`host_windows`: window rows of one host summed; `revised_windows`: those built again).
const JOB_ROLLED: &str = "job, gpu_mj, cpu_mj, dram_mj, remainder_mj, overhead_mj, measured_mj, interpolated_mj, \
estimated_mj, gpu_ns, first_start_ns, last_start_ns, water_ml, co2e_location_mg, co2e_market_mg, embodied_mg, \
revised_windows, host_windows";
const JOB_DETAIL: &str = "job, gpu_mj, cpu_mj, dram_mj, remainder_mj, overhead_mj, measured_mj, interpolated_mj, \
estimated_mj, gpu_ns, start_ns, start_ns, water_ml, co2e_location_mg, co2e_market_mg, embodied_mg, \
EXISTS (SELECT 1 FROM window_revisions v WHERE v.collector = w.collector AND v.start_ns = w.start_ns), 1";

/// Every job with energy in the filter's span, largest first: whole settled hours from their
/// roll-ups, the rest from window detail.
///
/// # Errors
/// [`Error::BadRequest`] for an unknown kind or a span cutting an hour whose detail has aged
/// out, or a database error.
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
    // One job: its key, so that each source is read through its index by job.
    let only = match &filter.id {
        Some(id) => match connection
            .prepare_cached("SELECT id FROM jobs WHERE job_id = ?1")?
            .query_row([id], |row| row.get::<_, i64>(0))
            .optional()?
        {
            Some(key) => Some(key),
            None => return Ok(Vec::new()),
        },
        None => None,
    };
    let span = Span::new(UnixNanos(filter.from_ns), UnixNanos(to_ns));
    let sources = super::sources::sources(connection, span)?;
    let job_filter = if only.is_some() {
        "AND job = ?7"
    } else {
        "AND ?7 IS NULL"
    };
    let union = super::sources::Sources::union(
        "rollup_jobs",
        JOB_ROLLED,
        "window_jobs",
        JOB_DETAIL,
        job_filter,
    );
    // Summed by job first, then joined: one lookup of each job, not one per row summed.
    let sql = format!(
        "SELECT j.id, j.job_id, j.scheduler, j.name, j.user, j.project, j.kind, j.model, j.functional_unit, j.functional_units,
                w.gpu_mj, w.cpu_mj, w.dram_mj, w.remainder_mj, w.overhead_mj,
                w.measured_mj, w.interpolated_mj, w.estimated_mj,
                w.gpu_ns, w.first_start_ns, w.last_start_ns,
                w.water_ml, w.co2e_location_mg, w.co2e_market_mg, w.embodied_mg,
                w.revised_windows, w.host_windows
         FROM (SELECT job, SUM(gpu_mj) AS gpu_mj, SUM(cpu_mj) AS cpu_mj, SUM(dram_mj) AS dram_mj,
                 SUM(remainder_mj) AS remainder_mj, SUM(overhead_mj) AS overhead_mj, SUM(measured_mj) AS measured_mj,
                 SUM(interpolated_mj) AS interpolated_mj, SUM(estimated_mj) AS estimated_mj, SUM(gpu_ns) AS gpu_ns,
                 MIN(first_start_ns) AS first_start_ns, MAX(last_start_ns) AS last_start_ns, SUM(water_ml) AS water_ml,
                 SUM(co2e_location_mg) AS co2e_location_mg, SUM(co2e_market_mg) AS co2e_market_mg,
                 SUM(embodied_mg) AS embodied_mg, SUM(revised_windows) AS revised_windows,
                 SUM(host_windows) AS host_windows
               FROM ({union}) GROUP BY job) w
         JOIN jobs j ON j.id = w.job
         WHERE (?8 = '' OR j.user = ?8) AND (?9 = '' OR j.project = ?9) AND (?10 = '' OR j.model = ?10)
           AND (?11 IS NULL OR j.kind = ?11)"
    );
    let [a, b, c, d, e, f] = sources.bounds();
    let mut statement = connection.prepare_cached(&sql)?;
    let rows = statement.query_map(
        params![
            a,
            b,
            c,
            d,
            e,
            f,
            only,
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
            let (location, embodied) = (as_u64(22)?, as_u64(24)?);
            let it = gpu + cpu + dram + remainder;
            Ok((
                row.get::<_, i64>(0)?,
                as_u64(26)?,
                JobFootprint {
                    id: row.get(1)?,
                    scheduler: row.get(2)?,
                    name: row.get(3)?,
                    user: row.get(4)?,
                    project: row.get(5)?,
                    kind: JobKind::name_of(row.get(6)?).to_owned(),
                    model: row.get(7)?,
                    functional_unit: row.get(8)?,
                    functional_units: as_u64(9)?,
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
                    sci_mg_per_unit: 0.0,
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
    let found: Vec<(i64, u64, JobFootprint)> = rows.collect::<rusqlite::Result<_>>()?;
    // A job reports its functional units as one total: a span that cuts the job gets the part
    // of them for the host-windows it held devices in the span, as if produced evenly.
    let unbounded = filter.from_ns <= 0 && filter.to_ns <= 0;
    let all_windows = if unbounded || found.is_empty() {
        None
    } else {
        Some(host_windows_of_jobs(connection, only)?)
    };
    let mut jobs = Vec::with_capacity(found.len());
    let mut hosts_of = connection.prepare_cached(
        "SELECT DISTINCT c.host FROM allocations a JOIN collectors c ON c.id = a.collector WHERE a.job = ?1 ORDER BY c.host",
    )?;
    for (key, in_span, mut job) in found {
        if let Some(all) = &all_windows {
            let windows = all.get(&key).copied().unwrap_or(in_span);
            job.functional_units = units_in_span(job.functional_units, in_span, windows);
        }
        if job.functional_units > 0 {
            job.sci_mg_per_unit =
                (job.co2e_location_mg + job.co2e_embodied_mg) as f64 / job.functional_units as f64;
        }
        job.hosts = hosts_of
            .query_map([key], |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        jobs.push(job);
    }
    jobs.sort_by(|a, b| b.energy_mj.cmp(&a.energy_mj).then_with(|| a.id.cmp(&b.id)));
    Ok(jobs)
}

/// Every job's host-windows over all the ledger holds (of the job `only`, if given).
fn host_windows_of_jobs(
    connection: &Connection,
    only: Option<i64>,
) -> Result<std::collections::HashMap<i64, u64>> {
    let whole = Span::new(UnixNanos(0), UnixNanos(i64::MAX));
    let sources = super::sources::sources(connection, whole)?;
    let job_filter = if only.is_some() {
        "AND job = ?7"
    } else {
        "AND ?7 IS NULL"
    };
    let union = super::sources::Sources::union(
        "rollup_jobs",
        "job, host_windows",
        "window_jobs",
        "job, 1",
        job_filter,
    );
    let [a, b, c, d, e, f] = sources.bounds();
    let mut statement = connection.prepare_cached(&format!(
        "SELECT job, SUM(host_windows) FROM ({union}) GROUP BY job"
    ))?;
    let rows = statement.query_map(params![a, b, c, d, e, f, only], |row| {
        Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)? as u64))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
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
