//! Stores what a batch carries, inside the group's transaction: its meter announcements, its
//! readings (staged as one record, or placed among the stored ones when they are late), its
//! allocations, and one row per refused item. What is accepted and why anything is refused is
//! decided by [`super::validate`]; this file only writes it down and notes what late data touched.

use std::collections::HashMap;

use footprint_core::UnixNanos;
use footprint_core::counter::CounterSample;
use footprint_proto::v1::{Allocation, Batch, MeterInfo, MeterKind, Reading, Rejection};
use rusqlite::{OptionalExtension, Transaction, params};
use tracing::warn;

use super::BatchOutcome;
use super::validate::{self, Item, NextReading, Placement, Reason, Refused, Rejected, limits_for};
use super::view::{CollectorState, MeterState};
use crate::codec::{MeterRole, Step, join_list, quality_code};
use crate::config::PowerLimits;
use crate::ledger;
use crate::metrics::AggregatorMetrics;
use crate::tables::chunk::StoredReading;
use crate::tables::series;
use crate::tables::staged::StagedRecord;
use crate::{Error, Result};

/// What a batch is checked against.
#[derive(Clone, Copy, Debug)]
pub(super) struct BatchChecks<'a> {
    pub max_future_ns: i64,
    pub max_gap_ns: i64,
    pub limits: &'a PowerLimits,
    pub metrics: &'a AggregatorMetrics,
}

