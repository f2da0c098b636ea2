//! The ledger: building attribution windows from stored readings and allocations, and reading
//! the results back.
//!
//! A host's window `[start, start + len)` is built once every IT meter of the host (GPU, CPU
//! package, DRAM) has a reading at or after its end: from then on no delta that touches it can
//! arrive in order. The energy of each reading's interval is cut at window boundaries
//! (`footprint_core::window`), then attributed (`footprint_core::attribution`).

use std::collections::{BTreeMap, HashMap};

use footprint_core::attribution::{self, DeviceKey, EnergyPiece, Holding, Resource};
use footprint_core::window::{WindowLength, share_in_window};
use footprint_core::{EnergyByQuality, Quality, Span, UnixNanos};
use footprint_proto::v1::{JobKind, MeterKind};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::store::schema::{split_cpus, split_list};
use crate::{Error, Result};

/// An IT meter of a host, as the builder needs it.
#[derive(Clone, Debug)]
pub struct LayoutMeter {
    pub key: i64,
    pub kind: MeterKind,
    pub device: String,
    pub cpus: Vec<u32>,
    /// Time of the meter's last accepted reading.
    pub last_ns: Option<i64>,
}

/// A host (collector) and how far its windows are built.
#[derive(Clone, Debug)]
pub struct HostLayout {
    pub collector: i64,
    pub meters: Vec<LayoutMeter>,
    pub built_until: Option<i64>,
}

/// What a build did.
#[derive(Clone, Copy, Debug, Default)]
pub struct BuildProgress {
    pub windows: u64,
    pub built_until: Option<i64>,
}

/// Windows loaded and attributed together.
const WINDOWS_PER_CHUNK: i64 = 360;

/// One reading's interval.
#[derive(Clone, Copy, Debug)]
struct Interval {
    span: Span,
    delta: u64,
    quality: Quality,
}

fn quality_from_code(code: i32) -> Quality {
    match code {
        2 => Quality::Interpolated,
        3 => Quality::Estimated,
        _ => Quality::Measured,
    }
}

fn interval_quality(reading_quality: i32, step: i64) -> Quality {
    use crate::store::{STEP_COMPACTED, STEP_GAP, STEP_KIND_MASK, STEP_RESET};
    let mut quality = quality_from_code(reading_quality);
    // A gap, a reset or a spool compaction: the energy is exact but its place in time is not.
    if step & (STEP_GAP | STEP_COMPACTED) != 0 || step & STEP_KIND_MASK == STEP_RESET {
        quality = quality.worst(Quality::Interpolated);
    }
    quality
}

fn load_intervals(connection: &Connection, meter: i64, range: Span) -> Result<Vec<Interval>> {
    let mut statement = connection.prepare_cached(
        "SELECT from_ns, ts_ns, delta, quality, step FROM readings
         WHERE meter = ?1 AND ts_ns > ?2 AND delta IS NOT NULL ORDER BY ts_ns",
    )?;
    let mut rows = statement.query(params![meter, range.start.0])?;
    let mut intervals = Vec::new();
    while let Some(row) = rows.next()? {
        let from_ns: i64 = row.get(0)?;
        if from_ns >= range.end.0 {
            break;
        }
        let delta: i64 = row.get(2)?;
        intervals.push(Interval {
            span: Span::new(UnixNanos(from_ns), UnixNanos(row.get(1)?)),
            delta: delta as u64,
            quality: interval_quality(row.get(3)?, row.get(4)?),
        });
    }
    Ok(intervals)
}

fn load_holdings(
    connection: &Connection,
    collector: i64,
    range: Span,
    devices: &HashMap<String, DeviceKey>,
) -> Result<Vec<Holding>> {
    let mut statement = connection.prepare_cached(
        "SELECT job, start_ns, end_ns, gpus, cpus FROM allocations
         WHERE collector = ?1 AND start_ns < ?2 AND (end_ns IS NULL OR end_ns > ?3)",
    )?;
    let rows = statement.query_map(params![collector, range.end.0, range.start.0], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, i64>(1)?,
            row.get::<_, Option<i64>>(2)?,
            row.get::<_, String>(3)?,
            row.get::<_, String>(4)?,
        ))
    })?;
    let mut holdings = Vec::new();
    for row in rows {
        let (job, start, end, gpus, cpus) = row?;
        holdings.push(Holding {
            job: u32::try_from(job)
                .map_err(|_| Error::Server(format!("job key {job} out of range")))?,
            span: Span::new(UnixNanos(start), UnixNanos(end.unwrap_or(i64::MAX))),
            gpus: split_list(&gpus)
                .iter()
                .filter_map(|g| devices.get(g).copied())
                .collect(),
            cpus: split_cpus(&cpus),
        });
    }
    Ok(holdings)
}

