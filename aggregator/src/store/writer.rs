//! The writer thread: validates, commits, replies, then builds the windows that became ready.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use footprint_core::counter::{self, CounterLimits, CounterSample};
use footprint_core::window::WindowLength;
use footprint_core::{Quality, UnixNanos};
use footprint_proto::v1::{Allocation, Batch, Hello, MeterInfo, MeterKind, Reading, Rejection};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use super::chunk::StoredReading;
use super::schema::{self, join_list};
use super::staged::{self, StagedRecord};
use super::{BatchOutcome, HelloAccepted, Request, series};
use crate::config::{AggregatorConfig, PowerLimits};
use crate::ledger::{
    self, HostLayout, IntervalsByMeter, LayoutMeter, UnbuiltIntervals, UsageMeter,
};
use crate::metrics::AggregatorMetrics;
use crate::settings::{self, LedgerSettings};
use crate::{Error, Result};

/// `readings.step` values.
pub const STEP_ADVANCED: i64 = 0;
pub const STEP_WRAPPED: i64 = 1;
pub const STEP_RESET: i64 = 2;
/// Flag: the interval is longer than `max_sample_gap_s`.
pub const STEP_GAP: i64 = 8;
/// Flag: the collector's spool thinned the readings around this one (`Batch.compacted`).
pub const STEP_COMPACTED: i64 = 16;
/// The bits of `step` that say how the counter moved (advanced, wrapped, reset).
pub const STEP_KIND_MASK: i64 = 7;

#[derive(Debug)]
struct MeterState {
    key: i64,
    kind: MeterKind,
    device: String,
    cpus: Vec<u32>,
    model: String,
    job: String,
    limits: CounterLimits,
    last: Option<CounterSample>,
    /// The hour of the oldest reading not packed yet (staged, a row or in a plain chunk).
    raw_from: Option<i64>,
}

/// A collector's meters, by id. Every reading names its meter, and with thousands of meters per
/// collector the hash-table probe for each was a tenth of the writer's time under load (cache
/// misses, `BENCHMARKS.md`). Readings come in the order the collector lists its meters, snapshot
/// after snapshot, so [`MeterTable::find_after`] first tries the meter after the one found last,
/// and the ids lie back to back in one string, where that comparison finds them in order.
#[derive(Debug, Default)]
struct MeterTable {
    meters: Vec<MeterState>,
    /// How many of them are site meters (facility energy, water).
    site_meters: usize,
    /// Every meter's id, back to back; `id_ends[i]` is where meter `i`'s ends.
    ids: String,
    id_ends: Vec<usize>,
    positions: HashMap<String, usize, foldhash::fast::RandomState>,
}

impl MeterTable {
    /// Adds a meter, or replaces the one of that id (keeping its place).
    fn insert(&mut self, id: String, meter: MeterState) {
        let is_site = |m: &MeterState| CollectorState::is_site(m.kind);
        self.site_meters += usize::from(is_site(&meter));
        match self.positions.get(&id) {
            Some(&position) => {
                self.site_meters -= usize::from(is_site(&self.meters[position]));
                self.meters[position] = meter;
            }
            None => {
                self.ids.push_str(&id);
                self.id_ends.push(self.ids.len());
                self.positions.insert(id, self.meters.len());
                self.meters.push(meter);
            }
        }
    }

    fn id(&self, position: usize) -> &str {
        let start = position.checked_sub(1).map_or(0, |p| self.id_ends[p]);
        &self.ids[start..self.id_ends[position]]
    }

    fn get(&self, id: &str) -> Option<&MeterState> {
        self.positions
            .get(id)
            .map(|&position| &self.meters[position])
    }

    fn get_mut(&mut self, id: &str) -> Option<&mut MeterState> {
        let position = *self.positions.get(id)?;
        Some(&mut self.meters[position])
    }

    /// The meter `id` (as a reading carries it: bytes that no announced id matches unless they
    /// are its UTF-8), trying the one after position `cursor` first; `cursor` moves to it.
    fn find_after(&mut self, id: &[u8], cursor: &mut usize) -> Option<&mut MeterState> {
        let next = cursor.wrapping_add(1);
        let position = if next < self.meters.len() && self.id(next).as_bytes() == id {
            next
        } else {
            *self.positions.get(std::str::from_utf8(id).ok()?)?
        };
        *cursor = position;
        Some(&mut self.meters[position])
    }

    fn has_site_meter(&self) -> bool {
        self.site_meters > 0
    }

    fn values(&self) -> impl Iterator<Item = &MeterState> + Clone {
        self.meters.iter()
    }

    fn iter(&self) -> impl Iterator<Item = (&str, &MeterState)> {
        self.meters
            .iter()
            .enumerate()
            .map(|(position, meter)| (self.id(position), meter))
    }
}

#[derive(Debug)]
struct CollectorState {
    name: String,
    last_seq: u64,
    meters: MeterTable,
    built_until: Option<i64>,
    /// Late data touched built windows from here on (mirrors `rebuild_pending`).
    rebuild_from: Option<i64>,
    /// When the writer last heard from the collector (a Hello or a batch), or started.
    heard_at: std::time::Instant,
    /// Some of its readings are staged, not laid out by meter yet (`store::staged`).
    staged: bool,
    /// The time of its newest energy meter reading accepted since the writer started (or
    /// reloaded it).
    newest_ns: Option<i64>,
    /// What its next build reads, kept from the last one (`ledger::unbuilt`). Dropped whenever
    /// its laid-out readings change other than by that build's own settling.
    unbuilt: Option<UnbuiltIntervals>,
    /// While none of its windows is built: the time of its oldest energy meter reading (or
    /// earlier), where its first window will start.
    oldest_ns: Option<i64>,
}

impl CollectorState {
    /// Whether a meter of this kind is the site's (facility energy, water): read by the site's
    /// hours, not by any host's windows.
    fn is_site(kind: MeterKind) -> bool {
        matches!(kind, MeterKind::SiteEnergy | MeterKind::SiteWater)
    }

    /// Whether a meter of this kind measures the host's energy: the meters whose slowest one
    /// decides which of its windows are ready.
    fn is_host_energy(kind: MeterKind) -> bool {
        matches!(
            kind,
            MeterKind::GpuEnergy
                | MeterKind::CpuPackageEnergy
                | MeterKind::DramEnergy
                | MeterKind::OutletEnergy
                | MeterKind::HostEnergy
        )
    }

    /// Whether a meter of this kind feeds the host's windows (energy it shares or usage that
    /// splits it): such data before `built_until` means rebuilding.
    fn feeds_windows(kind: MeterKind) -> bool {
        Self::is_host_energy(kind) || matches!(kind, MeterKind::JobCpuTime | MeterKind::GpuJobBusy)
    }

    /// Lays out the collector's staged readings (inside `transaction`), if it has any, for a
    /// reader other than its next build (which then reads the database). The caller clears
    /// `staged`: once the transaction commits, or at once where a failed commit reloads the
    /// writer's view from the database.
    fn settle_staged(&mut self, transaction: &Transaction<'_>, collector: i64) -> Result<()> {
        if self.staged {
            self.unbuilt = None;
            staged::settle(transaction, Some(collector))?;
        }
        Ok(())
    }

