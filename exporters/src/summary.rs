//! The run summary (`summary.json`): the facility's measured energy, water and carbon and how
//! each splits between jobs, idle devices and what is not attributed, with
//! `Σ jobs + idle + unattributed = site` exactly, in integer units (mJ, mL, mg CO2e).

use footprint_proto::v1::{Balance, FacilityWindow, JobFootprint, JobKind};
use serde::Serialize;

use crate::{Error, Result};

/// The quantities every balance covers, as `summary.json` names them, in the order of
/// [`Figures`]: energy (mJ), water (mL), carbon location-based, market-based, embodied (mg).
pub const QUANTITIES: [&str; 5] = [
    "energy_mj",
    "water_ml",
    "co2e_location_mg",
    "co2e_market_mg",
    "co2e_embodied_mg",
];

/// One figure per quantity of [`QUANTITIES`].
pub type Figures = [i128; 5];

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    pub site: SiteTotals,
    pub idle_mj: u64,
    /// Energy neither a job nor idle: what hosts could not attribute, plus facility overhead in
    /// windows without IT energy. Negative only when a meter reads below the meters inside it.
    pub unattributed_mj: i64,
    pub idle_water_ml: i64,
    pub unattributed_water_ml: i64,
    pub idle_co2e_location_mg: i64,
    pub unattributed_co2e_location_mg: i64,
    pub idle_co2e_market_mg: i64,
    pub unattributed_co2e_market_mg: i64,
    pub idle_co2e_embodied_mg: i64,
    pub unattributed_co2e_embodied_mg: i64,
    pub jobs: Vec<JobLine>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SiteTotals {
    pub measured_mj: u64,
    /// How `measured_mj` was obtained.
    pub measured_method: String,
    /// Energy at the IT boundary (outlets, else GPU + CPU + DRAM + host overhead factor).
    pub it_mj: u64,
    /// Facility overhead shared out to jobs and idle (cooling, UPS, distribution).
    pub overhead_mj: u64,
    pub water_ml: i64,
    pub co2e_location_mg: i64,
    pub co2e_market_mg: i64,
    pub co2e_embodied_mg: i64,
    /// measured / IT, and litres of water per kWh of IT energy, over the span.
    pub pue: f64,
    pub wue_l_per_kwh: f64,
    /// Share of the load met by PPA supply in the same hour (24/7 CFE score).
    pub hourly_cfe_share: f64,
    /// What market-based carbon was computed from.
    pub market: MarketInputs,
    pub start_ns: i64,
    pub end_ns: i64,
}

/// Market-based inputs over a span: PPA energy delivered, matched by the load of the same hour
/// and forfeited; guarantees of origin used and left after the span; energy no instrument
/// covered, and the residual-mix factor it was priced with (`null`: the grid average priced it).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct MarketInputs {
    pub ppa_delivered_mj: u64,
    pub ppa_matched_mj: u64,
    pub ppa_forfeited_mj: u64,
    pub go_used_mj: u64,
    pub go_balance_mj: u64,
    pub uncovered_mj: u64,
    pub residual_mix: Option<ResidualMixLine>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ResidualMixLine {
    pub g_per_kwh: f64,
    /// Publisher and edition, as configured; empty when none was given.
    pub source: String,
    pub year: Option<u32>,
}

