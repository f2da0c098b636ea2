//! The ledger: building attribution windows from stored readings and allocations, and reading
//! the results back.
//!
//! Two stages. The **host stage** (here) builds a host's window `[start, start + len)` once every
//! meter of the host (GPU, CPU package, DRAM, outlet) has a reading at or after its end: from then
//! on no delta that touches it can arrive in order. The energy of each reading's interval is cut
//! at window boundaries (`footprint_core::window`), attributed (`footprint_core::attribution`)
//! and charged its devices' embodied carbon (`footprint_core::embodied`). The **site stage**
//! ([`site`]) settles whole hours once every host and site meter has passed them: facility
//! overhead, water and location-based carbon per window, market-based carbon per hour.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use footprint_core::attribution::{
    self, DeviceKey, EnergyPiece, Holding, MigInstance, Resource, Usage,
};
use footprint_core::embodied::{self, HostDevices};
use footprint_core::units::NANOS_PER_HOUR;
use footprint_core::window::{WindowLength, share_in_window};
use footprint_core::{Quality, Span, UnixNanos};
use footprint_proto::v1::MeterKind;
use rusqlite::{Connection, OptionalExtension, params};

use crate::codec::{HostComponent, MeterRole, Step, quality_from_code, split_cpus, split_list};
use crate::settings::LedgerSettings;
use crate::tables::chunk::StoredReading;
use crate::tables::series;
use crate::{Error, Result};

pub mod coverage;
pub mod detail;
pub mod explain;
pub mod facility;
mod hour_rollup;
pub mod intensity;
pub mod job_hours;
pub mod read;
pub mod recheck;
pub mod site;
mod sources;
pub mod stats;
pub mod unbuilt;

pub use facility::*;
pub use read::*;
pub use unbuilt::{IntervalsByMeter, UnbuiltIntervals};

/// An IT meter of a host, as the builder needs it.
#[derive(Clone, Debug)]
pub struct LayoutMeter {
    pub key: i64,
    pub kind: MeterKind,
    pub device: String,
    pub cpus: Vec<u32>,
    /// The device's model (GPUs), for embodied carbon.
    pub model: String,
    /// Time of the meter's last accepted reading.
    pub last_ns: Option<i64>,
}

/// A usage meter of a host: a job's CPU time, or its busy time on one GPU. Usage meters split
/// shared meters; they do not hold windows back (a job's counters stop when it ends).
#[derive(Clone, Debug)]
pub struct UsageMeter {
    pub key: i64,
    pub kind: MeterKind,
    /// The GPU, for GPU busy time.
    pub device: String,
    /// The job's id, as allocations name it.
    pub job: String,
}

/// A host (collector) and how far its windows are built.
#[derive(Clone, Debug)]
pub struct HostLayout {
    pub collector: i64,
    pub meters: Vec<LayoutMeter>,
    pub usage: Vec<UsageMeter>,
    pub built_until: Option<i64>,
}

/// What a build did.
#[derive(Clone, Copy, Debug, Default)]
pub struct BuildProgress {
    pub windows: u64,
    pub built_until: Option<i64>,
    /// Start of the first window built, if any.
    pub first_built: Option<i64>,
}

/// Windows loaded and attributed together.
const WINDOWS_PER_CHUNK: i64 = 360;

/// One reading's interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Interval {
    pub span: Span,
    pub delta: u64,
    pub quality: Quality,
}

/// The interval a reading closes, if it has one (a meter's first reading has none).
pub(crate) fn interval_of(reading: &StoredReading) -> Option<Interval> {
    let (from_ns, delta) = (reading.from_ns?, reading.delta?);
    Some(Interval {
        span: Span::new(UnixNanos(from_ns), UnixNanos(reading.ts_ns)),
        delta: delta as u64,
        quality: Step::decode(reading.step.unwrap_or(0)).interval_quality(quality_from_code(
            i32::try_from(reading.quality).unwrap_or(0),
        )),
    })
}

pub(crate) fn load_intervals(
    connection: &Connection,
    meter: i64,
    range: Span,
) -> Result<Vec<Interval>> {
    Ok(series::readings_in(connection, meter, range)?
        .iter()
        .filter_map(interval_of)
        .collect())
}