    /// Records that data stored in `transaction` touches this collector's built windows from
    /// `from_ns` on (nothing when they are not built that far).
    fn touch_built(
        &mut self,
        transaction: &Transaction<'_>,
        collector: i64,
        from_ns: i64,
        reason: &str,
        metrics: &AggregatorMetrics,
    ) -> rusqlite::Result<()> {
        if self.built_until.is_none_or(|until| from_ns >= until) {
            return Ok(());
        }
        transaction
            .prepare_cached(
                "INSERT INTO rebuild_pending (collector, from_ns, reason) VALUES (?1, ?2, ?3)
                 ON CONFLICT (collector) DO UPDATE SET from_ns = MIN(from_ns, excluded.from_ns), reason =
                   CASE WHEN instr(reason, excluded.reason) > 0 THEN reason ELSE reason || '; ' || excluded.reason END",
            )?
            .execute(params![collector, from_ns, reason])?;
        self.rebuild_from = Some(self.rebuild_from.map_or(from_ns, |f| f.min(from_ns)));
        metrics.late(reason);
        Ok(())
    }
}

pub(super) struct WriterState {
    connection: Connection,
    window: WindowLength,
    max_future_ns: i64,
    max_gap_ns: i64,
    limits: PowerLimits,
    collectors: HashMap<i64, CollectorState>,
    by_name: HashMap<String, i64>,
    metrics: Arc<AggregatorMetrics>,
    settings: LedgerSettings,
    /// How long the site waits for a silent collector (`facility.max_wait_s`).
    max_wait: std::time::Duration,
    /// Readings are packed into chunks once their hour ended this long before what still
    /// needs them (`compact_after_s`).
    compact_after_ns: i64,
    /// Meters with hours to pack, and the hour to pack them up to: (collector, meter, cutoff).
    compaction: Vec<(i64, String, i64)>,
    next_compaction_plan: std::time::Instant,
    /// When a building pass that built nothing next looks for site hours to settle.
    next_site_check: std::time::Instant,
}

/// What a batch is checked against.
#[derive(Clone, Copy)]
struct BatchSettings<'a> {
    max_future_ns: i64,
    max_gap_ns: i64,
    limits: &'a PowerLimits,
    metrics: &'a AggregatorMetrics,
}

/// Why a meter announcement cannot be registered: the field at fault and the reason. `is_gpu`
/// tells whether a device has a GPU energy meter on the same collector.
fn meter_problem(
    meter: &MeterInfo,
    is_gpu: impl Fn(&str) -> bool,
) -> Option<(&'static str, String)> {
    if meter.meter_id.trim().is_empty() {
        return Some(("meter_id", "must not be empty".into()));
    }
    let kind = MeterKind::try_from(meter.kind);
    if matches!(kind, Err(_) | Ok(MeterKind::Unspecified)) {
        return Some(("kind", format!("{} is not a known meter kind", meter.kind)));
    }
    if matches!(kind, Ok(MeterKind::JobCpuTime | MeterKind::GpuJobBusy))
        && meter.job.trim().is_empty()
    {
        return Some(("job", "a usage meter must name its job".into()));
    }
    if meter.counter_max != 0 && meter.resolution > meter.counter_max {
        return Some((
            "resolution",
            format!(
                "{} is more than the counter's range (counter_max {})",
                meter.resolution, meter.counter_max
            ),
        ));
    }
    if kind == Ok(MeterKind::GpuJobBusy) && !is_gpu(&meter.device) {
        return Some((
            "device",
            format!(
                "{:?} is not the device of any GPU meter announced",
                meter.device
            ),
        ));
    }
    None
}

/// Registers a meter of `collector` (or updates it); returns its key.
fn upsert_meter(
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
        params![collector, meter.meter_id, meter.kind, meter.device, to_i64(meter.counter_max), join_list(&meter.cpus), meter.method, meter.model, meter.job, to_i64(meter.resolution)],
        |row| row.get(0),
    )
}

/// Most logical CPUs a host may have, for the plausibility of a job's CPU-time counter.
const MAX_CORES: u64 = 4_096;

