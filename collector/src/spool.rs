//! The collector's spool: every batch is durable on the collector before it is sent, and stays
//! until the aggregator acknowledges it.
//!
//! Guarantees:
//! - [`Spool::append`] returns once the batch is committed (redb, `Durability::Immediate`): a
//!   batch the uplink may send survives a crash or a SIGKILL of the collector;
//! - sequence numbers are assigned here, strictly increasing, and persisted, so a restarted
//!   collector continues where it stopped;
//! - a spool that has never been welcomed by an aggregator renumbers everything it holds after the
//!   aggregator's last durable sequence: a new or wiped spool can never be taken for duplicates;
//! - when the spool outgrows its limit it does not drop data: [`Spool::compact`] merges its oldest
//!   batches and keeps fewer readings per meter — always each meter's last one — so every meter's
//!   energy stays exact and only time resolution is lost; the merged batch is marked `compacted`.
//!
//! Without a directory the spool lives in memory (same code, same guarantees except surviving a
//! restart).

use std::collections::BTreeMap;
use std::path::Path;

use footprint_proto::v1::{Batch, MeterInfo, Reading};

use crate::source::Sample;
use prost::Message;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

const BATCHES: TableDefinition<u64, &[u8]> = TableDefinition::new("batches");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const NEXT_SEQ: &str = "next_seq";
const WELCOMED: &str = "welcomed";
const LAST_TICK: &str = "last_tick_ns";
/// The highest sequence number thinned by the age limit (`Spool::thin_older_than`).
const THINNED_THROUGH: &str = "thinned_through";

/// File name of the spool inside its directory.
pub const SPOOL_FILE: &str = "spool.redb";

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool storage: {0}")]
    Storage(#[from] redb::Error),
    #[error("spool: a stored batch cannot be decoded: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("spool directory: {0}")]
    Io(#[from] std::io::Error),
}

impl From<redb::DatabaseError> for SpoolError {
    fn from(error: redb::DatabaseError) -> Self {
        Self::Storage(error.into())
    }
}
impl From<redb::TransactionError> for SpoolError {
    fn from(error: redb::TransactionError) -> Self {
        Self::Storage(error.into())
    }
}
impl From<redb::TableError> for SpoolError {
    fn from(error: redb::TableError) -> Self {
        Self::Storage(error.into())
    }
}
impl From<redb::StorageError> for SpoolError {
    fn from(error: redb::StorageError) -> Self {
        Self::Storage(error.into())
    }
}
impl From<redb::CommitError> for SpoolError {
    fn from(error: redb::CommitError) -> Self {
        Self::Storage(error.into())
    }
}

pub type Result<T, E = SpoolError> = std::result::Result<T, E>;

/// Largest total of encoded batches a compaction merges into one. The merged batch is no larger,
/// so it stays inside the aggregator's default ingest budget (16 MiB) and message limit (64 MiB)
/// and can always be delivered: a spool compacted while the aggregator was away must not hold a
/// batch the aggregator would refuse as too large when it returns.
pub const MAX_MERGE_BYTES: u64 = 8 << 20;

/// What a compaction did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Compaction {
    pub batches_merged: usize,
    pub readings_before: usize,
    pub readings_after: usize,
}

/// Durable, ordered store of unacknowledged batches.
#[derive(Debug)]
pub struct Spool {
    database: Database,
    collector_id: String,
    next_seq: u64,
    welcomed: bool,
    /// Latest reading time ever appended (ns), kept across restarts.
    last_tick_ns: Option<i64>,
    /// Encoded size of the batches held, bytes.
    bytes: u64,
    max_bytes: u64,
    /// Past this age (behind the newest reading), readings are thinned to one per meter and
    /// step: `(max_age_ns, step_ns)`.
    age_limit: Option<(i64, i64)>,
}

