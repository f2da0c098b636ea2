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
    /// `at` in ns since the epoch.
    #[serde(skip)]
    pub at_ns: i64,
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
            at_ns: row.get(4)?,
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

/// What power caps did to one job: how long its GPUs were capped while it held them, and its
/// energy and carbon in the windows of those spans.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct JobCaps {
    pub job: String,
    /// GPU-seconds the job's GPUs were capped while it held them.
    pub capped_gpu_seconds: f64,
    /// The job's figures summed over its built windows that start inside a capped span of one
    /// of its GPUs (window detail; spans whose detail has aged out are not counted, and
    /// `windows` says how many were).
    pub windows: u64,
    pub it_energy_mj: i64,
    pub energy_mj: i64,
    pub co2e_location_mg: i64,
    pub co2e_market_mg: i64,
    /// Each capped span: host, GPU, from, to (null: still capped), W.
    pub spans: Vec<CappedSpan>,
}

/// One span a GPU of the job was capped.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CappedSpan {
    pub host: String,
    pub device: String,
    pub from: String,
    pub to: Option<String>,
    pub watts: u32,
}

/// A GPU's capped spans from its records: an applied cap starts (or renews) one, a restore
/// ends it; one whose lease passed without a record ends at its lease.
fn spans_of(records: &[(i64, String, u32, i64)], now_ns: i64) -> Vec<(i64, i64, u32)> {
    let mut spans = Vec::new();
    let mut open: Option<(i64, i64, u32)> = None;
    for (at, outcome, to_w, until) in records {
        match (outcome.as_str(), open) {
            ("applied", Some((start, lease, _))) if *at <= lease => {
                open = Some((start, *until, *to_w))
            }
            ("applied", Some((start, lease, watts))) => {
                spans.push((start, lease, watts));
                open = Some((*at, *until, *to_w));
            }
            ("applied", None) => open = Some((*at, *until, *to_w)),
            ("restored", Some((start, lease, watts))) => {
                spans.push((start, (*at).min(lease.max(start)), watts));
                open = None;
            }
            _ => {}
        }
    }
    if let Some((start, lease, watts)) = open {
        spans.push((start, lease.min(now_ns).max(start), watts));
    }
    spans
}

/// What caps did to job `job_id` as of `now_ns`.
///
/// # Errors
/// [`Error::NotFound`] for an unknown job; a database error.
pub fn job_caps(connection: &Connection, job_id: &str, now_ns: i64) -> Result<JobCaps> {
    let job: i64 = connection
        .query_row("SELECT id FROM jobs WHERE job_id = ?1", [job_id], |row| {
            row.get(0)
        })
        .optional()?
        .ok_or_else(|| Error::NotFound(format!("job {job_id:?}")))?;
    let mut allocations = connection.prepare_cached(
        "SELECT a.collector, c.host, a.start_ns, COALESCE(a.end_ns, ?2), a.gpus
         FROM allocations a JOIN collectors c ON c.id = a.collector WHERE a.job = ?1",
    )?;
    let held: Vec<(i64, String, i64, i64, String)> = allocations
        .query_map(params![job, now_ns], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut records = connection.prepare_cached(
        "SELECT at_ns, outcome, to_w, until_ns FROM power_caps
         WHERE collector = ?1 AND device = ?2 AND outcome IN ('applied', 'restored')
         ORDER BY at_ns, rowid",
    )?;
    let mut windows = connection.prepare_cached(
        "SELECT COUNT(*), COALESCE(SUM(gpu_mj + cpu_mj + dram_mj + remainder_mj), 0),
         COALESCE(SUM(overhead_mj), 0), COALESCE(SUM(co2e_location_mg), 0),
         COALESCE(SUM(co2e_market_mg), 0)
         FROM window_jobs WHERE collector = ?1 AND job = ?2 AND start_ns >= ?3 AND start_ns < ?4",
    )?;
    let time = |ns: i64| footprint_core::time::format_rfc3339(footprint_core::UnixNanos(ns));
    let mut answer = JobCaps {
        job: job_id.to_owned(),
        ..JobCaps::default()
    };
    // Spans are merged per host before the windows are summed, so a window is counted once
    // however many of the job's GPUs were capped in it.
    for (collector, host, start, end, gpus) in held {
        let mut host_spans: Vec<(i64, i64)> = Vec::new();
        for device in crate::codec::split_list(&gpus) {
            let rows: Vec<(i64, String, u32, i64)> = records
                .query_map(params![collector, device], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                })?
                .collect::<rusqlite::Result<_>>()?;
            for (from, to, watts) in spans_of(&rows, now_ns) {
                let (from, to) = (from.max(start), to.min(end));
                if from >= to {
                    continue;
                }
                answer.capped_gpu_seconds += (to - from) as f64 / 1e9;
                host_spans.push((from, to));
                answer.spans.push(CappedSpan {
                    host: host.clone(),
                    device: device.clone(),
                    from: time(from),
                    to: (to < now_ns).then(|| time(to)),
                    watts,
                });
            }
        }
        host_spans.sort_unstable();
        let mut merged: Vec<(i64, i64)> = Vec::new();
        for (from, to) in host_spans {
            match merged.last_mut() {
                Some(last) if from <= last.1 => last.1 = last.1.max(to),
                _ => merged.push((from, to)),
            }
        }
        for (from, to) in merged {
            let (count, it, overhead, location, market): (i64, i64, i64, i64, i64) = windows
                .query_row(params![collector, job, from, to], |row| {
                    Ok((
                        row.get(0)?,
                        row.get(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                    ))
                })?;
            answer.windows += count as u64;
            answer.it_energy_mj += it;
            answer.energy_mj += it + overhead;
            answer.co2e_location_mg += location;
            answer.co2e_market_mg += market;
        }
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_follow_applies_renewals_restores_and_lapsed_leases() {
        let r =
            |at: i64, outcome: &str, to_w: u32, until: i64| (at, outcome.to_owned(), to_w, until);
        // Applied at 10 (lease 20), renewed at 15 (lease 30), restored at 25; applied at 40
        // (lease 50) and never heard of again: lapsed at 50; applied at 60, still capped at 70.
        let records = [
            r(10, "applied", 300, 20),
            r(15, "applied", 250, 30),
            r(25, "restored", 700, 0),
            r(40, "applied", 300, 50),
            r(60, "applied", 400, 100),
        ];
        assert_eq!(
            spans_of(&records, 70),
            vec![(10, 25, 250), (40, 50, 300), (60, 70, 400)]
        );
    }
}
