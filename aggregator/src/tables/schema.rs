//! The ledger's SQLite schema.
//!
//! Every accepted counter sample is kept with the interval it closes (`from_ns`..`ts_ns`) and the
//! amount counted in it (`delta`): raw facts an auditor can re-derive everything from. A sample
//! is first staged with its batch (`staged_readings`), then laid out by meter (`reading_chunks`,
//! or `readings` rows where a late reading was placed among its neighbours).
//! `window_jobs` / `window_hosts` hold the attribution of each built window; `window_revisions`
//! and `hour_revisions` say which of them late data made the ledger build again, and why.
//! `rollup_*` hold the same figures summed by hour (`tables::rollups`): what is left of an hour
//! once its window detail ages out.

use rusqlite::{Connection, OptionalExtension};

pub const SCHEMA_VERSION: i64 = 12;

/// How a ledger of an older schema is brought up to date: each step takes schema `from` to
/// `from + 1`, and a ledger runs every step from its own version on (tables that are new are
/// then created by [`SCHEMA`]).
const MIGRATIONS: &[(i64, &str)] = &[
    // Schema 2 stored a reading's quality as 0/1/2 (measured/interpolated/estimated) but read it
    // as 1/2/3.
    (2, "UPDATE readings SET quality = quality + 1"),
    // Schema 4 records each meter's resolution; older meters announced none.
    (
        3,
        "ALTER TABLE meters ADD COLUMN resolution INTEGER NOT NULL DEFAULT 0",
    ),
    // Schema 5 keeps runs of readings shorter than an hour (as ingest lays them out), keyed by
    // their first reading; every chunk an older ledger holds packs a whole hour. (A ledger from
    // before compaction has no chunks table: it gets an empty one of the old layout first.)
    (
        4,
        "CREATE TABLE IF NOT EXISTS reading_chunks (meter INTEGER NOT NULL, hour_ns INTEGER NOT NULL,
             from_ns INTEGER NOT NULL, first_ns INTEGER NOT NULL, last_ns INTEGER NOT NULL,
             readings INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (meter, hour_ns));
         CREATE TABLE reading_chunks_5 (meter INTEGER NOT NULL, first_ns INTEGER NOT NULL,
             from_ns INTEGER NOT NULL, last_ns INTEGER NOT NULL, readings INTEGER NOT NULL,
             packed INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (meter, first_ns));
         INSERT INTO reading_chunks_5 (meter, first_ns, from_ns, last_ns, readings, packed, data)
             SELECT meter, first_ns, from_ns, last_ns, readings, 1, data FROM reading_chunks;
         DROP TABLE reading_chunks;
         ALTER TABLE reading_chunks_5 RENAME TO reading_chunks;",
    ),
    // Schema 6 finds a meter's unpacked hours in `unpacked_hours` instead of an index over every
    // plain chunk.
    (
        5,
        "CREATE TABLE IF NOT EXISTS unpacked_hours (meter INTEGER NOT NULL, hour_ns INTEGER NOT NULL,
             PRIMARY KEY (meter, hour_ns)) WITHOUT ROWID;
         INSERT OR IGNORE INTO unpacked_hours (meter, hour_ns)
             SELECT meter, first_ns - ((first_ns % 3600000000000) + 3600000000000) % 3600000000000
             FROM reading_chunks WHERE packed = 0;
         DROP INDEX IF EXISTS reading_chunks_unpacked;",
    ),
    // Schema 7 fingerprints every imported feed (`feeds`) and names it beside each hour it
    // gave; hours imported before carry none.
    (6, "ALTER TABLE intensity ADD COLUMN feed INTEGER"),
    // Schema 8 keeps the PPA energy delivered in each hour beside what the hour's load matched
    // (the rest is forfeited); hours settled before show none.
    (
        7,
        "ALTER TABLE site_hours ADD COLUMN ppa_delivered_mj INTEGER NOT NULL DEFAULT 0",
    ),
    // Schema 9 rolls settled hours up (`rollup_*`, created by `SCHEMA` and `rollups::tables_ddl`); the hours an older
    // ledger settled are rolled up after (`ROLL_UP_FROM`). A job's settled hours are read from
    // its roll-ups, so window rows no longer need an index by job.
    (8, "DROP INDEX IF EXISTS window_jobs_by_job"),
    // Schema 10 summarises each closed day of a meter's readings (`meter_days`, created by
    // `SCHEMA`); the days an older ledger packed are summarised after (`SUMMARISE_FROM`).
    (9, "SELECT 1"),
    // Schema 11 records demand-response events (`grid_events`, `grid_event_intervals`) and GPU
    // power caps (`power_caps`), created by SCHEMA; nothing before them changes.
    (10, "SELECT 1"),
    // Schema 12 records how each event source (a VEN bridge polling a VTN) last reported
    // (`grid_event_sources`, created by SCHEMA).
    (11, "SELECT 1"),
];

