//! One job's footprint hour by hour: its settled hours from the roll-ups, the hours not yet
//! settled from its windows (without overhead, water and carbon, which settling adds).

use footprint_core::units::NANOS_PER_HOUR;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::{Error, Result};

/// A job's figures in one UTC hour.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct JobHour {
    pub hour_ns: i64,
    /// Whether the hour is settled (overhead, water and carbon shared out).
    pub settled: bool,
    pub gpu_mj: i64,
    pub cpu_mj: i64,
    pub dram_mj: i64,
    pub remainder_mj: i64,
    pub overhead_mj: i64,
    pub water_ml: i64,
    pub co2e_location_mg: i64,
    pub co2e_market_mg: i64,
    pub embodied_mg: i64,
    pub gpu_ns: i64,
}

/// Job `id`'s hours, oldest first.
///
/// # Errors
/// [`Error::NotFound`] for an unknown job; a database error.
pub fn job_hours(connection: &Connection, id: &str) -> Result<Vec<JobHour>> {
    let key: i64 = connection
        .query_row("SELECT id FROM jobs WHERE job_id = ?1", [id], |r| r.get(0))
        .optional()?
        .ok_or_else(|| Error::NotFound(format!("job {id:?}")))?;
    let settled = crate::ledger::site::settled_until(connection)?.map_or(i64::MIN, |at| at.0);
    let figures = "SUM(gpu_mj), SUM(cpu_mj), SUM(dram_mj), SUM(remainder_mj), SUM(overhead_mj), \
                   SUM(water_ml), SUM(co2e_location_mg), SUM(co2e_market_mg), SUM(embodied_mg), \
                   SUM(gpu_ns)";
    let sql = format!(
        "SELECT hour_ns, 1, {figures} FROM rollup_jobs WHERE job = ?1 AND hour_ns < ?2
         GROUP BY hour_ns
         UNION ALL
         SELECT start_ns - (((start_ns % ?3) + ?3) % ?3) AS hour, 0, {figures} FROM window_jobs
         WHERE job = ?1 AND start_ns >= ?2 GROUP BY hour
         ORDER BY 1"
    );
    let mut statement = connection.prepare_cached(&sql)?;
    let hours = statement
        .query_map(params![key, settled, NANOS_PER_HOUR], |r| {
            Ok(JobHour {
                hour_ns: r.get(0)?,
                settled: r.get::<_, i64>(1)? == 1,
                gpu_mj: r.get(2)?,
                cpu_mj: r.get(3)?,
                dram_mj: r.get(4)?,
                remainder_mj: r.get(5)?,
                overhead_mj: r.get(6)?,
                water_ml: r.get(7)?,
                co2e_location_mg: r.get(8)?,
                co2e_market_mg: r.get(9)?,
                embodied_mg: r.get(10)?,
                gpu_ns: r.get(11)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(hours)
}
