//! The per-job annex (SPEC §4), totals per model, project and user, and the conservation line.

use std::collections::BTreeMap;

use footprint_core::UnixNanos;
use footprint_core::time::format_rfc3339;
use serde::Serialize;

use super::canonical::Decimal;
use super::figures::{kilograms, kwh, litres, share};
use super::inputs::{Balance, JobFigures, ReportInputs};

/// Energy by component, kWh.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EnergyKwh {
    pub gpu: Decimal,
    pub cpu: Decimal,
    pub dram: Decimal,
    pub host_remainder: Decimal,
    pub facility_overhead: Decimal,
    pub total: Decimal,
}

/// The same in mJ, exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct EnergyMj {
    pub gpu: i64,
    pub cpu: i64,
    pub dram: i64,
    pub host_remainder: i64,
    pub facility_overhead: i64,
    pub total: i64,
}

/// CO2e by method, kg.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Co2eKg {
    pub location_based: Decimal,
    pub market_based: Decimal,
    pub embodied: Decimal,
}

/// The same in mg, exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Co2eMg {
    pub location_based: i64,
    pub market_based: i64,
    pub embodied: i64,
}

/// Shares of a job's IT energy by how it was obtained.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct QualityShares {
    pub measured: Option<Decimal>,
    pub interpolated: Option<Decimal>,
    pub estimated: Option<Decimal>,
}

/// One job of the annex.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JobLine {
    pub id: String,
    pub scheduler: String,
    pub name: String,
    pub user: String,
    pub project: String,
    pub kind: String,
    pub model: String,
    /// Its first and last window in the period (start of the first, end of the last).
    pub start: String,
    pub end: String,
    pub gpu_hours: Decimal,
    pub energy_kwh: EnergyKwh,
    pub energy_mj: EnergyMj,
    pub water_l: Decimal,
    pub water_ml: i64,
    pub co2e_kg: Co2eKg,
    pub co2e_mg: Co2eMg,
    pub functional_unit: String,
    pub functional_units: u64,
    /// (location-based + embodied) / functional units, g CO2e (SCI 1.1: E × I + M per R, E
    /// including the facility-overhead share, I location-based); null without units.
    pub sci_g_per_unit: Option<Decimal>,
    pub energy_quality: QualityShares,
}

/// Jobs summed by model, project or user.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GroupLine {
    pub key: String,
    pub jobs: u64,
    pub gpu_hours: Decimal,
    pub energy_kwh: Decimal,
    pub energy_mj: i64,
    pub water_l: Decimal,
    pub co2e_kg: Co2eKg,
    pub co2e_mg: Co2eMg,
}

/// Totals per model, project and user.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Totals {
    pub by_model: Vec<GroupLine>,
    pub by_project: Vec<GroupLine>,
    pub by_user: Vec<GroupLine>,
}

/// `site = jobs + idle + unattributed` for one quantity, with the annex's own sum of its jobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ConservationLine {
    pub unit: &'static str,
    pub site: i64,
    pub jobs: i64,
    pub idle: i64,
    pub unattributed: i64,
    /// Σ of the annex's jobs: equals `jobs`.
    pub jobs_in_annex: i64,
    /// `jobs + idle + unattributed − site`: 0.
    pub imbalance: i64,
    pub balanced: bool,
}

fn job_energy(job: &JobFigures) -> EnergyMj {
    EnergyMj {
        gpu: job.gpu_mj,
        cpu: job.cpu_mj,
        dram: job.dram_mj,
        host_remainder: job.remainder_mj,
        facility_overhead: job.overhead_mj,
        total: job.gpu_mj + job.cpu_mj + job.dram_mj + job.remainder_mj + job.overhead_mj,
    }
}

fn co2e(mg: Co2eMg) -> Co2eKg {
    Co2eKg {
        location_based: kilograms(mg.location_based),
        market_based: kilograms(mg.market_based),
        embodied: kilograms(mg.embodied),
    }
}

fn gpu_hours(gpu_ns: i64) -> Decimal {
    Decimal::ratio(
        i128::from(gpu_ns),
        i128::from(footprint_core::units::NANOS_PER_HOUR),
        3,
    )
    .unwrap_or(Decimal::whole(0))
}

pub fn jobs(inputs: &ReportInputs, window_ns: i64) -> Vec<JobLine> {
    inputs
        .jobs
        .iter()
        .map(|job| {
            let energy = job_energy(job);
            let it = energy.total - energy.facility_overhead;
            let mg = Co2eMg {
                location_based: job.co2e_location_mg,
                market_based: job.co2e_market_mg,
                embodied: job.co2e_embodied_mg,
            };
            let sci = (job.functional_units > 0)
                .then(|| {
                    Decimal::ratio(
                        i128::from(job.co2e_location_mg + job.co2e_embodied_mg),
                        i128::from(job.functional_units) * 1_000,
                        3,
                    )
                })
                .flatten();
            JobLine {
                id: job.id.clone(),
                scheduler: job.scheduler.clone(),
                name: job.name.clone(),
                user: job.user.clone(),
                project: job.project.clone(),
                kind: job.kind.clone(),
                model: job.model.clone(),
                start: format_rfc3339(UnixNanos(job.first_window_ns)),
                end: format_rfc3339(UnixNanos(job.last_window_ns + window_ns)),
                gpu_hours: gpu_hours(job.gpu_ns),
                energy_kwh: EnergyKwh {
                    gpu: kwh(energy.gpu),
                    cpu: kwh(energy.cpu),
                    dram: kwh(energy.dram),
                    host_remainder: kwh(energy.host_remainder),
                    facility_overhead: kwh(energy.facility_overhead),
                    total: kwh(energy.total),
                },
                energy_mj: energy,
                water_l: litres(job.water_ml),
                water_ml: job.water_ml,
                co2e_kg: co2e(mg),
                co2e_mg: mg,
                functional_unit: job.functional_unit.clone(),
                functional_units: job.functional_units,
                sci_g_per_unit: sci,
                energy_quality: QualityShares {
                    measured: share(job.measured_mj, it),
                    interpolated: share(job.interpolated_mj, it),
                    estimated: share(job.estimated_mj, it),
                },
            }
        })
        .collect()
}

