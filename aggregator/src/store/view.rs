//! The writer's view of each collector in memory: its meters with their last readings, how far
//! its windows are built, and what its next build may read from memory instead of the database
//! ([`BuildCache`]). The database is the truth; [`load`] rebuilds any part of the view from it.

use std::collections::HashMap;

use footprint_core::UnixNanos;
use footprint_core::counter::{CounterLimits, CounterSample};
use footprint_proto::v1::MeterKind;
use rusqlite::{Connection, Transaction};

use super::validate::limits_for;
use crate::Result;
use crate::codec::{MeterRole, split_cpus};
use crate::config::PowerLimits;
use crate::ledger::{LayoutMeter, UnbuiltIntervals, UsageMeter};
use crate::tables::{series, staged};

#[derive(Debug)]
pub(super) struct MeterState {
    pub key: i64,
    pub kind: MeterKind,
    pub role: MeterRole,
    pub device: String,
    pub cpus: Vec<u32>,
    pub model: String,
    pub job: String,
    pub limits: CounterLimits,
    pub last: Option<CounterSample>,
    /// The hour of the oldest reading not packed yet (staged, a row or in a plain chunk).
    pub raw_from: Option<i64>,
}

impl MeterState {
    /// An energy meter as window building sees it.
    pub fn layout_meter(&self) -> LayoutMeter {
        LayoutMeter {
            key: self.key,
            kind: self.kind,
            device: self.device.clone(),
            cpus: self.cpus.clone(),
            model: self.model.clone(),
            last_ns: self.last.map(|s| s.at.0),
        }
    }

    /// A usage meter as window building sees it.
    pub fn usage_meter(&self) -> UsageMeter {
        UsageMeter {
            key: self.key,
            kind: self.kind,
            device: self.device.clone(),
            job: self.job.clone(),
        }
    }
}

