//! Event sources other than an operator's POST: a VEN bridge (`footprint-ven`, in `ven/`) polls
//! a utility's VTN and reports here after every poll. When a source fails or falls silent its
//! last valid events stay in force until they end, and the signal says so: a scheduler must be
//! able to tell "no event" from "no word from the utility".

use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A source is silent when it has not reported for this many of its poll intervals.
pub const SILENT_AFTER_INTERVALS: i64 = 3;

/// Longest source name and error text kept.
const MAX_NAME: usize = 64;
const MAX_ERROR: usize = 1_000;
/// Most refused events one report may list.
const MAX_REFUSED: usize = 100;

/// What a bridge says after a poll.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SourceReport {
    /// Whether the VTN answered with events that could be read.
    pub ok: bool,
    /// Why not, when not.
    #[serde(default)]
    pub error: Option<String>,
    /// Events the VTN listed.
    #[serde(default)]
    pub events: u32,
    /// Events the VTN listed that the aggregator refused, and why.
    #[serde(default)]
    pub refused: Vec<Refusal>,
    /// Seconds between the bridge's polls.
    pub poll_interval_s: u32,
}

/// An event refused, and the aggregator's reason.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Refusal {
    pub id: String,
    pub reason: String,
}

/// How a source stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceState {
    /// Its last poll read the VTN's events.
    Ok,
    /// Its last poll failed.
    Failing,
    /// No report for [`SILENT_AFTER_INTERVALS`] poll intervals: the bridge itself is gone.
    Silent,
}

/// A source's standing, as `GET /api/v1/grid/sources` and the signal give it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SourceStatus {
    pub name: String,
    pub state: SourceState,
    /// When it last reported (RFC 3339).
    pub last_report: String,
    /// When a poll last read the VTN's events; `None`: never.
    pub last_success: Option<String>,
    pub error: Option<String>,
    pub events: u32,
    pub refused: Vec<Refusal>,
    pub poll_interval_s: u32,
}

impl SourceStatus {
    /// What a scheduler should know, in words, when the source is not `ok`.
    pub fn warning(&self) -> Option<String> {
        let since = self.last_success.as_deref().map_or_else(
            || "never read".to_owned(),
            |at| format!("last read at {at}"),
        );
        let what = match self.state {
            SourceState::Ok => return None,
            SourceState::Failing => format!(
                "event source {:?} is failing ({}; {since})",
                self.name,
                self.error.as_deref().unwrap_or("no reason given")
            ),
            SourceState::Silent => format!(
                "event source {:?} has not reported since {} ({since})",
                self.name, self.last_report
            ),
        };
        Some(format!(
            "{what}: its last valid events stay in force until they end"
        ))
    }
}

/// Checks a source name: 1–64 of `A–Z a–z 0–9 . _ : -`.
///
/// # Errors
/// [`Error::BadRequest`] naming `source` and why.
pub fn check_name(name: &str) -> Result<()> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-');
    if name.is_empty() || name.len() > MAX_NAME || !name.chars().all(allowed) {
        return Err(Error::BadRequest(format!(
            "source: {name:?} must be 1–{MAX_NAME} of A–Z a–z 0–9 . _ : -"
        )));
    }
    Ok(())
}

/// Records `report` from source `name` at `now_ns`.
///
/// # Errors
/// [`Error::BadRequest`] for a bad name, a zero poll interval or too many refusals; a database
/// error.
pub fn record(
    connection: &Connection,
    name: &str,
    report: &SourceReport,
    now_ns: i64,
) -> Result<()> {
    check_name(name)?;
    if report.poll_interval_s == 0 {
        return Err(Error::BadRequest(
            "poll_interval_s: must be at least 1".into(),
        ));
    }
    if report.refused.len() > MAX_REFUSED {
        return Err(Error::BadRequest(format!(
            "refused: more than {MAX_REFUSED} events"
        )));
    }
    let error: Option<String> = report
        .error
        .as_deref()
        .map(|e| e.chars().take(MAX_ERROR).collect());
    let refused = serde_json::to_string(&report.refused)
        .map_err(|e| Error::Server(format!("refused: {e}")))?;
    connection.execute(
        "INSERT INTO grid_event_sources (name, reported_ns, last_success_ns, error, events,
             refused, poll_interval_s)
         VALUES (?1, ?2, CASE WHEN ?3 THEN ?2 END, ?4, ?5, ?6, ?7)
         ON CONFLICT (name) DO UPDATE SET reported_ns = excluded.reported_ns,
             last_success_ns = COALESCE(excluded.last_success_ns, last_success_ns),
             error = excluded.error, events = excluded.events, refused = excluded.refused,
             poll_interval_s = excluded.poll_interval_s",
        params![
            name,
            now_ns,
            report.ok,
            if report.ok { None } else { error },
            report.events,
            refused,
            report.poll_interval_s
        ],
    )?;
    Ok(())
}