impl Spool {
    /// Opens (or creates) the spool in `directory`, or in memory when `None`.
    ///
    /// # Errors
    /// The directory or the database cannot be opened.
    pub fn open(directory: Option<&Path>, collector_id: &str, max_bytes: u64) -> Result<Self> {
        let database = match directory {
            Some(directory) => {
                std::fs::create_dir_all(directory)?;
                Database::create(directory.join(SPOOL_FILE))?
            }
            None => {
                Database::builder().create_with_backend(redb::backends::InMemoryBackend::new())?
            }
        };
        let transaction = database.begin_write()?;
        let (next_seq, welcomed, last_tick_ns) = {
            let meta = transaction.open_table(META)?;
            let next_seq = meta.get(NEXT_SEQ)?.map_or(1, |v| v.value());
            let welcomed = meta.get(WELCOMED)?.is_some_and(|v| v.value() == 1);
            let last_tick_ns = meta.get(LAST_TICK)?.map(|v| v.value() as i64);
            (next_seq, welcomed, last_tick_ns)
        };
        let bytes = {
            let batches = transaction.open_table(BATCHES)?;
            let mut total = 0u64;
            for entry in batches.iter()? {
                total += entry?.1.value().len() as u64;
            }
            total
        };
        transaction.commit()?;
        Ok(Self {
            database,
            collector_id: collector_id.to_owned(),
            next_seq,
            welcomed,
            last_tick_ns,
            bytes,
            max_bytes,
            age_limit: None,
        })
    }

    /// Thins readings older than `max_age` (behind the newest appended) to one per meter and
    /// `step`, at every append from now on.
    pub fn set_age_limit(&mut self, max_age: std::time::Duration, step: std::time::Duration) {
        let nanos = |d: std::time::Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        self.age_limit = Some((nanos(max_age), nanos(step).max(1)));
    }

    /// Batches held.
    ///
    /// # Errors
    /// A storage error.
    pub fn len(&self) -> Result<u64> {
        let transaction = self.database.begin_read()?;
        Ok(transaction.open_table(BATCHES)?.len()?)
    }

    /// # Errors
    /// A storage error.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// The latest reading time ever appended, across restarts: a restarted collector resumes
    /// after it, so no instant is sampled twice.
    pub fn last_tick_ns(&self) -> Option<i64> {
        self.last_tick_ns
    }

    /// Encoded size of the batches held, bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Stores a new batch and returns its sequence number. Durable when it returns. Compacts the
    /// oldest batches first if the spool is over its size limit.
    ///
    /// # Errors
    /// A storage error; the batch is then not stored.
    pub fn append(&mut self, sample: Sample) -> Result<u64> {
        let Sample {
            readings,
            allocations,
            meters,
        } = sample;
        if let (Some((max_age, step)), Some(newest)) = (self.age_limit, self.last_tick_ns) {
            self.thin_older_than(newest.saturating_sub(max_age), step)?;
        }
        while self.bytes > self.max_bytes {
            let done = self.compact()?;
            if done.batches_merged < 2 && done.readings_before == done.readings_after {
                // Nothing left to thin: keep everything rather than drop it.
                break;
            }
        }
        let seq = self.next_seq;
        let last_tick_ns = readings
            .iter()
            .map(|r| r.timestamp_ns)
            .max()
            .max(self.last_tick_ns);
        let batch = Batch {
            collector_id: self.collector_id.clone(),
            seq,
            readings,
            allocations,
            compacted: false,
            meters,
            // Set by the uplink as it sends.
            spool_pending: 0,
        };
        let encoded = batch.encode_to_vec();
        let transaction = self.database.begin_write()?;
        {
            transaction
                .open_table(BATCHES)?
                .insert(seq, encoded.as_slice())?;
            let mut meta = transaction.open_table(META)?;
            meta.insert(NEXT_SEQ, seq + 1)?;
            if let Some(at) = last_tick_ns {
                // Stored as the bits of an i64: the table holds u64.
                meta.insert(LAST_TICK, at as u64)?;
            }
        }
        transaction.commit()?;
        self.next_seq = seq + 1;
        self.last_tick_ns = last_tick_ns;
        self.bytes += encoded.len() as u64;
        Ok(seq)
    }

