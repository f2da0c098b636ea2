//! The writer thread: takes requests in order, commits batches in groups (acknowledging each only
//! once its group is durable), and between commits lets the [`Scheduler`] build windows, settle
//! the site's hours and pack readings.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use footprint_proto::v1::{Batch, Hello};
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info};

use super::batch::{self, BatchChecks, upsert_meter};
use super::scheduler::Scheduler;
use super::validate;
use super::view::{self, CollectorState};
use super::{BatchOutcome, HelloAccepted, Request, now_ns};
use crate::config::{AggregatorConfig, PowerLimits};
use crate::ledger;
use crate::metrics::AggregatorMetrics;
use crate::settings::LedgerSettings;
use crate::tables::{schema, staged};
use crate::{Error, Result};

/// Longest one building or packing pass holds the writer before it commits waiting batches.
const BUILD_SLICE: Duration = Duration::from_millis(50);

/// A batch waiting for its group's commit, and where its outcome goes.
type Queued = (i64, Batch, oneshot::Sender<Result<BatchOutcome>>);

pub(super) struct WriterState {
    connection: Connection,
    max_future_ns: i64,
    max_gap_ns: i64,
    limits: PowerLimits,
    collectors: HashMap<i64, CollectorState>,
    by_name: HashMap<String, i64>,
    metrics: Arc<AggregatorMetrics>,
    scheduler: Scheduler,
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
        transaction.execute("DELETE FROM residual_mix", [])?;
        if let Some(mg) = settings.residual_mg_per_kwh {
            let carbon = &config.carbon;
            transaction.execute(
                "INSERT INTO residual_mix (only, mg_per_kwh, source, year) VALUES (1, ?1, ?2, ?3)",
                params![
                    mg.0 as i64,
                    carbon.residual_mix_source,
                    carbon.residual_mix_year
                ],
            )?;
        }
        let text = toml::to_string(config)
            .map_err(|error| crate::Error::Server(format!("writing the config down: {error}")))?;
        transaction.execute(
            "INSERT OR REPLACE INTO aggregator_config (only, toml, written_ns) VALUES (1, ?1, ?2)",
            params![text, now_ns()],
        )?;
        for place in &config.placement {
            transaction.execute(
                "INSERT INTO placement (host, hall, rack) VALUES (?1, ?2, ?3)",
                params![place.host, place.hall, place.rack],
            )?;
        }
        transaction.commit()?;
        let feeds = config
            .carbon
            .intensity_files
            .iter()
            .map(|path| (path, None));
        let stated = config
            .carbon
            .feeds
            .iter()
            .map(|feed| (&feed.path, Some(feed.hour_convention)));
        for (file, convention) in feeds.chain(stated) {
            let (_, feed) = ledger::intensity::import(&connection, file, convention, now_ns())?;
            info!(file = %file.display(), format = feed.layout, hour_convention = feed.hour_convention.name(), sha256 = %feed.sha256, hours = feed.hours, gaps = feed.gaps, "Imported grid intensity.");
        }
        let seconds_to_ns =
            |s: u64| i64::try_from(s).unwrap_or(i64::MAX / 2_000_000_000) * 1_000_000_000;
        let mut state = Self {
            connection,
            max_future_ns: seconds_to_ns(config.max_future_skew_s),
            max_gap_ns: seconds_to_ns(config.max_sample_gap_s),
            limits: config.limits.clone(),
            collectors: HashMap::new(),
            by_name: HashMap::new(),
            metrics,
            scheduler: Scheduler::new(config, settings),
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
        for (key, state) in view::load(&self.connection, only, &self.limits)? {
            self.by_name.insert(state.name.clone(), key);
            self.collectors.insert(key, state);
        }
        Ok(())
    }

    /// After a failed transaction the in-memory view may hold what was rolled back.
    fn reload_after(&mut self, what: &str, error: &Error) {
        error!(error = %error, "{what} failed; the ledger state is reloaded from the database.");
        if let Err(reload) = self.reload(None) {
            error!(error = %reload, "Could not reload the ledger state.");
        }
    }

