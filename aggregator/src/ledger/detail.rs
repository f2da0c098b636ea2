//! Window detail and how it ages: once an hour is settled and rolled up (`tables::rollups`),
//! its window rows are kept for `ledger.window_detail_days` and then deleted. Every hour before
//! [`detail_from`] is held as roll-ups only. Such an hour stays re-derivable: readings are kept
//! and attribution is deterministic, so [`regenerate`] builds its windows again from them — when
//! late data reopens it, and for `footprint explain`.

use std::collections::BTreeMap;

use footprint_core::units::NANOS_PER_HOUR;
use footprint_core::window::WindowLength;
use footprint_core::{Span, UnixNanos};
use footprint_proto::v1::MeterKind;
use rusqlite::{Connection, params};

use super::{HostLayout, LayoutMeter, UsageMeter, build_span, site};
use crate::Result;
use crate::codec::{MeterRole, split_cpus};
use crate::settings::LedgerSettings;
use crate::tables::{DETAIL_FROM_KEY, rollups, series};

/// The first hour that still has window detail: every hour before it is kept as roll-ups only.
/// `None` while nothing has aged.
///
/// # Errors
/// A database error.
pub fn detail_from(connection: &Connection) -> Result<Option<i64>> {
    Ok(crate::tables::state(connection, DETAIL_FROM_KEY)?)
}

/// Deletes the window detail of settled hours that ended `settings.window_detail_ns` before the
/// site's settled hours do, at most `max_hours` of them; returns how many hours aged.
///
/// # Errors
/// A database error.
pub fn age_detail(
    connection: &Connection,
    settings: &LedgerSettings,
    max_hours: i64,
) -> Result<i64> {
    let Some(UnixNanos(settled)) = site::settled_until(connection)? else {
        return Ok(0);
    };
    let cutoff = hour_of(settled.saturating_sub(settings.window_detail_ns)).min(settled);
    let from = match detail_from(connection)? {
        Some(from) => from,
        None => {
            let first: Option<i64> = connection
                .prepare_cached("SELECT MIN(start_ns) FROM window_hosts")?
                .query_row([], |row| row.get(0))?;
            match first {
                Some(first) => hour_of(first),
                None => return Ok(0),
            }
        }
    };
    let until = cutoff.min(from.saturating_add(max_hours.saturating_mul(NANOS_PER_HOUR)));
    if until <= from {
        return Ok(0);
    }
    rollups::delete_detail(connection, from, until)?;
    crate::tables::set_state(connection, DETAIL_FROM_KEY, until)?;
    Ok((until - from) / NANOS_PER_HOUR)
}

/// Whether the hour at `hour_ns` is kept as roll-ups only.
///
/// # Errors
/// A database error.
pub fn is_aged(connection: &Connection, hour_ns: i64) -> Result<bool> {
    Ok(detail_from(connection)?.is_some_and(|from| hour_ns < from))
}

pub(crate) fn hour_of(at_ns: i64) -> i64 {
    at_ns.div_euclid(NANOS_PER_HOUR) * NANOS_PER_HOUR
}

/// Every host that builds windows, as the ledger stores it: its energy and usage meters (in the
/// order they were announced) and how far its windows are built.
///
/// # Errors
/// A database error.
pub fn host_layouts(connection: &Connection) -> Result<Vec<HostLayout>> {
    let mut hosts: BTreeMap<i64, HostLayout> = BTreeMap::new();
    let mut statement = connection.prepare_cached(
        "SELECT c.id, c.built_until_ns, m.id, m.kind, m.device, m.cpus, m.model, m.job
         FROM meters m JOIN collectors c ON c.id = m.collector ORDER BY c.id, m.id",
    )?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        let collector: i64 = row.get(0)?;
        let Ok(kind) = MeterKind::try_from(row.get::<_, i32>(3)?) else {
            continue;
        };
        let host = hosts.entry(collector).or_insert_with(|| HostLayout {
            collector,
            meters: Vec::new(),
            usage: Vec::new(),
            built_until: None,
        });
        host.built_until = row.get(1)?;
        match MeterRole::of(kind) {
            MeterRole::HostEnergy(_) => host.meters.push(LayoutMeter {
                key: row.get(2)?,
                kind,
                device: row.get(4)?,
                cpus: split_cpus(&row.get::<_, String>(5)?),
                model: row.get(6)?,
                last_ns: None,
            }),
            MeterRole::Usage => host.usage.push(UsageMeter {
                key: row.get(2)?,
                kind,
                device: row.get(4)?,
                job: row.get(7)?,
            }),
            _ => {}
        }
    }
    Ok(hosts
        .into_values()
        .filter(|host| !host.meters.is_empty())
        .collect())
}