    /// Forgets every batch up to and including `seq`.
    ///
    /// # Errors
    /// A storage error; nothing is forgotten then.
    pub fn acknowledge(&mut self, seq: u64) -> Result<usize> {
        let transaction = self.database.begin_write()?;
        let (removed, freed) = {
            let mut batches = transaction.open_table(BATCHES)?;
            let mut freed = 0u64;
            let mut removed = 0usize;
            for entry in batches.extract_from_if(..=seq, |_, _| true)? {
                freed += entry?.1.value().len() as u64;
                removed += 1;
            }
            (removed, freed)
        };
        transaction.commit()?;
        self.bytes = self.bytes.saturating_sub(freed);
        Ok(removed)
    }

    /// Applies the aggregator's `Welcome`: batches up to `last_durable` are already stored there.
    /// The first welcome a spool ever gets renumbers what it holds after `last_durable` instead,
    /// since nothing in a new spool can have reached the aggregator.
    ///
    /// # Errors
    /// A storage error.
    pub fn welcome(&mut self, last_durable: u64) -> Result<()> {
        if self.welcomed {
            self.acknowledge(last_durable)?;
            if self.next_seq <= last_durable {
                self.next_seq = last_durable + 1;
                self.store_next_seq()?;
            }
            return Ok(());
        }
        let held = self.read_after(0, usize::MAX)?;
        let transaction = self.database.begin_write()?;
        let mut next = last_durable + 1;
        {
            let mut batches = transaction.open_table(BATCHES)?;
            batches.retain(|_, _| false)?;
            for mut batch in held {
                batch.seq = next;
                batches.insert(next, batch.encode_to_vec().as_slice())?;
                next += 1;
            }
            let mut meta = transaction.open_table(META)?;
            meta.insert(NEXT_SEQ, next)?;
            meta.insert(WELCOMED, 1)?;
            // The numbers changed; thinning again what was thinned changes nothing.
            meta.remove(THINNED_THROUGH)?;
        }
        transaction.commit()?;
        self.next_seq = next;
        self.welcomed = true;
        Ok(())
    }

    /// Up to `max` batches with a sequence number above `after`, in order.
    ///
    /// # Errors
    /// A storage or decoding error.
    pub fn read_after(&self, after: u64, max: usize) -> Result<Vec<Batch>> {
        let transaction = self.database.begin_read()?;
        let batches = transaction.open_table(BATCHES)?;
        let mut out = Vec::new();
        for entry in batches.range(after.saturating_add(1)..)? {
            if out.len() >= max {
                break;
            }
            out.push(Batch::decode(entry?.1.value())?);
        }
        Ok(out)
    }

    /// Merges the oldest half of the spool (at least two batches, at most [`MAX_MERGE_BYTES`] of
    /// them) into one batch that keeps every other reading of each meter and always its last,
    /// under the highest sequence number of the merged ones. Each meter's first-to-last counter
    /// difference, hence its energy, is unchanged.
    ///
    /// # Errors
    /// A storage or decoding error; the spool is unchanged then.
    pub fn compact(&mut self) -> Result<Compaction> {
        let held = self.len()? as usize;
        self.compact_oldest((held / 2).max(2).min(held))
    }

    /// The oldest batches, at most `most` and at least one, that together hold no more than
    /// [`MAX_MERGE_BYTES`].
    fn oldest_run(&self, most: usize) -> Result<Vec<Batch>> {
        let transaction = self.database.begin_read()?;
        let table = transaction.open_table(BATCHES)?;
        let (mut run, mut bytes) = (Vec::new(), 0u64);
        for entry in table.iter()? {
            let (_, value) = entry?;
            let size = value.value().len() as u64;
            if run.len() >= most || (!run.is_empty() && bytes + size > MAX_MERGE_BYTES) {
                break;
            }
            bytes += size;
            run.push(Batch::decode(value.value())?);
        }
        Ok(run)
    }

