//! What a report is made of, as the ledger hands it over: integers in the ledger's own units (mJ,
//! mL, mg CO2e, ns), no figure computed yet. The aggregator fills these from its ledger
//! (`footprint_aggregator::report`); everything the report states follows from them and the
//! `[disclosure]` config.

use super::disclosure::DisclosureConfig;

/// A quantity and where it went: `site = jobs + idle + unattributed`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Balance {
    pub site: i64,
    pub jobs: i64,
    pub idle: i64,
    pub unattributed: i64,
}

/// The facility over one span (the period, or one month of it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FacilityFigures {
    pub start_ns: i64,
    pub end_ns: i64,
    pub energy_mj: Balance,
    /// Energy of the hosts (outlet meters, else components + the overhead factor).
    pub it_mj: i64,
    pub overhead_mj: i64,
    pub water_ml: Balance,
    pub co2e_location_mg: Balance,
    pub co2e_market_mg: Balance,
    pub co2e_embodied_mg: Balance,
    pub ppa_delivered_mj: i64,
    pub ppa_matched_mj: i64,
    pub go_used_mj: i64,
    /// Energy no instrument covered.
    pub uncovered_mj: i64,
    /// How the hosts' energy was obtained.
    pub it_measured_mj: i64,
    pub it_interpolated_mj: i64,
    pub it_estimated_mj: i64,
    /// Site windows by where their facility energy came from.
    pub windows_site_metered: i64,
    pub windows_it_only: i64,
    pub windows_assumed_pue: i64,
}

impl Balance {
    pub fn add(&mut self, other: &Self) {
        self.site += other.site;
        self.jobs += other.jobs;
        self.idle += other.idle;
        self.unattributed += other.unattributed;
    }
}

impl FacilityFigures {
    /// Adds `other`'s figures (a later span) to these; the span stays as it is.
    pub fn add(&mut self, other: &Self) {
        for (sum, part) in [
            (&mut self.energy_mj, &other.energy_mj),
            (&mut self.water_ml, &other.water_ml),
            (&mut self.co2e_location_mg, &other.co2e_location_mg),
            (&mut self.co2e_market_mg, &other.co2e_market_mg),
            (&mut self.co2e_embodied_mg, &other.co2e_embodied_mg),
        ] {
            sum.add(part);
        }
        for (sum, part) in [
            (&mut self.it_mj, other.it_mj),
            (&mut self.overhead_mj, other.overhead_mj),
            (&mut self.ppa_delivered_mj, other.ppa_delivered_mj),
            (&mut self.ppa_matched_mj, other.ppa_matched_mj),
            (&mut self.go_used_mj, other.go_used_mj),
            (&mut self.uncovered_mj, other.uncovered_mj),
            (&mut self.it_measured_mj, other.it_measured_mj),
            (&mut self.it_interpolated_mj, other.it_interpolated_mj),
            (&mut self.it_estimated_mj, other.it_estimated_mj),
            (&mut self.windows_site_metered, other.windows_site_metered),
            (&mut self.windows_it_only, other.windows_it_only),
            (&mut self.windows_assumed_pue, other.windows_assumed_pue),
        ] {
            *sum += part;
        }
    }
}

/// One job over the period (the part of it in the period).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobFigures {
    pub id: String,
    pub scheduler: String,
    pub name: String,
    pub user: String,
    pub project: String,
    pub kind: String,
    pub model: String,
    pub functional_unit: String,
    pub functional_units: u64,
    pub first_window_ns: i64,
    pub last_window_ns: i64,
    pub gpu_ns: i64,
    pub gpu_mj: i64,
    pub cpu_mj: i64,
    pub dram_mj: i64,
    pub remainder_mj: i64,
    pub overhead_mj: i64,
    pub water_ml: i64,
    pub co2e_location_mg: i64,
    pub co2e_market_mg: i64,
    pub co2e_embodied_mg: i64,
    pub measured_mj: i64,
    pub interpolated_mj: i64,
    pub estimated_mj: i64,
}

/// One meter's readings over the period.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MeterQuality {
    pub host: String,
    pub meter_id: String,
    /// `gpu_energy`, `site_energy`, … (the protocol's meter kind).
    pub kind: String,
    pub method: String,
    pub readings: i64,
    /// Time between consecutive readings at most `max_sample_gap_s` apart, counted in the hour
    /// of the closing reading.
    pub covered_ns: i64,
    /// Intervals longer than `max_sample_gap_s`, `(from, to)` in ns, in time order.
    pub gaps: Vec<(i64, i64)>,
    pub wraps: i64,
    pub resets: i64,
    pub first_reading_ns: Option<i64>,
    pub last_reading_ns: Option<i64>,
}

/// Readings refused at ingest in the period, by field and reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rejected {
    pub field: String,
    pub reason: String,
    pub readings: i64,
}

/// A site hour settled again with different figures.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RevisedHour {
    pub hour_ns: i64,
    pub revisions: i64,
    pub reason: String,
}

/// An imported intensity feed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Feed {
    pub file: String,
    pub sha256: String,
    pub layout: String,
    pub hour_convention: String,
    pub hours: i64,
}

/// A factor table or contract the figures were computed with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FactorTable {
    /// What it is (`embodied device table`, `residual mix`, `PPA "wind farm A"`, …).
    pub name: String,
    pub version: String,
    /// SHA-256 of its content, lower-case hex.
    pub sha256: String,
    pub source: String,
}

/// A collector's batches in the ledger when the report was made.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CollectorRange {
    pub collector: String,
    pub host: String,
    pub first_seq: i64,
    pub last_seq: i64,
}

/// Everything a report is made of.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReportInputs {
    pub from_ns: i64,
    pub to_ns: i64,
    /// What the ledger has settled: `[first hour, settled until)`; `None` before anything settled.
    pub ledger_settled: Option<(i64, i64)>,
    /// The period's hours that are settled (within the ledger's settled span).
    pub settled_hours: i64,
    /// The period's hours reopened by late data and not yet settled again.
    pub reopened_hours: Vec<RevisedHour>,
    pub total: FacilityFigures,
    pub months: Vec<FacilityFigures>,
    /// The facility in steps short enough to draw the period: `month`, `day` or `hour`.
    pub trend_step: String,
    pub trend: Vec<FacilityFigures>,
    pub jobs: Vec<JobFigures>,
    pub meters: Vec<MeterQuality>,
    pub rejected: Vec<Rejected>,
    pub revised_hours: Vec<RevisedHour>,
    /// Hours of the period whose grid intensity was measured / interpolated / estimated / missing.
    pub intensity_hours: [i64; 4],
    pub zone: String,
    pub feeds: Vec<Feed>,
    pub factor_tables: Vec<FactorTable>,
    /// Hosts whose energy is their outlet (PDU or IPMI) meter, and those estimated from their
    /// components and the overhead factor.
    pub hosts_with_outlet_meter: i64,
    pub hosts_from_components: i64,
    pub host_overhead_factor: String,
    pub attribution_policy: String,
    pub max_sample_gap_s: i64,
    pub collectors: Vec<CollectorRange>,
    /// SHA-256 of the config that shapes the figures (addresses, paths and key left out).
    pub config_sha256: String,
    pub disclosure: DisclosureConfig,
    pub software_version: String,
}
