//! The ledger's SQLite tables and the readings' storage: the schema and its migrations, the
//! chunk codec readings are packed with, a meter's series (laid out in rows and chunks), and the
//! staged records batches are committed as. Nothing here knows about windows, jobs or the
//! writer; the [`crate::store`] writer and the [`crate::ledger`] builders both stand on it.

pub mod chunk;
pub mod meter_days;
pub mod rollups;
pub mod schema;
pub mod series;
pub mod staged;

/// File name of the ledger inside the data directory.
pub const LEDGER_FILE: &str = "footprint.sqlite";

/// `ledger_state` key of where the site stage has got to: every hour before it is settled.
pub const SITE_SETTLED_KEY: &str = "site_settled_until_ns";
/// `ledger_state` key of where window detail begins: every hour before it is kept as roll-ups
/// only.
pub const DETAIL_FROM_KEY: &str = "window_detail_from_ns";

/// The `ledger_state` value of `key` (a cursor, a boundary), if set.
///
/// # Errors
/// A database error.
pub fn state(connection: &rusqlite::Connection, key: &str) -> rusqlite::Result<Option<i64>> {
    use rusqlite::OptionalExtension;
    connection
        .prepare_cached("SELECT value FROM ledger_state WHERE key = ?1")?
        .query_row([key], |row| row.get(0))
        .optional()
}

/// Sets the `ledger_state` value of `key`.
///
/// # Errors
/// A database error.
pub fn set_state(connection: &rusqlite::Connection, key: &str, value: i64) -> rusqlite::Result<()> {
    connection
        .prepare_cached("INSERT OR REPLACE INTO ledger_state (key, value) VALUES (?1, ?2)")?
        .execute(rusqlite::params![key, value])?;
    Ok(())
}
