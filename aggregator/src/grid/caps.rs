//! GPU power caps as the ledger records them: every directive's outcome and every cap a
//! collector ended (`power_caps`), so that when, which GPU, from and to how many W, and why is
//! on the books.

use footprint_proto::v1::DirectiveAck;
use footprint_proto::v1::directive_ack::Outcome;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::{Error, Result};

/// Records `ack` from collector `collector` (its ledger key).
///
/// # Errors
/// [`Error::BadRequest`] for a GPU the collector never announced, an unknown outcome, or a limit
/// of 0 W where one was set; a database error.
pub fn record(connection: &Connection, collector: i64, ack: &DirectiveAck) -> Result<()> {
    let known: Option<i64> = connection
        .query_row(
            "SELECT 1 FROM meters WHERE collector = ?1 AND device = ?2 AND kind = ?3 LIMIT 1",
            params![
                collector,
                ack.device,
                footprint_proto::v1::MeterKind::GpuEnergy as i32
            ],
            |row| row.get(0),
        )
        .optional()?;
    if known.is_none() {
        return Err(Error::BadRequest(format!(
            "directive_ack.device: {:?} is not a GPU this collector announced",
            ack.device
        )));
    }
    let outcome = match Outcome::try_from(ack.outcome) {
        Ok(Outcome::Applied) if ack.to_w == 0 => {
            return Err(Error::BadRequest(
                "directive_ack.to_w: an applied cap of 0 W".into(),
            ));
        }
        Ok(Outcome::Applied) => "applied",
        Ok(Outcome::DryRun) => "dry_run",
        Ok(Outcome::Refused) => "refused",
        Ok(Outcome::Restored) => "restored",
        _ => {
            return Err(Error::BadRequest(format!(
                "directive_ack.outcome: {} is not an outcome",
                ack.outcome
            )));
        }
    };
    connection.execute(
        "INSERT INTO power_caps (collector, device, directive, at_ns, outcome, from_w, to_w,
         until_ns, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            collector,
            ack.device,
            ack.id as i64,
            ack.at_ns,
            outcome,
            ack.from_w,
            ack.to_w,
            ack.until_ns,
            ack.reason.chars().take(500).collect::<String>()
        ],
    )?;
    Ok(())
}

/// One recorded cap change.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CapRecord {
    pub collector: String,
    pub host: String,
    pub device: String,
    pub directive: u64,
    pub at: String,
    pub outcome: String,
    pub from_w: u32,
    pub to_w: u32,
    pub until: Option<String>,
    pub reason: String,
}

/// Every recorded cap change, oldest first.
///
/// # Errors
/// A database error.
pub fn list(connection: &Connection) -> Result<Vec<CapRecord>> {
    let time = |ns: i64| footprint_core::time::format_rfc3339(footprint_core::UnixNanos(ns));
    let mut statement = connection.prepare_cached(
        "SELECT c.name, c.host, p.device, p.directive, p.at_ns, p.outcome, p.from_w, p.to_w,
         p.until_ns, p.reason FROM power_caps p JOIN collectors c ON c.id = p.collector
         ORDER BY p.at_ns, p.rowid",
    )?;
    let rows = statement.query_map([], |row| {
        Ok(CapRecord {
            collector: row.get(0)?,
            host: row.get(1)?,
            device: row.get(2)?,
            directive: row.get::<_, i64>(3)? as u64,
            at: time(row.get(4)?),
            outcome: row.get(5)?,
            from_w: row.get(6)?,
            to_w: row.get(7)?,
            until: row
                .get::<_, i64>(8)
                .ok()
                .filter(|ns| *ns > 0 && *ns < i64::MAX)
                .map(time),
            reason: row.get(9)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}