    fn compact_oldest(&mut self, most: usize) -> Result<Compaction> {
        let oldest = self.oldest_run(most)?;
        self.merge_run(&oldest, |series| {
            let last_index = series.len() - 1;
            // Keep odd positions counted back from the last, so the last is always kept.
            series
                .into_iter()
                .enumerate()
                .filter(|(i, _)| (last_index - i) % 2 == 0)
                .map(|(_, r)| r)
                .collect()
        })
    }

    /// Thins, once, the batches whose readings are all older than `cutoff_ns` to one reading per
    /// meter and `step_ns` (the last of each step, so each meter's last reading stays): past
    /// the spool's age limit, time resolution goes first. Batches thinned before are not read
    /// again, so calling this at every tick costs one read once nothing new has aged.
    ///
    /// # Errors
    /// A storage or decoding error; what was thinned before it stays thinned.
    pub fn thin_older_than(&mut self, cutoff_ns: i64, step_ns: i64) -> Result<Compaction> {
        let step_ns = step_ns.max(1);
        let mut total = Compaction::default();
        loop {
            // The next run of aged batches not thinned yet, within the merge limit, headed by
            // the last batch thinned before so that a step spanning two calls is thinned whole.
            let thinned_through = self.thinned_through()?;
            let mut run: Vec<Batch> = Vec::new();
            let mut bytes = 0u64;
            {
                let transaction = self.database.begin_read()?;
                let table = transaction.open_table(BATCHES)?;
                for entry in table.range(thinned_through.max(1)..)? {
                    let (_, value) = entry?;
                    let size = value.value().len() as u64;
                    let batch = Batch::decode(value.value())?;
                    let is_head = batch.seq == thinned_through;
                    if !is_head && batch.readings.iter().any(|r| r.timestamp_ns >= cutoff_ns) {
                        break;
                    }
                    if !run.is_empty() && bytes + size > MAX_MERGE_BYTES {
                        if run.len() == 1 && run[0].seq == thinned_through {
                            // The head is full: start a new run without it.
                            run.clear();
                            bytes = 0;
                        } else {
                            break;
                        }
                    }
                    bytes += size;
                    run.push(batch);
                }
            }
            let new = run.iter().filter(|b| b.seq > thinned_through).count();
            let Some(last_seq) = run.last().map(|b| b.seq).filter(|_| new > 0) else {
                return Ok(total);
            };
            let done = self.merge_run(&run, |series| {
                let mut kept: Vec<Reading> = Vec::new();
                for reading in series {
                    let bucket = reading.timestamp_ns.div_euclid(step_ns);
                    match kept.last_mut() {
                        Some(last) if last.timestamp_ns.div_euclid(step_ns) == bucket => {
                            *last = reading;
                        }
                        _ => kept.push(reading),
                    }
                }
                kept
            })?;
            let transaction = self.database.begin_write()?;
            transaction
                .open_table(META)?
                .insert(THINNED_THROUGH, last_seq)?;
            transaction.commit()?;
            total.batches_merged += done.batches_merged;
            total.readings_before += done.readings_before;
            total.readings_after += done.readings_after;
        }
    }

    /// The highest sequence number already thinned by the age limit; 0 if none.
    fn thinned_through(&self) -> Result<u64> {
        let transaction = self.database.begin_read()?;
        let meta = transaction.open_table(META)?;
        Ok(meta.get(THINNED_THROUGH)?.map_or(0, |v| v.value()))
    }

