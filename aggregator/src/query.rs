//! The `Query` service and the reads behind it and the HTTP API.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use footprint_proto::v1 as pb;
use footprint_proto::v1::query_server::Query;
use rusqlite::Connection;
use tonic::{Request, Response, Status};

use crate::ledger::{self, FacilityWindow, JobFootprint};
use crate::tables::schema;
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

    /// Facility totals over `[from, to)` clipped to the settled span (0: unbounded), in `step`s.
    ///
    /// # Errors
    /// A database error.
    pub async fn facility(
        &self,
        from_ns: i64,
        to_ns: i64,
        step: ledger::SeriesStep,
        group_by: &str,
    ) -> Result<Vec<FacilityWindow>> {
        let grouping = ledger::Grouping::parse(group_by)?;
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
                step,
                grouping,
            )
        })
        .await
    }
}

impl LedgerReader {
    /// Job `job`'s settled hour at `hour_ns` rebuilt from the readings beside its roll-up
    /// ([`ledger::explain`]), on a connection of its own.
    ///
    /// # Errors
    /// As [`ledger::explain::explain`].
    pub async fn explain(&self, job: String, hour_ns: i64) -> Result<ledger::explain::Explanation> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || ledger::explain::explain(&path, &job, hour_ns))
            .await
            .map_err(|error| Error::Server(error.to_string()))?
    }

    /// The signed report `request` asks for, rendered as `format` ([`crate::report`]).
    ///
    /// # Errors
    /// As [`crate::report::make_report`].
    pub async fn report(
        &self,
        request: crate::report::ReportRequest,
        format: footprint_exporters::report::Format,
    ) -> Result<(footprint_exporters::report::signing::SignedReport, Vec<u8>)> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let report = crate::report::make_report(&path, &request)?;
            let bytes = crate::report::render(&report, format)?;
            Ok((report, bytes))
        })
        .await
        .map_err(|error| Error::Server(error.to_string()))?
    }

    /// The facility's draw forecast ([`crate::forecast`]).
    ///
    /// # Errors
    /// As [`crate::forecast::make_forecast`].
    pub async fn forecast(
        &self,
        request: crate::forecast::ForecastRequest,
    ) -> Result<footprint_exporters::forecast::Forecast> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || crate::forecast::make_forecast(&path, &request))
            .await
            .map_err(|error| Error::Server(error.to_string()))?
    }

    /// `zone`'s grid intensity for every hour starting in `[from_ns, to_ns)`, as the ledger
    /// prices it.
    ///
    /// # Errors
    /// [`Error::BadRequest`] naming the parameter (no zone, no span, too many hours); a database
    /// error.
    pub async fn intensity(
        &self,
        zone: String,
        from_ns: i64,
        to_ns: i64,
    ) -> Result<Vec<ledger::intensity::IntensityUsed>> {
        if from_ns <= 0 || to_ns <= from_ns {
            return Err(Error::BadRequest(format!(
                "from, to: [{from_ns}, {to_ns}) is not a span of time (ns since the epoch)"
            )));
        }
        let span = footprint_core::Span::new(
            footprint_core::UnixNanos(from_ns),
            footprint_core::UnixNanos(to_ns),
        );
        self.with(move |connection| ledger::intensity::intensity_hours(connection, &zone, span))
            .await
    }

    /// A reader of the ledger in an aggregator's data directory: for tools on the same machine
    /// as a stopped or running aggregator.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the directory holds no ledger.
    pub fn for_data_dir(dir: &std::path::Path) -> Result<Self> {
        let path = dir.join(crate::tables::LEDGER_FILE);
        if !path.exists() {
            return Err(Error::NotFound(format!("a ledger in {}", dir.display())));
        }
        Ok(Self::new(path))
    }
}

pub(crate) fn status_of(error: Error) -> Status {
    match error {
        Error::NotFound(what) => Status::not_found(what),
        Error::BadRequest(what) => Status::invalid_argument(what),
        other => Status::internal(other.to_string()),
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
                kind: pb::JobKind::from_short_name(&job.kind).unwrap_or(pb::JobKind::Other) as i32,
                model: job.model,
                functional_unit: job.functional_unit,
                functional_units: job.functional_units,
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
            revised_windows: job.revised_windows,
            remainder_mj: job.remainder_mj,
            overhead_mj: job.overhead_mj,
            it_energy_mj: job.it_energy_mj,
            water_ml: job.water_ml,
            co2e_location_mg: job.co2e_location_mg,
            co2e_market_mg: job.co2e_market_mg,
            co2e_embodied_mg: job.co2e_embodied_mg,
            sci_mg_per_unit: job.sci_mg_per_unit,
            method: job.method,
        }
    }
}

/// The one conversion of a jobs request (gRPC, HTTP, the CLI) into the ledger's filter.
impl From<pb::ListJobsRequest> for ledger::JobFilter {
    fn from(request: pb::ListJobsRequest) -> Self {
        Self {
            from_ns: request.from_ns,
            to_ns: request.to_ns,
            id: None,
            user: request.user,
            project: request.project,
            model: request.model,
            kind: request.kind,
        }
    }
}

fn wire_quality(quality: footprint_core::Quality) -> pb::Quality {
    match quality {
        footprint_core::Quality::Measured => pb::Quality::Measured,
        footprint_core::Quality::Interpolated => pb::Quality::Interpolated,
        footprint_core::Quality::Estimated => pb::Quality::Estimated,
    }
}

