//! An hour's roll-up as the site stage settles it: every account it shares the facility over
//! already passes through [`site::settle_hour`](super::site), with the host stage's figures read
//! beside it, so the sums are kept on the way instead of reading the hour's window rows a second
//! time (that pass cost about 6 % of building the hour). `tables::rollups::roll_up_hour` sums the
//! same from the window rows in SQL — for ledgers from before roll-ups, and as the cross-check
//! the tests hold this one to.

use std::collections::{BTreeMap, BTreeSet};

use footprint_core::facility::{Intensity, SiteWindow};
use footprint_core::units::NANOS_PER_HOUR;
use rusqlite::{Connection, params, params_from_iter};

use crate::Result;
use crate::codec::quality_code;
use crate::tables::rollups::{self, HOST_FIGURES, JOB_FIGURES, JOBS_OF_HOST, SITE_FIGURES};

/// One account of a window as the site stage reads it, with the host stage's figures of its
/// row: a job's (`gpu_mj, cpu_mj, dram_mj, remainder_mj, measured_mj, interpolated_mj,
/// estimated_mj, gpu_ns, embodied_mg`, as `JOB_FIGURES` begins) or a host's (`it_mj, host_mj,
/// remainder_mj, remainder_deficit_mj, idle_mj, unattributed_mj, measured_mj, interpolated_mj,
/// estimated_mj, idle_embodied_mg`, as `HOST_FIGURES` begins), carried by its idle account; a
/// host's unattributed account has none of its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum AccountRow {
    Job {
        collector: i64,
        job: i64,
        figures: [i64; 9],
    },
    Idle {
        collector: i64,
        figures: [i64; 10],
    },
    Unattributed {
        collector: i64,
    },
}

/// What the site stage shares to one account in one window: overhead, water, location-based
/// and market-based carbon.
pub(crate) type Shares = [i64; 4];

#[derive(Debug, Default)]
struct JobSums {
    figures: [i64; 13],
    host_windows: i64,
    revised: i64,
    first_ns: i64,
    last_ns: i64,
}

#[derive(Debug, Default)]
struct HostSums {
    figures: [i64; 18],
    host_windows: i64,
    revised: i64,
    jobs: [i64; 6],
}

#[derive(Debug, Default)]
struct SiteSums {
    figures: [i64; 10],
    by_overhead_source: [i64; 3],
    windows: i64,
    intensity: Option<Intensity>,
}

/// The sums of one hour, as it is settled.
#[derive(Debug)]
pub(crate) struct HourRollup {
    hour_ns: i64,
    /// Window rows built again after late data: (collector, start).
    revised: BTreeSet<(i64, i64)>,
    jobs: BTreeMap<(i64, i64), JobSums>,
    hosts: BTreeMap<i64, HostSums>,
    site: SiteSums,
}

fn add<const N: usize>(sums: &mut [i64], values: &[i64; N]) {
    for (sum, value) in sums.iter_mut().zip(values) {
        *sum += value;
    }
}