    /// Replaces a run of consecutive batches by one batch under the run's last sequence number:
    /// each meter's readings (in time order) as `keep` leaves them, every allocation, and every
    /// meter announced (the latest description of each, as the aggregator would keep it).
    fn merge_run(
        &mut self,
        run: &[Batch],
        keep: impl Fn(Vec<Reading>) -> Vec<Reading>,
    ) -> Result<Compaction> {
        let (Some(first), Some(last)) = (run.first(), run.last()) else {
            return Ok(Compaction::default());
        };
        let (first_seq, seq) = (first.seq, last.seq);
        let readings_before: usize = run.iter().map(|b| b.readings.len()).sum();
        let mut by_meter: BTreeMap<String, Vec<Reading>> = BTreeMap::new();
        let mut allocations = Vec::new();
        let mut meters: BTreeMap<String, MeterInfo> = BTreeMap::new();
        for batch in run {
            for meter in &batch.meters {
                meters.insert(meter.meter_id.clone(), meter.clone());
            }
            for reading in &batch.readings {
                by_meter
                    .entry(reading.meter_id_text().into_owned())
                    .or_default()
                    .push(reading.clone());
            }
            allocations.extend(batch.allocations.iter().cloned());
        }
        let mut readings = Vec::with_capacity(readings_before);
        for (_, mut series) in by_meter {
            series.sort_by_key(|r| r.timestamp_ns);
            readings.extend(keep(series));
        }
        readings.sort_by(|a, b| {
            a.timestamp_ns
                .cmp(&b.timestamp_ns)
                .then_with(|| a.meter_id.cmp(&b.meter_id))
        });
        let merged = Batch {
            collector_id: self.collector_id.clone(),
            seq,
            readings,
            allocations,
            compacted: true,
            meters: meters.into_values().collect(),
            spool_pending: 0,
        };
        let readings_after = merged.readings.len();
        let encoded = merged.encode_to_vec();
        let transaction = self.database.begin_write()?;
        let freed = {
            let mut batches = transaction.open_table(BATCHES)?;
            let mut freed = 0u64;
            for entry in batches.extract_from_if(first_seq..=seq, |_, _| true)? {
                freed += entry?.1.value().len() as u64;
            }
            batches.insert(seq, encoded.as_slice())?;
            freed
        };
        transaction.commit()?;
        self.bytes = self.bytes.saturating_sub(freed) + encoded.len() as u64;
        Ok(Compaction {
            batches_merged: run.len(),
            readings_before,
            readings_after,
        })
    }

    fn store_next_seq(&self) -> Result<()> {
        let transaction = self.database.begin_write()?;
        transaction
            .open_table(META)?
            .insert(NEXT_SEQ, self.next_seq)?;
        transaction.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::measured_reading;
    use footprint_core::UnixNanos;
    use proptest::prelude::*;

    fn append(spool: &mut Spool, readings: Vec<Reading>) -> u64 {
        spool
            .append(Sample {
                readings,
                ..Sample::default()
            })
            .unwrap()
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// Append a batch with one reading per listed meter (meter index, growth).
        Append(Vec<(u8, u32)>),
        /// Acknowledge through the n-th held batch (modulo the count).
        Acknowledge(usize),
        /// The aggregator says it holds everything up to this sequence number.
        Welcome(u64),
        Compact,
        /// Thin what is older than `age` ticks behind the newest to one reading per
        /// `THIN_STEP` (the step is configuration: one value for a spool's life).
        Thin {
            age: i64,
        },
        /// Drop the spool without closing it cleanly and open it again.
        Crash,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => prop::collection::vec((0u8..3, 0u32..1_000), 0..4).prop_map(Op::Append),
            2 => (0usize..8).prop_map(Op::Acknowledge),
            1 => (0u64..30).prop_map(Op::Welcome),
            1 => Just(Op::Compact),
            1 => (0i64..20).prop_map(|age| Op::Thin { age }),
            1 => Just(Op::Crash),
        ]
    }

    /// The age limit's step in the model test, in its clock's ticks.
    const THIN_STEP: i64 = 3;

    /// The model: batches in order, the next sequence number, whether welcomed.
    #[derive(Debug, Default)]
    struct Model {
        batches: Vec<Batch>,
        next_seq: u64,
        welcomed: bool,
    }