fn load_holdings(
    connection: &Connection,
    collector: i64,
    range: Span,
    devices: &HashMap<String, DeviceKey>,
) -> Result<Vec<Holding>> {
    let mut statement = connection.prepare_cached(
        "SELECT job, start_ns, end_ns, gpus, cpus, mig FROM allocations
         WHERE collector = ?1 AND start_ns < ?2 AND (end_ns IS NULL OR end_ns > ?3)",
    )?;
    let rows = statement.query_map(params![collector, range.end.0, range.start.0], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, i64>(1)?,
            row.get::<_, Option<i64>>(2)?,
            row.get::<_, String>(3)?,
            row.get::<_, String>(4)?,
            row.get::<_, String>(5)?,
        ))
    })?;
    let mut holdings = Vec::new();
    for row in rows {
        let (job, start, end, gpus, cpus, mig) = row?;
        holdings.push(Holding {
            job: u32::try_from(job)
                .map_err(|_| Error::Server(format!("job key {job} out of range")))?,
            span: Span::new(UnixNanos(start), UnixNanos(end.unwrap_or(i64::MAX))),
            gpus: split_list(&gpus)
                .iter()
                .filter_map(|g| devices.get(g).copied())
                .collect(),
            mig: split_list(&mig)
                .iter()
                .filter_map(|item| {
                    let (device, slices) = item.rsplit_once(':')?;
                    Some(MigInstance {
                        device: devices.get(device).copied()?,
                        slices: slices.parse().ok()?,
                    })
                })
                .collect(),
            cpus: split_cpus(&cpus),
        });
    }
    Ok(holdings)
}

/// A usage meter's intervals, resolved to the keys attribution uses.
struct UsageSeries {
    job: u32,
    /// The GPU for busy time; `None` for CPU time.
    gpu: Option<DeviceKey>,
    intervals: Vec<Interval>,
}

fn load_usage(
    connection: &Connection,
    meters: &[UsageMeter],
    range: Span,
    devices: &HashMap<String, DeviceKey>,
) -> Result<Vec<UsageSeries>> {
    let mut series = Vec::with_capacity(meters.len());
    let mut job_key = connection.prepare_cached("SELECT id FROM jobs WHERE job_id = ?1")?;
    for meter in meters {
        // A job nobody has announced yet holds nothing, so its use has nothing to split.
        let Some(job) = job_key
            .query_row([&meter.job], |row| row.get::<_, i64>(0))
            .optional()?
            .and_then(|key| u32::try_from(key).ok())
        else {
            continue;
        };
        let gpu = match meter.kind {
            MeterKind::GpuJobBusy => match devices.get(&meter.device) {
                Some(key) => Some(*key),
                None => continue,
            },
            _ => None,
        };
        series.push(UsageSeries {
            job,
            gpu,
            intervals: load_intervals(connection, meter.key, range)?,
        });
    }
    Ok(series)
}

/// What each job used inside `window`, from its usage counters (spread evenly over each
/// interval, as energy is).
fn usage_in(series: &[UsageSeries], window: Span) -> Usage {
    let mut usage = Usage::default();
    for one in series {
        let used: u64 = one
            .intervals
            .iter()
            .filter_map(|i| share_in_window(i.span, i.delta, i.quality, window))
            .map(|share| share.amount)
            .sum();
        if used == 0 {
            continue;
        }
        match one.gpu {
            Some(gpu) => *usage.gpu.entry((gpu, one.job)).or_default() += used,
            None => *usage.cpu_ns.entry(one.job).or_default() += used,
        }
    }
    usage
}

/// Builds every window of `host` that all its IT meters have reported past.
///
/// # Errors
/// A database error; nothing is recorded as built then.
pub fn build_ready_windows(
    connection: &Connection,
    host: &HostLayout,
    window: WindowLength,
    settings: &LedgerSettings,
) -> Result<BuildProgress> {
    build_windows_reading(connection, host, window, settings, None)
}

/// [`build_ready_windows`] reading the meters' intervals from `unbuilt` instead of the database,
/// when it holds them from where the host's windows are built (else from the database).
///
/// # Errors
/// A database error; nothing is recorded as built then.
pub fn build_ready_windows_from(
    connection: &Connection,
    host: &HostLayout,
    window: WindowLength,
    settings: &LedgerSettings,
    unbuilt: &UnbuiltIntervals,
) -> Result<BuildProgress> {
    let held = (host.built_until == Some(unbuilt.from_ns())).then_some(unbuilt);
    build_windows_reading(connection, host, window, settings, held)
}