fn limits_for(
    kind: MeterKind,
    counter_max: u64,
    resolution: u64,
    limits: &PowerLimits,
) -> CounterLimits {
    // mJ per second is mW: W × 1000.
    let max_rate_per_second = match kind {
        MeterKind::GpuEnergy => limits.gpu_w * 1_000,
        MeterKind::CpuPackageEnergy | MeterKind::CpuCoreEnergy | MeterKind::CpuUncoreEnergy => {
            limits.cpu_package_w * 1_000
        }
        MeterKind::DramEnergy => limits.dram_w * 1_000,
        MeterKind::OutletEnergy | MeterKind::HostEnergy => limits.host_w * 1_000,
        MeterKind::PduEnergy => limits.pdu_w.saturating_mul(1_000),
        MeterKind::SiteEnergy => limits.site_w.saturating_mul(1_000),
        MeterKind::SiteWater => limits.site_water_ml_per_s,
        // CPU time: every core of a large host busy; GPU busy time: the GPU busy all the time.
        MeterKind::JobCpuTime => MAX_CORES * 1_000_000_000,
        MeterKind::GpuJobBusy => 1_000_000_000,
        MeterKind::Unspecified => 0,
    };
    CounterLimits {
        max_value: if counter_max == 0 {
            u64::MAX
        } else {
            counter_max
        },
        max_rate_per_second,
        resolution,
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn to_i64(value: u64) -> i64 {
    // SQLite integers are signed 64-bit; counters above 2^63 are stored bit-for-bit.
    value as i64
}

fn from_i64(value: i64) -> u64 {
    value as u64
}

/// A rejected item, before it is numbered into the ack.
struct Refusal {
    index: usize,
    meter_id: String,
    field: String,
    code: &'static str,
    reason: String,
}

impl WriterState {
    pub(super) fn open(
        path: &Path,
        config: &AggregatorConfig,
        metrics: Arc<AggregatorMetrics>,
    ) -> Result<Self> {
        let connection = schema::open(path)?;
        let settings = LedgerSettings::from_config(config)?;
        info!(policy = %settings.description, "Ledger settings.");
        let transaction = connection.unchecked_transaction()?;
        transaction.execute("DELETE FROM placement", [])?;
        for place in &config.placement {
            transaction.execute(
                "INSERT INTO placement (host, hall, rack) VALUES (?1, ?2, ?3)",
                params![place.host, place.hall, place.rack],
            )?;
        }
        transaction.commit()?;
        for file in &config.carbon.intensity_files {
            let (feed, stored) = settings::import_file(&connection, file)?;
            info!(file = %file.display(), format = feed.format, hours = stored, gaps = feed.gaps, "Imported grid intensity.");
        }
        let mut state = Self {
            connection,
            window: WindowLength::from_seconds(config.window_seconds).unwrap_or_default(),
            max_future_ns: i64::try_from(config.max_future_skew_s)
                .unwrap_or(i64::MAX / 2_000_000_000)
                * 1_000_000_000,
            max_gap_ns: i64::try_from(config.max_sample_gap_s).unwrap_or(i64::MAX / 2_000_000_000)
                * 1_000_000_000,
            limits: config.limits.clone(),
            collectors: HashMap::new(),
            by_name: HashMap::new(),
            metrics,
            settings,
            max_wait: std::time::Duration::from_secs(config.facility.max_wait_s),
            compact_after_ns: i64::try_from(config.compact_after_s)
                .unwrap_or(i64::MAX / 2_000_000_000)
                .saturating_mul(1_000_000_000),
            compaction: Vec::new(),
            // At the first idle moment: a restarted aggregator catches up at once.
            next_compaction_plan: std::time::Instant::now(),
            next_site_check: std::time::Instant::now(),
        };
        state.reload(None)?;
        Ok(state)
    }

    /// Rebuilds the in-memory view (last seq, meters and their last readings) from the database:
    /// of one collector, or of all when `only` is `None`.
    fn reload(&mut self, only: Option<i64>) -> Result<()> {
        // What the database holds is the truth: anything staged is laid out first.
        let transaction = self.connection.transaction()?;
        staged::settle(&transaction, only)?;
        transaction.commit()?;
        match only {
            Some(key) => {
                if let Some(state) = self.collectors.remove(&key) {
                    self.by_name.remove(&state.name);
                }
            }
            None => {
                self.collectors.clear();
                self.by_name.clear();
            }
        }
        let mut statement = self.connection.prepare(
            "SELECT c.id, c.name, c.last_seq, c.built_until_ns, p.from_ns
             FROM collectors c LEFT JOIN rebuild_pending p ON p.collector = c.id
             WHERE ?1 IS NULL OR c.id = ?1",
        )?;
        let rows = statement.query_map([only], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, i64>(2)?,
                row.get::<_, Option<i64>>(3)?,
                row.get::<_, Option<i64>>(4)?,
            ))
        })?;
        for row in rows {
            let (key, name, last_seq, built_until, rebuild_from) = row?;
            self.by_name.insert(name.clone(), key);
            self.collectors.insert(
                key,
                CollectorState {
                    name,
                    last_seq: from_i64(last_seq),
                    meters: MeterTable::default(),
                    built_until,
                    rebuild_from,
                    heard_at: std::time::Instant::now(),
                    staged: false,
                    newest_ns: None,
                    unbuilt: None,
                    oldest_ns: None,
                },
            );
        }
        drop(statement);
        let mut statement = self.connection.prepare(
            "SELECT m.id, m.collector, m.meter_id, m.kind, m.device, m.counter_max, m.cpus, m.model, m.job, m.resolution
             FROM meters m WHERE ?1 IS NULL OR m.collector = ?1",
        )?;
        let rows = statement.query_map([only], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, i32>(3)?,
                row.get::<_, String>(4)?,
                row.get::<_, i64>(5)?,
                row.get::<_, String>(6)?,
                row.get::<_, String>(7)?,
                row.get::<_, String>(8)?,
                row.get::<_, i64>(9)?,
            ))
        })?;
        for row in rows {
            let (key, collector, meter_id, kind, device, counter_max, cpus, model, job, resolution) =
                row?;
            let kind = MeterKind::try_from(kind).unwrap_or(MeterKind::Unspecified);
            let last =
                series::last_reading(&self.connection, key)?.map(|(at, value)| CounterSample {
                    value: from_i64(value),
                    at: UnixNanos(at),
                });
            if let Some(state) = self.collectors.get_mut(&collector) {
                state.meters.insert(
                    meter_id,
                    MeterState {
                        key,
                        kind,
                        device,
                        cpus: schema::split_cpus(&cpus),
                        model,
                        job,
                        limits: limits_for(
                            kind,
                            from_i64(counter_max),
                            from_i64(resolution),
                            &self.limits,
                        ),
                        last,
                        raw_from: series::oldest_unpacked_hour(&self.connection, key)?,
                    },
                );
            }
        }
        drop(statement);
        for (key, state) in &mut self.collectors {
            if only.is_none_or(|only| only == *key) && state.built_until.is_none() {
                let energy: Vec<i64> = state
                    .meters
                    .values()
                    .filter(|m| CollectorState::is_host_energy(m.kind))
                    .map(|m| m.key)
                    .collect();
                state.oldest_ns = series::first_ts(&self.connection, &energy)?;
            }
        }
        Ok(())
    }

    fn hello(&mut self, hello: &Hello) -> Result<HelloAccepted> {
        let refuse = |reason: String| Error::Collector {
            collector: hello.collector_id.clone(),
            reason,
        };
        if hello.collector_id.trim().is_empty() {
            return Err(refuse("hello.collector_id: must not be empty".into()));
        }
        if hello.host.trim().is_empty() {
            return Err(refuse("hello.host: must not be empty".into()));
        }
        let mut seen = BTreeSet::new();
        let is_gpu = |device: &str| {
            hello
                .meters
                .iter()
                .any(|m| m.kind == MeterKind::GpuEnergy as i32 && m.device == device)
        };
        for (index, meter) in hello.meters.iter().enumerate() {
            if let Some((field, reason)) = meter_problem(meter, is_gpu) {
                return Err(refuse(format!("hello.meters[{index}].{field}: {reason}")));
            }
            if !seen.insert(meter.meter_id.as_str()) {
                return Err(refuse(format!(
                    "hello.meters[{index}].meter_id: {:?} is announced twice",
                    meter.meter_id
                )));
            }
        }
        let existing: Option<(i64, String)> = self
            .connection
            .query_row(
                "SELECT id, host FROM collectors WHERE name = ?1",
                [&hello.collector_id],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        if let Some((_, host)) = &existing
            && *host != hello.host
        {
            return Err(refuse(format!(
                "hello.host: this collector id is registered for host {host:?}, not {:?}",
                hello.host
            )));
        }
        let transaction = self.connection.transaction()?;
        let key = match existing {
            Some((key, _)) => {
                transaction.execute(
                    "UPDATE collectors SET software_version = ?2 WHERE id = ?1",
                    params![key, hello.software_version],
                )?;
                key
            }
            None => {
                transaction.execute(
                    "INSERT INTO collectors (name, host, software_version) VALUES (?1, ?2, ?3)",
                    params![hello.collector_id, hello.host, hello.software_version],
                )?;
                transaction.last_insert_rowid()
            }
        };
        for meter in &hello.meters {
            upsert_meter(&transaction, key, meter)?;
        }
        transaction.commit()?;
        self.reload(Some(key))?;
        let last_durable_seq = self.collectors.get(&key).map_or(0, |c| c.last_seq);
        info!(collector = %hello.collector_id, host = %hello.host, meters = hello.meters.len(), last_durable_seq, "Collector registered.");
        Ok(HelloAccepted {
            collector: key,
            last_durable_seq,
        })
    }

    /// Stores the acceptable part of a batch inside `transaction`.
    fn apply_batch(
        transaction: &Transaction<'_>,
        collectors: &mut HashMap<i64, CollectorState>,
        settings: &BatchSettings<'_>,
        collector: i64,
        batch: &Batch,
        now: i64,
    ) -> Result<BatchOutcome> {
        let BatchSettings {
            max_future_ns,
            max_gap_ns,
            limits,
            metrics,
        } = *settings;
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
                .exists(params![collector, to_i64(batch.seq)])?
        {
            metrics.batch("duplicate");
            return Ok(BatchOutcome {
                seq: batch.seq,
                duplicate: true,
                rejections: Vec::new(),
            });
        }
        let mut refusals = Vec::new();
        for (index, meter) in batch.meters.iter().enumerate() {
            let is_gpu = |device: &str| {
                state
                    .meters
                    .values()
                    .any(|m| m.kind == MeterKind::GpuEnergy && m.device == device)
                    || batch
                        .meters
                        .iter()
                        .any(|m| m.kind == MeterKind::GpuEnergy as i32 && m.device == device)
            };
            if let Some((field, reason)) = meter_problem(meter, is_gpu) {
                metrics.reject_meter("bad_meter");
                refusals.push(
                    Refusal {
                        index,
                        meter_id: meter.meter_id.clone(),
                        field: format!("meters[].{field}"),
                        code: "bad_meter",
                        reason,
                    }
                    .at(index),
                );
                continue;
            }
            let key = upsert_meter(transaction, collector, meter)?;
            let kind = MeterKind::try_from(meter.kind).unwrap_or(MeterKind::Unspecified);
            let known = state.meters.get(&meter.meter_id);
            if known.is_some() {
                // Announced again, maybe as another kind: what the next build reads may change.
                state.unbuilt = None;
            }
            let (last, raw_from) = known.map_or((None, None), |m| (m.last, m.raw_from));
            state.meters.insert(
                meter.meter_id.clone(),
                MeterState {
                    key,
                    kind,
                    device: meter.device.clone(),
                    cpus: meter.cpus.clone(),
                    model: meter.model.clone(),
                    job: meter.job.clone(),
                    limits: limits_for(kind, meter.counter_max, meter.resolution, limits),
                    last,
                    raw_from,
                },
            );
        }
        let mut record = StagedRecord::default();
        let mut cursor = usize::MAX;
        let mut stored = 0;
        for (index, reading) in batch.readings.iter().enumerate() {
            let Some(meter) = state.meters.find_after(&reading.meter_id, &mut cursor) else {
                refusals.push(
                    refusal(
                        &reading.meter_id,
                        "readings[].meter_id".into(),
                        "unknown_meter",
                        "unknown meter: not announced in this collector's Hello".into(),
                    )
                    .at(index),
                );
                continue;
            };
            if meter
                .last
                .is_some_and(|last| reading.timestamp_ns <= last.at.0)
            {
                // Its neighbours may be staged, this batch's earlier readings among them.
                if state.staged || !record.is_empty() {
                    record.write(transaction, collector)?;
                    staged::settle(transaction, Some(collector))?;
                    state.staged = false;
                }
                // Placed among its neighbours, it changes what the next build would read.
                state.unbuilt = None;
                let at = reading.timestamp_ns;
                state.oldest_ns = Some(state.oldest_ns.map_or(at, |o| o.min(at)));
                let kind = meter.kind;
                match place_earlier_reading(transaction, meter, reading, settings, batch.compacted)?
                {
                    Err(refusal) => refusals.push(refusal.at(index)),
                    Ok(None) => {}
                    Ok(Some(changed_from)) => {
                        stored += 1;
                        mark_late(transaction, state, collector, kind, changed_from, metrics)?;
                    }
                }
                continue;
            }
            match check_reading(meter, reading, now, max_future_ns) {
                Err(refusal) => refusals.push(refusal.at(index)),
                Ok((meter, kind, sample, quality, moved)) => {
                    let (from_ns, delta, step) = match moved {
                        None => (None, None, None),
                        Some((previous_at, step)) => {
                            let mut code = match step {
                                counter::CounterStep::Advanced { .. } => STEP_ADVANCED,
                                counter::CounterStep::Wrapped { .. } => STEP_WRAPPED,
                                counter::CounterStep::Reset { .. } => STEP_RESET,
                            };
                            if sample.at.0 - previous_at > max_gap_ns {
                                code |= STEP_GAP;
                            }
                            if batch.compacted {
                                code |= STEP_COMPACTED;
                            }
                            (Some(previous_at), Some(to_i64(step.delta())), Some(code))
                        }
                    };
                    record.push(
                        meter,
                        &StoredReading {
                            ts_ns: sample.at.0,
                            value: to_i64(sample.value),
                            quality: i64::from(ledger::quality_code(quality)),
                            method: (!reading.method.is_empty()).then(|| reading.method.clone()),
                            from_ns,
                            delta,
                            step,
                        },
                    );
                    stored += 1;
                    if CollectorState::is_host_energy(kind) {
                        state.newest_ns = state.newest_ns.max(Some(sample.at.0));
                        if state.built_until.is_none() {
                            state.oldest_ns =
                                Some(state.oldest_ns.map_or(sample.at.0, |o| o.min(sample.at.0)));
                        }
                    }
                    if let Some(from_ns) = from_ns {
                        mark_late(transaction, state, collector, kind, from_ns, metrics)?;
                    }
                }
            }
        }
        if !record.is_empty() {
            record.write(transaction, collector)?;
            state.staged = true;
        }
        metrics.readings_stored.inc_by(stored);
        for (index, allocation) in batch.allocations.iter().enumerate() {
            match store_allocation(
                transaction,
                state,
                collector,
                allocation,
                now,
                max_future_ns,
            ) {
                Err(refusal) => {
                    metrics.reject_allocation(refusal.code);
                    refusals.push(refusal.at(index));
                }
                Ok(Some(changed_from)) => {
                    state.touch_built(
                        transaction,
                        collector,
                        changed_from,
                        "allocation",
                        metrics,
                    )?;
                }
                Ok(None) => {}
            }
        }
        let mut rejections = Vec::with_capacity(refusals.len());
        for refusal in refusals {
            if refusal.field.starts_with("readings") {
                metrics.reject_reading(refusal.code);
            }
            warn!(collector = %state.name, seq = batch.seq, field = %refusal.field, meter = %refusal.meter_id, reason = %refusal.reason, "Rejected input.");
            transaction.execute(
                "INSERT INTO rejections (collector, seq, field, meter_id, reason, received_ns) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![collector, to_i64(batch.seq), refusal.field, refusal.meter_id, refusal.reason, now],
            )?;
            rejections.push(Rejection {
                index: u32::try_from(refusal.index).unwrap_or(u32::MAX),
                meter_id: refusal.meter_id,
                field: refusal.field,
                reason: refusal.reason,
            });
        }
        transaction
            .prepare_cached(
                "INSERT INTO batches (collector, seq, received_ns, readings, rejected) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![collector, to_i64(batch.seq), now, batch.readings.len() as i64, rejections.len() as i64])?;
        transaction
            .prepare_cached("UPDATE collectors SET last_seq = MAX(last_seq, ?2) WHERE id = ?1")?
            .execute(params![collector, to_i64(batch.seq)])?;
        state.last_seq = state.last_seq.max(batch.seq);
        metrics.batch("stored");
        Ok(BatchOutcome {
            seq: batch.seq,
            duplicate: false,
            rejections,
        })
    }

    /// Commits a group of batches in one transaction and replies to each.
    fn commit_group(
        &mut self,
        group: Vec<(
            i64,
            Batch,
            tokio::sync::oneshot::Sender<Result<BatchOutcome>>,
        )>,
    ) -> BTreeSet<i64> {
        let now = now_ns();
        let mut touched = BTreeSet::new();
        let outcome = (|| -> Result<Vec<Result<BatchOutcome>>> {
            let transaction = self.connection.transaction()?;
            let mut outcomes = Vec::with_capacity(group.len());
            for (collector, batch, _) in &group {
                let settings = BatchSettings {
                    max_future_ns: self.max_future_ns,
                    max_gap_ns: self.max_gap_ns,
                    limits: &self.limits,
                    metrics: &self.metrics,
                };
                outcomes.push(Self::apply_batch(
                    &transaction,
                    &mut self.collectors,
                    &settings,
                    *collector,
                    batch,
                    now,
                ));
                touched.insert(*collector);
            }
            transaction.commit()?;
            Ok(outcomes)
        })();
        match outcome {
            Ok(outcomes) => {
                for ((_, _, reply), outcome) in group.into_iter().zip(outcomes) {
                    let _ = reply.send(outcome);
                }
            }
            Err(error) => {
                error!(error = %error, batches = group.len(), "Commit failed; nothing of this group is acknowledged.");
                // The in-memory view may hold readings that were rolled back: rebuild it.
                if let Err(reload) = self.reload(None) {
                    error!(error = %reload, "Could not reload the ledger state.");
                }
                for (_, _, reply) in group {
                    let _ = reply.send(Err(Error::Server(format!("commit failed: {error}"))));
                }
                touched.clear();
            }
        }
        touched
    }

    /// Builds the ready windows of `collectors`, taking each out of the set as it is done. With a
    /// deadline, stops once it has passed and leaves the rest in the set, so that a fleet
    /// crossing a window boundary together does not hold every commit (and ack) back at once.
    /// Site hours are settled once the set is empty.
    fn build_windows(
        &mut self,
        collectors: &mut BTreeSet<i64>,
        deadline: Option<std::time::Instant>,
    ) -> Result<u64> {
        let mut built = 0;
        while let Some(collector) = collectors.pop_first() {
            if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                collectors.insert(collector);
                return Ok(built);
            }
            let Some(state) = self.collectors.get_mut(&collector) else {
                continue;
            };
            let energy_meters = state
                .meters
                .values()
                .filter(|m| CollectorState::is_host_energy(m.kind));
            // The first window not built yet: where the last build ended or, before the first
            // one, the window of the oldest energy reading. Nothing in it is ready until the
            // slowest energy meter has left it, and most passes find a collector still inside:
            // nothing to build, so no transaction (this check is the builder's own first one).
            let first_unbuilt = state.built_until.or_else(|| {
                state
                    .oldest_ns
                    .map(|o| self.window.start_of(UnixNanos(o)).0)
            });
            let inside = |at: UnixNanos| {
                first_unbuilt.is_some_and(|first| self.window.start_of(at).0 <= first)
            };
            if state.rebuild_from.is_none() {
                // The newest energy reading is at or after the slowest meter's last one, so it
                // tells without visiting each meter.
                if state
                    .newest_ns
                    .is_some_and(|newest| inside(UnixNanos(newest)))
                {
                    continue;
                }
                let watermark = energy_meters
                    .clone()
                    .filter_map(|m| m.last.map(|s| s.at))
                    .min();
                if watermark.is_none_or(inside) {
                    continue;
                }
            }
            let meters: Vec<LayoutMeter> = energy_meters
                .map(|m| LayoutMeter {
                    key: m.key,
                    kind: m.kind,
                    device: m.device.clone(),
                    cpus: m.cpus.clone(),
                    model: m.model.clone(),
                    last_ns: m.last.map(|s| s.at.0),
                })
                .collect();
            let usage = state
                .meters
                .values()
                .filter(|m| matches!(m.kind, MeterKind::JobCpuTime | MeterKind::GpuJobBusy))
                .map(|m| UsageMeter {
                    key: m.key,
                    kind: m.kind,
                    device: m.device.clone(),
                    job: m.job.clone(),
                })
                .collect();
            let layout = HostLayout {
                collector,
                meters,
                usage,
                built_until: state.built_until,
            };
            let transaction = self.connection.transaction()?;
            // What the last build left over, with what settling now lays out, is what this one
            // reads; unless it starts elsewhere (a rebuild).
            let held = state.unbuilt.take().filter(|held| {
                state.rebuild_from.is_none() && Some(held.from_ns()) == state.built_until
            });
            let mut laid_out = IntervalsByMeter::default();
            if state.staged {
                staged::settle_visiting(&transaction, Some(collector), |meter, readings| {
                    if held.is_some() {
                        laid_out.push_readings(meter, readings);
                    }
                })?;
            }
            let held = held.map(|held| held.followed_by(&layout, &laid_out));
            // What was built, where it first touched the site's hours, and (for a rebuild) why.
            let (progress, first_changed, late_reason) = match state.rebuild_from {
                None => {
                    let progress = match &held {
                        Some(held) => ledger::build_ready_windows_from(
                            &transaction,
                            &layout,
                            self.window,
                            &self.settings,
                            held,
                        )?,
                        None => ledger::build_ready_windows(
                            &transaction,
                            &layout,
                            self.window,
                            &self.settings,
                        )?,
                    };
                    (progress, progress.first_built, None)
                }
                Some(from_ns) => {
                    let reason: Option<String> = transaction
                        .query_row(
                            "DELETE FROM rebuild_pending WHERE collector = ?1 RETURNING reason",
                            [collector],
                            |row| row.get(0),
                        )
                        .optional()?;
                    let reason = format!("late {}", reason.as_deref().unwrap_or("data"));
                    let rebuilt = ledger::rebuild_windows(
                        &transaction,
                        &layout,
                        self.window,
                        &self.settings,
                        from_ns,
                        &reason,
                        now_ns(),
                    )?;
                    info!(collector = %state.name, from_ns, revised = rebuilt.revised, %reason, "Rebuilt windows after late data.");
                    self.metrics.windows_revised.inc_by(rebuilt.revised);
                    (rebuilt.build, rebuilt.first_changed, Some(reason))
                }
            };
            // Windows new or changed in hours the site already settled (a host that fell silent
            // and came back, or late data) reopen them.
            if let Some(first) = first_changed {
                let reason = match &late_reason {
                    Some(reason) => format!("{reason} on {}", state.name),
                    None => format!("late windows of {}", state.name),
                };
                if ledger::site::reopen(&transaction, first, &reason)? && late_reason.is_none() {
                    self.metrics.late("windows");
                }
            }
            if let Some(until) = progress.built_until {
                transaction.execute(
                    "UPDATE collectors SET built_until_ns = ?2 WHERE id = ?1",
                    params![collector, until],
                )?;
            }
            let unbuilt = match (progress.built_until, held) {
                (Some(until), Some(held)) => Some(held.starting_at(until)),
                (Some(until), None) => {
                    UnbuiltIntervals::load(&transaction, &layout, until, self.window.nanos())?
                }
                (None, _) => None,
            };
            transaction.commit()?;
            state.unbuilt =
                unbuilt.filter(|held| held.len() <= MAX_HELD_PER_METER * layout.meters.len());
            state.staged = false;
            state.rebuild_from = None;
            state.built_until = progress.built_until.or(state.built_until);
            self.metrics.windows_built.inc_by(progress.windows);
            built += progress.windows;
        }
        // An hour of the site becomes ready when windows were built, when site meters report,
        // or when a collector has been silent long enough: after a build or site readings, and
        // otherwise once a second (every pass would look at every collector after each commit).
        // The site's hours read the site meters' readings, so those are laid out first.
        let site_collectors: Vec<i64> = self
            .collectors
            .iter()
            .filter(|(_, state)| state.staged && state.meters.has_site_meter())
            .map(|(key, _)| *key)
            .collect();
        if built == 0
            && site_collectors.is_empty()
            && deadline.is_some()
            && std::time::Instant::now() < self.next_site_check
        {
            return Ok(built);
        }
        self.next_site_check = std::time::Instant::now() + SITE_CHECK_EVERY;
        let silent: BTreeSet<i64> = self
            .collectors
            .iter()
            .filter(|(_, state)| state.heard_at.elapsed() > self.max_wait)
            .map(|(key, _)| *key)
            .collect();
        let transaction = self.connection.transaction()?;
        for key in &site_collectors {
            if let Some(state) = self.collectors.get_mut(key) {
                state.settle_staged(&transaction, *key)?;
            }
        }
        let settled = ledger::site::settle_ready_hours(
            &transaction,
            &self.settings,
            self.window,
            &silent,
            now_ns(),
        )?;
        transaction.commit()?;
        for key in site_collectors {
            if let Some(state) = self.collectors.get_mut(&key) {
                state.staged = false;
            }
        }
        self.metrics.hours_settled.inc_by(settled.hours);
        self.metrics.hours_revised.inc_by(settled.revised);
        Ok(built)
    }
}