    /// Each meter is still there, keeps its last reading (so its energy is unchanged) and only
    /// ever lost readings: none gained or altered.
    fn only_dropped(
        before: &BTreeMap<String, Vec<(i64, u64)>>,
        after: &BTreeMap<String, Vec<(i64, u64)>>,
    ) -> Result<(), TestCaseError> {
        prop_assert_eq!(
            before.keys().collect::<Vec<_>>(),
            after.keys().collect::<Vec<_>>()
        );
        for (meter, series) in before {
            let kept = &after[meter];
            prop_assert_eq!(kept.last(), series.last());
            prop_assert!(kept.iter().all(|r| series.contains(r)));
        }
        Ok(())
    }

    fn readings_by_meter(batches: &[Batch]) -> BTreeMap<String, Vec<(i64, u64)>> {
        let mut by_meter: BTreeMap<String, Vec<(i64, u64)>> = BTreeMap::new();
        for batch in batches {
            for r in &batch.readings {
                by_meter
                    .entry(r.meter_id_text().into_owned())
                    .or_default()
                    .push((r.timestamp_ns, r.value));
            }
        }
        for series in by_meter.values_mut() {
            series.sort_unstable();
        }
        by_meter
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

        #[test]
        fn spool_matches_its_model(ops in prop::collection::vec(op(), 1..30)) {
            let dir = tempfile::tempdir().unwrap();
            let mut spool = Spool::open(Some(dir.path()), "c", u64::MAX).unwrap();
            let mut model = Model { next_seq: 1, ..Model::default() };
            let mut counters = [0u64; 3];
            let mut clock = 0i64;
            for op in ops {
                match op {
                    Op::Append(meters) => {
                        let readings: Vec<Reading> = meters
                            .iter()
                            .map(|(meter, growth)| {
                                clock += 1;
                                counters[*meter as usize] += u64::from(*growth);
                                measured_reading(&format!("m{meter}"), counters[*meter as usize], UnixNanos(clock))
                            })
                            .collect();
                        let seq = spool.append(Sample { readings: readings.clone(), ..Sample::default() }).unwrap();
                        prop_assert_eq!(seq, model.next_seq);
                        model.batches.push(Batch { collector_id: "c".into(), seq, readings, ..Batch::default() });
                        model.next_seq += 1;
                    }
                    Op::Acknowledge(nth) => {
                        if let Some(batch) = model.batches.get(nth % model.batches.len().max(1)) {
                            let through = batch.seq;
                            spool.acknowledge(through).unwrap();
                            model.batches.retain(|b| b.seq > through);
                        }
                    }
                    Op::Welcome(last) => {
                        spool.welcome(last).unwrap();
                        if model.welcomed {
                            model.batches.retain(|b| b.seq > last);
                            model.next_seq = model.next_seq.max(last + 1);
                        } else {
                            for (offset, batch) in model.batches.iter_mut().enumerate() {
                                batch.seq = last + 1 + offset as u64;
                            }
                            model.next_seq = last + 1 + model.batches.len() as u64;
                            model.welcomed = true;
                        }
                    }
                    Op::Compact => {
                        let before = readings_by_meter(&model.batches);
                        let count_before = model.batches.len();
                        spool.compact().unwrap();
                        let after_batches = spool.read_after(0, usize::MAX).unwrap();
                        only_dropped(&before, &readings_by_meter(&after_batches))?;
                        if count_before >= 2 {
                            prop_assert!(after_batches.len() < count_before);
                            prop_assert!(after_batches[0].compacted);
                        }
                        model.batches = after_batches;
                    }
                    Op::Thin { age } => {
                        let (cutoff, step) = (clock - age, THIN_STEP);
                        let before = readings_by_meter(&model.batches);
                        spool.thin_older_than(cutoff, step).unwrap();
                        let after_batches = spool.read_after(0, usize::MAX).unwrap();
                        let after = readings_by_meter(&after_batches);
                        only_dropped(&before, &after)?;
                        for (meter, series) in &before {
                            // Nothing younger than the cutoff is touched.
                            prop_assert!(series.iter().filter(|(at, _)| *at >= cutoff).all(|r| after[meter].contains(r)));
                        }
                        // In what the age limit has thinned, at most one reading per meter and step.
                        let thinned = spool.thinned_through().unwrap();
                        let thinned_batches: Vec<Batch> = after_batches.iter().filter(|b| b.seq <= thinned).cloned().collect();
                        for series in readings_by_meter(&thinned_batches).values() {
                            let steps: Vec<i64> = series.iter().map(|(at, _)| at.div_euclid(step)).collect();
                            prop_assert!(steps.windows(2).all(|pair| pair[0] < pair[1]), "{:?}", series);
                        }
                        model.batches = after_batches;
                    }
                    Op::Crash => {
                        drop(spool);
                        spool = Spool::open(Some(dir.path()), "c", u64::MAX).unwrap();
                    }
                }
                let held = spool.read_after(0, usize::MAX).unwrap();
                prop_assert_eq!(&held, &model.batches);
                prop_assert!(held.windows(2).all(|pair| pair[0].seq < pair[1].seq));
                prop_assert_eq!(spool.len().unwrap() as usize, model.batches.len());
            }
            // Whatever happened, the next number is above everything held.
            let seq = spool.append(Sample::default()).unwrap();
            prop_assert_eq!(seq, model.next_seq);
            prop_assert!(model.batches.iter().all(|b| b.seq < seq));
        }
    }