/// Ledgers older than this schema have settled hours without roll-ups.
const ROLL_UP_FROM: i64 = 9;
/// Ledgers older than this schema have packed days without summaries.
const SUMMARISE_FROM: i64 = 10;

const SCHEMA: &str = r"
CREATE TABLE IF NOT EXISTS collectors (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    host TEXT NOT NULL,
    software_version TEXT NOT NULL,
    last_seq INTEGER NOT NULL DEFAULT 0,
    -- Start of the first window not yet built (NULL: nothing built yet).
    built_until_ns INTEGER
);
CREATE TABLE IF NOT EXISTS meters (
    id INTEGER PRIMARY KEY,
    collector INTEGER NOT NULL REFERENCES collectors(id),
    meter_id TEXT NOT NULL,
    kind INTEGER NOT NULL,
    device TEXT NOT NULL,
    counter_max INTEGER NOT NULL,
    cpus TEXT NOT NULL,
    method TEXT NOT NULL,
    model TEXT NOT NULL DEFAULT '',
    -- Usage meters: the job whose use the meter counts.
    job TEXT NOT NULL DEFAULT '',
    -- The counter's smallest step (0: one unit), loosening the rate check by one step.
    resolution INTEGER NOT NULL DEFAULT 0,
    UNIQUE (collector, meter_id)
);
-- The site's hours look for the site meters after every build: without this, a scan of every
-- meter each time.
CREATE INDEX IF NOT EXISTS meters_by_kind ON meters (kind);
CREATE TABLE IF NOT EXISTS batches (
    collector INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    received_ns INTEGER NOT NULL,
    readings INTEGER NOT NULL,
    rejected INTEGER NOT NULL,
    PRIMARY KEY (collector, seq)
) WITHOUT ROWID;
-- step: 0 advanced, 1 wrapped, 2 reset; | 8 when the interval is longer than max_sample_gap_s;
-- | 16 when the collector's spool compacted the readings (Batch.compacted).
CREATE TABLE IF NOT EXISTS readings (
    meter INTEGER NOT NULL,
    ts_ns INTEGER NOT NULL,
    value INTEGER NOT NULL,
    quality INTEGER NOT NULL,
    method TEXT,
    from_ns INTEGER,
    delta INTEGER,
    step INTEGER,
    PRIMARY KEY (meter, ts_ns)
) WITHOUT ROWID;
-- Runs of one meter's consecutive readings within one UTC hour, by column (`tables::chunk`):
-- plain as ingest laid them out (`packed` 0), or the whole hour packed by compaction (`packed` 1,
-- then the hour's only chunk). A reading lives here or in `readings`, never in both
-- (`tables::series` reads both). `from_ns`: where the chunk's first interval starts.
CREATE TABLE IF NOT EXISTS reading_chunks (
    meter INTEGER NOT NULL,
    first_ns INTEGER NOT NULL,
    from_ns INTEGER NOT NULL,
    last_ns INTEGER NOT NULL,
    readings INTEGER NOT NULL,
    packed INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (meter, first_ns)
);
-- The UTC hours in which a meter has plain chunks: where packing finds what is left to pack. An
-- index over the plain chunks themselves gained an entry at every lay-out, at each meter's place,
-- and rewriting those pages cost ~7 % of ingest (`BENCHMARKS.md`); this gains a row once per
-- meter and hour.
CREATE TABLE IF NOT EXISTS unpacked_hours (
    meter INTEGER NOT NULL,
    hour_ns INTEGER NOT NULL,
    PRIMARY KEY (meter, hour_ns)
) WITHOUT ROWID;
-- Each batch's accepted readings as one record (`tables::staged`), until they are laid out by
-- meter into `reading_chunks`.
CREATE TABLE IF NOT EXISTS staged_readings (
    id INTEGER PRIMARY KEY,
    collector INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS staged_readings_by_collector ON staged_readings (collector, id);
CREATE TABLE IF NOT EXISTS rejections (
    collector INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    field TEXT NOT NULL,
    meter_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    received_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    job_id TEXT NOT NULL UNIQUE,
    scheduler TEXT NOT NULL,
    name TEXT NOT NULL,
    user TEXT NOT NULL,
    project TEXT NOT NULL,
    kind INTEGER NOT NULL,
    model TEXT NOT NULL,
    functional_unit TEXT NOT NULL DEFAULT '',
    functional_units INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS allocations (
    collector INTEGER NOT NULL,
    job INTEGER NOT NULL,
    start_ns INTEGER NOT NULL,
    end_ns INTEGER,
    gpus TEXT NOT NULL,
    cpus TEXT NOT NULL,
    -- MIG instances held, `device:slices` comma-separated.
    mig TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (collector, job, start_ns)
) WITHOUT ROWID;
-- One host's window. Energy columns are mJ; idle_mj and unattributed_mj include their share of
-- the host remainder. The facility columns (overhead, water, carbon) are filled when the
-- window's hour settles (site_windows then holds the window).
CREATE TABLE IF NOT EXISTS window_hosts (
    collector INTEGER NOT NULL,
    start_ns INTEGER NOT NULL,
    it_mj INTEGER NOT NULL,
    host_mj INTEGER NOT NULL,
    remainder_mj INTEGER NOT NULL,
    remainder_source INTEGER NOT NULL,
    remainder_deficit_mj INTEGER NOT NULL,
    idle_mj INTEGER NOT NULL,
    unattributed_mj INTEGER NOT NULL,
    measured_mj INTEGER NOT NULL,
    interpolated_mj INTEGER NOT NULL,
    estimated_mj INTEGER NOT NULL,
    idle_embodied_mg INTEGER NOT NULL,
    idle_overhead_mj INTEGER NOT NULL DEFAULT 0,
    idle_water_ml INTEGER NOT NULL DEFAULT 0,
    idle_co2e_location_mg INTEGER NOT NULL DEFAULT 0,
    idle_co2e_market_mg INTEGER NOT NULL DEFAULT 0,
    unattributed_overhead_mj INTEGER NOT NULL DEFAULT 0,
    unattributed_water_ml INTEGER NOT NULL DEFAULT 0,
    unattributed_co2e_location_mg INTEGER NOT NULL DEFAULT 0,
    unattributed_co2e_market_mg INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (collector, start_ns)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS window_jobs (
    collector INTEGER NOT NULL,
    start_ns INTEGER NOT NULL,
    job INTEGER NOT NULL,
    gpu_mj INTEGER NOT NULL,
    cpu_mj INTEGER NOT NULL,
    dram_mj INTEGER NOT NULL,
    remainder_mj INTEGER NOT NULL,
    measured_mj INTEGER NOT NULL,
    interpolated_mj INTEGER NOT NULL,
    estimated_mj INTEGER NOT NULL,
    gpu_ns INTEGER NOT NULL,
    embodied_mg INTEGER NOT NULL,
    overhead_mj INTEGER NOT NULL DEFAULT 0,
    water_ml INTEGER NOT NULL DEFAULT 0,
    co2e_location_mg INTEGER NOT NULL DEFAULT 0,
    co2e_market_mg INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (collector, start_ns, job)
) WITHOUT ROWID;
-- The site in one window: the facility meter, the IT total, and what could not be placed on any
-- host's account (a negative overhead when the site meter reads below the IT meters).
CREATE TABLE IF NOT EXISTS site_windows (
    start_ns INTEGER PRIMARY KEY,
    facility_mj INTEGER NOT NULL,
    it_mj INTEGER NOT NULL,
    overhead_source INTEGER NOT NULL,
    overhead_deficit_mj INTEGER NOT NULL,
    unattributed_mj INTEGER NOT NULL,
    water_ml INTEGER NOT NULL,
    unattributed_water_ml INTEGER NOT NULL,
    intensity_mg_per_kwh INTEGER,
    intensity_quality INTEGER,
    co2e_location_mg INTEGER NOT NULL,
    unattributed_co2e_location_mg INTEGER NOT NULL,
    co2e_market_mg INTEGER NOT NULL,
    unattributed_co2e_market_mg INTEGER NOT NULL
);
-- Market-based matching of each hour of the site.
CREATE TABLE IF NOT EXISTS site_hours (
    hour_ns INTEGER PRIMARY KEY,
    load_mj INTEGER NOT NULL,
    ppa_mj INTEGER NOT NULL,
    go_mj INTEGER NOT NULL,
    uncovered_mj INTEGER NOT NULL,
    go_balance_after_mj INTEGER NOT NULL,
    uncovered_mg_per_kwh INTEGER NOT NULL,
    residual_mix INTEGER NOT NULL,
    co2e_market_mg INTEGER NOT NULL,
    ppa_delivered_mj INTEGER NOT NULL DEFAULT 0
);
-- The residual-mix factor the aggregator prices uncovered energy with, and where it is from (one
-- row, rewritten at every start from `carbon.residual_mix_*`).
CREATE TABLE IF NOT EXISTS residual_mix (
    only INTEGER PRIMARY KEY CHECK (only = 1),
    mg_per_kwh INTEGER NOT NULL,
    source TEXT NOT NULL,
    year INTEGER
);
-- Grid intensity by zone and hour (the hour it starts), as imported, with the feed it came from
-- (`feed`: its row in `feeds`; none for hours imported before schema 7).
CREATE TABLE IF NOT EXISTS intensity (
    zone TEXT NOT NULL,
    hour_ns INTEGER NOT NULL,
    mg_per_kwh INTEGER NOT NULL,
    quality INTEGER NOT NULL,
    source TEXT NOT NULL,
    feed INTEGER,
    PRIMARY KEY (zone, hour_ns)
) WITHOUT ROWID;
-- Every import of an intensity feed: the file, its SHA-256, its layout, which hour its timestamps
-- name (`starting` or `ending`), its rows and gaps, and when it was imported.
CREATE TABLE IF NOT EXISTS feeds (
    id INTEGER PRIMARY KEY,
    file TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    layout TEXT NOT NULL,
    hour_convention TEXT NOT NULL,
    hours INTEGER NOT NULL,
    gaps INTEGER NOT NULL,
    imported_ns INTEGER NOT NULL
);
-- The aggregator's config as it last started (TOML): what windows are built and hours settled
-- with, so that `footprint explain` rebuilds an hour the same way.
CREATE TABLE IF NOT EXISTS aggregator_config (
    only INTEGER PRIMARY KEY CHECK (only = 1),
    toml TEXT NOT NULL,
    written_ns INTEGER NOT NULL
);
-- Where each host stands, from the aggregator's `placement` config (rewritten at every start).
CREATE TABLE IF NOT EXISTS placement (
    host TEXT PRIMARY KEY,
    hall TEXT NOT NULL,
    rack TEXT NOT NULL
);
-- Demand-response events (OpenADR 3), as received and checked (`grid::events`): who sent them
-- (`posted`, or a VTN), when, whether cancelled, and what was clamped or not acted on.
CREATE TABLE IF NOT EXISTS grid_events (
    id TEXT PRIMARY KEY,
    program TEXT NOT NULL,
    name TEXT NOT NULL,
    priority INTEGER,
    source TEXT NOT NULL,
    received_ns INTEGER NOT NULL,
    cancelled_ns INTEGER,
    notes TEXT NOT NULL
);
-- Each event interval's payloads, with absolute times (`end_ns` i64::MAX: until cancelled).
CREATE TABLE IF NOT EXISTS grid_event_intervals (
    event TEXT NOT NULL REFERENCES grid_events(id),
    start_ns INTEGER NOT NULL,
    end_ns INTEGER NOT NULL,
    payload TEXT NOT NULL,
    value REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS grid_event_intervals_by_event ON grid_event_intervals (event);
-- Each event source's last report (`grid::sources`): when, whether its VTN answered, and the
-- events it listed and the aggregator refused (JSON).
CREATE TABLE IF NOT EXISTS grid_event_sources (
    name TEXT PRIMARY KEY,
    reported_ns INTEGER NOT NULL,
    last_success_ns INTEGER,
    error TEXT,
    events INTEGER NOT NULL,
    refused TEXT NOT NULL,
    poll_interval_s INTEGER NOT NULL
);
-- GPU power caps: each directive's outcome as the collector acknowledged it, and each cap it
-- ended on its own (`outcome` restored), with when, which GPU, from and to W, and why.
CREATE TABLE IF NOT EXISTS power_caps (
    collector INTEGER NOT NULL,
    device TEXT NOT NULL,
    directive INTEGER NOT NULL,
    at_ns INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    from_w INTEGER NOT NULL,
    to_w INTEGER NOT NULL,
    until_ns INTEGER NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger_state (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
-- Late data: the earliest instant of a collector's built windows that readings or allocations
-- stored since touch, and what they were. The builder rebuilds from there and removes the row
-- in the same transaction.
CREATE TABLE IF NOT EXISTS rebuild_pending (
    collector INTEGER PRIMARY KEY,
    from_ns INTEGER NOT NULL,
    reason TEXT NOT NULL
);
-- Windows built again because late data touched them: how often, when last, and why.
CREATE TABLE IF NOT EXISTS window_revisions (
    collector INTEGER NOT NULL,
    start_ns INTEGER NOT NULL,
    revisions INTEGER NOT NULL,
    last_revised_ns INTEGER NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (collector, start_ns)
) WITHOUT ROWID;
-- Settled hours that late data reopened, with why, until they are settled again.
CREATE TABLE IF NOT EXISTS hours_reopened (
    hour_ns INTEGER PRIMARY KEY,
    reason TEXT NOT NULL
);
-- Site hours settled again whose figures changed, likewise.
CREATE TABLE IF NOT EXISTS hour_revisions (
    hour_ns INTEGER PRIMARY KEY,
    revisions INTEGER NOT NULL,
    last_revised_ns INTEGER NOT NULL,
    reason TEXT NOT NULL
);
-- Hourly roll-ups (`tables::rollups`): the window tables' figures summed over each settled hour,
-- under the same column names; `host_windows` counts the window rows summed, `revised_windows`
-- those of them built again after late data. `rollup_jobs` is keyed by job first (a job's hours
-- lie together; listing jobs reads the table in order); `rollup_hosts` also carries the sums of
-- its host's jobs (`jobs_*`), so that totals never read `rollup_jobs`.
-- (`rollup_jobs`, `rollup_hosts` and their daily twins are created from their figure lists by
-- `tables::rollups::tables_ddl`.)
-- `windows_*`: the hour's windows by where their overhead came from (`site_windows.overhead_source`).
CREATE TABLE IF NOT EXISTS rollup_site (
    hour_ns INTEGER PRIMARY KEY,
    facility_mj INTEGER NOT NULL,
    it_mj INTEGER NOT NULL,
    overhead_deficit_mj INTEGER NOT NULL,
    unattributed_mj INTEGER NOT NULL,
    water_ml INTEGER NOT NULL,
    unattributed_water_ml INTEGER NOT NULL,
    co2e_location_mg INTEGER NOT NULL,
    unattributed_co2e_location_mg INTEGER NOT NULL,
    co2e_market_mg INTEGER NOT NULL,
    unattributed_co2e_market_mg INTEGER NOT NULL,
    windows_it_only INTEGER NOT NULL,
    windows_metered INTEGER NOT NULL,
    windows_assumed_pue INTEGER NOT NULL,
    intensity_mg_per_kwh INTEGER,
    intensity_quality INTEGER
);
-- The windows built again in an hour, looked up each time an hour settles and for totals.
CREATE INDEX IF NOT EXISTS window_revisions_by_time ON window_revisions (start_ns);
-- A job's hosts, for every job listed.
CREATE INDEX IF NOT EXISTS allocations_by_job ON allocations (job);
CREATE INDEX IF NOT EXISTS window_jobs_by_time ON window_jobs (start_ns);
CREATE INDEX IF NOT EXISTS window_hosts_by_time ON window_hosts (start_ns);
-- Each closed UTC day of a meter summarised (`tables::meter_days`): every hour of it packed and
-- the meter read past its end. Readings, first and last, the time its intervals cover inside the
-- day (gaps left out), where its first interval starts when that lies in the day before, its
-- gaps, wraps and resets. Unpacking an hour of it opens it again.
CREATE TABLE IF NOT EXISTS meter_days (
    meter INTEGER NOT NULL,
    day_ns INTEGER NOT NULL,
    readings INTEGER NOT NULL,
    first_ns INTEGER NOT NULL,
    last_ns INTEGER NOT NULL,
    covered_ns INTEGER NOT NULL,
    spill_from_ns INTEGER,
    gaps INTEGER NOT NULL,
    wraps INTEGER NOT NULL,
    resets INTEGER NOT NULL,
    PRIMARY KEY (meter, day_ns)
) WITHOUT ROWID;
";

/// Opens (creating if needed) the ledger with the durability Footprint promises: WAL, and
/// `synchronous = FULL` so that a commit, and hence an ack, survives power loss.
///
/// # Errors
/// The database cannot be opened or migrated.
pub fn open(path: &std::path::Path) -> rusqlite::Result<Connection> {
    let connection = Connection::open(path)?;
    // Before anything touches the file: another process may be finishing with it.
    connection.busy_timeout(std::time::Duration::from_secs(10))?;
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "FULL")?;
    // Commits append a few records and chunks, so a modest page cache holds what they touch
    // (reads go through mmap); a large one cost more than it saved, as SQLite walks its page
    // table at every commit. The WAL is checkpointed every 32 MiB rather than every 4 MiB.
    // Durability is unchanged.
    connection.pragma_update(None, "cache_size", -16_384)?;
    connection.pragma_update(None, "mmap_size", 1_i64 << 30)?;
    connection.pragma_update(None, "wal_autocheckpoint", 8_192)?;
    connection.pragma_update(None, "temp_store", "MEMORY")?;
    plans_ignore_bound_values(&connection)?;
    let version: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let known = version == 0
        || version == SCHEMA_VERSION
        || MIGRATIONS.iter().any(|(from, _)| *from == version);
    if !known {
        let from: Vec<String> = MIGRATIONS.iter().map(|(v, _)| v.to_string()).collect();
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "{} holds ledger schema {version}; this build reads schema {SCHEMA_VERSION} and migrates {}",
            path.display(),
            from.join(", ")
        )));
    }
    let transaction = connection.unchecked_transaction()?;
    if version != 0 {
        for (_, step) in MIGRATIONS.iter().filter(|(from, _)| *from >= version) {
            transaction.execute_batch(step)?;
        }
    }
    transaction.execute_batch(SCHEMA)?;
    transaction.execute_batch(&super::rollups::tables_ddl())?;
    if version != 0 && version < ROLL_UP_FROM {
        let settled: Option<i64> = transaction
            .query_row(
                "SELECT value FROM ledger_state WHERE key = ?1",
                [super::SITE_SETTLED_KEY],
                |row| row.get(0),
            )
            .optional()?;
        if let Some(settled) = settled {
            super::rollups::roll_up_before(&transaction, settled)?;
        }
    }
    if version != 0 && version < SUMMARISE_FROM {
        super::meter_days::close_packed_days(&transaction)
            .map_err(|error| rusqlite::Error::InvalidParameterName(error.to_string()))?;
    }
    transaction.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    transaction.commit()?;
    Ok(connection)
}

/// A connection for queries; WAL lets it read while the writer writes.
///
/// # Errors
/// The database cannot be opened.
pub fn open_reader(path: &std::path::Path) -> rusqlite::Result<Connection> {
    let connection = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    connection.busy_timeout(std::time::Duration::from_secs(10))?;
    connection.pragma_update(None, "mmap_size", 1_i64 << 30)?;
    plans_ignore_bound_values(&connection)?;
    let version: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if version != SCHEMA_VERSION {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "{} holds ledger schema {version}; this build reads schema {SCHEMA_VERSION}: start this \
             version's aggregator on it once to migrate it",
            path.display()
        )));
    }
    Ok(connection)
}

