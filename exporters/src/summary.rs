//! The run summary (`summary.json`): the facility's measured energy and how it splits between
//! jobs, idle devices and what is not attributed, with `Σ jobs + idle + unattributed = measured`
//! exactly, in millijoules.

use footprint_proto::v1::{FacilityWindow, JobFootprint, JobKind};
use serde::Serialize;

use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub site: SiteTotals,
    pub idle_mj: u64,
    /// Facility overhead not yet attributed (cooling, UPS and distribution losses) plus energy the
    /// hosts could not attribute. Negative only when the site meter reads below the IT meters.
    pub unattributed_mj: i64,
    pub jobs: Vec<JobLine>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SiteTotals {
    pub measured_mj: u64,
    /// How `measured_mj` was obtained.
    pub measured_method: String,
    /// Energy of the IT meters (GPU, CPU package, DRAM).
    pub it_mj: u64,
    pub start_ns: i64,
    pub end_ns: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JobLine {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub model: String,
    pub user: String,
    pub project: String,
    pub hosts: Vec<String>,
    pub energy_mj: u64,
    pub gpu_energy_mj: u64,
    pub cpu_energy_mj: u64,
    pub dram_energy_mj: u64,
    pub measured_mj: u64,
    pub interpolated_mj: u64,
    pub estimated_mj: u64,
    pub gpu_hours: f64,
    /// `energy_mj / site.measured_mj`, for display.
    pub share_of_site: f64,
}

fn kind_name(kind: i32) -> &'static str {
    match JobKind::try_from(kind) {
        Ok(JobKind::Training) => "training",
        Ok(JobKind::Inference) => "inference",
        _ => "other",
    }
}

impl JobLine {
    /// A job's line; `site_mj` (0 if unknown) gives its share of the site.
    pub fn from_footprint(footprint: &JobFootprint, site_mj: u64) -> Self {
        let job = footprint.job.clone().unwrap_or_default();
        let quality = footprint.energy_quality.unwrap_or_default();
        JobLine {
            id: job.id,
            name: job.name,
            kind: kind_name(job.kind).to_owned(),
            model: job.model,
            user: job.user,
            project: job.project,
            hosts: footprint.hosts.clone(),
            energy_mj: footprint.energy_mj,
            gpu_energy_mj: footprint.gpu_energy_mj,
            cpu_energy_mj: footprint.cpu_energy_mj,
            dram_energy_mj: footprint.dram_energy_mj,
            measured_mj: quality.measured_mj,
            interpolated_mj: quality.interpolated_mj,
            estimated_mj: quality.estimated_mj,
            gpu_hours: footprint.gpu_hours,
            share_of_site: if site_mj == 0 {
                0.0
            } else {
                footprint.energy_mj as f64 / site_mj as f64
            },
        }
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
            .map(|footprint| JobLine::from_footprint(footprint, facility.measured_mj))
            .collect();
        let jobs_mj: u64 = lines.iter().map(|l| l.energy_mj).sum();
        if jobs_mj != facility.jobs_mj {
            return Err(Error::Summary(format!(
                "jobs listed add up to {jobs_mj} mJ but the facility total counts {} mJ for jobs",
                facility.jobs_mj
            )));
        }
        Ok(Self {
            site: SiteTotals {
                measured_mj: facility.measured_mj,
                measured_method: facility.measured_method.clone(),
                it_mj: facility.it_mj,
                start_ns: facility.start_ns,
                end_ns: facility.end_ns,
            },
            idle_mj: facility.idle_mj,
            unattributed_mj: facility.unattributed_mj,
            jobs: lines,
        })
    }

    /// `Σ jobs + idle + unattributed − measured`: zero when the books balance.
    pub fn imbalance_mj(&self) -> i128 {
        let jobs: i128 = self.jobs.iter().map(|j| i128::from(j.energy_mj)).sum();
        jobs + i128::from(self.idle_mj) + i128::from(self.unattributed_mj)
            - i128::from(self.site.measured_mj)
    }

    /// Pretty JSON.
    ///
    /// # Errors
    /// Serialisation failed.
    pub fn to_json(&self) -> Result<String> {
        Ok(serde_json::to_string_pretty(self)?)
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
        assert!((summary.jobs[0].share_of_site - 0.5).abs() < 1e-12);
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