/// Builds every window of `host` that all its IT meters have reported past.
///
/// # Errors
/// A database error; nothing is recorded as built then.
pub fn build_ready_windows(
    connection: &Connection,
    host: &HostLayout,
    window: WindowLength,
) -> Result<BuildProgress> {
    let reporting: Vec<&LayoutMeter> = host.meters.iter().filter(|m| m.last_ns.is_some()).collect();
    let Some(watermark) = reporting.iter().filter_map(|m| m.last_ns).min() else {
        return Ok(BuildProgress::default());
    };
    let end = window.start_of(UnixNanos(watermark)).0;
    let start = match host.built_until {
        Some(until) => until,
        None => {
            let keys: Vec<String> = reporting.iter().map(|m| m.key.to_string()).collect();
            let first: Option<i64> = connection
                .query_row(
                    &format!(
                        "SELECT MIN(ts_ns) FROM readings WHERE meter IN ({})",
                        keys.join(",")
                    ),
                    [],
                    |row| row.get(0),
                )
                .optional()?
                .flatten();
            match first {
                Some(first) => window.start_of(UnixNanos(first)).0,
                None => return Ok(BuildProgress::default()),
            }
        }
    };
    if start >= end {
        return Ok(BuildProgress {
            windows: 0,
            built_until: host.built_until,
        });
    }
    let mut devices: HashMap<String, DeviceKey> = HashMap::new();
    for meter in &host.meters {
        if meter.kind == MeterKind::GpuEnergy {
            let next = devices.len() as DeviceKey;
            devices.entry(meter.device.clone()).or_insert(next);
        }
    }
    let mut progress = BuildProgress::default();
    let mut chunk_start = start;
    while chunk_start < end {
        let chunk_end = (chunk_start + WINDOWS_PER_CHUNK * window.nanos()).min(end);
        let chunk = Span::new(UnixNanos(chunk_start), UnixNanos(chunk_end));
        let holdings = load_holdings(connection, host.collector, chunk, &devices)?;
        let intervals: Vec<(&LayoutMeter, Vec<Interval>)> = host
            .meters
            .iter()
            .map(|meter| Ok((meter, load_intervals(connection, meter.key, chunk)?)))
            .collect::<Result<_>>()?;
        let mut cursors = vec![0usize; intervals.len()];
        let mut window_start = chunk_start;
        while window_start < chunk_end {
            let span = window.window_at(UnixNanos(window_start));
            let mut pieces = Vec::new();
            for ((meter, list), cursor) in intervals.iter().zip(cursors.iter_mut()) {
                while *cursor < list.len() && list[*cursor].span.end <= span.start {
                    *cursor += 1;
                }
                let resource = match meter.kind {
                    MeterKind::GpuEnergy => Resource::Gpu(
                        devices
                            .get(&meter.device)
                            .copied()
                            .unwrap_or(DeviceKey::MAX),
                    ),
                    MeterKind::CpuPackageEnergy => Resource::CpuPackage(&meter.cpus),
                    _ => Resource::Dram(&meter.cpus),
                };
                for interval in list[*cursor..]
                    .iter()
                    .take_while(|i| i.span.start < span.end)
                {
                    if let Some(share) =
                        share_in_window(interval.span, interval.delta, interval.quality, span)
                    {
                        pieces.push(EnergyPiece {
                            resource,
                            span: share.span,
                            energy_mj: share.amount,
                            quality: share.quality,
                        });
                    }
                }
            }
            let result = attribution::attribute(&pieces, &holdings);
            let gpu_time = attribution::gpu_time_held(span, &holdings);
            write_window(connection, host.collector, window_start, &result, &gpu_time)?;
            progress.windows += 1;
            window_start += window.nanos();
        }
        chunk_start = chunk_end;
    }
    progress.built_until = Some(end);
    Ok(progress)
}

