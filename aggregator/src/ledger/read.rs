//! Reading the ledger: jobs' footprints and the facility's balances.

use footprint_core::{EnergyByQuality, Span, UnixNanos};
use footprint_proto::v1::JobKind;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use super::sources::Source;
use crate::tables::rollups::{JOB_FIGURES, sums};

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
    /// The same, exactly: GPU-nanoseconds held.
    pub gpu_ns: u64,
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

/// A job's figures over one window or summed over several, in the order of
/// `tables::rollups::JOB_FIGURES` (the columns `window_jobs` and the roll-ups share).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct JobFigures {
    pub gpu_mj: i64,
    pub cpu_mj: i64,
    pub dram_mj: i64,
    pub remainder_mj: i64,
    pub measured_mj: i64,
    pub interpolated_mj: i64,
    pub estimated_mj: i64,
    pub gpu_ns: i64,
    pub embodied_mg: i64,
    pub overhead_mj: i64,
    pub water_ml: i64,
    pub co2e_location_mg: i64,
    pub co2e_market_mg: i64,
}

impl JobFigures {
    /// The figures from `row`'s columns `first..first + 13`, in `JOB_FIGURES` order.
    ///
    /// # Errors
    /// A column is missing or not an integer.
    pub fn from_row(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Self> {
        let mut values = [0i64; 13];
        for (index, value) in values.iter_mut().enumerate() {
            *value = row.get(first + index)?;
        }
        let [
            gpu_mj,
            cpu_mj,
            dram_mj,
            remainder_mj,
            measured_mj,
            interpolated_mj,
            estimated_mj,
            gpu_ns,
            embodied_mg,
            overhead_mj,
            water_ml,
            co2e_location_mg,
            co2e_market_mg,
        ] = values;
        Ok(Self {
            gpu_mj,
            cpu_mj,
            dram_mj,
            remainder_mj,
            measured_mj,
            interpolated_mj,
            estimated_mj,
            gpu_ns,
            embodied_mg,
            overhead_mj,
            water_ml,
            co2e_location_mg,
            co2e_market_mg,
        })
    }

    pub fn add(&mut self, other: &Self) {
        self.gpu_mj += other.gpu_mj;
        self.cpu_mj += other.cpu_mj;
        self.dram_mj += other.dram_mj;
        self.remainder_mj += other.remainder_mj;
        self.measured_mj += other.measured_mj;
        self.interpolated_mj += other.interpolated_mj;
        self.estimated_mj += other.estimated_mj;
        self.gpu_ns += other.gpu_ns;
        self.embodied_mg += other.embodied_mg;
        self.overhead_mj += other.overhead_mj;
        self.water_ml += other.water_ml;
        self.co2e_location_mg += other.co2e_location_mg;
        self.co2e_market_mg += other.co2e_market_mg;
    }

    /// GPU + CPU package + DRAM + host remainder.
    pub fn it_mj(&self) -> i64 {
        self.gpu_mj + self.cpu_mj + self.dram_mj + self.remainder_mj
    }
}

/// A job's figures summed over some of its windows (a span's roll-ups or window rows), with
/// which windows they were.
#[derive(Clone, Copy, Debug, Default)]
struct JobSums {
    figures: JobFigures,
    first_ns: i64,
    last_ns: i64,
    revised: i64,
    host_windows: i64,
}

impl JobSums {
    fn add(&mut self, other: &Self) {
        if self.host_windows == 0 {
            self.first_ns = other.first_ns;
            self.last_ns = other.last_ns;
        } else if other.host_windows > 0 {
            self.first_ns = self.first_ns.min(other.first_ns);
            self.last_ns = self.last_ns.max(other.last_ns);
        }
        self.figures.add(&other.figures);
        self.revised += other.revised;
        self.host_windows += other.host_windows;
    }
}

/// The jobs' sums over `table`'s roll-ups of `[from, to)`, timed by `time` (`hour_ns`, `day_ns`).
fn rolled_sums(table: &str, time: &str) -> String {
    format!(
        "SELECT job, {}, MIN(first_start_ns), MAX(last_start_ns), SUM(revised_windows), SUM(host_windows)
         FROM {table} WHERE {time} >= ?1 AND {time} < ?2",
        sums(JOB_FIGURES)
    )
}

/// The jobs' sums over the window rows of `[from, to)`.
fn detail_sums() -> String {
    format!(
        "SELECT job, {}, MIN(start_ns), MAX(start_ns),
           SUM(EXISTS (SELECT 1 FROM window_revisions v WHERE v.collector = w.collector AND v.start_ns = w.start_ns)),
           COUNT(*)
         FROM window_jobs w WHERE start_ns >= ?1 AND start_ns < ?2",
        sums(JOB_FIGURES)
    )
}

/// Every job's sums over `span` (of the job `only`, if given), whole settled hours from their
/// roll-ups and the rest from window rows, by job key.
fn job_sums(
    connection: &Connection,
    span: Span,
    only: Option<i64>,
) -> Result<std::collections::BTreeMap<i64, JobSums>> {
    let sources = super::sources::sources(connection, span)?;
    let mut by_job: std::collections::BTreeMap<i64, JobSums> = std::collections::BTreeMap::new();
    for (source, from, to) in sources.pieces {
        // Keyed by job first, the roll-ups are read in job order and summed as they stream.
        let sql = match source {
            Source::Days => rolled_sums("rollup_jobs_days", "day_ns"),
            Source::Hours => rolled_sums("rollup_jobs", "hour_ns"),
            Source::Detail => detail_sums(),
        };
        let sql = match only {
            Some(_) => format!("{sql} AND job = ?3 GROUP BY job"),
            None => format!("{sql} AND ?3 IS NULL GROUP BY job"),
        };
        let mut statement = connection.prepare_cached(&sql)?;
        let mut rows = statement.query(params![from, to, only])?;
        while let Some(row) = rows.next()? {
            let sums = JobSums {
                figures: JobFigures::from_row(row, 1)?,
                first_ns: row.get(14)?,
                last_ns: row.get(15)?,
                revised: row.get(16)?,
                host_windows: row.get(17)?,
            };
            by_job.entry(row.get(0)?).or_default().add(&sums);
        }
    }
    Ok(by_job)
}

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
    let span = Span::new(UnixNanos(filter.from_ns.max(0)), UnixNanos(to_ns));
    let found = job_sums(connection, span, only)?;
    // A job reports its functional units as one total: a span that cuts the job (some of its
    // allocations reach outside) gets the part of them for the host-windows it held devices in
    // the span, as if produced evenly.
    let cut: std::collections::BTreeSet<i64> = if filter.from_ns <= 0 && filter.to_ns <= 0 {
        std::collections::BTreeSet::new()
    } else {
        connection
            .prepare_cached(
                "SELECT job FROM allocations GROUP BY job
                 HAVING MIN(start_ns) < ?1 OR MAX(COALESCE(end_ns, 9223372036854775807)) > ?2",
            )?
            .query_map(params![span.start.0, span.end.0], |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?
    };
    let everything = Span::new(UnixNanos(0), UnixNanos(i64::MAX));
    let mut describe = connection.prepare_cached(
        "SELECT job_id, scheduler, name, user, project, kind, model, functional_unit, functional_units
         FROM jobs WHERE id = ?1 AND (?2 = '' OR user = ?2) AND (?3 = '' OR project = ?3)
           AND (?4 = '' OR model = ?4) AND (?5 IS NULL OR kind = ?5)",
    )?;
    let mut hosts_of = connection.prepare_cached(
        "SELECT DISTINCT c.host FROM allocations a JOIN collectors c ON c.id = a.collector WHERE a.job = ?1 ORDER BY c.host",
    )?;
    let mut jobs = Vec::with_capacity(found.len());
    for (key, sums) in found {
        let Some(mut job) = describe
            .query_row(
                params![key, filter.user, filter.project, filter.model, kind],
                |row| {
                    Ok(JobFootprint {
                        id: row.get(0)?,
                        scheduler: row.get(1)?,
                        name: row.get(2)?,
                        user: row.get(3)?,
                        project: row.get(4)?,
                        kind: JobKind::name_of(row.get(5)?).to_owned(),
                        model: row.get(6)?,
                        functional_unit: row.get(7)?,
                        functional_units: row.get::<_, i64>(8)? as u64,
                        ..footprint_of(&sums)
                    })
                },
            )
            .optional()?
        else {
            continue;
        };
        if cut.contains(&key) {
            let all = job_sums(connection, everything, Some(key))?
                .get(&key)
                .map_or(sums.host_windows, |all| all.host_windows);
            job.functional_units =
                units_in_span(job.functional_units, sums.host_windows as u64, all as u64);
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

/// The figures of a job's footprint from its sums (the job's description left empty).
fn footprint_of(sums: &JobSums) -> JobFootprint {
    let as_u64 = |value: i64| value as u64;
    let figures = &sums.figures;
    let it = as_u64(figures.it_mj());
    JobFootprint {
        id: String::new(),
        scheduler: String::new(),
        name: String::new(),
        user: String::new(),
        project: String::new(),
        kind: String::new(),
        model: String::new(),
        functional_unit: String::new(),
        functional_units: 0,
        energy_mj: it + as_u64(figures.overhead_mj),
        it_energy_mj: it,
        gpu_energy_mj: as_u64(figures.gpu_mj),
        cpu_energy_mj: as_u64(figures.cpu_mj),
        dram_energy_mj: as_u64(figures.dram_mj),
        remainder_mj: as_u64(figures.remainder_mj),
        overhead_mj: as_u64(figures.overhead_mj),
        energy_quality: EnergyByQuality {
            measured_mj: as_u64(figures.measured_mj),
            interpolated_mj: as_u64(figures.interpolated_mj),
            estimated_mj: as_u64(figures.estimated_mj),
        },
        water_ml: as_u64(figures.water_ml),
        co2e_location_mg: as_u64(figures.co2e_location_mg),
        co2e_market_mg: as_u64(figures.co2e_market_mg),
        co2e_embodied_mg: as_u64(figures.embodied_mg),
        sci_mg_per_unit: 0.0,
        gpu_hours: figures.gpu_ns as f64 / 3.6e12,
        gpu_ns: figures.gpu_ns as u64,
        hosts: Vec::new(),
        first_window_ns: sums.first_ns,
        last_window_ns: sums.last_ns,
        method: JOB_METHOD.to_owned(),
        revised_windows: as_u64(sums.revised),
    }
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
