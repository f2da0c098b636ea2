//! What the HTTP API answers, as its own types: the JSON a client reads is spelled here, so a
//! change inside the ledger changes no public answer unless this file changes too.

use serde::Serialize;

use crate::ledger::{self, FacilityWindow, JobFootprint};

/// A job's footprint (`GET /api/v1/jobs/{id}`, and each of `GET /api/v1/jobs`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JobAnswer {
    pub id: String,
    pub scheduler: String,
    pub name: String,
    pub user: String,
    pub project: String,
    /// `training`, `inference` or `other`.
    pub kind: String,
    pub model: String,
    pub functional_unit: String,
    /// The units the job reported; over a span that cuts the job (`from`/`to`), the part for the
    /// windows it held devices in the span.
    pub functional_units: u64,
    /// Facility energy, mJ: `it_energy_mj + overhead_mj`.
    pub energy_mj: u64,
    /// GPU + CPU package + DRAM + host remainder, mJ.
    pub it_energy_mj: u64,
    pub gpu_energy_mj: u64,
    pub cpu_energy_mj: u64,
    pub dram_energy_mj: u64,
    pub remainder_mj: u64,
    pub overhead_mj: u64,
    /// How the IT energy was obtained; the parts add up to `it_energy_mj`.
    pub energy_quality: EnergyByQualityAnswer,
    pub water_ml: u64,
    pub co2e_location_mg: u64,
    pub co2e_market_mg: u64,
    pub co2e_embodied_mg: u64,
    /// (location-based + embodied) / functional units, mg CO2e; 0 without units.
    pub sci_mg_per_unit: f64,
    pub gpu_hours: f64,
    pub hosts: Vec<String>,
    pub first_window_ns: i64,
    pub last_window_ns: i64,
    /// How the figures were obtained.
    pub method: String,
    /// Windows of the job built again because late data changed them.
    pub revised_windows: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct EnergyByQualityAnswer {
    pub measured_mj: u64,
    pub interpolated_mj: u64,
    pub estimated_mj: u64,
}

/// A quantity and where it went: `site = jobs + idle + unattributed`, exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct BalanceAnswer {
    pub site: i64,
    pub jobs: i64,
    pub idle: i64,
    pub unattributed: i64,
}

/// The facility (or one host, or one hall or rack) over one step (`GET /api/v1/facility`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FacilityAnswer {
    pub start_ns: i64,
    pub end_ns: i64,
    /// The host, hall or rack of a grouped series; empty for the site.
    pub host: String,
    pub energy_mj: BalanceAnswer,
    pub measured_method: String,
    /// Energy at the IT boundary, mJ.
    pub it_mj: u64,
    pub overhead_mj: u64,
    pub water_ml: BalanceAnswer,
    pub co2e_location_mg: BalanceAnswer,
    pub co2e_market_mg: BalanceAnswer,
    pub co2e_embodied_mg: BalanceAnswer,
    pub ppa_matched_mj: u64,
    pub go_matched_mj: u64,
    /// Measured energy / IT energy (0 without IT energy).
    pub pue: f64,
    /// Water / IT energy, L/kWh (ISO/IEC 30134-9).
    pub wue_l_per_kwh: f64,
    /// Share of the energy matched by PPA supply in the same hour.
    pub cfe_share: f64,
    pub revised_windows: u64,
    pub revised_hours: u64,
    /// What market-based carbon was computed from (the site's; zeros for a host or group).
    pub market: MarketAnswer,
}

/// Market-based inputs over a span: PPA energy delivered, matched by the load of the same hour
/// and forfeited; guarantees of origin used and left; energy no instrument covered, and the
/// residual-mix factor it was priced with (`null` where the grid average priced it).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MarketAnswer {
    pub ppa_delivered_mj: u64,
    pub ppa_matched_mj: u64,
    pub ppa_forfeited_mj: u64,
    pub go_used_mj: u64,
    pub go_balance_mj: u64,
    pub uncovered_mj: u64,
    pub residual_mix: Option<ResidualMixAnswer>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ResidualMixAnswer {
    pub mg_per_kwh: u64,
    /// Publisher and edition, as configured; empty when none was given.
    pub source: String,
    pub year: Option<u16>,
}