fn write_window(
    connection: &Connection,
    collector: i64,
    start_ns: i64,
    result: &attribution::HostAttribution,
    gpu_time: &BTreeMap<u32, u64>,
) -> Result<()> {
    if result.measured.total_mj() == 0 && gpu_time.is_empty() {
        return Ok(());
    }
    let measured = result.measured.by_quality();
    connection
        .prepare_cached(
            "INSERT OR REPLACE INTO window_hosts (collector, start_ns, it_mj, idle_mj, unattributed_mj, measured_mj, interpolated_mj, estimated_mj)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![
            collector,
            start_ns,
            result.measured.total_mj() as i64,
            result.idle.total_mj() as i64,
            result.unattributed.total_mj() as i64,
            measured.measured_mj as i64,
            measured.interpolated_mj as i64,
            measured.estimated_mj as i64
        ])?;
    let mut insert = connection.prepare_cached(
        "INSERT OR REPLACE INTO window_jobs (collector, start_ns, job, gpu_mj, cpu_mj, dram_mj, measured_mj, interpolated_mj, estimated_mj, gpu_ns)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    let mut jobs: BTreeMap<u32, (attribution::ResourceEnergy, u64)> = BTreeMap::new();
    for (job, energy) in &result.jobs {
        jobs.entry(*job).or_default().0 = *energy;
    }
    for (job, ns) in gpu_time {
        jobs.entry(*job).or_default().1 = *ns;
    }
    for (job, (energy, gpu_ns)) in jobs {
        let quality = energy.by_quality();
        insert.execute(params![
            collector,
            start_ns,
            job,
            energy.gpu.total_mj() as i64,
            energy.cpu.total_mj() as i64,
            energy.dram.total_mj() as i64,
            quality.measured_mj as i64,
            quality.interpolated_mj as i64,
            quality.estimated_mj as i64,
            gpu_ns as i64
        ])?;
    }
    Ok(())
}

/// A job's footprint over a span of time.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JobFootprint {
    pub id: String,
    pub scheduler: String,
    pub name: String,
    pub user: String,
    pub project: String,
    pub kind: String,
    pub model: String,
    pub energy_mj: u64,
    pub gpu_energy_mj: u64,
    pub cpu_energy_mj: u64,
    pub dram_energy_mj: u64,
    /// The energy split by how it was obtained (the parts add up to `energy_mj`).
    pub energy_quality: EnergyByQuality,
    pub gpu_hours: f64,
    pub hosts: Vec<String>,
    pub first_window_ns: i64,
    pub last_window_ns: i64,
    /// How the figures were obtained.
    pub method: String,
}

/// Method note carried by every job figure.
pub const JOB_METHOD: &str = "GPU: counter delta of each held GPU, split by time overlap when the holder changes, evenly when shared; \
CPU package and DRAM: counter delta split by cores held x time; facility overhead not yet included";

pub fn kind_name(kind: i32) -> &'static str {
    match JobKind::try_from(kind) {
        Ok(JobKind::Training) => "training",
        Ok(JobKind::Inference) => "inference",
        _ => "other",
    }
}

/// Every job with energy in `[from_ns, to_ns)` (0 = unbounded), largest first.
///
/// # Errors
/// A database error.
pub fn list_jobs(
    connection: &Connection,
    from_ns: i64,
    to_ns: i64,
    only_job: Option<&str>,
) -> Result<Vec<JobFootprint>> {
    let to_ns = if to_ns <= 0 { i64::MAX } else { to_ns };
    let mut statement = connection.prepare_cached(
        "SELECT j.id, j.job_id, j.scheduler, j.name, j.user, j.project, j.kind, j.model,
                SUM(w.gpu_mj), SUM(w.cpu_mj), SUM(w.dram_mj), SUM(w.measured_mj), SUM(w.interpolated_mj), SUM(w.estimated_mj),
                SUM(w.gpu_ns), MIN(w.start_ns), MAX(w.start_ns)
         FROM window_jobs w JOIN jobs j ON j.id = w.job
         WHERE w.start_ns >= ?1 AND w.start_ns < ?2 AND (?3 IS NULL OR j.job_id = ?3)
         GROUP BY j.id",
    )?;
    let rows = statement.query_map(params![from_ns, to_ns, only_job], |row| {
        let as_u64 = |index: usize| row.get::<_, i64>(index).map(|v| v as u64);
        let (gpu, cpu, dram) = (as_u64(8)?, as_u64(9)?, as_u64(10)?);
        Ok((
            row.get::<_, i64>(0)?,
            JobFootprint {
                id: row.get(1)?,
                scheduler: row.get(2)?,
                name: row.get(3)?,
                user: row.get(4)?,
                project: row.get(5)?,
                kind: kind_name(row.get(6)?).to_owned(),
                model: row.get(7)?,
                energy_mj: gpu + cpu + dram,
                gpu_energy_mj: gpu,
                cpu_energy_mj: cpu,
                dram_energy_mj: dram,
                energy_quality: EnergyByQuality {
                    measured_mj: as_u64(11)?,
                    interpolated_mj: as_u64(12)?,
                    estimated_mj: as_u64(13)?,
                },
                gpu_hours: as_u64(14)? as f64 / 3.6e12,
                hosts: Vec::new(),
                first_window_ns: row.get(15)?,
                last_window_ns: row.get(16)?,
                method: JOB_METHOD.to_owned(),
            },
        ))
    })?;
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

/// One job's footprint.
///
/// # Errors
/// [`Error::NotFound`] for an unknown job, or a database error.
pub fn get_job(connection: &Connection, id: &str) -> Result<JobFootprint> {
    list_jobs(connection, 0, 0, Some(id))?
        .into_iter()
        .next()
        .ok_or_else(|| Error::NotFound(format!("job {id:?}")))
}

/// The facility's energy over a span: measured, and how it splits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FacilityWindow {
    pub start_ns: i64,
    pub end_ns: i64,
    /// The site meter's energy; without a site meter, the IT meters' total.
    pub measured_mj: u64,
    pub measured_method: String,
    pub it_mj: u64,
    pub jobs_mj: u64,
    pub idle_mj: u64,
    /// `measured − jobs − idle`: facility overhead not yet attributed, and whatever the host
    /// meters could not attribute. Negative when the site meter reads below the IT meters.
    pub unattributed_mj: i64,
}