impl From<ledger::intensity::IntensityUsed> for pb::IntensityHour {
    fn from(hour: ledger::intensity::IntensityUsed) -> Self {
        let (mg_per_kwh, quality) = hour
            .intensity
            .map_or((0, pb::Quality::Unspecified), |(mg, quality)| {
                (mg.0, wire_quality(quality))
            });
        pb::IntensityHour {
            hour_ns: hour.hour_ns,
            known: hour.intensity.is_some(),
            mg_per_kwh,
            quality: quality as i32,
            method: hour.method,
            feeds: hour
                .feeds
                .into_iter()
                .map(|feed| pb::FeedInfo {
                    file: feed.file,
                    sha256: feed.sha256,
                    layout: feed.layout,
                    hour_convention: feed.hour_convention,
                })
                .collect(),
            priced: hour.priced.is_some(),
            priced_mg_per_kwh: hour.priced.map_or(0, |mg| mg.0),
        }
    }
}

impl From<ledger::Balance> for pb::Balance {
    fn from(balance: ledger::Balance) -> Self {
        pb::Balance {
            site: balance.site,
            jobs: balance.jobs,
            idle: balance.idle,
            unattributed: balance.unattributed,
        }
    }
}

impl From<FacilityWindow> for pb::FacilityWindow {
    fn from(window: FacilityWindow) -> Self {
        let (pue, wue, cfe) = (window.pue(), window.wue_l_per_kwh(), window.cfe_share());
        pb::FacilityWindow {
            start_ns: window.start_ns,
            end_ns: window.end_ns,
            measured_mj: window.energy_mj.site.max(0) as u64,
            jobs_mj: window.energy_mj.jobs.max(0) as u64,
            idle_mj: window.energy_mj.idle.max(0) as u64,
            unattributed_mj: window.energy_mj.unattributed,
            it_mj: window.it_mj,
            measured_method: window.measured_method,
            host: window.host,
            overhead_mj: window.overhead_mj,
            water_ml: Some(window.water_ml.into()),
            co2e_location_mg: Some(window.co2e_location_mg.into()),
            co2e_market_mg: Some(window.co2e_market_mg.into()),
            co2e_embodied_mg: Some(window.co2e_embodied_mg.into()),
            pue,
            wue_l_per_kwh: wue,
            ppa_matched_mj: window.ppa_matched_mj,
            go_matched_mj: window.go_matched_mj,
            cfe_share: cfe,
            revised_windows: window.revised_windows,
            revised_hours: window.revised_hours,
            ppa_delivered_mj: window.ppa_delivered_mj,
            ppa_forfeited_mj: window.ppa_forfeited_mj,
            go_balance_mj: window.go_balance_mj,
            uncovered_mj: window.uncovered_mj,
            residual_mix_used: window.residual_mix.is_some(),
            residual_mix_mg_per_kwh: window.residual_mix.as_ref().map_or(0, |r| r.mg_per_kwh),
            residual_mix_year: window
                .residual_mix
                .as_ref()
                .and_then(|r| r.year)
                .map_or(0, u32::from),
            residual_mix_source: window.residual_mix.map(|r| r.source).unwrap_or_default(),
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
        let filter = ledger::JobFilter::from(request.into_inner());
        let jobs = self
            .reader
            .with(move |c| ledger::list_jobs(c, &filter))
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

    async fn intensity(
        &self,
        request: Request<pb::IntensityRequest>,
    ) -> Result<Response<pb::IntensityResponse>, Status> {
        let request = request.into_inner();
        let hours = self
            .reader
            .intensity(request.zone, request.from_ns, request.to_ns)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::IntensityResponse {
            hours: hours.into_iter().map(Into::into).collect(),
        }))
    }

    async fn report(
        &self,
        request: Request<pb::ReportRequest>,
    ) -> Result<Response<pb::ReportFile>, Status> {
        let request = request.into_inner();
        let format = footprint_exporters::report::Format::parse(&request.format)
            .map_err(|error| Status::invalid_argument(error.to_string()))?;
        let (report, data) = self
            .reader
            .report(
                crate::report::ReportRequest {
                    from_ns: request.from_ns,
                    to_ns: request.to_ns,
                    require_settled: request.require_settled,
                    ..Default::default()
                },
                format,
            )
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::ReportFile {
            data,
            content_type: format.content_type().to_owned(),
            status: report.report.period.status.to_owned(),
            notice: report.report.period.notice,
        }))
    }

    async fn forecast(
        &self,
        request: Request<pb::ForecastRequest>,
    ) -> Result<Response<pb::ForecastFile>, Status> {
        use footprint_exporters::forecast::output;
        let request = request.into_inner();
        let format = output::Format::parse(&request.format)
            .map_err(|error| Status::invalid_argument(error.to_string()))?;
        let forecast = self
            .reader
            .forecast(crate::forecast::ForecastRequest {
                from_ns: request.from_ns,
            })
            .await
            .map_err(status_of)?;
        let ids = output::OpenAdrIds {
            program_id: request.program_id,
            event_id: request.event_id,
            client_name: request.client_name,
        };
        Ok(Response::new(pb::ForecastFile {
            data: output::render(&forecast, format, &ids),
            content_type: format.content_type().to_owned(),
        }))
    }

    async fn facility_totals(
        &self,
        request: Request<pb::FacilityTotalsRequest>,
    ) -> Result<Response<pb::FacilityTotalsResponse>, Status> {
        let request = request.into_inner();
        let step = ledger::SeriesStep::parse(&request.step, request.step_s).map_err(status_of)?;
        let windows = self
            .reader
            .facility(request.from_ns, request.to_ns, step, &request.group_by)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::FacilityTotalsResponse {
            windows: windows.into_iter().map(Into::into).collect(),
        }))
    }
}
