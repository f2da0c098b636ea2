//! The `Query` service and the reads behind it and the HTTP API.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use footprint_proto::v1 as pb;
use footprint_proto::v1::query_server::Query;
use rusqlite::Connection;
use tonic::{Request, Response, Status};

use crate::ledger::{self, FacilityWindow, JobFootprint};
use crate::store::schema;
use crate::{Error, Result};

/// Reads the ledger on a connection of its own (WAL: readers never block the writer).
#[derive(Clone, Debug)]
pub struct LedgerReader {
    path: PathBuf,
    connection: Arc<Mutex<Option<Connection>>>,
}

impl LedgerReader {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            connection: Arc::new(Mutex::new(None)),
        }
    }

    /// Runs `read` on a blocking thread with the reader's connection.
    ///
    /// # Errors
    /// Whatever `read` returns, or a database error opening the connection.
    pub async fn with<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (path, slot) = (self.path.clone(), Arc::clone(&self.connection));
        tokio::task::spawn_blocking(move || {
            let mut guard = slot
                .lock()
                .map_err(|_| Error::Server("reader lock poisoned".into()))?;
            if guard.is_none() {
                *guard = Some(schema::open_reader(&path)?);
            }
            match guard.as_ref() {
                Some(connection) => read(connection),
                None => Err(Error::Server("no reader connection".into())),
            }
        })
        .await
        .map_err(|error| Error::Server(error.to_string()))?
    }

    /// Facility totals over `[from, to)` clipped to the settled span (0: unbounded), in steps of
    /// `step_s` seconds (0: one total).
    ///
    /// # Errors
    /// A database error.
    pub async fn facility(
        &self,
        from_ns: i64,
        to_ns: i64,
        step_s: u64,
    ) -> Result<Vec<FacilityWindow>> {
        let step_ns = i64::try_from(step_s)
            .unwrap_or(i64::MAX)
            .saturating_mul(1_000_000_000);
        self.with(move |connection| {
            let Some(settled) = ledger::settled_span(connection)? else {
                return Ok(Vec::new());
            };
            let start = if from_ns > 0 {
                from_ns.max(settled.start.0)
            } else {
                settled.start.0
            };
            let end = if to_ns > 0 {
                to_ns.min(settled.end.0)
            } else {
                settled.end.0
            };
            if start >= end {
                return Ok(Vec::new());
            }
            ledger::facility_totals(
                connection,
                footprint_core::Span::new(
                    footprint_core::UnixNanos(start),
                    footprint_core::UnixNanos(end),
                ),
                step_ns,
            )
        })
        .await
    }
}

/// Jobs of the ledger in an aggregator's data directory (all of them, or the one named), read
/// directly: for tools on the same machine as a stopped or running aggregator.
///
/// # Errors
/// [`Error::NotFound`] when the directory holds no ledger or the job is unknown.
pub fn jobs_in_data_dir(dir: &std::path::Path, only: Option<&str>) -> Result<Vec<JobFootprint>> {
    let path = dir.join(crate::store::LEDGER_FILE);
    if !path.exists() {
        return Err(Error::NotFound(format!("a ledger in {}", dir.display())));
    }
    let connection = schema::open_reader(&path)?;
    match only {
        Some(id) => Ok(vec![ledger::get_job(&connection, id)?]),
        None => ledger::list_jobs(&connection, 0, 0, None),
    }
}

pub(crate) fn status_of(error: Error) -> Status {
    match error {
        Error::NotFound(what) => Status::not_found(what),
        other => Status::internal(other.to_string()),
    }
}

fn job_kind(kind: &str) -> i32 {
    match kind {
        "training" => pb::JobKind::Training as i32,
        "inference" => pb::JobKind::Inference as i32,
        _ => pb::JobKind::Other as i32,
    }
}

impl From<JobFootprint> for pb::JobFootprint {
    fn from(job: JobFootprint) -> Self {
        pb::JobFootprint {
            job: Some(pb::Job {
                id: job.id,
                scheduler: job.scheduler,
                name: job.name,
                user: job.user,
                project: job.project,
                kind: job_kind(&job.kind),
                model: job.model,
            }),
            energy_mj: job.energy_mj,
            energy_quality: Some(pb::EnergyByQuality {
                measured_mj: job.energy_quality.measured_mj,
                interpolated_mj: job.energy_quality.interpolated_mj,
                estimated_mj: job.energy_quality.estimated_mj,
            }),
            gpu_energy_mj: job.gpu_energy_mj,
            cpu_energy_mj: job.cpu_energy_mj,
            dram_energy_mj: job.dram_energy_mj,
            gpu_hours: job.gpu_hours,
            hosts: job.hosts,
            first_ns: job.first_window_ns,
            last_ns: job.last_window_ns,
        }
    }
}

impl From<FacilityWindow> for pb::FacilityWindow {
    fn from(window: FacilityWindow) -> Self {
        pb::FacilityWindow {
            start_ns: window.start_ns,
            end_ns: window.end_ns,
            measured_mj: window.measured_mj,
            jobs_mj: window.jobs_mj,
            idle_mj: window.idle_mj,
            unattributed_mj: window.unattributed_mj,
            it_mj: window.it_mj,
            measured_method: window.measured_method,
        }
    }
}

#[derive(Clone, Debug)]
pub struct QueryService {
    reader: LedgerReader,
}

impl QueryService {
    pub fn new(reader: LedgerReader) -> Self {
        Self { reader }
    }
}

#[tonic::async_trait]
impl Query for QueryService {
    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let request = request.into_inner();
        let jobs = self
            .reader
            .with(move |c| ledger::list_jobs(c, request.from_ns, request.to_ns, None))
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::ListJobsResponse {
            jobs: jobs.into_iter().map(Into::into).collect(),
        }))
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::JobFootprint>, Status> {
        let id = request.into_inner().id;
        let job = self
            .reader
            .with(move |c| ledger::get_job(c, &id))
            .await
            .map_err(status_of)?;
        Ok(Response::new(job.into()))
    }

    async fn facility_totals(
        &self,
        request: Request<pb::FacilityTotalsRequest>,
    ) -> Result<Response<pb::FacilityTotalsResponse>, Status> {
        let request = request.into_inner();
        let windows = self
            .reader
            .facility(request.from_ns, request.to_ns, request.step_s)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::FacilityTotalsResponse {
            windows: windows.into_iter().map(Into::into).collect(),
        }))
    }
}
