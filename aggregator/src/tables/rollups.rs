//! Hourly roll-ups of the window tables: `rollup_jobs` (hour, host, job), `rollup_hosts` (hour,
//! host) and `rollup_site` (hour). Each holds the sums of the rows of its window table in the
//! hour, under the same column names, so a query reads either with the same expressions. An hour
//! is rolled up when the site stage settles it (again, when it is reopened); window detail
//! older than `ledger.window_detail_days` is then deleted, and the roll-ups are what remains.
//! The hours of a UTC day are summed again into `rollup_jobs_days` and `rollup_hosts_days`
//! whenever one of them is rolled up, so that a query over months reads days.

use footprint_core::units::{NANOS_PER_DAY, NANOS_PER_HOUR};
use rusqlite::{Connection, params};

/// The figures `window_jobs` and `rollup_jobs` both carry, summed by a roll-up.
pub const JOB_FIGURES: &str = "gpu_mj, cpu_mj, dram_mj, remainder_mj, measured_mj, interpolated_mj, estimated_mj, \
gpu_ns, embodied_mg, overhead_mj, water_ml, co2e_location_mg, co2e_market_mg";

/// The figures `window_hosts` and `rollup_hosts` both carry, summed by a roll-up.
pub const HOST_FIGURES: &str = "it_mj, host_mj, remainder_mj, remainder_deficit_mj, idle_mj, unattributed_mj, \
measured_mj, interpolated_mj, estimated_mj, idle_embodied_mg, idle_overhead_mj, idle_water_ml, \
idle_co2e_location_mg, idle_co2e_market_mg, unattributed_overhead_mj, unattributed_water_ml, \
unattributed_co2e_location_mg, unattributed_co2e_market_mg";

/// The sums of a host's jobs that `rollup_hosts` carries besides (a job's IT energy is
/// `gpu_mj + cpu_mj + dram_mj + remainder_mj`).
pub const JOBS_OF_HOST: &str = "jobs_it_mj, jobs_overhead_mj, jobs_water_ml, jobs_co2e_location_mg, \
jobs_co2e_market_mg, jobs_embodied_mg";

/// The figures `site_windows` and `rollup_site` both carry, summed by a roll-up.
pub const SITE_FIGURES: &str = "facility_mj, it_mj, overhead_deficit_mj, unattributed_mj, water_ml, \
unattributed_water_ml, co2e_location_mg, unattributed_co2e_location_mg, co2e_market_mg, \
unattributed_co2e_market_mg";

/// The roll-up tables of jobs and hosts, by hour and by UTC day, with the figure columns of the
/// lists above (so that a figure added to a list is a column of every table it is summed into).
/// `rollup_jobs` is keyed by job first (a job's hours lie together); the days sum the hours.
pub fn tables_ddl() -> String {
    let columns = |list: &str| {
        list.split(", ")
            .map(|column| format!("    {column} INTEGER NOT NULL,\n"))
            .collect::<String>()
    };
    let mut ddl = String::new();
    for (suffix, key, index) in [
        ("", "hour_ns", "rollup_jobs_by_hour"),
        ("_days", "day_ns", "rollup_jobs_days_by_day"),
    ] {
        ddl.push_str(&format!(
            "CREATE TABLE IF NOT EXISTS rollup_jobs{suffix} (\n    {key} INTEGER NOT NULL,\n    \
             collector INTEGER NOT NULL,\n    job INTEGER NOT NULL,\n{}    \
             host_windows INTEGER NOT NULL,\n    revised_windows INTEGER NOT NULL,\n    \
             first_start_ns INTEGER NOT NULL,\n    last_start_ns INTEGER NOT NULL,\n    \
             PRIMARY KEY (job, {key}, collector)\n) WITHOUT ROWID;\n\
             CREATE INDEX IF NOT EXISTS {index} ON rollup_jobs{suffix} ({key});\n\
             CREATE TABLE IF NOT EXISTS rollup_hosts{suffix} (\n    {key} INTEGER NOT NULL,\n    \
             collector INTEGER NOT NULL,\n{}    host_windows INTEGER NOT NULL,\n    \
             revised_windows INTEGER NOT NULL,\n{}    PRIMARY KEY ({key}, collector)\n) WITHOUT ROWID;\n",
            columns(JOB_FIGURES),
            columns(HOST_FIGURES),
            columns(JOBS_OF_HOST)
        ));
    }
    ddl
}