impl WriterState {
    /// Lays out every collector's staged readings.
    fn settle_all(&mut self) -> Result<u64> {
        let transaction = self.connection.transaction()?;
        let settled = staged::settle(&transaction, None)?;
        transaction.commit()?;
        for state in self.collectors.values_mut() {
            state.staged = false;
            state.unbuilt = None;
        }
        Ok(settled)
    }
}

impl Refusal {
    /// Places the refusal at item `index`: `readings[].value` becomes `readings[3].value`.
    fn at(self, index: usize) -> Self {
        Self {
            index,
            field: self.field.replacen("[]", &format!("[{index}]"), 1),
            ..self
        }
    }
}

type Checked = (
    i64,
    MeterKind,
    CounterSample,
    Quality,
    Option<(i64, counter::CounterStep)>,
);

/// A refusal of the item about `meter_id` (a reading's id may not be UTF-8: it is shown lossily).
fn refusal(
    meter_id: impl AsRef<[u8]>,
    field: String,
    code: &'static str,
    reason: String,
) -> Refusal {
    Refusal {
        index: 0,
        meter_id: String::from_utf8_lossy(meter_id.as_ref()).into_owned(),
        field,
        code,
        reason,
    }
}

/// The reading's quality, or its refusal.
fn reading_quality(reading: &Reading) -> Result<Quality, Refusal> {
    match footprint_proto::v1::Quality::try_from(reading.quality) {
        Ok(footprint_proto::v1::Quality::Measured) => Ok(Quality::Measured),
        Ok(footprint_proto::v1::Quality::Interpolated) => Ok(Quality::Interpolated),
        Ok(footprint_proto::v1::Quality::Estimated) => Ok(Quality::Estimated),
        _ => Err(refusal(
            &reading.meter_id,
            "readings[].quality".into(),
            "bad_quality",
            format!(
                "{} is not measured, interpolated or estimated",
                reading.quality
            ),
        )),
    }
}