    /// Writes of tables the batches do not touch, committed together, each in a savepoint: a
    /// write that fails is rolled back alone and answered with its error.
    fn write_others(
        &mut self,
        group: Vec<(super::OtherWrite, tokio::sync::oneshot::Sender<Result<()>>)>,
    ) {
        let mut answers = Vec::with_capacity(group.len());
        let committed = (|| -> Result<()> {
            let mut transaction = self.connection.transaction()?;
            for (write, reply) in group {
                let mut savepoint = transaction.savepoint()?;
                let outcome = write(&savepoint);
                if outcome.is_ok() {
                    savepoint.commit()?;
                } else {
                    savepoint.rollback()?;
                }
                answers.push((reply, outcome));
            }
            transaction.commit()?;
            Ok(())
        })();
        for (reply, outcome) in answers {
            let _ = reply.send(match &committed {
                Ok(()) => outcome,
                Err(error) => Err(crate::Error::Server(format!("committing: {error}"))),
            });
        }
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
            hello.meters.iter().any(|m| {
                m.kind == footprint_proto::v1::MeterKind::GpuEnergy as i32 && m.device == device
            })
        };
        for (index, meter) in hello.meters.iter().enumerate() {
            if let Err(refused) = validate::check_meter(meter, is_gpu) {
                let field = refused.field;
                return Err(refuse(format!(
                    "hello.meters[{index}].{field}: {}",
                    refused.detail
                )));
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

    /// Commits a group of batches in one transaction, replies to each, and hands the collectors
    /// they came from to the scheduler.
    fn commit_group(&mut self, group: Vec<Queued>) {
        let now = now_ns();
        let mut touched = BTreeSet::new();
        let checks = BatchChecks {
            max_future_ns: self.max_future_ns,
            max_gap_ns: self.max_gap_ns,
            limits: &self.limits,
            metrics: &self.metrics,
        };
        let outcome = (|| -> Result<Vec<Result<BatchOutcome>>> {
            let transaction = self.connection.transaction()?;
            let mut outcomes = Vec::with_capacity(group.len());
            for (collector, batch, _) in &group {
                outcomes.push(batch::apply(
                    &transaction,
                    &mut self.collectors,
                    &checks,
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
                self.scheduler.committed(touched);
            }
            Err(error) => {
                let batches = group.len();
                self.reload_after(&format!("Committing {batches} batches"), &error);
                for (_, _, reply) in group {
                    let _ = reply.send(Err(Error::Server(format!("commit failed: {error}"))));
                }
            }
        }
    }

    /// Builds what the scheduler has pending, for a slice at most (all of it without one).
    fn build(&mut self, slice: Option<Duration>) {
        let deadline = slice.map(|slice| Instant::now() + slice);
        let built = self.scheduler.build_pending(
            &mut self.connection,
            &mut self.collectors,
            &self.metrics,
            deadline,
        );
        if let Err(error) = built {
            self.reload_after("Building windows", &error);
        }
    }

    /// Packs readings for a slice at most (or everything old enough, without one).
    fn pack(&mut self, slice: Option<Duration>) -> Result<u64> {
        let deadline = slice.map(|slice| Instant::now() + slice);
        let packed = self.scheduler.pack(
            &mut self.connection,
            &mut self.collectors,
            &self.metrics,
            deadline,
        );
        if let Err(error) = &packed {
            self.reload_after("Packing readings", error);
        }
        packed
    }

    /// Lays out every collector's staged readings, for whoever opens the ledger next (the writer
    /// is stopping: its view is not used again). One collector at a time, so that a stop after a
    /// long backlog holds one collector's readings in memory, not all of them.
    fn lay_out_all(&mut self) -> Result<()> {
        let transaction = self.connection.transaction()?;
        let collectors: Vec<i64> = transaction
            .prepare("SELECT DISTINCT collector FROM staged_readings")?
            .query_map([], |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for collector in collectors {
            staged::settle(&transaction, Some(collector))?;
        }
        transaction.commit()?;
        Ok(())
    }
}

/// How batches are grouped into commits.
pub(super) struct GroupCommit {
    pub max_batches: usize,
    /// How long to wait for more when fewer than `max_batches` are waiting.
    pub wait: Duration,
}

/// Takes the batches waiting behind the first, up to `max_batches`; a request of another kind
/// ends the group and is left in `waiting`. Returns whether the queue ran dry.
fn take_waiting_batches(
    requests: &mut mpsc::Receiver<Request>,
    group: &mut Vec<Queued>,
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

/// The writer thread's loop. Building waits until no batch is queued (or the scheduler's
/// longest delay), and then holds the writer for `BUILD_SLICE` at most, so it delays a commit,
/// and hence an ack, by no more than that; packing runs only when nothing else waits.
pub(super) fn run(
    mut state: WriterState,
    mut requests: mpsc::Receiver<Request>,
    group_commit: &GroupCommit,
) {
    let mut waiting: Option<Request> = None;
    loop {
        if waiting.is_none() && state.scheduler.should_build(requests.is_empty()) {
            state.build(Some(BUILD_SLICE));
        }
        if waiting.is_none()
            && requests.is_empty()
            && state.scheduler.is_idle()
            && state.scheduler.has_packing_due()
        {
            // A failure is logged and the view reloaded; the rows stay as they are.
            let _ = state.pack(Some(BUILD_SLICE));
            if state.scheduler.has_planned_packing() {
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
                let _ = reply.send(state.pack(None));
            }
            Request::Write { write, reply } => {
                // Writes queued behind it commit with it (a burst of cap outcomes is one fsync);
                // each runs in a savepoint of its own, so one that fails changes nothing else.
                let mut group = vec![(write, reply)];
                while group.len() < 4_096 {
                    match requests.try_recv() {
                        Ok(Request::Write { write, reply }) => group.push((write, reply)),
                        Ok(other) => {
                            waiting = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                state.write_others(group);
            }
            Request::BuildWindows { reply } => {
                let built = state.scheduler.build_all(
                    &mut state.connection,
                    &mut state.collectors,
                    &state.metrics,
                );
                if let Err(error) = &built {
                    state.reload_after("Building windows", error);
                }
                let _ = reply.send(built);
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
                state.commit_group(group);
            }
        }
    }
    if !state.scheduler.is_idle() {
        state.build(None);
    }
    // Leave the ledger laid out for whoever opens it next (a restart settles it anyway).
    if let Err(error) = state.lay_out_all() {
        error!(error = %error, "Laying out the staged readings failed; the next start will.");
    }
    info!("Ledger writer stopped.");
}