    #[test]
    fn a_full_spool_compacts_instead_of_dropping() {
        let mut spool = Spool::open(None, "c", 4_000).unwrap();
        let mut total = 0u64;
        for index in 0..400i64 {
            total += 250;
            append(
                &mut spool,
                vec![measured_reading("gpu0", total, UnixNanos(index))],
            );
        }
        let held = spool.read_after(0, usize::MAX).unwrap();
        let readings: Vec<&Reading> = held.iter().flat_map(|b| &b.readings).collect();
        assert!(spool.bytes() < 8_000, "{} bytes", spool.bytes());
        assert!(readings.len() < 400 && held.iter().any(|b| b.compacted));
        assert_eq!(readings.last().map(|r| r.value), Some(400 * 250));
    }

    #[test]
    fn readings_past_the_age_limit_are_thinned_once_to_the_coarse_step() {
        const SECOND: i64 = 1_000_000_000;
        let mut spool = Spool::open(None, "c", u64::MAX).unwrap();
        spool.set_age_limit(
            std::time::Duration::from_secs(100),
            std::time::Duration::from_secs(10),
        );
        // 300 ticks a second apart, two meters each.
        for t in 0..300i64 {
            let readings = ["m0", "m1"]
                .iter()
                .enumerate()
                .map(|(k, meter)| {
                    let value = u64::try_from(t).unwrap() * (5 + k as u64);
                    measured_reading(meter, value, UnixNanos(t * SECOND))
                })
                .collect();
            append(&mut spool, readings);
        }
        let held = spool.read_after(0, usize::MAX).unwrap();
        let series = |meter: &str, aged: bool| -> Vec<(i64, u64)> {
            held.iter()
                .filter(|b| b.compacted == aged)
                .flat_map(|b| &b.readings)
                .filter(|r| r.meter_id == meter)
                .map(|r| (r.timestamp_ns / SECOND, r.value))
                .collect()
        };
        // The last append saw 298 s as the newest, so readings before 198 s are past the limit:
        // one per meter and 10 s step, the last of each, with its own value.
        let expected: Vec<(i64, u64)> = (0..20)
            .map(|bucket| (bucket * 10 + 9).min(197))
            .map(|t| (t, u64::try_from(t).unwrap() * 5))
            .collect();
        assert_eq!(series("m0", true), expected);
        // Everything younger is as it was, one batch per tick.
        let recent = series("m0", false);
        assert_eq!(recent.len(), 300 - 198);
        assert_eq!(recent.last(), Some(&(299, 299 * 5)));
        assert_eq!(series("m1", true).len(), 20);
        // Thinning again changes nothing.
        let again = spool.thin_older_than(198 * SECOND, 10 * SECOND).unwrap();
        assert_eq!(again, Compaction::default(), "nothing new had aged");
        assert_eq!(spool.read_after(0, usize::MAX).unwrap(), held);
    }