/// Validates one reading against its meter's previous one; on success the meter's baseline moves.
fn check_reading(
    meter: &mut MeterState,
    reading: &Reading,
    now: i64,
    max_future_ns: i64,
) -> Result<Checked, Refusal> {
    let field = |name: &str| format!("readings[].{name}");
    let quality = reading_quality(reading)?;
    if reading.timestamp_ns > now.saturating_add(max_future_ns) {
        return Err(refusal(
            &reading.meter_id,
            field("timestamp_ns"),
            "future_timestamp",
            format!(
                "{} is more than {} s ahead of the aggregator's clock",
                reading.timestamp_ns,
                max_future_ns / 1_000_000_000
            ),
        ));
    }
    let sample = CounterSample {
        value: reading.value,
        at: UnixNanos(reading.timestamp_ns),
    };
    let moved = match meter.last {
        None => {
            if sample.value > meter.limits.max_value {
                return Err(refusal(
                    &reading.meter_id,
                    field("value"),
                    "above_maximum",
                    format!(
                        "{} is above the counter's maximum {}",
                        sample.value, meter.limits.max_value
                    ),
                ));
            }
            None
        }
        Some(previous) => match counter::step(previous, sample, meter.limits) {
            Ok(step) => Some((previous.at.0, step)),
            Err(error) => {
                return Err(refusal(
                    &reading.meter_id,
                    field(error.field()),
                    error.code(),
                    error.to_string(),
                ));
            }
        },
    };
    meter.last = Some(sample);
    meter.raw_from.get_or_insert(series::hour_of(sample.at.0));
    Ok((meter.key, meter.kind, sample, quality, moved))
}