impl From<&FacilityWindow> for MarketInputs {
    fn from(window: &FacilityWindow) -> Self {
        Self {
            ppa_delivered_mj: window.ppa_delivered_mj,
            ppa_matched_mj: window.ppa_matched_mj,
            ppa_forfeited_mj: window.ppa_forfeited_mj,
            go_used_mj: window.go_matched_mj,
            go_balance_mj: window.go_balance_mj,
            uncovered_mj: window.uncovered_mj,
            residual_mix: window.residual_mix_used.then(|| ResidualMixLine {
                g_per_kwh: window.residual_mix_mg_per_kwh as f64 / 1_000.0,
                source: window.residual_mix_source.clone(),
                year: (window.residual_mix_year != 0).then_some(window.residual_mix_year),
            }),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct JobLine {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub model: String,
    pub user: String,
    pub project: String,
    pub hosts: Vec<String>,
    /// Facility energy: IT energy + facility overhead share.
    pub energy_mj: u64,
    pub it_energy_mj: u64,
    pub gpu_energy_mj: u64,
    pub cpu_energy_mj: u64,
    pub dram_energy_mj: u64,
    pub remainder_mj: u64,
    pub overhead_mj: u64,
    /// How the IT energy was obtained.
    pub measured_mj: u64,
    pub interpolated_mj: u64,
    pub estimated_mj: u64,
    pub water_ml: u64,
    pub co2e_location_mg: u64,
    pub co2e_market_mg: u64,
    pub co2e_embodied_mg: u64,
    pub functional_unit: String,
    pub functional_units: u64,
    /// (location-based + embodied) / functional units, facility overhead included.
    pub sci_mg_per_unit: f64,
    pub gpu_hours: f64,
    /// `energy_mj` / the site's measured energy over the same span, for display; `null` where
    /// that is not known (the job has windows in hours the site has not settled yet).
    pub share_of_site: Option<f64>,
    /// Windows of the job built again because late data changed them; 0 when every figure
    /// stands as first computed.
    pub revised_windows: u64,
}

impl JobLine {
    /// A job's line; `site_mj`, the site's measured energy over the same span where it is known,
    /// gives its share of the site.
    pub fn from_footprint(footprint: &JobFootprint, site_mj: Option<u64>) -> Self {
        let job = footprint.job.clone().unwrap_or_default();
        let quality = footprint.energy_quality.unwrap_or_default();
        JobLine {
            id: job.id,
            name: job.name,
            kind: JobKind::name_of(job.kind).to_owned(),
            model: job.model,
            user: job.user,
            project: job.project,
            hosts: footprint.hosts.clone(),
            energy_mj: footprint.energy_mj,
            it_energy_mj: footprint.it_energy_mj,
            gpu_energy_mj: footprint.gpu_energy_mj,
            cpu_energy_mj: footprint.cpu_energy_mj,
            dram_energy_mj: footprint.dram_energy_mj,
            remainder_mj: footprint.remainder_mj,
            overhead_mj: footprint.overhead_mj,
            measured_mj: quality.measured_mj,
            interpolated_mj: quality.interpolated_mj,
            estimated_mj: quality.estimated_mj,
            water_ml: footprint.water_ml,
            co2e_location_mg: footprint.co2e_location_mg,
            co2e_market_mg: footprint.co2e_market_mg,
            co2e_embodied_mg: footprint.co2e_embodied_mg,
            functional_unit: job.functional_unit,
            functional_units: job.functional_units,
            sci_mg_per_unit: footprint.sci_mg_per_unit,
            gpu_hours: footprint.gpu_hours,
            share_of_site: site_mj
                .filter(|site| *site > 0)
                .map(|site| footprint.energy_mj as f64 / site as f64),
            revised_windows: footprint.revised_windows,
        }
    }

    /// The job's figure for each of [`QUANTITIES`].
    pub fn figures(&self) -> Figures {
        [
            self.energy_mj,
            self.water_ml,
            self.co2e_location_mg,
            self.co2e_market_mg,
            self.co2e_embodied_mg,
        ]
        .map(i128::from)
    }
}

impl Summary {
    /// Builds the summary from one facility total and the jobs over the same span.
    ///
    /// # Errors
    /// [`Error::Summary`] when the figures do not add up — never expected, and never hidden.
    pub fn build(facility: &FacilityWindow, jobs: &[JobFootprint]) -> Result<Self> {
        let lines: Vec<JobLine> = jobs
            .iter()
            .map(|footprint| JobLine::from_footprint(footprint, Some(facility.measured_mj)))
            .collect();
        let balance = |b: Option<Balance>| b.unwrap_or_default();
        let (water, location, market, embodied) = (
            balance(facility.water_ml),
            balance(facility.co2e_location_mg),
            balance(facility.co2e_market_mg),
            balance(facility.co2e_embodied_mg),
        );
        let summary = Self {
            site: SiteTotals {
                measured_mj: facility.measured_mj,
                measured_method: facility.measured_method.clone(),
                it_mj: facility.it_mj,
                overhead_mj: facility.overhead_mj,
                water_ml: water.site,
                co2e_location_mg: location.site,
                co2e_market_mg: market.site,
                co2e_embodied_mg: embodied.site,
                pue: facility.pue,
                wue_l_per_kwh: facility.wue_l_per_kwh,
                hourly_cfe_share: facility.cfe_share,
                market: MarketInputs::from(facility),
                start_ns: facility.start_ns,
                end_ns: facility.end_ns,
            },
            idle_mj: facility.idle_mj,
            unattributed_mj: facility.unattributed_mj,
            idle_water_ml: water.idle,
            unattributed_water_ml: water.unattributed,
            idle_co2e_location_mg: location.idle,
            unattributed_co2e_location_mg: location.unattributed,
            idle_co2e_market_mg: market.idle,
            unattributed_co2e_market_mg: market.unattributed,
            idle_co2e_embodied_mg: embodied.idle,
            unattributed_co2e_embodied_mg: embodied.unattributed,
            jobs: lines,
        };
        let expected_jobs = [
            i64::try_from(facility.jobs_mj).unwrap_or(i64::MAX),
            water.jobs,
            location.jobs,
            market.jobs,
            embodied.jobs,
        ]
        .map(i128::from);
        let listed = summary.jobs_total();
        for ((key, listed), expected) in QUANTITIES.iter().zip(listed).zip(expected_jobs) {
            if listed != expected {
                return Err(Error::Summary(format!(
                    "{key}: jobs listed add up to {listed} but the facility total counts {expected} for jobs"
                )));
            }
        }
        Ok(summary)
    }

    /// Σ jobs, per quantity.
    pub fn jobs_total(&self) -> Figures {
        self.jobs.iter().fold([0; 5], |mut total, job| {
            for (sum, figure) in total.iter_mut().zip(job.figures()) {
                *sum += figure;
            }
            total
        })
    }

    /// Idle devices' figures.
    pub fn idle(&self) -> Figures {
        [
            i128::from(self.idle_mj),
            i128::from(self.idle_water_ml),
            i128::from(self.idle_co2e_location_mg),
            i128::from(self.idle_co2e_market_mg),
            i128::from(self.idle_co2e_embodied_mg),
        ]
    }

    /// What is neither a job's nor idle.
    pub fn unattributed(&self) -> Figures {
        [
            self.unattributed_mj,
            self.unattributed_water_ml,
            self.unattributed_co2e_location_mg,
            self.unattributed_co2e_market_mg,
            self.unattributed_co2e_embodied_mg,
        ]
        .map(i128::from)
    }

    /// The site's measured figures.
    pub fn site_figures(&self) -> Figures {
        let site = &self.site;
        [
            i128::from(site.measured_mj),
            i128::from(site.water_ml),
            i128::from(site.co2e_location_mg),
            i128::from(site.co2e_market_mg),
            i128::from(site.co2e_embodied_mg),
        ]
    }

    /// `Σ jobs + idle + unattributed − site` per quantity: all zero when the books balance.
    pub fn imbalance(&self) -> Figures {
        let (jobs, idle, unattributed, site) = (
            self.jobs_total(),
            self.idle(),
            self.unattributed(),
            self.site_figures(),
        );
        std::array::from_fn(|q| jobs[q] + idle[q] + unattributed[q] - site[q])
    }

    /// `Σ jobs + idle + unattributed − measured` for energy.
    pub fn imbalance_mj(&self) -> i128 {
        self.imbalance()[0]
    }

    /// Pretty JSON.
    ///
    /// # Errors
    /// Serialisation failed.
    pub fn to_json(&self) -> Result<String> {
        Ok(serde_json::to_string_pretty(self)?)
    }
}

/// One row of `footprint totals --json`: a span of the site or a host, each quantity balanced.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TotalsLine {
    pub start_ns: i64,
    pub end_ns: i64,
    /// Empty for the site.
    pub host: String,
    pub energy_mj: Balance,
    pub it_mj: u64,
    pub overhead_mj: u64,
    pub water_ml: Balance,
    pub co2e_location_mg: Balance,
    pub co2e_market_mg: Balance,
    pub co2e_embodied_mg: Balance,
    pub pue: f64,
    pub wue_l_per_kwh: f64,
    pub hourly_cfe_share: f64,
    /// What market-based carbon was computed from.
    pub market: MarketInputs,
    pub measured_method: String,
    /// Host windows built again after late data changed them, and site hours settled again.
    pub revised_windows: u64,
    pub revised_hours: u64,
}

impl From<&FacilityWindow> for TotalsLine {
    fn from(window: &FacilityWindow) -> Self {
        Self {
            start_ns: window.start_ns,
            end_ns: window.end_ns,
            host: window.host.clone(),
            energy_mj: Balance {
                site: i64::try_from(window.measured_mj).unwrap_or(i64::MAX),
                jobs: i64::try_from(window.jobs_mj).unwrap_or(i64::MAX),
                idle: i64::try_from(window.idle_mj).unwrap_or(i64::MAX),
                unattributed: window.unattributed_mj,
            },
            it_mj: window.it_mj,
            overhead_mj: window.overhead_mj,
            water_ml: window.water_ml.unwrap_or_default(),
            co2e_location_mg: window.co2e_location_mg.unwrap_or_default(),
            co2e_market_mg: window.co2e_market_mg.unwrap_or_default(),
            co2e_embodied_mg: window.co2e_embodied_mg.unwrap_or_default(),
            pue: window.pue,
            wue_l_per_kwh: window.wue_l_per_kwh,
            hourly_cfe_share: window.cfe_share,
            market: MarketInputs::from(window),
            measured_method: window.measured_method.clone(),
            revised_windows: window.revised_windows,
            revised_hours: window.revised_hours,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use footprint_proto::v1::Job;

    fn footprint(id: &str, energy_mj: u64) -> JobFootprint {
        JobFootprint {
            job: Some(Job {
                id: id.into(),
                ..Default::default()
            }),
            energy_mj,
            gpu_energy_mj: energy_mj,
            ..Default::default()
        }
    }

    #[test]
    fn books_balance_and_shares_follow_the_site() {
        let facility = FacilityWindow {
            measured_mj: 1_000,
            jobs_mj: 700,
            idle_mj: 200,
            unattributed_mj: 100,
            ..Default::default()
        };
        let summary =
            Summary::build(&facility, &[footprint("a", 500), footprint("b", 200)]).unwrap();
        assert_eq!(summary.imbalance_mj(), 0);
        assert!((summary.jobs[0].share_of_site.unwrap_or_default() - 0.5).abs() < 1e-12);
    }

    #[test]
    fn each_quantity_is_checked_on_its_own() {
        // Water is one mL short of the site's reading; energy balances.
        let facility = FacilityWindow {
            measured_mj: 1_000,
            jobs_mj: 1_000,
            water_ml: Some(Balance {
                site: 10,
                jobs: 0,
                idle: 4,
                unattributed: 5,
            }),
            ..Default::default()
        };
        let summary = Summary::build(&facility, &[footprint("a", 1_000)]).unwrap();
        assert_eq!(summary.imbalance(), [0, -1, 0, 0, 0]);
    }

    #[test]
    fn jobs_that_do_not_match_the_facility_total_are_an_error() {
        let facility = FacilityWindow {
            measured_mj: 1_000,
            jobs_mj: 700,
            idle_mj: 200,
            unattributed_mj: 100,
            ..Default::default()
        };
        assert!(Summary::build(&facility, &[footprint("a", 500)]).is_err());
    }
}