/// A collector's meters, by id. Every reading names its meter, and with thousands of meters per
/// collector the hash-table probe for each was a tenth of the writer's time under load (cache
/// misses, `BENCHMARKS.md`). Readings come in the order the collector lists its meters, snapshot
/// after snapshot, so [`MeterTable::find_after`] first tries the meter after the one found last,
/// and the ids lie back to back in one string, where that comparison finds them in order.
#[derive(Debug, Default)]
pub(super) struct MeterTable {
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
    pub fn insert(&mut self, id: String, meter: MeterState) {
        self.site_meters += usize::from(meter.role.is_site());
        match self.positions.get(&id) {
            Some(&position) => {
                self.site_meters -= usize::from(self.meters[position].role.is_site());
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

    pub fn get(&self, id: &str) -> Option<&MeterState> {
        self.positions
            .get(id)
            .map(|&position| &self.meters[position])
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut MeterState> {
        let position = *self.positions.get(id)?;
        Some(&mut self.meters[position])
    }

    /// The meter `id` (as a reading carries it: bytes that no announced id matches unless they
    /// are its UTF-8), trying the one after position `cursor` first; `cursor` moves to it.
    pub fn find_after(&mut self, id: &[u8], cursor: &mut usize) -> Option<&mut MeterState> {
        let next = cursor.wrapping_add(1);
        let position = if next < self.meters.len() && self.id(next).as_bytes() == id {
            next
        } else {
            *self.positions.get(std::str::from_utf8(id).ok()?)?
        };
        *cursor = position;
        Some(&mut self.meters[position])
    }

    pub fn has_site_meter(&self) -> bool {
        self.site_meters > 0
    }

    /// Whether `device` is one of this collector's GPUs (has a GPU energy meter).
    pub fn is_gpu(&self, device: &str) -> bool {
        self.values()
            .any(|m| m.kind == MeterKind::GpuEnergy && m.device == device)
    }

    pub fn values(&self) -> impl Iterator<Item = &MeterState> + Clone {
        self.meters.iter()
    }

    /// The meters whose energy the host's windows share out.
    pub fn host_energy(&self) -> impl Iterator<Item = &MeterState> + Clone {
        self.values().filter(|m| m.role.is_host_energy())
    }

    /// The meters of what jobs used (CPU time, GPU busy time), which split shared energy.
    pub fn usage(&self) -> impl Iterator<Item = &MeterState> {
        self.values().filter(|m| m.role == MeterRole::Usage)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &MeterState)> {
        self.meters
            .iter()
            .enumerate()
            .map(|(position, meter)| (self.id(position), meter))
    }
}

/// What a collector's next build may take from memory: whether some of its readings are staged
/// (not laid out by meter yet, `tables::staged`), and the intervals its last build left over
/// (`ledger::unbuilt`).
///
/// The held intervals are dropped in one place, [`BuildCache::forget`], which everything that
/// changes what the host's next build would read other than that build itself: settling for
/// another reader ([`BuildCache::lay_out`]: site hours, packing), a late reading
/// ([`BuildCache::changing`]), a meter announced again ([`BuildCache::meter_announced_again`]). A rebuild, which starts elsewhere, does not take
/// them ([`BuildCache::take_for_build`]). A transaction that fails after any of these makes the
/// writer reload its whole view from the database, so no copy outlives a rollback.
#[derive(Debug, Default)]
pub(super) struct BuildCache {
    staged: bool,
    unbuilt: Option<UnbuiltIntervals>,
}

impl BuildCache {
    /// A record of this collector's readings was staged.
    pub fn staged(&mut self) {
        self.staged = true;
    }

    pub fn has_staged(&self) -> bool {
        self.staged
    }

    /// Lays out what is staged (inside `transaction`) for a reader other than the next build,
    /// which then reads the database.
    pub fn lay_out(&mut self, transaction: &Transaction<'_>, collector: i64) -> Result<()> {
        if std::mem::take(&mut self.staged) {
            staged::settle(transaction, Some(collector))?;
            self.forget();
        }
        Ok(())
    }

    /// The host's laid-out readings are about to change (a late reading placed among them):
    /// what is staged is laid out first, and the next build reads the database.
    pub fn changing(&mut self, transaction: &Transaction<'_>, collector: i64) -> Result<()> {
        self.lay_out(transaction, collector)?;
        self.forget();
        Ok(())
    }

    /// A meter was announced again, maybe as another kind or device: what the next build reads
    /// may change, so it reads the database (and lays out what is staged itself).
    pub fn meter_announced_again(&mut self) {
        self.forget();
    }

    fn forget(&mut self) {
        self.unbuilt = None;
    }

    /// For a build starting at `from_ns`: whether readings are staged (the build lays them out
    /// itself) and the held intervals if they start there.
    pub fn take_for_build(&mut self, from_ns: Option<i64>) -> (bool, Option<UnbuiltIntervals>) {
        let held = self
            .unbuilt
            .take()
            .filter(|held| Some(held.from_ns()) == from_ns);
        (std::mem::take(&mut self.staged), held)
    }

    /// What a build left over for the next one.
    pub fn keep(&mut self, unbuilt: Option<UnbuiltIntervals>) {
        self.unbuilt = unbuilt;
    }
}

#[derive(Debug)]
pub(super) struct CollectorState {
    pub name: String,
    pub last_seq: u64,
    pub meters: MeterTable,
    pub built_until: Option<i64>,
    /// Late data touched built windows from here on (mirrors `rebuild_pending`).
    pub rebuild_from: Option<i64>,
    /// When the writer last heard from the collector (a Hello or a batch), or started.
    pub heard_at: std::time::Instant,
    /// The time of its newest energy meter reading accepted since the writer started (or
    /// reloaded it).
    pub newest_ns: Option<i64>,
    /// While none of its windows is built: the time of its oldest energy meter reading (or
    /// earlier), where its first window will start.
    pub oldest_ns: Option<i64>,
    pub cache: BuildCache,
}

impl CollectorState {
    /// A reading at `at` of a meter of `role` was accepted in order.
    pub fn accepted(&mut self, role: MeterRole, at: i64) {
        if role.is_host_energy() {
            self.newest_ns = self.newest_ns.max(Some(at));
            if self.built_until.is_none() {
                self.oldest_ns = Some(self.oldest_ns.map_or(at, |o| o.min(at)));
            }
        }
    }
}

/// The collectors as the database holds them: one (`only`) or all, each with its meters and
/// their last readings. What is staged must be laid out first.
pub(super) fn load(
    connection: &Connection,
    only: Option<i64>,
    limits: &PowerLimits,
) -> Result<HashMap<i64, CollectorState>> {
    let mut collectors = HashMap::new();
    let mut statement = connection.prepare(
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
        collectors.insert(
            key,
            CollectorState {
                name,
                last_seq: last_seq as u64,
                meters: MeterTable::default(),
                built_until,
                rebuild_from,
                heard_at: std::time::Instant::now(),
                newest_ns: None,
                oldest_ns: None,
                cache: BuildCache::default(),
            },
        );
    }
    let mut statement = connection.prepare(
        "SELECT m.id, m.collector, m.meter_id, m.kind, m.device, m.counter_max, m.cpus, m.model, m.job, m.resolution
         FROM meters m WHERE ?1 IS NULL OR m.collector = ?1",
    )?;
    let rows = statement.query_map([only], |row| {
        Ok((
            (row.get::<_, i64>(0)?, row.get::<_, i64>(1)?),
            row.get::<_, String>(2)?,
            row.get::<_, i32>(3)?,
            (row.get::<_, String>(4)?, row.get::<_, String>(6)?),
            (row.get::<_, String>(7)?, row.get::<_, String>(8)?),
            // SQLite integers are signed; counters above 2^63 are stored bit for bit.
            (row.get::<_, i64>(5)? as u64, row.get::<_, i64>(9)? as u64),
        ))
    })?;
    for row in rows {
        let ((key, collector), meter_id, kind, (device, cpus), (model, job), (max, resolution)) =
            row?;
        let Some(state) = collectors.get_mut(&collector) else {
            continue;
        };
        let kind = MeterKind::try_from(kind).unwrap_or(MeterKind::Unspecified);
        let last = series::last_reading(connection, key)?.map(|(at, value)| CounterSample {
            value: value as u64,
            at: UnixNanos(at),
        });
        state.meters.insert(
            meter_id,
            MeterState {
                key,
                kind,
                role: MeterRole::of(kind),
                device,
                cpus: split_cpus(&cpus),
                model,
                job,
                limits: limits_for(kind, max, resolution, limits),
                last,
                raw_from: series::oldest_unpacked_hour(connection, key)?,
            },
        );
    }
    for state in collectors.values_mut() {
        if state.built_until.is_none() {
            let energy: Vec<i64> = state.meters.host_energy().map(|m| m.key).collect();
            state.oldest_ns = series::first_ts(connection, &energy)?;
        }
    }
    Ok(collectors)
}