    #[test]
    fn a_compacted_batch_stays_small_enough_to_deliver() {
        // 40 batches of ~0.9 MiB each: half the spool would be 18 MiB; one merge takes no more
        // than MAX_MERGE_BYTES of them.
        let mut spool = Spool::open(None, "c", u64::MAX).unwrap();
        for tick in 0..40i64 {
            let readings = (0..30_000)
                .map(|meter| {
                    let value = u64::try_from(tick).unwrap() * 1_000;
                    measured_reading(&format!("meter-{meter:05}"), value, UnixNanos(tick))
                })
                .collect();
            append(&mut spool, readings);
        }
        let done = spool.compact().unwrap();
        assert!((2..20).contains(&done.batches_merged), "{done:?}");
        let merged = &spool.read_after(0, 1).unwrap()[0];
        assert!(merged.compacted);
        assert!(merged.encoded_len() as u64 <= MAX_MERGE_BYTES);
    }

    #[test]
    fn compaction_keeps_every_meter_announced_in_the_merged_batches() {
        let mut spool = Spool::open(None, "c", u64::MAX).unwrap();
        for (index, job) in ["a", "b", "a"].into_iter().enumerate() {
            let meter = MeterInfo {
                meter_id: format!("cpu:{job}"),
                job: job.into(),
                method: format!("announced in batch {index}"),
                ..MeterInfo::default()
            };
            spool
                .append(Sample {
                    meters: vec![meter],
                    ..Sample::default()
                })
                .unwrap();
        }
        let announced = |batches: &[Batch]| -> Vec<String> {
            batches
                .iter()
                .flat_map(|b| &b.meters)
                .map(|m| format!("{} ({})", m.meter_id, m.method))
                .collect()
        };
        spool.compact().unwrap();
        let merged = spool.read_after(0, usize::MAX).unwrap();
        // The two oldest batches merged with both their announcements; the newest untouched.
        assert_eq!(merged.len(), 2);
        assert!(merged[0].compacted);
        assert_eq!(
            announced(&merged),
            [
                "cpu:a (announced in batch 0)",
                "cpu:b (announced in batch 1)",
                "cpu:a (announced in batch 2)"
            ]
        );
        // Merged again: one announcement per meter, its latest description.
        spool.compact().unwrap();
        assert_eq!(
            announced(&spool.read_after(0, usize::MAX).unwrap()),
            [
                "cpu:a (announced in batch 2)",
                "cpu:b (announced in batch 1)"
            ]
        );
    }

    #[test]
    fn a_new_spool_renumbers_after_the_aggregators_last_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(Some(dir.path()), "c", u64::MAX).unwrap();
        assert_eq!(spool.append(Sample::default()).unwrap(), 1);
        // The aggregator already holds 1..=41 from this collector's previous (lost) spool.
        spool.welcome(41).unwrap();
        assert_eq!(spool.read_after(0, 10).unwrap()[0].seq, 42);
        drop(spool);
        let mut spool = Spool::open(Some(dir.path()), "c", u64::MAX).unwrap();
        assert_eq!(spool.append(Sample::default()).unwrap(), 43);
        // Once welcomed, a later welcome only forgets what is durable there.
        spool.welcome(42).unwrap();
        assert_eq!(
            spool
                .read_after(0, 10)
                .unwrap()
                .iter()
                .map(|b| b.seq)
                .collect::<Vec<_>>(),
            vec![43]
        );
    }
}