/// Stores an allocation; returns where the holding it describes changed, if it did.
fn store_allocation(
    transaction: &Transaction<'_>,
    state: &CollectorState,
    collector: i64,
    allocation: &Allocation,
    now: i64,
    max_future_ns: i64,
) -> Result<Option<i64>, Refusal> {
    let field = |name: &str| format!("allocations[].{name}");
    let job = allocation.job.as_ref().filter(|j| !j.id.trim().is_empty());
    let Some(job) = job else {
        return Err(refusal(
            "",
            field("job.id"),
            "missing_job",
            "an allocation needs a job with an id".into(),
        ));
    };
    if allocation.start_ns <= 0 || allocation.start_ns > now.saturating_add(max_future_ns) {
        return Err(refusal(
            "",
            field("start_ns"),
            "bad_time",
            format!("{} is not a plausible start", allocation.start_ns),
        ));
    }
    if allocation.end_ns != 0 && allocation.end_ns <= allocation.start_ns {
        return Err(refusal(
            "",
            field("end_ns"),
            "bad_time",
            format!(
                "{} is not after start_ns {}",
                allocation.end_ns, allocation.start_ns
            ),
        ));
    }
    for gpu in &allocation.gpus {
        let known = state
            .meters
            .values()
            .any(|m| m.kind == MeterKind::GpuEnergy && m.device == *gpu);
        if !known {
            return Err(refusal(
                "",
                field("gpus"),
                "unknown_device",
                format!("{gpu:?} is not the device of any GPU meter of this collector"),
            ));
        }
    }
    let mut mig = Vec::with_capacity(allocation.mig.len());
    for instance in &allocation.mig {
        let known = state
            .meters
            .values()
            .any(|m| m.kind == MeterKind::GpuEnergy && m.device == instance.device);
        if !known {
            return Err(refusal(
                "",
                field("mig[].device"),
                "unknown_device",
                format!(
                    "{:?} is not the device of any GPU meter of this collector",
                    instance.device
                ),
            ));
        }
        if !(1..=footprint_core::attribution::MIG_COMPUTE_SLICES).contains(&instance.slices) {
            return Err(refusal(
                "",
                field("mig[].slices"),
                "bad_value",
                format!("{} is not between 1 and 7", instance.slices),
            ));
        }
        mig.push(format!("{}:{}", instance.device, instance.slices));
    }
    let stored = (|| -> rusqlite::Result<Option<i64>> {
        let job_key: i64 = transaction.query_row(
            "INSERT INTO jobs (job_id, scheduler, name, user, project, kind, model, functional_unit, functional_units)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (job_id) DO UPDATE SET scheduler = excluded.scheduler, name = excluded.name, user = excluded.user,
               project = excluded.project, kind = excluded.kind, model = excluded.model,
               functional_unit = excluded.functional_unit,
               functional_units = MAX(functional_units, excluded.functional_units)
             RETURNING id",
            params![job.id, job.scheduler, job.name, job.user, job.project, job.kind, job.model,
                    job.functional_unit, to_i64(job.functional_units)],
            |row| row.get(0),
        )?;
        let mut cpus = allocation.cpus.clone();
        cpus.sort_unstable();
        cpus.dedup();
        let end_ns = (allocation.end_ns != 0).then_some(allocation.end_ns);
        let held = (
            join_list(&allocation.gpus),
            join_list(&cpus),
            join_list(&mig),
        );
        let stored: Option<(Option<i64>, (String, String, String))> = transaction
            .prepare_cached(
                "SELECT end_ns, gpus, cpus, mig FROM allocations WHERE collector = ?1 AND job = ?2 AND start_ns = ?3",
            )?
            .query_row(params![collector, job_key, allocation.start_ns], |row| {
                Ok((row.get(0)?, (row.get(1)?, row.get(2)?, row.get(3)?)))
            })
            .optional()?;
        // Where the holding changed: from its start when new or holding something else, from
        // the earlier end when only the end moved.
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
    })();
    stored.map_err(|e| refusal("", field("job"), "storage", e.to_string()))
}