/// Every source that has reported, by name, as it stands at `now_ns`.
///
/// # Errors
/// A database error.
pub fn list(connection: &Connection, now_ns: i64) -> Result<Vec<SourceStatus>> {
    let mut statement = connection.prepare_cached(
        "SELECT name, reported_ns, last_success_ns, error, events, refused, poll_interval_s
         FROM grid_event_sources ORDER BY name",
    )?;
    let rows = statement.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, i64>(1)?,
            row.get::<_, Option<i64>>(2)?,
            row.get::<_, Option<String>>(3)?,
            row.get::<_, u32>(4)?,
            row.get::<_, String>(5)?,
            row.get::<_, u32>(6)?,
        ))
    })?;
    let time = |ns: i64| footprint_core::time::format_rfc3339(footprint_core::UnixNanos(ns));
    let mut sources = Vec::new();
    for row in rows {
        let (name, reported_ns, last_success_ns, error, events, refused, poll_interval_s) = row?;
        let silent_after = SILENT_AFTER_INTERVALS * i64::from(poll_interval_s) * 1_000_000_000;
        let state = if now_ns.saturating_sub(reported_ns) > silent_after {
            SourceState::Silent
        } else if last_success_ns == Some(reported_ns) {
            SourceState::Ok
        } else {
            SourceState::Failing
        };
        sources.push(SourceStatus {
            name,
            state,
            last_report: time(reported_ns),
            last_success: last_success_ns.map(time),
            error,
            events,
            refused: serde_json::from_str(&refused).unwrap_or_default(),
            poll_interval_s,
        });
    }
    Ok(sources)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let connection = crate::tables::schema::open(&dir.path().join("ledger.sqlite")).unwrap();
        (dir, connection)
    }

    fn report(ok: bool) -> SourceReport {
        SourceReport {
            ok,
            error: (!ok).then(|| "connection refused".to_owned()),
            events: 2,
            refused: vec![],
            poll_interval_s: 10,
        }
    }

    const S: i64 = 1_000_000_000;

    #[test]
    fn a_source_is_ok_then_failing_then_silent_and_keeps_its_last_success() {
        let (_dir, connection) = ledger();
        record(&connection, "vtn:utility", &report(true), 100 * S).unwrap();
        let ok = &list(&connection, 105 * S).unwrap()[0];
        assert_eq!(ok.state, SourceState::Ok);
        assert_eq!(ok.warning(), None);

        record(&connection, "vtn:utility", &report(false), 110 * S).unwrap();
        let failing = &list(&connection, 112 * S).unwrap()[0];
        assert_eq!(failing.state, SourceState::Failing);
        assert_eq!(
            failing.last_success.as_deref(),
            Some("1970-01-01T00:01:40Z")
        );
        let warning = failing.warning().unwrap();
        assert!(warning.contains("connection refused"), "{warning}");
        assert!(warning.contains("stay in force"), "{warning}");

        // Three intervals (30 s) without a report: silent.
        let silent = &list(&connection, 141 * S).unwrap()[0];
        assert_eq!(silent.state, SourceState::Silent);
        assert!(silent.warning().unwrap().contains("has not reported since"));

        record(&connection, "vtn:utility", &report(true), 150 * S).unwrap();
        assert_eq!(
            list(&connection, 150 * S).unwrap()[0].state,
            SourceState::Ok
        );
    }

    #[test]
    fn bad_names_and_reports_are_refused_naming_the_field() {
        let (_dir, connection) = ledger();
        for name in ["", "has space", "a/b", &"x".repeat(65)] {
            let error = record(&connection, name, &report(true), S).unwrap_err();
            assert!(error.to_string().contains("source"), "{error}");
        }
        let mut zero = report(true);
        zero.poll_interval_s = 0;
        let error = record(&connection, "vtn", &zero, S).unwrap_err();
        assert!(error.to_string().contains("poll_interval_s"), "{error}");
        let mut many = report(true);
        many.refused = (0..101)
            .map(|i| Refusal {
                id: i.to_string(),
                reason: "x".into(),
            })
            .collect();
        let error = record(&connection, "vtn", &many, S).unwrap_err();
        assert!(error.to_string().contains("refused"), "{error}");
        assert!(list(&connection, S).unwrap().is_empty());
    }
}