/// `SUM(a), SUM(b), …` of a column list.
pub fn sums(columns: &str) -> String {
    columns
        .split(", ")
        .map(|column| format!("SUM({column})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether a window row `w` was built again after late data (0 or 1).
const REVISED: &str = "EXISTS (SELECT 1 FROM window_revisions v WHERE v.collector = w.collector AND v.start_ns = w.start_ns)";

/// Rolls up the hour at `hour_ns` from its window rows, replacing what was rolled up for it.
///
/// # Errors
/// A database error.
pub fn roll_up_hour(connection: &Connection, hour_ns: i64) -> rusqlite::Result<()> {
    let end = hour_ns + NANOS_PER_HOUR;
    for table in ["rollup_jobs", "rollup_hosts", "rollup_site"] {
        connection
            .prepare_cached(&format!("DELETE FROM {table} WHERE hour_ns = ?1"))?
            .execute([hour_ns])?;
    }
    // Most hours have no window built again: then nothing to look up per row.
    let revised_any: bool = connection
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM window_revisions WHERE start_ns >= ?1 AND start_ns < ?2)",
        )?
        .query_row(params![hour_ns, end], |row| row.get(0))?;
    let revised = if revised_any {
        format!("SUM({REVISED})")
    } else {
        "0".to_owned()
    };
    // Each host's rows of the hour lie together in the tables' keys (collector, start, …):
    // read host by host rather than through the time index and a lookup per row.
    connection
        .prepare_cached(&format!(
            "INSERT INTO rollup_jobs (hour_ns, collector, job, {JOB_FIGURES},
               host_windows, revised_windows, first_start_ns, last_start_ns)
             SELECT ?1, collector, job, {}, COUNT(*), {revised}, MIN(start_ns), MAX(start_ns)
             FROM window_jobs w WHERE collector IN (SELECT id FROM collectors)
               AND start_ns >= ?1 AND start_ns < ?2
             GROUP BY collector, job",
            sums(JOB_FIGURES)
        ))?
        .execute(params![hour_ns, end])?;
    connection
        .prepare_cached(&format!(
            "INSERT INTO rollup_hosts (hour_ns, collector, {HOST_FIGURES}, host_windows, revised_windows,
               {JOBS_OF_HOST})
             SELECT ?1, h.*, COALESCE(j.it_mj, 0), COALESCE(j.overhead_mj, 0), COALESCE(j.water_ml, 0),
               COALESCE(j.co2e_location_mg, 0), COALESCE(j.co2e_market_mg, 0), COALESCE(j.embodied_mg, 0)
             FROM (SELECT collector, {}, COUNT(*), {revised}
                   FROM window_hosts w WHERE collector IN (SELECT id FROM collectors)
                     AND start_ns >= ?1 AND start_ns < ?2
                   GROUP BY collector) h
             LEFT JOIN (SELECT collector, SUM(gpu_mj + cpu_mj + dram_mj + remainder_mj) AS it_mj,
                          SUM(overhead_mj) AS overhead_mj, SUM(water_ml) AS water_ml,
                          SUM(co2e_location_mg) AS co2e_location_mg, SUM(co2e_market_mg) AS co2e_market_mg,
                          SUM(embodied_mg) AS embodied_mg
                        FROM rollup_jobs WHERE hour_ns = ?1 GROUP BY collector) j USING (collector)",
            sums(HOST_FIGURES)
        ))?
        .execute(params![hour_ns, end])?;
    roll_up_day(
        connection,
        hour_ns.div_euclid(NANOS_PER_DAY) * NANOS_PER_DAY,
    )?;
    connection
        .prepare_cached(&format!(
            "INSERT INTO rollup_site (hour_ns, {SITE_FIGURES}, windows_it_only, windows_metered,
               windows_assumed_pue, intensity_mg_per_kwh, intensity_quality)
             SELECT ?1, {}, SUM(overhead_source = 0), SUM(overhead_source = 1),
               SUM(overhead_source = 2), MAX(intensity_mg_per_kwh), MAX(intensity_quality)
             FROM site_windows WHERE start_ns >= ?1 AND start_ns < ?2 HAVING COUNT(*) > 0",
            sums(SITE_FIGURES)
        ))?
        .execute(params![hour_ns, end])?;
    Ok(())
}