impl From<JobFootprint> for JobAnswer {
    fn from(job: JobFootprint) -> Self {
        Self {
            id: job.id,
            scheduler: job.scheduler,
            name: job.name,
            user: job.user,
            project: job.project,
            kind: job.kind,
            model: job.model,
            functional_unit: job.functional_unit,
            functional_units: job.functional_units,
            energy_mj: job.energy_mj,
            it_energy_mj: job.it_energy_mj,
            gpu_energy_mj: job.gpu_energy_mj,
            cpu_energy_mj: job.cpu_energy_mj,
            dram_energy_mj: job.dram_energy_mj,
            remainder_mj: job.remainder_mj,
            overhead_mj: job.overhead_mj,
            energy_quality: EnergyByQualityAnswer {
                measured_mj: job.energy_quality.measured_mj,
                interpolated_mj: job.energy_quality.interpolated_mj,
                estimated_mj: job.energy_quality.estimated_mj,
            },
            water_ml: job.water_ml,
            co2e_location_mg: job.co2e_location_mg,
            co2e_market_mg: job.co2e_market_mg,
            co2e_embodied_mg: job.co2e_embodied_mg,
            sci_mg_per_unit: job.sci_mg_per_unit,
            gpu_hours: job.gpu_hours,
            hosts: job.hosts,
            first_window_ns: job.first_window_ns,
            last_window_ns: job.last_window_ns,
            method: job.method,
            revised_windows: job.revised_windows,
        }
    }
}

impl From<ledger::Balance> for BalanceAnswer {
    fn from(balance: ledger::Balance) -> Self {
        Self {
            site: balance.site,
            jobs: balance.jobs,
            idle: balance.idle,
            unattributed: balance.unattributed,
        }
    }
}

impl From<FacilityWindow> for FacilityAnswer {
    fn from(window: FacilityWindow) -> Self {
        Self {
            pue: window.pue(),
            wue_l_per_kwh: window.wue_l_per_kwh(),
            cfe_share: window.cfe_share(),
            start_ns: window.start_ns,
            end_ns: window.end_ns,
            host: window.host,
            energy_mj: window.energy_mj.into(),
            measured_method: window.measured_method,
            it_mj: window.it_mj,
            overhead_mj: window.overhead_mj,
            water_ml: window.water_ml.into(),
            co2e_location_mg: window.co2e_location_mg.into(),
            co2e_market_mg: window.co2e_market_mg.into(),
            co2e_embodied_mg: window.co2e_embodied_mg.into(),
            ppa_matched_mj: window.ppa_matched_mj,
            go_matched_mj: window.go_matched_mj,
            revised_windows: window.revised_windows,
            revised_hours: window.revised_hours,
            market: MarketAnswer {
                ppa_delivered_mj: window.ppa_delivered_mj,
                ppa_matched_mj: window.ppa_matched_mj,
                ppa_forfeited_mj: window.ppa_forfeited_mj,
                go_used_mj: window.go_matched_mj,
                go_balance_mj: window.go_balance_mj,
                uncovered_mj: window.uncovered_mj,
                residual_mix: window.residual_mix.map(|r| ResidualMixAnswer {
                    mg_per_kwh: r.mg_per_kwh,
                    source: r.source,
                    year: r.year,
                }),
            },
        }
    }
}

/// An imported feed (`GET /api/v1/intensity`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FeedAnswer {
    pub file: String,
    /// Of the file's bytes, lower-case hex; empty for hours imported before feeds were recorded.
    pub sha256: String,
    pub layout: String,
    /// `starting` or `ending`: which hour the feed's timestamps name.
    pub hour_convention: String,
}

/// One hour of a zone's grid intensity as the ledger prices it (`GET /api/v1/intensity`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IntensityAnswer {
    pub hour_start_ns: i64,
    /// g CO2e per kWh; `null` when no feed covers the zone.
    pub g_per_kwh: Option<f64>,
    /// mg CO2e per kWh, the integer the ledger computes with.
    pub mg_per_kwh: Option<u64>,
    /// `measured` (the feed's own row), `interpolated` (between its neighbours) or `estimated`
    /// (held from the nearest one).
    pub quality: Option<&'static str>,
    pub method: String,
    pub feeds: Vec<FeedAnswer>,
    /// For an hour the site has settled: the mg CO2e per kWh its carbon was priced with.
    pub priced_mg_per_kwh: Option<u64>,
}

impl From<crate::ledger::intensity::IntensityUsed> for IntensityAnswer {
    fn from(hour: crate::ledger::intensity::IntensityUsed) -> Self {
        Self {
            hour_start_ns: hour.hour_ns,
            g_per_kwh: hour.intensity.map(|(mg, _)| mg.0 as f64 / 1_000.0),
            mg_per_kwh: hour.intensity.map(|(mg, _)| mg.0),
            quality: hour.intensity.map(|(_, quality)| quality.name()),
            method: hour.method,
            feeds: hour
                .feeds
                .into_iter()
                .map(|feed| FeedAnswer {
                    file: feed.file,
                    sha256: feed.sha256,
                    layout: feed.layout,
                    hour_convention: feed.hour_convention,
                })
                .collect(),
            priced_mg_per_kwh: hour.priced.map(|mg| mg.0),
        }
    }
}