/// The span over which every host's windows are built and every site meter has reported.
///
/// # Errors
/// A database error.
pub fn settled_span(connection: &Connection) -> Result<Option<Span>> {
    let built: Option<(i64, i64)> = connection
        .query_row(
            "SELECT MIN(c.built_until_ns), (SELECT MIN(start_ns) FROM window_hosts) FROM collectors c WHERE c.built_until_ns IS NOT NULL",
            [],
            |row| Ok(row.get::<_, Option<i64>>(0)?.zip(row.get::<_, Option<i64>>(1)?)),
        )
        .optional()?
        .flatten();
    let Some((mut end, start)) = built else {
        return Ok(None);
    };
    let site_end: Option<i64> = connection
        .query_row(
            "SELECT MIN(last) FROM (SELECT (SELECT MAX(ts_ns) FROM readings r WHERE r.meter = m.id) AS last FROM meters m WHERE m.kind = ?1)",
            [MeterKind::SiteEnergy as i32],
            |row| row.get(0),
        )
        .optional()?
        .flatten();
    if let Some(site_end) = site_end {
        end = end.min(site_end);
    }
    Ok((start < end).then(|| Span::new(UnixNanos(start), UnixNanos(end))))
}

/// Facility totals over `span`, in steps of `step_ns` (0: one total).
///
/// # Errors
/// A database error.
pub fn facility_totals(
    connection: &Connection,
    span: Span,
    step_ns: i64,
) -> Result<Vec<FacilityWindow>> {
    let site_meters: Vec<i64> = connection
        .prepare_cached("SELECT id FROM meters WHERE kind = ?1")?
        .query_map([MeterKind::SiteEnergy as i32], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let step = if step_ns <= 0 {
        span.len_ns() as i64
    } else {
        step_ns
    };
    let mut windows = Vec::new();
    let mut bucket_start = span.start.0;
    while bucket_start < span.end.0 {
        let bucket = Span::new(
            UnixNanos(bucket_start),
            UnixNanos((bucket_start.saturating_add(step)).min(span.end.0)),
        );
        let (it_mj, idle_mj): (i64, i64) = connection.prepare_cached(
            "SELECT COALESCE(SUM(it_mj), 0), COALESCE(SUM(idle_mj), 0) FROM window_hosts WHERE start_ns >= ?1 AND start_ns < ?2",
        )?.query_row(params![bucket.start.0, bucket.end.0], |row| Ok((row.get(0)?, row.get(1)?)))?;
        let jobs_mj: i64 = connection
            .prepare_cached("SELECT COALESCE(SUM(gpu_mj + cpu_mj + dram_mj), 0) FROM window_jobs WHERE start_ns >= ?1 AND start_ns < ?2")?
            .query_row(params![bucket.start.0, bucket.end.0], |row| row.get(0))?;
        let (measured_mj, measured_method) = if site_meters.is_empty() {
            (
                it_mj as u64,
                "no site meter: IT meters' total (GPU, CPU package, DRAM)".to_owned(),
            )
        } else {
            let mut total = 0u64;
            for meter in &site_meters {
                for interval in load_intervals(connection, *meter, bucket)? {
                    if let Some(share) =
                        share_in_window(interval.span, interval.delta, interval.quality, bucket)
                    {
                        total += share.amount;
                    }
                }
            }
            (
                total,
                format!(
                    "site energy meter delta ({} meter(s)), split at bucket edges assuming constant power between readings",
                    site_meters.len()
                ),
            )
        };
        windows.push(FacilityWindow {
            start_ns: bucket.start.0,
            end_ns: bucket.end.0,
            measured_mj,
            measured_method,
            it_mj: it_mj as u64,
            jobs_mj: jobs_mj as u64,
            idle_mj: idle_mj as u64,
            unattributed_mj: measured_mj as i64 - jobs_mj - idle_mj,
        });
        bucket_start = bucket.end.0;
    }
    Ok(windows)
}