impl HourRollup {
    /// An empty roll-up of the hour at `hour_ns`.
    pub fn new(connection: &Connection, hour_ns: i64) -> Result<Self> {
        let revised = connection
            .prepare_cached(
                "SELECT collector, start_ns FROM window_revisions WHERE start_ns >= ?1 AND start_ns < ?2",
            )?
            .query_map(params![hour_ns, hour_ns + NANOS_PER_HOUR], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(Self {
            hour_ns,
            revised,
            jobs: BTreeMap::new(),
            hosts: BTreeMap::new(),
            site: SiteSums::default(),
        })
    }

    /// One account of the window at `start_ns` with what the site stage shared to it.
    pub fn add_account(&mut self, start_ns: i64, row: &AccountRow, shares: &Shares) {
        let is_revised = |collector: i64| i64::from(self.revised.contains(&(collector, start_ns)));
        match *row {
            AccountRow::Job {
                collector,
                job,
                ref figures,
            } => {
                let revised = is_revised(collector);
                let sums = self.jobs.entry((collector, job)).or_default();
                if sums.host_windows == 0 {
                    sums.first_ns = start_ns;
                }
                sums.last_ns = start_ns;
                add(&mut sums.figures[..9], figures);
                add(&mut sums.figures[9..], shares);
                sums.host_windows += 1;
                sums.revised += revised;
                let it = figures[..4].iter().sum::<i64>();
                add(
                    &mut self.hosts.entry(collector).or_default().jobs,
                    &[it, shares[0], shares[1], shares[2], shares[3], figures[8]],
                );
            }
            AccountRow::Idle {
                collector,
                ref figures,
            } => {
                let revised = is_revised(collector);
                let host = self.hosts.entry(collector).or_default();
                add(&mut host.figures[..10], figures);
                add(&mut host.figures[10..14], shares);
                host.host_windows += 1;
                host.revised += revised;
            }
            AccountRow::Unattributed { collector } => add(
                &mut self.hosts.entry(collector).or_default().figures[14..],
                shares,
            ),
        }
    }

    /// The site's figures of one window, in the order of `SITE_FIGURES`.
    pub fn add_site_window(
        &mut self,
        split: &SiteWindow,
        location: (i64, i64),
        market: (i64, i64),
        intensity: Option<Intensity>,
    ) {
        add(
            &mut self.site.figures,
            &[
                split.facility_mj as i64,
                split.it_mj as i64,
                split.overhead_deficit_mj as i64,
                split.unattributed_mj(),
                split.site_water_ml as i64,
                split.unattributed_water_ml as i64,
                location.0,
                location.1,
                market.0,
                market.1,
            ],
        );
        self.site.by_overhead_source[(split.overhead_source as usize).min(2)] += 1;
        self.site.windows += 1;
        self.site.intensity = intensity;
    }

    /// Replaces the hour's roll-up with these sums, and sums its day again.
    pub fn write(self, connection: &Connection) -> Result<()> {
        let hour_ns = self.hour_ns;
        for table in ["rollup_jobs", "rollup_hosts", "rollup_site"] {
            connection
                .prepare_cached(&format!("DELETE FROM {table} WHERE hour_ns = ?1"))?
                .execute([hour_ns])?;
        }
        let placeholders = |count: usize, from: usize| {
            (from..from + count)
                .map(|index| format!("?{index}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut job_row = connection.prepare_cached(&format!(
            "INSERT INTO rollup_jobs (hour_ns, collector, job, {JOB_FIGURES}, host_windows, revised_windows,
               first_start_ns, last_start_ns) VALUES (?1, ?2, ?3, {}, ?17, ?18, ?19, ?20)",
            placeholders(13, 4)
        ))?;
        for ((collector, job), sums) in &self.jobs {
            let mut values = vec![hour_ns, *collector, *job];
            values.extend(sums.figures);
            values.extend([sums.host_windows, sums.revised, sums.first_ns, sums.last_ns]);
            job_row.execute(params_from_iter(values))?;
        }
        let mut host_row = connection.prepare_cached(&format!(
            "INSERT INTO rollup_hosts (hour_ns, collector, {HOST_FIGURES}, host_windows, revised_windows,
               {JOBS_OF_HOST}) VALUES (?1, ?2, {}, ?21, ?22, {})",
            placeholders(18, 3),
            placeholders(6, 23)
        ))?;
        for (collector, sums) in self.hosts.iter().filter(|(_, s)| s.host_windows > 0) {
            let mut values = vec![hour_ns, *collector];
            values.extend(sums.figures);
            values.extend([sums.host_windows, sums.revised]);
            values.extend(sums.jobs);
            host_row.execute(params_from_iter(values))?;
        }
        if self.site.windows > 0 {
            let intensity = self.site.intensity;
            connection
                .prepare_cached(&format!(
                    "INSERT INTO rollup_site (hour_ns, {SITE_FIGURES}, windows_it_only, windows_metered,
                       windows_assumed_pue, intensity_mg_per_kwh, intensity_quality)
                     VALUES (?1, {}, ?12, ?13, ?14, ?15, ?16)",
                    placeholders(10, 2)
                ))?
                .execute(params_from_iter(
                    std::iter::once(Some(hour_ns))
                        .chain(self.site.figures.iter().map(|v| Some(*v)))
                        .chain(self.site.by_overhead_source.iter().map(|v| Some(*v)))
                        .chain([
                            intensity.map(|i| i.mg_per_kwh.0 as i64),
                            intensity.map(|i| i64::from(quality_code(i.quality))),
                        ]),
                ))?;
        }
        rollups::roll_up_day(connection, hour_ns)?;
        Ok(())
    }
}
