//! What the writer does between commits: build the windows that became ready, settle the site's
//! hours, and pack old hours of readings into chunks. The scheduler decides when each runs and
//! for how long, so that none of it holds a commit (and its acks) back for more than a slice.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use footprint_core::UnixNanos;
use footprint_core::window::WindowLength;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use tracing::info;

use super::view::CollectorState;
use crate::Result;
use crate::config::AggregatorConfig;
use crate::ledger::{self, BuildProgress, HostLayout, IntervalsByMeter, UnbuiltIntervals};
use crate::metrics::AggregatorMetrics;
use crate::settings::LedgerSettings;
use crate::tables::{series, staged};

/// Longest a collector's windows wait for building while batches keep arriving.
const MAX_BUILD_DELAY: Duration = Duration::from_secs(2);
/// How often a building pass that built nothing looks for site hours to settle.
const SITE_CHECK_EVERY: Duration = Duration::from_secs(1);
/// How often the writer looks for hours to pack.
const COMPACTION_PLAN_EVERY: Duration = Duration::from_secs(10);
/// Hours of window detail a settling pass ages beyond those it settled.
const AGED_HOURS_PER_PASS: i64 = 4;
/// Most intervals per energy meter a collector's next build may hold in memory (32 bytes
/// each): a few ticks past a window boundary is the usual, a meter far ahead of the others reads
/// the database instead.
const MAX_HELD_PER_METER: usize = 16;

#[derive(Debug)]
pub(super) struct Scheduler {
    window: WindowLength,
    settings: LedgerSettings,
    /// How long the site waits for a silent collector (`facility.max_wait_s`).
    max_wait: Duration,
    /// Readings are packed into chunks once their hour ended this long before what still
    /// needs them (`compact_after_s`).
    compact_after_ns: i64,
    /// Collectors with new readings whose windows are not built yet, and since when.
    dirty: BTreeSet<i64>,
    dirty_since: Instant,
    /// When a building pass that built nothing next looks for site hours to settle.
    next_site_check: Instant,
    /// Meters with hours to pack, and the hour to pack them up to: (collector, meter, cutoff).
    compaction: Vec<(i64, String, i64)>,
    next_compaction_plan: Instant,
}

impl Scheduler {
    pub fn new(config: &AggregatorConfig, settings: LedgerSettings) -> Self {
        Self {
            window: WindowLength::from_seconds(config.window_seconds).unwrap_or_default(),
            settings,
            max_wait: Duration::from_secs(config.facility.max_wait_s),
            compact_after_ns: i64::try_from(config.compact_after_s)
                .unwrap_or(i64::MAX / 2_000_000_000)
                .saturating_mul(1_000_000_000),
            dirty: BTreeSet::new(),
            dirty_since: Instant::now(),
            next_site_check: Instant::now(),
            compaction: Vec::new(),
            // At the first idle moment: a restarted aggregator catches up at once.
            next_compaction_plan: Instant::now(),
        }
    }

    /// Batches of `collectors` were committed: their windows may have become ready.
    pub fn committed(&mut self, collectors: BTreeSet<i64>) {
        if self.dirty.is_empty() {
            self.dirty_since = Instant::now();
        }
        self.dirty.extend(collectors);
    }

    /// Whether windows wait to be built, and it is time: no batch is queued (`queue_empty`), or
    /// they have waited `MAX_BUILD_DELAY` for a pause.
    pub fn should_build(&self, queue_empty: bool) -> bool {
        !self.dirty.is_empty() && (queue_empty || self.dirty_since.elapsed() >= MAX_BUILD_DELAY)
    }

    pub fn is_idle(&self) -> bool {
        self.dirty.is_empty()
    }

