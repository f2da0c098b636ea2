//! `footprint ledger stats`: what the ledger holds and what it costs on disk — bytes by part
//! (from SQLite's `dbstat`), readings, hosts, GPU-days covered and the settled hours.

use footprint_core::units::{NANOS_PER_DAY, NANOS_PER_HOUR};
use footprint_proto::v1::MeterKind;
use rusqlite::Connection;
use serde::Serialize;

use super::{detail, site};
use crate::Result;
use crate::tables::series;

/// Bytes of one part of the ledger.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Part {
    pub name: &'static str,
    pub bytes: u64,
    /// The tables and indexes counted in it.
    pub holds: &'static str,
}

/// What the ledger holds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LedgerStats {
    /// The database file's pages (the write-ahead log not counted).
    pub file_bytes: u64,
    pub parts: Vec<Part>,
    /// Readings laid out by meter (readings still staged with their batch not counted).
    pub readings: u64,
    pub readings_packed: u64,
    pub hosts: u64,
    pub gpus: u64,
    /// Each GPU energy meter's span from its first reading to its last, summed, in days.
    pub gpu_days: f64,
    /// `file_bytes / gpu_days`; 0 without GPUs.
    pub bytes_per_gpu_day: f64,
    pub first_settled_hour_ns: Option<i64>,
    pub last_settled_hour_ns: Option<i64>,
    /// The first hour whose window detail is kept; the hours before are kept as roll-ups only.
    pub window_detail_from_ns: Option<i64>,
    pub method: &'static str,
}

const METHOD: &str = "bytes: SQLite's dbstat (pages of each table and index), packed and unpacked readings \
split by their chunks' data bytes; free: the file's pages no table or index uses; GPU-days: each GPU energy \
meter's first to last reading";

/// The parts, by the tables and indexes in each.
const PARTS: [(&str, &[&str]); 4] = [
    (
        "readings",
        &[
            "reading_chunks",
            "sqlite_autoindex_reading_chunks_1",
            "readings",
            "staged_readings",
            "staged_readings_by_collector",
            "unpacked_hours",
        ],
    ),
    (
        "window detail",
        &[
            "window_jobs",
            "window_hosts",
            "site_windows",
            "window_jobs_by_time",
            "window_hosts_by_time",
        ],
    ),
    (
        "roll-ups",
        &[
            "rollup_jobs",
            "rollup_hosts",
            "rollup_site",
            "rollup_jobs_by_hour",
            "rollup_jobs_days",
            "rollup_hosts_days",
            "rollup_jobs_days_by_day",
        ],
    ),
    ("batches", &["batches"]),
];

/// What the ledger on `connection` holds.
///
/// # Errors
/// A database error.
pub fn ledger_stats(connection: &Connection) -> Result<LedgerStats> {
    let page_size: i64 = connection.pragma_query_value(None, "page_size", |row| row.get(0))?;
    let pages: i64 = connection.pragma_query_value(None, "page_count", |row| row.get(0))?;
    let file_bytes = (page_size * pages) as u64;
    let by_name: std::collections::HashMap<String, u64> = connection
        .prepare("SELECT name, SUM(pgsize) FROM dbstat WHERE aggregate = FALSE GROUP BY name")?
        .query_map([], |row| Ok((row.get(0)?, row.get::<_, i64>(1)? as u64)))?
        .collect::<rusqlite::Result<_>>()?;
    let (packed_data, plain_data, readings_packed, readings_plain): (i64, i64, i64, i64) =
        connection.query_row(
            "SELECT COALESCE(SUM(CASE WHEN packed = 1 THEN length(data) END), 0),
                    COALESCE(SUM(CASE WHEN packed = 0 THEN length(data) END), 0),
                    COALESCE(SUM(CASE WHEN packed = 1 THEN readings END), 0),
                    COALESCE(SUM(CASE WHEN packed = 0 THEN readings END), 0)
             FROM reading_chunks",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
        )?;
    let rows: i64 = connection.query_row("SELECT COUNT(*) FROM readings", [], |row| row.get(0))?;
    let mut parts = Vec::new();
    let mut counted = 0;
    for (name, tables) in PARTS {
        let bytes: u64 = tables.iter().filter_map(|table| by_name.get(*table)).sum();
        counted += bytes;
        if name == "readings" {
            let data = (packed_data + plain_data).max(1) as u64;
            let packed = bytes * packed_data as u64 / data;
            parts.push(Part {
                name: "readings packed",
                bytes: packed,
                holds: "reading_chunks packed by hour (their share of its pages)",
            });
            parts.push(Part {
                name: "readings unpacked",
                bytes: bytes - packed,
                holds: "reading_chunks as laid out, readings rows, staged_readings, unpacked_hours",
            });
        } else {
            parts.push(Part {
                name,
                bytes,
                holds: match name {
                    "window detail" => "window_jobs, window_hosts, site_windows and their indexes",
                    "roll-ups" => "rollup_jobs, rollup_hosts, rollup_site by hour, rollup_*_days by day, and their indexes",
                    _ => "batches (one row per acknowledged batch)",
                },
            });
        }
    }
    let used: u64 = by_name.values().sum();
    parts.push(Part {
        name: "the rest",
        bytes: used - counted,
        holds: "meters and their closed days' summaries, jobs, allocations, intensity, site hours, revisions, schema",
    });
    parts.push(Part {
        name: "free",
        bytes: file_bytes.saturating_sub(used),
        holds: "pages no table uses (until VACUUM)",
    });
    let hosts: i64 = connection.query_row(
        "SELECT COUNT(*) FROM collectors WHERE built_until_ns IS NOT NULL",
        [],
        |row| row.get(0),
    )?;
    let gpu_meters: Vec<i64> = connection
        .prepare("SELECT id FROM meters WHERE kind = ?1")?
        .query_map([MeterKind::GpuEnergy as i32], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut gpu_ns: i64 = 0;
    for meter in &gpu_meters {
        if let (Some(first), Some(last)) = (
            series::first_ts(connection, &[*meter])?,
            series::last_ts(connection, *meter)?,
        ) {
            gpu_ns += last - first;
        }
    }
    let gpu_days = gpu_ns as f64 / NANOS_PER_DAY as f64;
    let settled = site::settled_until(connection)?.map(|until| until.0);
    let first: Option<i64> =
        connection.query_row("SELECT MIN(hour_ns) FROM site_hours", [], |row| row.get(0))?;
    Ok(LedgerStats {
        file_bytes,
        parts,
        readings: (readings_packed + readings_plain + rows) as u64,
        readings_packed: readings_packed as u64,
        hosts: hosts as u64,
        gpus: gpu_meters.len() as u64,
        gpu_days,
        bytes_per_gpu_day: if gpu_days > 0.0 {
            file_bytes as f64 / gpu_days
        } else {
            0.0
        },
        first_settled_hour_ns: first.filter(|first| settled.is_some_and(|s| *first < s)),
        last_settled_hour_ns: settled
            .filter(|s| first.is_some_and(|first| first < *s))
            .map(|s| s - NANOS_PER_HOUR),
        window_detail_from_ns: detail::detail_from(connection)?,
        method: METHOD,
    })
}