/// Data stored for a meter of `kind` changed its intervals from `from_ns` on: the collector's
/// built windows from there are to be rebuilt, or the settled site hours reopened.
fn mark_late(
    transaction: &Transaction<'_>,
    state: &mut CollectorState,
    collector: i64,
    kind: MeterKind,
    from_ns: i64,
    metrics: &AggregatorMetrics,
) -> Result<()> {
    if CollectorState::feeds_windows(kind) {
        state.touch_built(transaction, collector, from_ns, "readings", metrics)?;
    } else if CollectorState::is_site(kind)
        && ledger::site::reopen(transaction, from_ns, "site meter readings")?
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
    settings: &BatchSettings<'_>,
    compacted: bool,
) -> Result<Result<Option<i64>, Refusal>> {
    let field = |name: &str| format!("readings[].{name}");
    let at = reading.timestamp_ns;
    // Compacted neighbours become rows again; compaction packs them anew later.
    if let Some(hour) = series::expand_around(transaction, meter.key, at)? {
        meter.raw_from = Some(meter.raw_from.map_or(hour, |h| h.min(hour)));
    }
    let quality = match reading_quality(reading) {
        Ok(quality) => quality,
        Err(refusal) => return Ok(Err(refusal)),
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
        return Ok(Err(refusal(
            &reading.meter_id,
            field("timestamp_ns"),
            "not_after_previous",
            format!("{at} is not after the meter's last reading"),
        )));
    };
    let next_value = from_i64(next_value);
    if next_at == at {
        if next_value == reading.value {
            return Ok(Ok(None));
        }
        return Ok(Err(refusal(
            &reading.meter_id,
            field("value"),
            "conflicting_reading",
            format!(
                "{} differs from the value {next_value} stored for this meter at {at}",
                reading.value
            ),
        )));
    }
    let previous: Option<(i64, i64)> = transaction
        .prepare_cached(
            "SELECT ts_ns, value FROM readings WHERE meter = ?1 AND ts_ns < ?2 ORDER BY ts_ns DESC LIMIT 1",
        )?
        .query_row(params![meter.key, at], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    let previous = previous.map(|(at, value)| CounterSample {
        value: from_i64(value),
        at: UnixNanos(at),
    });
    let sample = CounterSample {
        value: reading.value,
        at: UnixNanos(at),
    };
    let next = CounterSample {
        value: next_value,
        at: UnixNanos(next_at),
    };
    let around = || match previous {
        Some(p) => format!(
            "the stored readings around it ({} at {}, {} at {})",
            p.value, p.at.0, next.value, next.at.0
        ),
        None => format!(
            "the stored reading after it ({} at {})",
            next.value, next.at.0
        ),
    };
    // Only inside a plain advance: across a wrap or reset the split would be a guess.
    if next_from.is_some() && next_step.is_some_and(|s| s & STEP_KIND_MASK != STEP_ADVANCED) {
        return Ok(Err(refusal(
            &reading.meter_id,
            field("timestamp_ns"),
            "out_of_order_across_reset",
            format!(
                "{at} falls inside an interval where the counter wrapped or reset; {}",
                around()
            ),
        )));
    }
    let advance = |from: CounterSample, to: CounterSample| -> Result<u64, Refusal> {
        match counter::step(from, to, meter.limits) {
            Ok(counter::CounterStep::Advanced { delta }) => Ok(delta),
            Ok(_) => Err(refusal(
                &reading.meter_id,
                field("value"),
                "out_of_order_inconsistent",
                format!("{} does not lie between {}", reading.value, around()),
            )),
            Err(error) => Err(refusal(
                &reading.meter_id,
                field(error.field()),
                error.code(),
                error.to_string(),
            )),
        }
    };
    let before = match previous.map(|p| advance(p, sample)).transpose() {
        Ok(before) => before,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let after = match advance(sample, next) {
        Ok(after) => after,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let flags = |span_ns: i64, compacted: bool| {
        let mut code = STEP_ADVANCED;
        if span_ns > settings.max_gap_ns {
            code |= STEP_GAP;
        }
        if compacted {
            code |= STEP_COMPACTED;
        }
        code
    };
    let method = (!reading.method.is_empty()).then_some(reading.method.as_str());
    transaction
        .prepare_cached(
            "INSERT INTO readings (meter, ts_ns, value, quality, method, from_ns, delta, step) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![
            meter.key,
            at,
            to_i64(reading.value),
            ledger::quality_code(quality),
            method,
            previous.map(|p| p.at.0),
            before.map(to_i64),
            previous.map(|p| flags(at - p.at.0, compacted)),
        ])?;
    let hour = series::hour_of(at);
    meter.raw_from = Some(meter.raw_from.map_or(hour, |h| h.min(hour)));
    let next_compacted = next_step.is_some_and(|s| s & STEP_COMPACTED != 0);
    transaction
        .prepare_cached(
            "UPDATE readings SET from_ns = ?3, delta = ?4, step = ?5 WHERE meter = ?1 AND ts_ns = ?2",
        )?
        .execute(params![
            meter.key,
            next_at,
            at,
            to_i64(after),
            flags(next_at - at, next_compacted)
        ])?;
    Ok(Ok(Some(previous.map_or(at, |p| p.at.0))))
}

/// How often a building pass that built nothing looks for site hours to settle.
const SITE_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Most intervals per energy meter a collector's next build may hold in memory (32 bytes
/// each): a few ticks past a window boundary is the usual, a meter far ahead of the others reads
/// the database instead.
const MAX_HELD_PER_METER: usize = 16;

/// How often the writer looks for hours to pack.
const COMPACTION_PLAN_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

impl WriterState {
    /// Finds the meters with hours old enough to pack: an hour is packed once it ended
    /// `compact_after_s` before what still reads its rows — the host's built windows for a
    /// meter that feeds them, the settled hours for a site meter, the last reading otherwise.
    fn plan_compaction(&mut self) -> Result<()> {
        self.next_compaction_plan = std::time::Instant::now() + COMPACTION_PLAN_EVERY;
        let settled = ledger::site::settled_until(&self.connection)?;
        self.compaction.clear();
        for (key, collector) in &self.collectors {
            for (meter_id, meter) in collector.meters.iter() {
                let reference = match meter.kind {
                    kind if CollectorState::is_site(kind) => settled,
                    kind if CollectorState::feeds_windows(kind) => collector.built_until,
                    _ => meter.last.map(|l| l.at.0),
                };
                let Some(reference) = reference else { continue };
                let cutoff = series::hour_of(reference.saturating_sub(self.compact_after_ns));
                if meter.raw_from.is_some_and(|from| from < cutoff) {
                    self.compaction.push((*key, meter_id.to_owned(), cutoff));
                }
            }
        }
        Ok(())
    }

    /// Packs planned hours until `deadline` (or all of them); returns the readings packed.
    fn compact(&mut self, deadline: Option<std::time::Instant>) -> Result<u64> {
        let transaction = self.connection.transaction()?;
        let mut packed = 0;
        'meters: while let Some((collector, meter_id, cutoff)) = self.compaction.pop() {
            let Some(state) = self.collectors.get_mut(&collector) else {
                continue;
            };
            state.settle_staged(&transaction, collector)?;
            // Like `raw_from` below, rebuilt from the database if the commit fails.
            state.staged = false;
            let Some(meter) = state.meters.get_mut(&meter_id) else {
                continue;
            };
            while let Some(hour) = meter.raw_from.filter(|&from| from < cutoff) {
                packed += series::compact_hour(&transaction, meter.key, hour)?;
                meter.raw_from = series::oldest_unpacked_hour(&transaction, meter.key)?;
                if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                    if meter.raw_from.is_some_and(|from| from < cutoff) {
                        self.compaction.push((collector, meter_id, cutoff));
                    }
                    break 'meters;
                }
            }
        }
        transaction.commit()?;
        self.metrics.readings_compacted.inc_by(packed);
        Ok(packed)
    }
}