#[derive(Default)]
struct Sum {
    jobs: u64,
    gpu_ns: i64,
    energy_mj: i64,
    water_ml: i64,
    co2e: [i64; 3],
}

fn group_by(inputs: &ReportInputs, key: impl Fn(&JobFigures) -> &str) -> Vec<GroupLine> {
    let mut sums: BTreeMap<&str, Sum> = BTreeMap::new();
    for job in &inputs.jobs {
        let sum = sums.entry(key(job)).or_default();
        sum.jobs += 1;
        sum.gpu_ns += job.gpu_ns;
        sum.energy_mj += job_energy(job).total;
        sum.water_ml += job.water_ml;
        sum.co2e[0] += job.co2e_location_mg;
        sum.co2e[1] += job.co2e_market_mg;
        sum.co2e[2] += job.co2e_embodied_mg;
    }
    let mut lines: Vec<GroupLine> = sums
        .into_iter()
        .map(|(key, sum)| {
            let mg = Co2eMg {
                location_based: sum.co2e[0],
                market_based: sum.co2e[1],
                embodied: sum.co2e[2],
            };
            GroupLine {
                key: key.to_owned(),
                jobs: sum.jobs,
                gpu_hours: gpu_hours(sum.gpu_ns),
                energy_kwh: kwh(sum.energy_mj),
                energy_mj: sum.energy_mj,
                water_l: litres(sum.water_ml),
                co2e_kg: co2e(mg),
                co2e_mg: mg,
            }
        })
        .collect();
    lines.sort_by(|a, b| {
        b.energy_mj
            .cmp(&a.energy_mj)
            .then_with(|| a.key.cmp(&b.key))
    });
    lines
}

pub fn totals(inputs: &ReportInputs) -> Totals {
    Totals {
        by_model: group_by(inputs, |job| &job.model),
        by_project: group_by(inputs, |job| &job.project),
        by_user: group_by(inputs, |job| &job.user),
    }
}

/// SCI of the jobs of one model and functional unit taken together.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SciLine {
    pub model: String,
    pub functional_unit: String,
    pub jobs: u64,
    pub functional_units: u64,
    /// Σ (location-based + embodied) / Σ units, g CO2e per unit.
    pub sci_g_per_unit: Option<Decimal>,
    /// Σ facility energy / Σ units, Wh per unit.
    pub energy_wh_per_unit: Option<Decimal>,
}

pub fn sci(inputs: &ReportInputs) -> Vec<SciLine> {
    let mut sums: BTreeMap<(&str, &str), (u64, u64, i64, i64)> = BTreeMap::new();
    for job in inputs.jobs.iter().filter(|job| job.functional_units > 0) {
        let sum = sums
            .entry((job.model.as_str(), job.functional_unit.as_str()))
            .or_default();
        sum.0 += 1;
        sum.1 += job.functional_units;
        sum.2 += job.co2e_location_mg + job.co2e_embodied_mg;
        sum.3 += job_energy(job).total;
    }
    sums.into_iter()
        .map(|((model, unit), (jobs, units, mg, mj))| SciLine {
            model: model.to_owned(),
            functional_unit: unit.to_owned(),
            jobs,
            functional_units: units,
            sci_g_per_unit: Decimal::ratio(i128::from(mg), i128::from(units) * 1_000, 3),
            energy_wh_per_unit: Decimal::ratio(i128::from(mj), i128::from(units) * 3_600_000, 3),
        })
        .collect()
}

pub fn conservation(inputs: &ReportInputs) -> BTreeMap<&'static str, ConservationLine> {
    let total = &inputs.total;
    let annex = |figure: fn(&JobFigures) -> i64| inputs.jobs.iter().map(figure).sum::<i64>();
    let line = |unit: &'static str, balance: &Balance, jobs_in_annex: i64| {
        let imbalance = balance.jobs + balance.idle + balance.unattributed - balance.site;
        ConservationLine {
            unit,
            site: balance.site,
            jobs: balance.jobs,
            idle: balance.idle,
            unattributed: balance.unattributed,
            jobs_in_annex,
            imbalance,
            balanced: imbalance == 0 && jobs_in_annex == balance.jobs,
        }
    };
    BTreeMap::from([
        (
            "energy",
            line("mJ", &total.energy_mj, annex(|job| job_energy(job).total)),
        ),
        (
            "water",
            line("mL", &total.water_ml, annex(|job| job.water_ml)),
        ),
        (
            "co2e_location_based",
            line(
                "mg",
                &total.co2e_location_mg,
                annex(|job| job.co2e_location_mg),
            ),
        ),
        (
            "co2e_market_based",
            line("mg", &total.co2e_market_mg, annex(|job| job.co2e_market_mg)),
        ),
        (
            "co2e_embodied",
            line(
                "mg",
                &total.co2e_embodied_mg,
                annex(|job| job.co2e_embodied_mg),
            ),
        ),
    ])
}