fn build_windows_reading(
    connection: &Connection,
    host: &HostLayout,
    window: WindowLength,
    settings: &LedgerSettings,
    held: Option<&UnbuiltIntervals>,
) -> Result<BuildProgress> {
    let reporting: Vec<&LayoutMeter> = host.meters.iter().filter(|m| m.last_ns.is_some()).collect();
    let Some(watermark) = reporting.iter().filter_map(|m| m.last_ns).min() else {
        return Ok(BuildProgress::default());
    };
    let end = window.start_of(UnixNanos(watermark)).0;
    let start = match host.built_until {
        Some(until) => until,
        None => {
            let keys: Vec<i64> = reporting.iter().map(|m| m.key).collect();
            match series::first_ts(connection, &keys)? {
                Some(first) => window.start_of(UnixNanos(first)).0,
                None => return Ok(BuildProgress::default()),
            }
        }
    };
    if start >= end {
        return Ok(BuildProgress {
            windows: 0,
            built_until: host.built_until,
            first_built: None,
        });
    }
    let span = Span::new(UnixNanos(start), UnixNanos(end));
    Ok(BuildProgress {
        windows: build_span(connection, host, window, settings, held, span)?,
        built_until: Some(end),
        first_built: Some(start),
    })
}

/// Builds and writes `host`'s windows starting in `span` (window-aligned) from what is stored,
/// whatever was built before; returns how many.
pub(crate) fn build_span(
    connection: &Connection,
    host: &HostLayout,
    window: WindowLength,
    settings: &LedgerSettings,
    held: Option<&UnbuiltIntervals>,
    span: Span,
) -> Result<u64> {
    let (start, end) = (span.start.0, span.end.0);
    let mut devices: HashMap<String, DeviceKey> = HashMap::new();
    let mut host_devices = HostDevices::default();
    let mut host_cpus: Vec<u32> = Vec::new();
    for meter in &host.meters {
        match MeterRole::of(meter.kind) {
            MeterRole::HostEnergy(HostComponent::Gpu) => {
                let next = devices.len() as DeviceKey;
                let key = *devices.entry(meter.device.clone()).or_insert(next);
                if key == next
                    && let Some(entry) = settings.gpu_entry(&meter.model)
                {
                    host_devices
                        .gpus
                        .push((key, entry.embodied_mg(), entry.lifetime_ns()));
                }
            }
            MeterRole::HostEnergy(HostComponent::CpuPackage) => host_cpus.extend(&meter.cpus),
            _ => {}
        }
    }
    host_cpus.sort_unstable();
    host_cpus.dedup();
    host_devices.cpus = host_cpus.len() as u64;
    host_devices.server = settings
        .server_entry()
        .map(|entry| (entry.embodied_mg(), entry.lifetime_ns()));
    let mut built = 0;
    let mut chunk_start = start;
    while chunk_start < end {
        let chunk_end = (chunk_start + WINDOWS_PER_CHUNK * window.nanos()).min(end);
        let chunk = Span::new(UnixNanos(chunk_start), UnixNanos(chunk_end));
        let holdings = load_holdings(connection, host.collector, chunk, &devices)?;
        let usage = load_usage(connection, &host.usage, chunk, &devices)?;
        let intervals: Vec<(&LayoutMeter, Cow<'_, [Interval]>)> = host
            .meters
            .iter()
            .map(|meter| {
                let intervals = match held {
                    Some(held) => {
                        let intervals = held.reaching_into(meter.key, chunk);
                        debug_assert_eq!(
                            intervals,
                            load_intervals(connection, meter.key, chunk)?,
                            "meter {} held intervals differ from the stored ones",
                            meter.key
                        );
                        Cow::Borrowed(intervals)
                    }
                    None => Cow::Owned(load_intervals(connection, meter.key, chunk)?),
                };
                Ok((meter, intervals))
            })
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
                let resource = match MeterRole::of(meter.kind) {
                    MeterRole::HostEnergy(HostComponent::Gpu) => Resource::Gpu(
                        devices
                            .get(&meter.device)
                            .copied()
                            .unwrap_or(DeviceKey::MAX),
                    ),
                    MeterRole::HostEnergy(HostComponent::CpuPackage) => {
                        Resource::CpuPackage(&meter.cpus)
                    }
                    MeterRole::HostEnergy(HostComponent::Dram) => Resource::Dram(&meter.cpus),
                    // The writer lays out a host's energy meters only; whatever else measures
                    // this host measures all of it.
                    _ => Resource::Host,
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
            let used = usage_in(&usage, span);
            let result = attribution::attribute(&pieces, &holdings, &used, &settings.policy);
            let gpu_time = attribution::gpu_time_held(span, &holdings);
            let embodied = embodied::split_embodied(span, &host_devices, &holdings);
            write_window(
                connection,
                host.collector,
                window_start,
                &result,
                &gpu_time,
                &embodied,
            )?;
            built += 1;
            window_start += window.nanos();
        }
        chunk_start = chunk_end;
    }
    Ok(built)
}

/// Host-stage rows of one window, as stored (`SELECT *`), to restore or compare.
#[derive(Debug, Default, PartialEq)]
struct StoredWindow {
    host: Vec<Vec<rusqlite::types::Value>>,
    jobs: Vec<Vec<rusqlite::types::Value>>,
}

/// The columns the host stage writes (the site stage fills the rest).
const HOST_STAGE_COLUMNS: usize = 13;
const JOB_STAGE_COLUMNS: usize = 12;

fn stored_windows(
    connection: &Connection,
    collector: i64,
    span: Span,
) -> Result<BTreeMap<i64, StoredWindow>> {
    let mut windows: BTreeMap<i64, StoredWindow> = BTreeMap::new();
    for (sql, is_host) in [
        (
            "SELECT * FROM window_hosts WHERE collector = ?1 AND start_ns >= ?2 AND start_ns < ?3 ORDER BY start_ns",
            true,
        ),
        (
            "SELECT * FROM window_jobs WHERE collector = ?1 AND start_ns >= ?2 AND start_ns < ?3 ORDER BY start_ns, job",
            false,
        ),
    ] {
        let mut statement = connection.prepare_cached(sql)?;
        let columns = statement.column_count();
        let mut rows = statement.query(params![collector, span.start.0, span.end.0])?;
        while let Some(row) = rows.next()? {
            let values = (0..columns)
                .map(|index| row.get(index))
                .collect::<rusqlite::Result<Vec<rusqlite::types::Value>>>()?;
            let start: i64 = row.get(1)?;
            let window = windows.entry(start).or_default();
            if is_host {
                window.host.push(values);
            } else {
                window.jobs.push(values);
            }
        }
    }
    Ok(windows)
}

impl StoredWindow {
    /// Whether the host stage wrote the same figures in both.
    fn same_attribution(&self, other: &Self) -> bool {
        let host = |rows: &[Vec<rusqlite::types::Value>],
                    width: usize|
         -> Vec<Vec<rusqlite::types::Value>> {
            rows.iter()
                .map(|row| row[..width.min(row.len())].to_vec())
                .collect()
        };
        host(&self.host, HOST_STAGE_COLUMNS) == host(&other.host, HOST_STAGE_COLUMNS)
            && host(&self.jobs, JOB_STAGE_COLUMNS) == host(&other.jobs, JOB_STAGE_COLUMNS)
    }
}

/// What a rebuild did.
#[derive(Clone, Copy, Debug, Default)]
pub struct RebuildProgress {
    pub build: BuildProgress,
    /// Windows whose attribution changed (recorded in `window_revisions`).
    pub revised: u64,
    /// The first window that changed or is new, if any.
    pub first_changed: Option<i64>,
}

/// Late data touched `host`'s built windows from `from_ns` on: builds them again from what is
/// stored now, and then any further ready windows. A window whose attribution comes out the same
/// is left exactly as it was (site figures included); one that changed is recorded in
/// `window_revisions` with `reason`, and its site figures wait for the site stage to settle its
/// hour again (the caller reopens it from `first_changed`, [`site::reopen`]).
///
/// # Errors
/// A database error; nothing is recorded then.
pub fn rebuild_windows(
    connection: &Connection,
    host: &HostLayout,
    window: WindowLength,
    settings: &LedgerSettings,
    from: UnixNanos,
    reason: &str,
    now: UnixNanos,
) -> Result<RebuildProgress> {
    let (from_ns, now_ns) = (from.0, now.0);
    let Some(built_until) = host.built_until else {
        return Ok(RebuildProgress {
            build: build_ready_windows(connection, host, window, settings)?,
            ..RebuildProgress::default()
        });
    };
    // Nothing before the host's first reading was ever built: a late allocation claiming to
    // start in 1970 rebuilds the host's history, not fifty years of empty windows.
    let keys: Vec<i64> = host.meters.iter().map(|m| m.key).collect();
    let first_reading = series::first_ts(connection, &keys)?.unwrap_or(from_ns);
    let start = window.start_of(UnixNanos(from_ns.max(first_reading))).0;
    if start >= built_until {
        return Ok(RebuildProgress {
            build: build_ready_windows(connection, host, window, settings)?,
            ..RebuildProgress::default()
        });
    }
    let range = Span::new(UnixNanos(start), UnixNanos(built_until));
    // Hours whose detail has aged are compared with their roll-ups instead, hour by hour.
    let aged = detail::detail_from(connection)?
        .map(|from| from.min(built_until))
        .filter(|until| start < *until)
        .map(|until| Span::new(UnixNanos(start), UnixNanos(until)));
    let rolled_up = match aged {
        Some(aged) => detail::host_stage_by_hour(connection, host.collector, aged, true)?,
        None => BTreeMap::new(),
    };
    let before = stored_windows(connection, host.collector, range)?;
    for table in ["window_hosts", "window_jobs"] {
        connection
            .prepare_cached(&format!(
                "DELETE FROM {table} WHERE collector = ?1 AND start_ns >= ?2 AND start_ns < ?3"
            ))?
            .execute(params![host.collector, start, built_until])?;
    }
    let rebuilding = HostLayout {
        built_until: Some(start),
        ..host.clone()
    };
    let build = build_ready_windows(connection, &rebuilding, window, settings)?;
    let mut progress = RebuildProgress {
        build,
        ..RebuildProgress::default()
    };
    if let Some(aged) = aged {
        let reason = format!(
            "{reason}; the hour's window detail had aged out, so it was rebuilt from the readings and each of its windows counts as revised"
        );
        revise_aged_hours(
            connection,
            host.collector,
            aged,
            &rolled_up,
            &reason,
            now_ns,
            &mut progress,
        )?;
    }
    let after = stored_windows(connection, host.collector, range)?;
    let empty = StoredWindow::default();
    let mut revise = connection.prepare_cached(
        "INSERT INTO window_revisions (collector, start_ns, revisions, last_revised_ns, reason) VALUES (?1, ?2, 1, ?3, ?4)
         ON CONFLICT (collector, start_ns) DO UPDATE SET revisions = revisions + 1,
           last_revised_ns = excluded.last_revised_ns, reason = excluded.reason",
    )?;
    let starts: std::collections::BTreeSet<i64> =
        before.keys().chain(after.keys()).copied().collect();
    for window_start in starts {
        let old = before.get(&window_start).unwrap_or(&empty);
        let new = after.get(&window_start).unwrap_or(&empty);
        if old.same_attribution(new) {
            // Put back the rows as they were, site figures and all.
            restore_window(connection, host.collector, window_start, old)?;
            continue;
        }
        revise.execute(params![host.collector, window_start, now_ns, reason])?;
        progress.revised += 1;
        progress.first_changed.get_or_insert(window_start);
    }
    if progress.first_changed.is_none() && build.built_until > Some(built_until) {
        progress.first_changed = Some(built_until);
    }
    Ok(progress)
}

/// The rebuilt windows of `collector` in `aged` hours (whose detail had aged out): each hour
/// whose host-stage figures differ from its roll-up (`rolled_up`) has every window recorded as
/// revised; then the rows go again, as the site stage builds an aged hour's windows afresh when
/// it settles it.
fn revise_aged_hours(
    connection: &Connection,
    collector: i64,
    aged: Span,
    rolled_up: &BTreeMap<i64, Vec<i64>>,
    reason: &str,
    now_ns: i64,
    progress: &mut RebuildProgress,
) -> Result<()> {
    let rebuilt = detail::host_stage_by_hour(connection, collector, aged, false)?;
    let hours: std::collections::BTreeSet<i64> =
        rolled_up.keys().chain(rebuilt.keys()).copied().collect();
    for hour in hours {
        if rolled_up.get(&hour) == rebuilt.get(&hour) {
            continue;
        }
        let starts: Vec<i64> = connection
            .prepare_cached(
                "SELECT start_ns FROM window_hosts WHERE collector = ?1 AND start_ns >= ?2 AND start_ns < ?3 ORDER BY start_ns",
            )?
            .query_map(params![collector, hour, hour + NANOS_PER_HOUR], |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let mut revise = connection.prepare_cached(
            "INSERT INTO window_revisions (collector, start_ns, revisions, last_revised_ns, reason) VALUES (?1, ?2, 1, ?3, ?4)
             ON CONFLICT (collector, start_ns) DO UPDATE SET revisions = revisions + 1,
               last_revised_ns = excluded.last_revised_ns, reason = excluded.reason",
        )?;
        for start in &starts {
            revise.execute(params![collector, start, now_ns, reason])?;
        }
        progress.revised += starts.len() as u64;
        let first = progress.first_changed.get_or_insert(hour);
        *first = (*first).min(hour);
    }
    for table in ["window_hosts", "window_jobs"] {
        connection
            .prepare_cached(&format!(
                "DELETE FROM {table} WHERE collector = ?1 AND start_ns >= ?2 AND start_ns < ?3"
            ))?
            .execute(params![collector, aged.start.0, aged.end.0])?;
    }
    Ok(())
}

fn restore_window(
    connection: &Connection,
    collector: i64,
    start_ns: i64,
    stored: &StoredWindow,
) -> Result<()> {
    for (table, rows) in [
        ("window_hosts", &stored.host),
        ("window_jobs", &stored.jobs),
    ] {
        connection
            .prepare_cached(&format!(
                "DELETE FROM {table} WHERE collector = ?1 AND start_ns = ?2"
            ))?
            .execute(params![collector, start_ns])?;
        for row in rows {
            let placeholders = vec!["?"; row.len()].join(", ");
            connection
                .prepare_cached(&format!("INSERT INTO {table} VALUES ({placeholders})"))?
                .execute(rusqlite::params_from_iter(row))?;
        }
    }
    Ok(())
}

fn write_window(
    connection: &Connection,
    collector: i64,
    start_ns: i64,
    result: &attribution::HostAttribution,
    gpu_time: &BTreeMap<u32, u64>,
    embodied: &embodied::EmbodiedSplit,
) -> Result<()> {
    if result.measured.total_mj() == 0 && gpu_time.is_empty() && embodied.total_mg == 0 {
        return Ok(());
    }
    let measured = result.measured.by_quality();
    connection
        .prepare_cached(
            "INSERT OR REPLACE INTO window_hosts (collector, start_ns, it_mj, host_mj, remainder_mj, remainder_source,
               remainder_deficit_mj, idle_mj, unattributed_mj, measured_mj, interpolated_mj, estimated_mj, idle_embodied_mg)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )?
        .execute(params![
            collector,
            start_ns,
            result.measured.components_mj() as i64,
            result.host_mj() as i64,
            result.measured.remainder.total_mj() as i64,
            result.remainder_source as i64,
            result.remainder_deficit_mj as i64,
            result.idle.total_mj() as i64,
            result.unattributed.total_mj() as i64,
            measured.measured_mj as i64,
            measured.interpolated_mj as i64,
            measured.estimated_mj as i64,
            embodied.idle_mg as i64,
        ])?;
    let mut insert = connection.prepare_cached(
        "INSERT OR REPLACE INTO window_jobs (collector, start_ns, job, gpu_mj, cpu_mj, dram_mj, remainder_mj,
           measured_mj, interpolated_mj, estimated_mj, gpu_ns, embodied_mg)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?;
    let mut jobs: BTreeMap<u32, (attribution::ResourceEnergy, u64, u64)> = BTreeMap::new();
    for (job, energy) in &result.jobs {
        jobs.entry(*job).or_default().0 = *energy;
    }
    for (job, ns) in gpu_time {
        jobs.entry(*job).or_default().1 = *ns;
    }
    for (job, mg) in &embodied.jobs {
        jobs.entry(*job).or_default().2 = *mg;
    }
    for (job, (energy, gpu_ns, embodied_mg)) in jobs {
        let quality = energy.by_quality();
        insert.execute(params![
            collector,
            start_ns,
            job,
            energy.gpu.total_mj() as i64,
            energy.cpu.total_mj() as i64,
            energy.dram.total_mj() as i64,
            energy.remainder.total_mj() as i64,
            quality.measured_mj as i64,
            quality.interpolated_mj as i64,
            quality.estimated_mj as i64,
            gpu_ns as i64,
            embodied_mg as i64,
        ])?;
    }
    Ok(())
}