/// Builds every host's windows in `span` again from the readings, over whatever window rows
/// the span holds, as far as each host's windows were built; returns how many.
///
/// # Errors
/// A database error.
pub fn regenerate(
    connection: &Connection,
    window: WindowLength,
    settings: &LedgerSettings,
    span: Span,
) -> Result<u64> {
    for table in ["window_jobs", "window_hosts"] {
        connection
            .prepare_cached(&format!(
                "DELETE FROM {table} WHERE start_ns >= ?1 AND start_ns < ?2"
            ))?
            .execute(params![span.start.0, span.end.0])?;
    }
    let mut built = 0;
    for host in host_layouts(connection)? {
        // A host's windows begin at the window of its first reading, as they were built.
        let keys: Vec<i64> = host.meters.iter().map(|m| m.key).collect();
        let Some(first) = series::first_ts(connection, &keys)? else {
            continue;
        };
        let start = span.start.0.max(window.start_of(UnixNanos(first)).0);
        let end = host.built_until.map_or(start, |b| b.min(span.end.0));
        if end > start {
            let part = Span::new(UnixNanos(start), UnixNanos(end));
            built += build_span(connection, &host, window, settings, None, part)?;
        }
    }
    Ok(built)
}

/// The host stage's figures of `collector` in each hour of `span`, from its window rows or
/// (`from_rollups`) its roll-ups: what a rebuild compares for an hour whose detail has aged.
pub(crate) fn host_stage_by_hour(
    connection: &Connection,
    collector: i64,
    span: Span,
    from_rollups: bool,
) -> Result<BTreeMap<i64, Vec<i64>>> {
    const HOST: &str = "it_mj, host_mj, remainder_mj, remainder_deficit_mj, idle_mj, unattributed_mj, \
measured_mj, interpolated_mj, estimated_mj, idle_embodied_mg";
    const JOB: &str = "gpu_mj, cpu_mj, dram_mj, remainder_mj, measured_mj, interpolated_mj, \
estimated_mj, gpu_ns, embodied_mg";
    let (hosts, jobs, hour) = if from_rollups {
        ("rollup_hosts", "rollup_jobs", "hour_ns")
    } else {
        (
            "window_hosts",
            "window_jobs",
            "(start_ns - (((start_ns % 3600000000000) + 3600000000000) % 3600000000000))",
        )
    };
    let time = if from_rollups { "hour_ns" } else { "start_ns" };
    let mut figures: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for (table, columns, key) in [(hosts, HOST, "collector"), (jobs, JOB, "job")] {
        let sql = format!(
            "SELECT {hour} AS hour, {key}, {} FROM {table}
             WHERE collector = ?1 AND {time} >= ?2 AND {time} < ?3 GROUP BY hour, {key} ORDER BY hour, {key}",
            rollups::sums(columns)
        );
        let mut statement = connection.prepare_cached(&sql)?;
        let width = statement.column_count();
        let mut rows = statement.query(params![collector, span.start.0, span.end.0])?;
        while let Some(row) = rows.next()? {
            let entry = figures.entry(row.get(0)?).or_default();
            for index in 1..width {
                entry.push(row.get(index)?);
            }
        }
    }
    Ok(figures)
}