/// Stores the acceptable part of `batch` from `collector` inside `transaction`.
///
/// # Errors
/// The collector is not registered, or a database error (the whole group is rolled back then).
pub(super) fn apply(
    transaction: &Transaction<'_>,
    collectors: &mut HashMap<i64, CollectorState>,
    checks: &BatchChecks<'_>,
    collector: i64,
    batch: &Batch,
    now: i64,
) -> Result<BatchOutcome> {
    let state = collectors
        .get_mut(&collector)
        .ok_or_else(|| Error::Collector {
            collector: batch.collector_id.clone(),
            reason: "not registered (no Hello on this stream)".into(),
        })?;
    state.heard_at = std::time::Instant::now();
    // Below the highest sequence stored: a copy of a stored batch, or one that arrives after
    // later ones (stored as any other).
    if batch.seq <= state.last_seq
        && transaction
            .prepare_cached("SELECT 1 FROM batches WHERE collector = ?1 AND seq = ?2")?
            .exists(params![collector, batch.seq as i64])?
    {
        checks.metrics.batch("duplicate");
        return Ok(BatchOutcome {
            seq: batch.seq,
            duplicate: true,
            rejections: Vec::new(),
        });
    }
    let mut rejected = register_meters(transaction, state, checks, collector, batch)?;
    stage_readings(
        transaction,
        state,
        checks,
        collector,
        batch,
        now,
        &mut rejected,
    )?;
    for (index, allocation) in batch.allocations.iter().enumerate() {
        let is_gpu = |device: &str| state.meters.is_gpu(device);
        let checked = validate::check_allocation(allocation, now, checks.max_future_ns, is_gpu)
            .and_then(|checked| {
                store_allocation(transaction, collector, allocation, &checked).map_err(|e| {
                    Refused {
                        field: "job",
                        reason: Reason::Storage,
                        detail: e.to_string(),
                    }
                })
            });
        match checked {
            Err(refused) => rejected.push(Rejected::new(Item::Allocation, index, "", refused)),
            Ok(Some(changed_from)) => {
                touch_built(
                    transaction,
                    state,
                    collector,
                    changed_from,
                    "allocation",
                    checks.metrics,
                )?;
            }
            Ok(None) => {}
        }
    }
    let rejections = record_rejections(
        transaction,
        state,
        checks.metrics,
        collector,
        batch,
        now,
        rejected,
    )?;
    transaction
        .prepare_cached(
            "INSERT INTO batches (collector, seq, received_ns, readings, rejected) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![collector, batch.seq as i64, now, batch.readings.len() as i64, rejections.len() as i64])?;
    transaction
        .prepare_cached("UPDATE collectors SET last_seq = MAX(last_seq, ?2) WHERE id = ?1")?
        .execute(params![collector, batch.seq as i64])?;
    state.last_seq = state.last_seq.max(batch.seq);
    checks.metrics.batch("stored");
    Ok(BatchOutcome {
        seq: batch.seq,
        duplicate: false,
        rejections,
    })
}

/// Registers the meters a batch announces (new ones, or known ones again, maybe as another kind).
fn register_meters(
    transaction: &Transaction<'_>,
    state: &mut CollectorState,
    checks: &BatchChecks<'_>,
    collector: i64,
    batch: &Batch,
) -> Result<Vec<Rejected>> {
    let mut rejected = Vec::new();
    for (index, meter) in batch.meters.iter().enumerate() {
        let is_gpu = |device: &str| {
            state.meters.is_gpu(device)
                || batch
                    .meters
                    .iter()
                    .any(|m| m.kind == MeterKind::GpuEnergy as i32 && m.device == device)
        };
        if let Err(refused) = validate::check_meter(meter, is_gpu) {
            rejected.push(Rejected::new(Item::Meter, index, &meter.meter_id, refused));
            continue;
        }
        let key = upsert_meter(transaction, collector, meter)?;
        let kind = MeterKind::try_from(meter.kind).unwrap_or(MeterKind::Unspecified);
        let known = state.meters.get(&meter.meter_id);
        let (last, raw_from) = known.map_or((None, None), |m| (m.last, m.raw_from));
        if known.is_some() {
            state.cache.meter_announced_again();
        }
        state.meters.insert(
            meter.meter_id.clone(),
            MeterState {
                key,
                kind,
                role: MeterRole::of(kind),
                device: meter.device.clone(),
                cpus: meter.cpus.clone(),
                model: meter.model.clone(),
                job: meter.job.clone(),
                limits: limits_for(kind, meter.counter_max, meter.resolution, checks.limits),
                last,
                raw_from,
            },
        );
    }
    Ok(rejected)
}

/// Registers a meter of `collector` (or updates it); returns its key.
pub(super) fn upsert_meter(
    transaction: &Transaction<'_>,
    collector: i64,
    meter: &MeterInfo,
) -> rusqlite::Result<i64> {
    transaction.query_row(
        "INSERT INTO meters (collector, meter_id, kind, device, counter_max, cpus, method, model, job, resolution)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (collector, meter_id) DO UPDATE SET
           kind = excluded.kind, device = excluded.device, counter_max = excluded.counter_max,
           cpus = excluded.cpus, method = excluded.method, model = excluded.model, job = excluded.job,
           resolution = excluded.resolution
         RETURNING id",
        // SQLite integers are signed 64-bit; counters above 2^63 are stored bit for bit.
        params![collector, meter.meter_id, meter.kind, meter.device, meter.counter_max as i64, join_list(&meter.cpus), meter.method, meter.model, meter.job, meter.resolution as i64],
        |row| row.get(0),
    )
}

/// Stages the batch's readings that follow their meters' last ones as one record, and places
/// the late ones among the stored readings.
fn stage_readings(
    transaction: &Transaction<'_>,
    state: &mut CollectorState,
    checks: &BatchChecks<'_>,
    collector: i64,
    batch: &Batch,
    now: i64,
    rejected: &mut Vec<Rejected>,
) -> Result<()> {
    let mut record = StagedRecord::default();
    let mut cursor = usize::MAX;
    let mut stored = 0;
    for (index, reading) in batch.readings.iter().enumerate() {
        let reject = |refused| Rejected::new(Item::Reading, index, &reading.meter_id, refused);
        if reading.method.len() > crate::limits::MAX_TEXT_BYTES {
            rejected.push(reject(Refused {
                field: "method",
                reason: Reason::BadValue,
                detail: validate::too_long(&reading.method),
            }));
            continue;
        }
        let Some(meter) = state.meters.find_after(&reading.meter_id, &mut cursor) else {
            rejected.push(reject(Refused {
                field: "meter_id",
                reason: Reason::UnknownMeter,
                detail: "unknown meter: not announced in this collector's Hello".into(),
            }));
            continue;
        };
        if meter
            .last
            .is_some_and(|last| reading.timestamp_ns <= last.at.0)
        {
            // Its neighbours may be staged, this batch's earlier readings among them.
            if !record.is_empty() {
                record.write(transaction, collector)?;
                state.cache.staged();
            }
            state.cache.changing(transaction, collector)?;
            let at = reading.timestamp_ns;
            state.oldest_ns = Some(state.oldest_ns.map_or(at, |o| o.min(at)));
            let role = meter.role;
            match place_earlier_reading(transaction, meter, reading, checks, batch.compacted)? {
                Err(refused) => rejected.push(reject(refused)),
                Ok(None) => {}
                Ok(Some(changed_from)) => {
                    stored += 1;
                    mark_late(
                        transaction,
                        state,
                        collector,
                        role,
                        changed_from,
                        checks.metrics,
                    )?;
                }
            }
            continue;
        }
        let next =
            validate::check_next(meter.last, meter.limits, reading, now, checks.max_future_ns);
        let NextReading {
            sample,
            quality,
            moved,
        } = match next {
            Ok(next) => next,
            Err(refused) => {
                rejected.push(reject(refused));
                continue;
            }
        };
        meter.last = Some(sample);
        meter.raw_from.get_or_insert(series::hour_of(sample.at.0));
        let step = moved.map(|(previous_at, step)| {
            let gap = sample.at.0 - previous_at > checks.max_gap_ns;
            Step::of(&step, gap, batch.compacted)
        });
        record.push(
            meter.key,
            &StoredReading {
                ts_ns: sample.at.0,
                value: sample.value as i64,
                quality: i64::from(quality_code(quality)),
                method: (!reading.method.is_empty()).then(|| reading.method.clone()),
                from_ns: moved.map(|(previous_at, _)| previous_at),
                delta: moved.map(|(_, step)| step.delta() as i64),
                step: step.map(Step::encode),
            },
        );
        stored += 1;
        let role = meter.role;
        state.accepted(role, sample.at.0);
        if let Some((previous_at, _)) = moved {
            mark_late(
                transaction,
                state,
                collector,
                role,
                previous_at,
                checks.metrics,
            )?;
        }
    }
    if !record.is_empty() {
        record.write(transaction, collector)?;
        state.cache.staged();
    }
    checks.metrics.readings_stored.inc_by(stored);
    Ok(())
}

/// Numbers the refusals into the ack, counts them, and keeps each in `rejections`.
fn record_rejections(
    transaction: &Transaction<'_>,
    state: &CollectorState,
    metrics: &AggregatorMetrics,
    collector: i64,
    batch: &Batch,
    now: i64,
    rejected: Vec<Rejected>,
) -> Result<Vec<Rejection>> {
    let mut rejections = Vec::with_capacity(rejected.len());
    for rejected in rejected {
        let code = rejected.refused.reason.code();
        match rejected.item {
            Item::Meter => metrics.reject_meter(code),
            Item::Reading => metrics.reject_reading(code),
            Item::Allocation => metrics.reject_allocation(code),
        }
        let field = rejected.path();
        let reason = rejected.refused.detail;
        warn!(collector = %state.name, seq = batch.seq, field = %field, meter = %rejected.meter_id, reason = %reason, "Rejected input.");
        transaction.execute(
            "INSERT INTO rejections (collector, seq, field, meter_id, reason, received_ns) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![collector, batch.seq as i64, field, rejected.meter_id, reason, now],
        )?;
        rejections.push(Rejection {
            index: u32::try_from(rejected.index).unwrap_or(u32::MAX),
            meter_id: rejected.meter_id,
            field,
            reason,
        });
    }
    Ok(rejections)
}

/// Stores an allocation; returns where the holding it describes changed, if it did.
fn store_allocation(
    transaction: &Transaction<'_>,
    collector: i64,
    allocation: &Allocation,
    checked: &validate::CheckedAllocation<'_>,
) -> rusqlite::Result<Option<i64>> {
    let job = checked.job;
    let job_key: i64 = transaction.query_row(
        "INSERT INTO jobs (job_id, scheduler, name, user, project, kind, model, functional_unit, functional_units)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (job_id) DO UPDATE SET scheduler = excluded.scheduler, name = excluded.name, user = excluded.user,
           project = excluded.project, kind = excluded.kind, model = excluded.model,
           functional_unit = excluded.functional_unit,
           functional_units = MAX(functional_units, excluded.functional_units)
         RETURNING id",
        params![job.id, job.scheduler, job.name, job.user, job.project, job.kind, job.model,
                job.functional_unit, job.functional_units as i64],
        |row| row.get(0),
    )?;
    let end_ns = checked.end_ns;
    let held = (
        join_list(&allocation.gpus),
        join_list(&checked.cpus),
        join_list(&checked.mig),
    );
    let stored: Option<(Option<i64>, (String, String, String))> = transaction
        .prepare_cached(
            "SELECT end_ns, gpus, cpus, mig FROM allocations WHERE collector = ?1 AND job = ?2 AND start_ns = ?3",
        )?
        .query_row(params![collector, job_key, allocation.start_ns], |row| {
            Ok((row.get(0)?, (row.get(1)?, row.get(2)?, row.get(3)?)))
        })
        .optional()?;
    // Where the holding changed: from its start when new or holding something else, from the
    // earlier end when only the end moved.
    let changed_from = match stored {
        None => Some(allocation.start_ns),
        Some((_, stored_held)) if stored_held != held => Some(allocation.start_ns),
        Some((stored_end, _)) if stored_end != end_ns => Some(
            stored_end
                .unwrap_or(i64::MAX)
                .min(end_ns.unwrap_or(i64::MAX)),
        ),
        Some(_) => None,
    };
    transaction
        .prepare_cached(
            "INSERT INTO allocations (collector, job, start_ns, end_ns, gpus, cpus, mig) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (collector, job, start_ns) DO UPDATE SET end_ns = excluded.end_ns, gpus = excluded.gpus, cpus = excluded.cpus, mig = excluded.mig",
        )?
        .execute(params![collector, job_key, allocation.start_ns, end_ns, held.0, held.1, held.2])?;
    Ok(changed_from)
}

/// Records that data stored in `transaction` touches the collector's built windows from
/// `from_ns` on (nothing when they are not built that far).
fn touch_built(
    transaction: &Transaction<'_>,
    state: &mut CollectorState,
    collector: i64,
    from_ns: i64,
    reason: &str,
    metrics: &AggregatorMetrics,
) -> rusqlite::Result<()> {
    if state.built_until.is_none_or(|until| from_ns >= until) {
        return Ok(());
    }
    transaction
        .prepare_cached(
            "INSERT INTO rebuild_pending (collector, from_ns, reason) VALUES (?1, ?2, ?3)
             ON CONFLICT (collector) DO UPDATE SET from_ns = MIN(from_ns, excluded.from_ns), reason =
               CASE WHEN instr(reason, excluded.reason) > 0 THEN reason ELSE reason || '; ' || excluded.reason END",
        )?
        .execute(params![collector, from_ns, reason])?;
    state.rebuild_from = Some(state.rebuild_from.map_or(from_ns, |f| f.min(from_ns)));
    metrics.late(reason);
    Ok(())
}

/// Data stored for a meter of `role` changed its intervals from `from_ns` on: the collector's
/// built windows from there are to be rebuilt, or the settled site hours reopened.
fn mark_late(
    transaction: &Transaction<'_>,
    state: &mut CollectorState,
    collector: i64,
    role: MeterRole,
    from_ns: i64,
    metrics: &AggregatorMetrics,
) -> Result<()> {
    if role.feeds_windows() {
        touch_built(transaction, state, collector, from_ns, "readings", metrics)?;
    } else if role.is_site()
        && ledger::site::reopen(transaction, UnixNanos(from_ns), "site meter readings")?
    {
        metrics.late("site meter readings");
    }
    Ok(())
}

/// A reading at or before its meter's last one. Placed between its stored neighbours, it splits
/// the interval they closed in two (the amount is unchanged: the counter only says when within
/// it the energy was used). Returns where the intervals changed, `None` for a copy of a stored
/// reading, or a refusal when it does not fit between its neighbours.
fn place_earlier_reading(
    transaction: &Transaction<'_>,
    meter: &mut MeterState,
    reading: &Reading,
    checks: &BatchChecks<'_>,
    compacted: bool,
) -> Result<Result<Option<i64>, Refused>> {
    let at = reading.timestamp_ns;
    // Compacted neighbours become rows again; compaction packs them anew later.
    if let Some(hour) = series::expand_around(transaction, meter.key, at)? {
        meter.raw_from = Some(meter.raw_from.map_or(hour, |h| h.min(hour)));
    }
    let quality = match validate::reading_quality(reading) {
        Ok(quality) => quality,
        Err(refused) => return Ok(Err(refused)),
    };
    let next: Option<(i64, i64, Option<i64>, Option<i64>)> = transaction
        .prepare_cached(
            "SELECT ts_ns, value, from_ns, step FROM readings WHERE meter = ?1 AND ts_ns >= ?2 ORDER BY ts_ns LIMIT 1",
        )?
        .query_row(params![meter.key, at], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })
        .optional()?;
    let Some((next_at, next_value, next_from, next_step)) = next else {
        return Ok(Err(Refused {
            field: "timestamp_ns",
            reason: Reason::NotAfterPrevious,
            detail: format!("{at} is not after the meter's last reading"),
        }));
    };
    let previous: Option<(i64, i64)> = transaction
        .prepare_cached(
            "SELECT ts_ns, value FROM readings WHERE meter = ?1 AND ts_ns < ?2 ORDER BY ts_ns DESC LIMIT 1",
        )?
        .query_row(params![meter.key, at], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    let sample_of = |(at, value): (i64, i64)| CounterSample {
        value: value as u64,
        at: UnixNanos(at),
    };
    let previous = previous.map(sample_of);
    let sample = sample_of((at, reading.value as i64));
    let next_step = next_step.map(Step::decode);
    // A next reading without an interval (its meter's first) moved from nothing.
    let placement = validate::place_between(
        previous,
        sample,
        sample_of((next_at, next_value)),
        next_from.and(next_step),
        meter.limits,
    );
    let (before, after) = match placement {
        Err(refused) => return Ok(Err(refused)),
        Ok(Placement::Stored) => return Ok(Ok(None)),
        Ok(Placement::Between { before, after }) => (before, after),
    };
    let gap = |span_ns: i64| span_ns > checks.max_gap_ns;
    let method = (!reading.method.is_empty()).then_some(reading.method.as_str());
    transaction
        .prepare_cached(
            "INSERT INTO readings (meter, ts_ns, value, quality, method, from_ns, delta, step) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![
            meter.key,
            at,
            reading.value as i64,
            quality_code(quality),
            method,
            previous.map(|p| p.at.0),
            before.map(|b| b as i64),
            previous.map(|p| Step::advanced(gap(at - p.at.0), compacted).encode()),
        ])?;
    let hour = series::hour_of(at);
    meter.raw_from = Some(meter.raw_from.map_or(hour, |h| h.min(hour)));
    let next_compacted = next_step.is_some_and(|s| s.compacted);
    transaction
        .prepare_cached(
            "UPDATE readings SET from_ns = ?3, delta = ?4, step = ?5 WHERE meter = ?1 AND ts_ns = ?2",
        )?
        .execute(params![
            meter.key,
            next_at,
            at,
            after as i64,
            Step::advanced(gap(next_at - at), next_compacted).encode()
        ])?;
    Ok(Ok(Some(previous.map_or(at, |p| p.at.0))))
}