/// Longest a collector's windows wait for building while batches keep arriving.
const MAX_BUILD_DELAY: std::time::Duration = std::time::Duration::from_secs(2);
/// Longest one building pass holds the writer before it commits waiting batches again.
const BUILD_SLICE: std::time::Duration = std::time::Duration::from_millis(50);

/// How batches are grouped into commits.
pub(super) struct GroupCommit {
    pub max_batches: usize,
    /// How long to wait for more when fewer than `max_batches` are waiting.
    pub wait: std::time::Duration,
}

/// Takes the batches waiting behind the first, up to `max_batches`; a request of another kind
/// ends the group and is left in `waiting`. Returns whether the queue ran dry.
fn take_waiting_batches(
    requests: &mut mpsc::Receiver<Request>,
    group: &mut Vec<(
        i64,
        Batch,
        tokio::sync::oneshot::Sender<Result<BatchOutcome>>,
    )>,
    waiting: &mut Option<Request>,
    max_batches: usize,
) -> bool {
    while group.len() < max_batches {
        match requests.try_recv() {
            Ok(Request::Batch {
                collector,
                batch,
                reply,
            }) => group.push((collector, batch, reply)),
            Ok(other) => {
                *waiting = Some(other);
                return false;
            }
            Err(_) => return true,
        }
    }
    false
}

/// The writer thread's loop.
pub(super) fn run(
    mut state: WriterState,
    mut requests: mpsc::Receiver<Request>,
    group_commit: &GroupCommit,
) {
    let mut waiting: Option<Request> = None;
    // Collectors with new readings whose windows are not built yet. Building waits until no
    // batch is queued (or MAX_BUILD_DELAY), and then holds the writer for BUILD_SLICE at most, so
    // it delays a commit, and hence an ack, by no more than that.
    let mut dirty: BTreeSet<i64> = BTreeSet::new();
    let mut dirty_since = std::time::Instant::now();
    loop {
        if !dirty.is_empty()
            && waiting.is_none()
            && (requests.is_empty() || dirty_since.elapsed() >= MAX_BUILD_DELAY)
            && let Err(error) =
                state.build_windows(&mut dirty, Some(std::time::Instant::now() + BUILD_SLICE))
        {
            error!(error = %error, "Building windows failed; they will be retried after the next commit.");
        }
        if waiting.is_none() && requests.is_empty() && dirty.is_empty() {
            if state.next_compaction_plan <= std::time::Instant::now()
                && let Err(error) = state.plan_compaction()
            {
                error!(error = %error, "Planning compaction failed.");
            }
            if !state.compaction.is_empty() {
                if let Err(error) = state.compact(Some(std::time::Instant::now() + BUILD_SLICE)) {
                    error!(error = %error, "Compaction failed; the rows stay as they are.");
                    state.compaction.clear();
                    if let Err(reload) = state.reload(None) {
                        error!(error = %reload, "Could not reload the ledger state.");
                    }
                }
                continue;
            }
        }
        let Some(first) = waiting.take().or_else(|| requests.blocking_recv()) else {
            break;
        };
        match first {
            Request::Hello { hello, reply } => {
                let _ = reply.send(state.hello(&hello));
            }
            Request::Compact { reply } => {
                let packed = state.plan_compaction().and_then(|()| state.compact(None));
                if packed.is_err() {
                    state.compaction.clear();
                    if let Err(reload) = state.reload(None) {
                        error!(error = %reload, "Could not reload the ledger state.");
                    }
                }
                let _ = reply.send(packed);
            }
            Request::BuildWindows { reply } => {
                dirty.clear();
                let mut all: BTreeSet<i64> = state.collectors.keys().copied().collect();
                let _ = reply.send(state.build_windows(&mut all, None));
            }
            Request::Batch {
                collector,
                batch,
                reply,
            } => {
                let mut group = vec![(collector, batch, reply)];
                let max = group_commit.max_batches;
                if take_waiting_batches(&mut requests, &mut group, &mut waiting, max)
                    && !group_commit.wait.is_zero()
                {
                    std::thread::sleep(group_commit.wait);
                    take_waiting_batches(&mut requests, &mut group, &mut waiting, max);
                }
                let touched = state.commit_group(group);
                if dirty.is_empty() {
                    dirty_since = std::time::Instant::now();
                }
                dirty.extend(touched);
            }
        }
    }
    if !dirty.is_empty()
        && let Err(error) = state.build_windows(&mut dirty, None)
    {
        error!(error = %error, "Building the last windows failed.");
    }
    // Leave the ledger laid out for whoever opens it next (a restart settles it anyway).
    if let Err(error) = state.settle_all() {
        error!(error = %error, "Laying out the staged readings failed; the next start will.");
    }
    info!("Ledger writer stopped.");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outlet(counter_max: u64, resolution: u64) -> MeterInfo {
        MeterInfo {
            meter_id: "pdu:outlet-1".into(),
            kind: MeterKind::OutletEnergy as i32,
            device: "outlet-1".into(),
            counter_max,
            resolution,
            ..MeterInfo::default()
        }
    }

    #[test]
    fn a_resolution_beyond_the_counter_range_is_refused_by_name() {
        let no_gpu = |_: &str| false;
        assert_eq!(meter_problem(&outlet(0, 360_000_000), no_gpu), None);
        assert_eq!(meter_problem(&outlet(1_000, 1_000), no_gpu), None);
        let (field, reason) = meter_problem(&outlet(1_000, 1_001), no_gpu).unwrap_or_default();
        assert_eq!(field, "resolution");
        assert!(reason.contains("counter_max 1000"), "{reason}");
    }

    #[test]
    fn a_coarse_outlet_may_move_a_step_within_a_second() {
        let limits = limits_for(
            MeterKind::OutletEnergy,
            0,
            360_000_000,
            &PowerLimits::default(),
        );
        let sample = |steps: u64, seconds: i64| CounterSample {
            value: steps * 360_000_000,
            at: UnixNanos(seconds * 1_000_000_000),
        };
        assert!(footprint_core::counter::step(sample(5, 0), sample(6, 1), limits).is_ok());
        let unannounced = limits_for(MeterKind::OutletEnergy, 0, 0, &PowerLimits::default());
        assert!(footprint_core::counter::step(sample(5, 0), sample(6, 1), unannounced).is_err());
    }
}
