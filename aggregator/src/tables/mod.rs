//! The ledger's SQLite tables and the readings' storage: the schema and its migrations, the
//! chunk codec readings are packed with, a meter's series (laid out in rows and chunks), and the
//! staged records batches are committed as. Nothing here knows about windows, jobs or the
//! writer; the [`crate::store`] writer and the [`crate::ledger`] builders both stand on it.

pub mod chunk;
pub mod schema;
pub mod series;
pub mod staged;

/// File name of the ledger inside the data directory.
pub const LEDGER_FILE: &str = "footprint.sqlite";