/// Turns on SQLite's query-planner stability guarantee: plans no longer depend on the values
/// bound to a statement. Without it, the bundled SQLite (built with STAT4) marks a statement
/// whose plan looked at a range bound (`ts_ns > ?2`) as expired whenever its bindings are cleared
/// — and rusqlite's statement cache clears them each time a statement goes back into it — so
/// every cached use compiled the SQL again: 18–25 % of the aggregator's CPU under
/// `footprint loadgen` (`BENCHMARKS.md`). The ledger keeps no statistics for values to inform,
/// so no plan gets worse.
fn plans_ignore_bound_values(connection: &Connection) -> rusqlite::Result<()> {
    connection.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Turns a new ledger at `path` into one as schema `version` left it.
    fn as_schema(path: &std::path::Path, version: i64) -> rusqlite::Result<Connection> {
        let connection = open(path)?;
        if version < 4 {
            connection.execute("ALTER TABLE meters DROP COLUMN resolution", [])?;
        }
        if version < 7 {
            connection.execute("ALTER TABLE intensity DROP COLUMN feed", [])?;
        }
        if version < 8 {
            connection.execute("ALTER TABLE site_hours DROP COLUMN ppa_delivered_mj", [])?;
        }
        connection.execute_batch(
            "DROP TABLE reading_chunks; DROP TABLE staged_readings;
             CREATE TABLE reading_chunks (meter INTEGER NOT NULL, hour_ns INTEGER NOT NULL,
                 from_ns INTEGER NOT NULL, first_ns INTEGER NOT NULL, last_ns INTEGER NOT NULL,
                 readings INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (meter, hour_ns));",
        )?;
        connection.pragma_update(None, "user_version", version)?;
        Ok(connection)
    }

    use rusqlite::params;

    #[test]
    fn a_schema_2_ledger_is_migrated_with_its_quality_codes_mended() -> rusqlite::Result<()> {
        let dir =
            tempfile::tempdir().map_err(|e| rusqlite::Error::InvalidPath(e.to_string().into()))?;
        let path = dir.path().join("ledger.sqlite");
        as_schema(&path, 2)?.execute(
            "INSERT INTO readings (meter, ts_ns, value, quality) VALUES (1, 1, 0, 1), (2, 1, 0, 0)",
            [],
        )?;
        let connection = open(&path)?;
        let codes: Vec<i64> = connection
            .prepare("SELECT quality FROM readings ORDER BY meter")?
            .query_map([], |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        // Schema 2 wrote 0 measured, 1 interpolated; schema 3 reads 1 measured, 2 interpolated.
        assert_eq!(codes, vec![2, 1]);
        let version: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
        assert_eq!(version, SCHEMA_VERSION);
        drop(connection);
        // Opened again, nothing moves a second time.
        let connection = open(&path)?;
        let again: i64 =
            connection.query_row("SELECT SUM(quality) FROM readings", [], |row| row.get(0))?;
        assert_eq!(again, 3);
        Ok(())
    }

    #[test]
    fn a_schema_3_ledger_gains_meter_resolutions() -> rusqlite::Result<()> {
        let dir =
            tempfile::tempdir().map_err(|e| rusqlite::Error::InvalidPath(e.to_string().into()))?;
        let path = dir.path().join("ledger.sqlite");
        as_schema(&path, 3)?.execute_batch(
            "INSERT INTO collectors (id, name, host, software_version) VALUES (1, 'node-a', 'node-a', '0');
             INSERT INTO meters (collector, meter_id, kind, device, counter_max, cpus, method)
             VALUES (1, 'pdu:outlet-1', 1, 'outlet-1', 0, '', '');",
        )?;
        let connection = open(&path)?;
        let resolution: i64 =
            connection.query_row("SELECT resolution FROM meters", [], |row| row.get(0))?;
        assert_eq!(resolution, 0);
        let version: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
        assert_eq!(version, SCHEMA_VERSION);
        Ok(())
    }

    #[test]
    fn a_schema_4_ledger_keeps_its_packed_hours_readable() -> Result<(), crate::Error> {
        use super::super::{chunk, series};
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("ledger.sqlite");
        let hour = 1_700_002_800_000_000_000_i64;
        let readings: Vec<chunk::StoredReading> = (0..3)
            .map(|i| chunk::StoredReading {
                ts_ns: hour + i * 1_000_000_000,
                value: 100 * i,
                quality: 1,
                from_ns: (i > 0).then(|| hour + (i - 1) * 1_000_000_000),
                delta: (i > 0).then_some(100),
                step: (i > 0).then_some(0),
                ..chunk::StoredReading::default()
            })
            .collect();
        let data =
            chunk::encode(&readings).map_err(|error| crate::Error::Server(error.to_string()))?;
        as_schema(&path, 4)?.execute(
            "INSERT INTO reading_chunks (meter, hour_ns, from_ns, first_ns, last_ns, readings, data)
             VALUES (1, ?1, ?1, ?1, ?2, 3, ?3)",
            rusqlite::params![hour, hour + 2_000_000_000, data],
        )?;
        let connection = open(&path)?;
        let span = footprint_core::Span::new(
            footprint_core::UnixNanos(hour - 1),
            footprint_core::UnixNanos(hour + 3_600_000_000_000),
        );
        assert_eq!(series::readings_in(&connection, 1, span)?, readings);
        // Packed: nothing left for compaction to do.
        assert_eq!(series::oldest_unpacked_hour(&connection, 1)?, None);
        let version: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
        assert_eq!(version, SCHEMA_VERSION);
        Ok(())
    }

    #[test]
    fn a_schema_5_ledger_finds_its_unpacked_hours() -> Result<(), crate::Error> {
        use super::super::{chunk, series};
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("ledger.sqlite");
        let hour = 1_700_002_800_000_000_000_i64;
        let reading = |ts_ns: i64| chunk::StoredReading {
            ts_ns,
            quality: 1,
            ..chunk::StoredReading::default()
        };
        let connection = open(&path)?;
        // Meter 1: plain runs in two hours; meter 2: one packed hour only.
        for (meter, first_ns, packed) in [(1, hour + 5, 0), (1, hour + 3_600_000_000_005, 0)] {
            let data = chunk::encode_raw(&[reading(first_ns)]);
            connection.execute(
                "INSERT INTO reading_chunks (meter, first_ns, from_ns, last_ns, readings, packed, data)
                 VALUES (?1, ?2, ?2, ?2, 1, ?3, ?4)",
                rusqlite::params![meter, first_ns, packed, data],
            )?;
        }
        let data = chunk::encode(&[reading(hour + 7)])
            .map_err(|error| crate::Error::Server(error.to_string()))?;
        connection.execute(
            "INSERT INTO reading_chunks (meter, first_ns, from_ns, last_ns, readings, packed, data)
             VALUES (2, ?1, ?1, ?1, 1, 1, ?2)",
            rusqlite::params![hour + 7, data],
        )?;
        connection.execute_batch(
            "DROP TABLE unpacked_hours;
             CREATE INDEX reading_chunks_unpacked ON reading_chunks (meter, first_ns)
                 WHERE packed = 0;
             ALTER TABLE intensity DROP COLUMN feed;
             ALTER TABLE site_hours DROP COLUMN ppa_delivered_mj;
             PRAGMA user_version = 5;",
        )?;
        drop(connection);
        let connection = open(&path)?;
        let hours: Vec<(i64, i64)> = connection
            .prepare("SELECT meter, hour_ns FROM unpacked_hours ORDER BY meter, hour_ns")?
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        assert_eq!(hours, vec![(1, hour), (1, hour + 3_600_000_000_000)]);
        assert_eq!(series::oldest_unpacked_hour(&connection, 1)?, Some(hour));
        assert_eq!(series::oldest_unpacked_hour(&connection, 2)?, None);
        let index: i64 = connection.query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE name = 'reading_chunks_unpacked'",
            [],
            |row| row.get(0),
        )?;
        assert_eq!(index, 0);
        Ok(())
    }

    #[test]
    fn a_schema_8_ledger_rolls_up_the_hours_it_settled() -> rusqlite::Result<()> {
        let dir =
            tempfile::tempdir().map_err(|e| rusqlite::Error::InvalidPath(e.to_string().into()))?;
        let path = dir.path().join("ledger.sqlite");
        let hour = 1_700_002_800_000_000_000_i64;
        let window = 10_000_000_000_i64;
        let connection = open(&path)?;
        connection.execute(
            "INSERT INTO collectors (id, name, host, software_version) VALUES (1, 'node-a', 'node-a', '0')",
            [],
        )?;
        // Two settled hours of two windows each, and one window of the hour not settled yet.
        for (index, start) in [0, 1, 360, 361, 720].map(|w| (w, hour + w * window)) {
            connection.execute(
                "INSERT INTO window_jobs (collector, start_ns, job, gpu_mj, cpu_mj, dram_mj, remainder_mj,
                   measured_mj, interpolated_mj, estimated_mj, gpu_ns, embodied_mg, overhead_mj, water_ml,
                   co2e_location_mg, co2e_market_mg)
                 VALUES (1, ?1, 7, ?2, 1, 1, 1, ?2, 0, 3, 10, 5, 2, 1, 9, 8)",
                params![start, 100 + index],
            )?;
            connection.execute(
                "INSERT INTO window_hosts (collector, start_ns, it_mj, host_mj, remainder_mj, remainder_source,
                   remainder_deficit_mj, idle_mj, unattributed_mj, measured_mj, interpolated_mj, estimated_mj,
                   idle_embodied_mg)
                 VALUES (1, ?1, ?2, ?2, 0, 0, 0, 4, 0, ?2, 0, 0, 1)",
                params![start, 200 + index],
            )?;
            connection.execute(
                "INSERT INTO site_windows (start_ns, facility_mj, it_mj, overhead_source, overhead_deficit_mj,
                   unattributed_mj, water_ml, unattributed_water_ml, co2e_location_mg,
                   unattributed_co2e_location_mg, co2e_market_mg, unattributed_co2e_market_mg)
                 VALUES (?1, ?2, ?2, 1, 0, 0, 3, 0, 11, 0, 12, 0)",
                params![start, 300 + index],
            )?;
        }
        connection.execute(
            "INSERT INTO ledger_state (key, value) VALUES (?1, ?2)",
            params![super::super::SITE_SETTLED_KEY, hour + 2 * 3_600_000_000_000],
        )?;
        connection.execute_batch(
            "DROP TABLE rollup_jobs; DROP TABLE rollup_hosts; DROP TABLE rollup_site;
             PRAGMA user_version = 8;",
        )?;
        drop(connection);
        let connection = open(&path)?;
        let jobs: Vec<(i64, i64, i64, i64)> = connection
            .prepare("SELECT hour_ns, gpu_mj, host_windows, last_start_ns FROM rollup_jobs ORDER BY hour_ns")?
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let next = hour + 3_600_000_000_000;
        assert_eq!(
            jobs,
            vec![
                (hour, 201, 2, hour + window),
                (next, 100 + 360 + 100 + 361, 2, next + window)
            ]
        );
        let site: Vec<(i64, i64, i64)> = connection
            .prepare(
                "SELECT hour_ns, facility_mj, windows_metered FROM rollup_site ORDER BY hour_ns",
            )?
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        assert_eq!(site, vec![(hour, 601, 2), (next, 300 + 360 + 300 + 361, 2)]);
        let hosts: i64 =
            connection.query_row("SELECT SUM(idle_mj) FROM rollup_hosts", [], |row| {
                row.get(0)
            })?;
        assert_eq!(hosts, 16);
        Ok(())
    }

    #[test]
    fn migrations_step_one_schema_at_a_time_up_to_this_one() {
        let from: Vec<i64> = MIGRATIONS.iter().map(|(v, _)| *v).collect();
        let expected: Vec<i64> = (from[0]..SCHEMA_VERSION).collect();
        assert_eq!(from, expected);
    }

    #[test]
    fn an_unknown_schema_is_refused_by_name() -> rusqlite::Result<()> {
        let dir =
            tempfile::tempdir().map_err(|e| rusqlite::Error::InvalidPath(e.to_string().into()))?;
        let path = dir.path().join("ledger.sqlite");
        open(&path)?.pragma_update(None, "user_version", 1)?;
        let error = open(&path).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("ledger schema 1"), "{error}");
        Ok(())
    }
}