    /// Builds the ready windows of the collectors that had commits, until `deadline` (or all of
    /// them), then settles the site's hours if they may have become ready. A collector not done
    /// by then stays for the next pass, so a fleet crossing a window boundary together does not
    /// hold every commit back at once.
    ///
    /// # Errors
    /// A database error; the writer reloads its view then.
    pub fn build_pending(
        &mut self,
        connection: &mut Connection,
        collectors: &mut HashMap<i64, CollectorState>,
        metrics: &AggregatorMetrics,
        deadline: Option<Instant>,
    ) -> Result<u64> {
        let mut built = 0;
        while let Some(collector) = self.dirty.pop_first() {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                self.dirty.insert(collector);
                return Ok(built);
            }
            if let Some(state) = collectors.get_mut(&collector) {
                built += self.build_collector(connection, state, collector, metrics)?;
            }
        }
        // An hour of the site becomes ready when windows were built, when site meters report,
        // or when a collector has been silent long enough: after a build or site readings, and
        // otherwise once a second (every pass would look at every collector after each commit).
        let site_readings = collectors
            .values()
            .any(|state| state.cache.has_staged() && state.meters.has_site_meter());
        if built == 0
            && !site_readings
            && deadline.is_some()
            && Instant::now() < self.next_site_check
        {
            return Ok(built);
        }
        self.settle_site_hours(connection, collectors, metrics)?;
        Ok(built)
    }

    /// Builds every collector's ready windows and settles the site's hours, now.
    ///
    /// # Errors
    /// A database error; the writer reloads its view then.
    pub fn build_all(
        &mut self,
        connection: &mut Connection,
        collectors: &mut HashMap<i64, CollectorState>,
        metrics: &AggregatorMetrics,
    ) -> Result<u64> {
        self.dirty = collectors.keys().copied().collect();
        self.build_pending(connection, collectors, metrics, None)
    }

    /// Whether `state` may have a window ready: its first unbuilt window is where the last build
    /// ended or, before any, the window of its oldest energy reading, and nothing in it is ready
    /// until the slowest energy meter has left it. Most passes find a collector still inside:
    /// nothing to build, so no transaction.
    fn may_have_ready_window(&self, state: &CollectorState) -> bool {
        if state.rebuild_from.is_some() {
            return true;
        }
        let first_unbuilt = state.built_until.or_else(|| {
            state
                .oldest_ns
                .map(|o| self.window.start_of(UnixNanos(o)).0)
        });
        let inside =
            |at: UnixNanos| first_unbuilt.is_some_and(|first| self.window.start_of(at).0 <= first);
        // The newest energy reading is at or after the slowest meter's last one, so it tells
        // without visiting each meter.
        if state
            .newest_ns
            .is_some_and(|newest| inside(UnixNanos(newest)))
        {
            return false;
        }
        let watermark = state
            .meters
            .host_energy()
            .filter_map(|m| m.last.map(|s| s.at))
            .min();
        !watermark.is_none_or(inside)
    }

    /// Builds (or rebuilds, after late data) one collector's ready windows in one transaction.
    fn build_collector(
        &self,
        connection: &mut Connection,
        state: &mut CollectorState,
        collector: i64,
        metrics: &AggregatorMetrics,
    ) -> Result<u64> {
        if !self.may_have_ready_window(state) {
            return Ok(0);
        }
        let layout = HostLayout {
            collector,
            meters: state
                .meters
                .host_energy()
                .map(|m| m.layout_meter())
                .collect(),
            usage: state.meters.usage().map(|m| m.usage_meter()).collect(),
            built_until: state.built_until,
        };
        let transaction = connection.transaction()?;
        // What the last build left over, with what settling now lays out, is what this one
        // reads; unless it starts elsewhere (a rebuild).
        let from_ns = state
            .rebuild_from
            .is_none()
            .then_some(state.built_until)
            .flatten();
        let (staged, held) = state.cache.take_for_build(from_ns);
        let mut laid_out = IntervalsByMeter::default();
        if staged {
            staged::settle_visiting(&transaction, Some(collector), |meter, readings| {
                if held.is_some() {
                    laid_out.push_readings(meter, readings);
                }
            })?;
        }
        let held = held.map(|held| held.followed_by(&layout, &laid_out));
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
                let (rebuilt, first_changed, reason) =
                    self.rebuild(&transaction, state, &layout, from_ns, metrics)?;
                (rebuilt, first_changed, Some(reason))
            }
        };
        // Windows new or changed in hours the site already settled (a host that fell silent
        // and came back, or late data) reopen them.
        if let Some(first) = first_changed {
            let reason = match &late_reason {
                Some(reason) => format!("{reason} on {}", state.name),
                None => format!("late windows of {}", state.name),
            };
            if ledger::site::reopen(&transaction, UnixNanos(first), &reason)?
                && late_reason.is_none()
            {
                metrics.late("windows");
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
        state
            .cache
            .keep(unbuilt.filter(|held| held.len() <= MAX_HELD_PER_METER * layout.meters.len()));
        state.rebuild_from = None;
        state.built_until = progress.built_until.or(state.built_until);
        metrics.windows_built.inc_by(progress.windows);
        Ok(progress.windows)
    }

    /// Rebuilds a collector's windows from `from_ns`, where late data touched them. Returns what
    /// was built, where it first changed the site's hours, and why.
    fn rebuild(
        &self,
        transaction: &Transaction<'_>,
        state: &CollectorState,
        layout: &HostLayout,
        from_ns: i64,
        metrics: &AggregatorMetrics,
    ) -> Result<(BuildProgress, Option<i64>, String)> {
        let reason: Option<String> = transaction
            .query_row(
                "DELETE FROM rebuild_pending WHERE collector = ?1 RETURNING reason",
                [layout.collector],
                |row| row.get(0),
            )
            .optional()?;
        let reason = format!("late {}", reason.as_deref().unwrap_or("data"));
        let rebuilt = ledger::rebuild_windows(
            transaction,
            layout,
            self.window,
            &self.settings,
            UnixNanos(from_ns),
            &reason,
            UnixNanos(super::now_ns()),
        )?;
        info!(collector = %state.name, from_ns, revised = rebuilt.revised, %reason, "Rebuilt windows after late data.");
        metrics.windows_revised.inc_by(rebuilt.revised);
        Ok((rebuilt.build, rebuilt.first_changed, reason))
    }

    /// Settles the site's hours that every host and site meter still heard from has passed.
    /// They read the site meters' readings, so those are laid out first.
    fn settle_site_hours(
        &mut self,
        connection: &mut Connection,
        collectors: &mut HashMap<i64, CollectorState>,
        metrics: &AggregatorMetrics,
    ) -> Result<()> {
        self.next_site_check = Instant::now() + SITE_CHECK_EVERY;
        let silent: BTreeSet<i64> = collectors
            .iter()
            .filter(|(_, state)| state.heard_at.elapsed() > self.max_wait)
            .map(|(key, _)| *key)
            .collect();
        let transaction = connection.transaction()?;
        for (key, state) in collectors.iter_mut() {
            if state.meters.has_site_meter() {
                state.cache.lay_out(&transaction, *key)?;
            }
        }
        let settled = ledger::site::settle_ready_hours(
            &transaction,
            &self.settings,
            self.window,
            &silent,
            UnixNanos(super::now_ns()),
        )?;
        // As many hours as settled, and a few more of a backlog (a ledger just migrated, or a
        // shorter `window_detail_days`), so that no pass deletes a month of rows at once.
        let aged = ledger::detail::age_detail(
            &transaction,
            &self.settings,
            settled.hours as i64 + AGED_HOURS_PER_PASS,
        )?;
        transaction.commit()?;
        metrics.hours_aged.inc_by(aged as u64);
        metrics.hours_settled.inc_by(settled.hours);
        metrics.hours_revised.inc_by(settled.revised);
        Ok(())
    }

    /// Whether hours wait to be packed, or it is time to look for them.
    pub fn has_packing_due(&self) -> bool {
        self.has_planned_packing() || self.next_compaction_plan <= Instant::now()
    }

    /// Whether planned hours wait to be packed.
    pub fn has_planned_packing(&self) -> bool {
        !self.compaction.is_empty()
    }

    /// Packs planned hours until `deadline` (or every hour old enough, planned anew, when there
    /// is none); returns the readings packed.
    ///
    /// # Errors
    /// A database error: nothing of this pass is packed, the plan is dropped, and the writer
    /// reloads its view.
    pub fn pack(
        &mut self,
        connection: &mut Connection,
        collectors: &mut HashMap<i64, CollectorState>,
        metrics: &AggregatorMetrics,
        deadline: Option<Instant>,
    ) -> Result<u64> {
        if deadline.is_none() || self.next_compaction_plan <= Instant::now() {
            self.plan_packing(connection, collectors)?;
        }
        let packed = self.pack_planned(connection, collectors, deadline);
        if packed.is_err() {
            self.compaction.clear();
        }
        let packed = packed?;
        metrics.readings_compacted.inc_by(packed);
        Ok(packed)
    }

    /// Finds the meters with hours old enough to pack: an hour is packed once it ended
    /// `compact_after_s` before what still reads its rows — the host's built windows for a
    /// meter that feeds them, the settled hours for a site meter, the last reading otherwise.
    fn plan_packing(
        &mut self,
        connection: &Connection,
        collectors: &HashMap<i64, CollectorState>,
    ) -> Result<()> {
        self.next_compaction_plan = Instant::now() + COMPACTION_PLAN_EVERY;
        let settled = ledger::site::settled_until(connection)?.map(|until| until.0);
        self.compaction.clear();
        for (key, collector) in collectors {
            for (meter_id, meter) in collector.meters.iter() {
                let reference = if meter.role.is_site() {
                    settled
                } else if meter.role.feeds_windows() {
                    collector.built_until
                } else {
                    meter.last.map(|l| l.at.0)
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

    fn pack_planned(
        &mut self,
        connection: &mut Connection,
        collectors: &mut HashMap<i64, CollectorState>,
        deadline: Option<Instant>,
    ) -> Result<u64> {
        if self.compaction.is_empty() {
            return Ok(0);
        }
        let transaction = connection.transaction()?;
        let mut packed = 0;
        'meters: while let Some((collector, meter_id, cutoff)) = self.compaction.pop() {
            let Some(state) = collectors.get_mut(&collector) else {
                continue;
            };
            state.cache.lay_out(&transaction, collector)?;
            let Some(meter) = state.meters.get_mut(&meter_id) else {
                continue;
            };
            while let Some(hour) = meter.raw_from.filter(|&from| from < cutoff) {
                packed += series::compact_hour(&transaction, meter.key, hour)?;
                meter.raw_from = series::oldest_unpacked_hour(&transaction, meter.key)?;
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    if meter.raw_from.is_some_and(|from| from < cutoff) {
                        self.compaction.push((collector, meter_id, cutoff));
                    }
                    break 'meters;
                }
            }
        }
        transaction.commit()?;
        Ok(packed)
    }
}
