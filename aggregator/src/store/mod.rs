//! The ledger's engine: one writer thread owns the SQLite connection; everything that changes the
//! ledger goes through it as a request, so validation against each meter's previous reading and
//! the commit happen in one place, in order.
//!
//! Guarantee: a [`BatchOutcome`] is sent only after the transaction holding that batch has
//! committed with `synchronous = FULL` — durable when the reply arrives. Batches that arrive
//! together are committed together (group commit); each still gets its own reply.
//!
//! Its rooms: [`StoreHandle`] (here) sends requests; `writer` runs the loop and the group
//! commit; [`validate`] decides what is accepted, without a database; `batch` writes a batch
//! down; `scheduler` builds windows, settles the site's hours and packs readings between
//! commits; `view` is the writer's memory of each collector.

mod batch;
mod scheduler;
pub mod validate;
mod view;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use footprint_proto::v1::{Batch, Hello, Rejection};
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::AggregatorConfig;
use crate::metrics::AggregatorMetrics;
use crate::tables::LEDGER_FILE;
use crate::{Error, Result, now_ns};

/// A collector the store accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelloAccepted {
    pub collector: i64,
    pub last_durable_seq: u64,
}

/// What became of one batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchOutcome {
    pub seq: u64,
    /// The batch had been stored before; this copy changed nothing.
    pub duplicate: bool,
    pub rejections: Vec<Rejection>,
}

/// A write the writer runs for another part of the aggregator ([`StoreHandle::write`]).
pub(crate) type OtherWrite = Box<dyn FnOnce(&rusqlite::Connection) -> Result<()> + Send>;

pub(crate) enum Request {
    Hello {
        hello: Hello,
        reply: oneshot::Sender<Result<HelloAccepted>>,
    },
    Batch {
        collector: i64,
        batch: Batch,
        reply: oneshot::Sender<Result<BatchOutcome>>,
    },
    BuildWindows {
        reply: oneshot::Sender<Result<u64>>,
    },
    Compact {
        reply: oneshot::Sender<Result<u64>>,
    },
    /// A write of the ledger's other tables (grid events), in one transaction on the writer's
    /// connection, between batches.
    Write {
        write: OtherWrite,
        reply: oneshot::Sender<Result<()>>,
    },
}

/// Cheap to clone; every clone talks to the same writer.
#[derive(Clone, Debug)]
pub struct StoreHandle {
    requests: mpsc::Sender<Request>,
    path: PathBuf,
    /// Closed when the writer thread has finished (its sender is dropped then).
    writer_done: watch::Receiver<()>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Hello { hello, .. } => write!(f, "Hello({})", hello.collector_id),
            Request::Batch {
                collector, batch, ..
            } => write!(f, "Batch({collector}, {})", batch.seq),
            Request::BuildWindows { .. } => write!(f, "BuildWindows"),
            Request::Compact { .. } => write!(f, "Compact"),
            Request::Write { .. } => write!(f, "Write"),
        }
    }
}

impl StoreHandle {
    /// Opens the ledger in `config.data_dir` and starts the writer thread.
    ///
    /// # Errors
    /// The data directory or the database cannot be opened.
    pub fn open(config: &AggregatorConfig, metrics: Arc<AggregatorMetrics>) -> Result<Self> {
        std::fs::create_dir_all(&config.data_dir)?;
        let path = config.data_dir.join(LEDGER_FILE);
        let state = writer::WriterState::open(&path, config, metrics)?;
        // Bounded, but wide: the ingest budget (bytes awaiting commit) is the limit that binds
        // first, so overload is answered RESOURCE_EXHAUSTED rather than queued here.
        let (requests, receiver) = mpsc::channel(65_536);
        let group = writer::GroupCommit {
            max_batches: config.group_commit_max_batches,
            wait: std::time::Duration::from_millis(config.group_commit_wait_ms),
        };
        let (done, writer_done) = watch::channel(());
        std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || {
                writer::run(state, receiver, &group);
                drop(done);
            })?;
        Ok(Self {
            requests,
            path,
            writer_done,
        })
    }

    /// Lets go of this handle and waits (up to `patience`) for the writer to finish: it does
    /// once every handle is gone, after building what is ready and laying out what is staged.
    /// Returns whether it finished.
    pub async fn close(self, patience: std::time::Duration) -> bool {
        let mut done = self.writer_done.clone();
        drop(self);
        tokio::time::timeout(patience, async { while done.changed().await.is_ok() {} })
            .await
            .is_ok()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Registers (or re-registers) a collector and its meters.
    ///
    /// # Errors
    /// [`Error::Collector`] when the hello is invalid or the id belongs to another host.
    pub async fn hello(&self, hello: Hello) -> Result<HelloAccepted> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Hello { hello, reply }).await?;
        answer.await.map_err(|_| Error::WriterStopped)?
    }

    /// Queues a batch; the returned receiver yields its outcome once it is durable.
    ///
    /// # Errors
    /// [`Error::WriterStopped`] when the writer is gone.
    pub async fn submit(
        &self,
        collector: i64,
        batch: Batch,
    ) -> Result<oneshot::Receiver<Result<BatchOutcome>>> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Batch {
            collector,
            batch,
            reply,
        })
        .await?;
        Ok(answer)
    }

    /// Builds every window that is ready now; returns how many were built.
    ///
    /// # Errors
    /// A database error, or the writer is gone.
    pub async fn build_windows(&self) -> Result<u64> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::BuildWindows { reply }).await?;
        answer.await.map_err(|_| Error::WriterStopped)?
    }

    /// Packs every hour of readings old enough (`compact_after_s`) into chunks now, rather than
    /// in the writer's idle time; returns the readings packed.
    ///
    /// # Errors
    /// The writer stopped, or a database error (nothing is packed then).
    pub async fn compact(&self) -> Result<u64> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Compact { reply }).await?;
        answer.await.map_err(|_| Error::WriterStopped)?
    }

    /// Runs `write` on the writer's connection in a transaction of its own, committed (durable)
    /// before this returns; a failure rolls it back.
    ///
    /// # Errors
    /// The writer stopped, or what `write` returned.
    pub async fn write(
        &self,
        write: impl FnOnce(&rusqlite::Connection) -> Result<()> + Send + 'static,
    ) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Write {
            write: Box::new(write),
            reply,
        })
        .await?;
        answer.await.map_err(|_| Error::WriterStopped)?
    }

    async fn send(&self, request: Request) -> Result<()> {
        self.requests
            .send(request)
            .await
            .map_err(|_| Error::WriterStopped)
    }
}