/// Sums the UTC day holding the hour at `hour_ns` from its hours' roll-ups, replacing what was
/// summed for it.
///
/// # Errors
/// A database error.
pub fn roll_up_day(connection: &Connection, hour_ns: i64) -> rusqlite::Result<()> {
    let day_ns = hour_ns.div_euclid(NANOS_PER_DAY) * NANOS_PER_DAY;
    let end = day_ns + NANOS_PER_DAY;
    for table in ["rollup_jobs_days", "rollup_hosts_days"] {
        connection
            .prepare_cached(&format!("DELETE FROM {table} WHERE day_ns = ?1"))?
            .execute([day_ns])?;
    }
    connection
        .prepare_cached(&format!(
            "INSERT INTO rollup_jobs_days (day_ns, collector, job, {JOB_FIGURES},
               host_windows, revised_windows, first_start_ns, last_start_ns)
             SELECT ?1, collector, job, {}, SUM(host_windows), SUM(revised_windows),
               MIN(first_start_ns), MAX(last_start_ns)
             FROM rollup_jobs WHERE hour_ns >= ?1 AND hour_ns < ?2 GROUP BY collector, job",
            sums(JOB_FIGURES)
        ))?
        .execute(params![day_ns, end])?;
    connection
        .prepare_cached(&format!(
            "INSERT INTO rollup_hosts_days (day_ns, collector, {HOST_FIGURES}, host_windows,
               revised_windows, {JOBS_OF_HOST})
             SELECT ?1, collector, {}, SUM(host_windows), SUM(revised_windows), {}
             FROM rollup_hosts WHERE hour_ns >= ?1 AND hour_ns < ?2 GROUP BY collector",
            sums(HOST_FIGURES),
            sums(JOBS_OF_HOST)
        ))?
        .execute(params![day_ns, end])?;
    Ok(())
}

/// Rolls up every hour before `until_ns` that has window rows (a ledger from before roll-ups).
///
/// # Errors
/// A database error.
pub fn roll_up_before(connection: &Connection, until_ns: i64) -> rusqlite::Result<u64> {
    let hours: Vec<i64> = connection
        .prepare(
            "SELECT DISTINCT start_ns - (((start_ns % ?1) + ?1) % ?1) FROM site_windows
             WHERE start_ns < ?2 ORDER BY 1",
        )?
        .query_map(params![NANOS_PER_HOUR, until_ns], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for hour in &hours {
        roll_up_hour(connection, *hour)?;
    }
    Ok(hours.len() as u64)
}

/// Deletes the window rows of every hour in `[from_ns, until_ns)`.
///
/// # Errors
/// A database error.
pub fn delete_detail(
    connection: &Connection,
    from_ns: i64,
    until_ns: i64,
) -> rusqlite::Result<u64> {
    let mut deleted = 0;
    // Host by host, along the tables' keys (collector, start, …), rather than through the time
    // index and a lookup per row.
    for table in ["window_jobs", "window_hosts"] {
        deleted += connection
            .prepare_cached(&format!(
                "DELETE FROM {table} WHERE collector IN (SELECT id FROM collectors)
                   AND start_ns >= ?1 AND start_ns < ?2"
            ))?
            .execute(params![from_ns, until_ns])? as u64;
    }
    deleted += connection
        .prepare_cached("DELETE FROM site_windows WHERE start_ns >= ?1 AND start_ns < ?2")?
        .execute(params![from_ns, until_ns])? as u64;
    Ok(deleted)
}
