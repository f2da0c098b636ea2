//! The facility's balances over a span: energy, water and carbon, each split into jobs, idle and
//! unattributed, for the site or per hall, rack or host, in steps.

use footprint_core::{Span, UnixNanos};
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

use super::sources::{Sources, Tables};

use super::site;
use crate::{Error, Result};

/// A quantity over a span and where it went: `site = jobs + idle + unattributed`, exactly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Balance {
    pub site: i64,
    pub jobs: i64,
    pub idle: i64,
    pub unattributed: i64,
}

impl Balance {
    /// `jobs + idle + unattributed − site`; zero when the books balance.
    pub fn imbalance(&self) -> i64 {
        self.jobs + self.idle + self.unattributed - self.site
    }
}

/// The facility (or one host) over a span: energy, water and carbon, each balanced.
#[derive(Clone, Debug, PartialEq)]
pub struct FacilityWindow {
    pub start_ns: i64,
    pub end_ns: i64,
    /// The host of a per-host series; empty for the site.
    pub host: String,
    pub energy_mj: Balance,
    pub measured_method: String,
    /// Energy at the IT boundary: outlets, or components + overhead factor.
    pub it_mj: u64,
    /// Facility overhead shared out.
    pub overhead_mj: u64,
    pub water_ml: Balance,
    pub co2e_location_mg: Balance,
    pub co2e_market_mg: Balance,
    pub co2e_embodied_mg: Balance,
    pub ppa_matched_mj: u64,
    pub go_matched_mj: u64,
    /// Market-based inputs (the site's; zero for a host or a group): the PPA energy delivered
    /// in the span's hours, and the part no load of the same hour used (forfeited: matching is
    /// hourly).
    pub ppa_delivered_mj: u64,
    pub ppa_forfeited_mj: u64,
    /// Guarantees of origin left after the span's last settled hour.
    pub go_balance_mj: u64,
    /// Energy no instrument covered: priced with the residual mix, else the grid average.
    pub uncovered_mj: u64,
    /// The residual-mix factor, where the span's uncovered energy was priced with it.
    pub residual_mix: Option<ResidualMix>,
    /// Host windows in the span built again because late data changed them.
    pub revised_windows: u64,
    /// Site hours in the span settled again with different figures (the site only).
    pub revised_hours: u64,
    /// How the hosts' energy (`it_mj`) was obtained; the parts add up to it.
    pub it_quality: footprint_core::EnergyByQuality,
    /// Where the site's windows took the facility energy from (the site only).
    pub facility_sources: FacilitySources,
}

/// Site windows by where their facility energy came from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FacilitySources {
    /// The site energy meter's delta.
    pub metered: u64,
    /// No site meter: IT energy alone.
    pub it_only: u64,
    /// No site meter: IT energy × the configured PUE (estimated).
    pub assumed_pue: u64,
}

impl FacilityWindow {
    pub fn pue(&self) -> f64 {
        if self.it_mj == 0 {
            0.0
        } else {
            self.energy_mj.site as f64 / self.it_mj as f64
        }
    }

    pub fn wue_l_per_kwh(&self) -> f64 {
        if self.it_mj == 0 {
            0.0
        } else {
            (self.water_ml.site as f64 / 1_000.0)
                / (self.it_mj as f64 / footprint_core::Millijoules::PER_KWH as f64)
        }
    }

    /// Share of the load covered by PPA supply in the same hour.
    pub fn cfe_share(&self) -> f64 {
        if self.energy_mj.site <= 0 {
            0.0
        } else {
            self.ppa_matched_mj as f64 / self.energy_mj.site as f64
        }
    }
}

/// A residual-mix factor and where it is from (`carbon.residual_mix_*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResidualMix {
    pub mg_per_kwh: u64,
    /// Publisher and edition; empty when the config gives none.
    pub source: String,
    pub year: Option<u16>,
}

/// The span the site stage has settled: from the first built window to the settled hour.
///
/// # Errors
/// A database error.
pub fn settled_span(connection: &Connection) -> Result<Option<Span>> {
    let Some(UnixNanos(end)) = site::settled_until(connection)? else {
        return Ok(None);
    };
    let start: Option<i64> =
        connection.query_row("SELECT MIN(hour_ns) FROM site_hours", [], |row| row.get(0))?;
    Ok(start.filter(|start| *start < end).map(|start| {
        Span::new(
            footprint_core::UnixNanos(start),
            footprint_core::UnixNanos(end),
        )
    }))
}

/// Sums of one host's rows (or every host's) over a bucket.
#[derive(Clone, Default)]
struct HostSums {
    jobs_it: i64,
    jobs_overhead: i64,
    jobs_water: i64,
    jobs_location: i64,
    jobs_market: i64,
    jobs_embodied: i64,
    idle: i64,
    idle_overhead: i64,
    unattributed: i64,
    unattributed_overhead: i64,
    deficit: i64,
    host_mj: i64,
    idle_water: i64,
    unattributed_water: i64,
    idle_location: i64,
    unattributed_location: i64,
    idle_market: i64,
    unattributed_market: i64,
    idle_embodied: i64,
    measured: i64,
    interpolated: i64,
    estimated: i64,
}

impl HostSums {
    fn quality(&self) -> footprint_core::EnergyByQuality {
        footprint_core::EnergyByQuality {
            measured_mj: self.measured as u64,
            interpolated_mj: self.interpolated as u64,
            estimated_mj: self.estimated as u64,
        }
    }

    fn add(&mut self, other: &Self) {
        let pairs = [
            (&mut self.jobs_it, other.jobs_it),
            (&mut self.jobs_overhead, other.jobs_overhead),
            (&mut self.jobs_water, other.jobs_water),
            (&mut self.jobs_location, other.jobs_location),
            (&mut self.jobs_market, other.jobs_market),
            (&mut self.jobs_embodied, other.jobs_embodied),
            (&mut self.idle, other.idle),
            (&mut self.idle_overhead, other.idle_overhead),
            (&mut self.unattributed, other.unattributed),
            (&mut self.unattributed_overhead, other.unattributed_overhead),
            (&mut self.deficit, other.deficit),
            (&mut self.host_mj, other.host_mj),
            (&mut self.idle_water, other.idle_water),
            (&mut self.unattributed_water, other.unattributed_water),
            (&mut self.idle_location, other.idle_location),
            (&mut self.unattributed_location, other.unattributed_location),
            (&mut self.idle_market, other.idle_market),
            (&mut self.unattributed_market, other.unattributed_market),
            (&mut self.idle_embodied, other.idle_embodied),
            (&mut self.measured, other.measured),
            (&mut self.interpolated, other.interpolated),
            (&mut self.estimated, other.estimated),
        ];
        for (sum, value) in pairs {
            *sum += value;
        }
    }
}

const JOB_SUMS: &str = "collector, gpu_mj + cpu_mj + dram_mj + remainder_mj AS it_mj, overhead_mj, water_ml, \
co2e_location_mg, co2e_market_mg, embodied_mg";
/// The same, from a host's roll-up (which carries its jobs' sums).
const JOB_SUMS_ROLLED: &str = "collector, jobs_it_mj AS it_mj, jobs_overhead_mj AS overhead_mj, \
jobs_water_ml AS water_ml, jobs_co2e_location_mg AS co2e_location_mg, jobs_co2e_market_mg AS co2e_market_mg, \
jobs_embodied_mg AS embodied_mg";
const JOB_SUMMED: &str =
    "it_mj, overhead_mj, water_ml, co2e_location_mg, co2e_market_mg, embodied_mg";
const HOST_SUMMED: &str = "idle_mj, idle_overhead_mj, unattributed_mj, unattributed_overhead_mj, \
remainder_deficit_mj, host_mj, idle_water_ml, unattributed_water_ml, idle_co2e_location_mg, \
unattributed_co2e_location_mg, idle_co2e_market_mg, unattributed_co2e_market_mg, idle_embodied_mg, \
measured_mj, interpolated_mj, estimated_mj";

/// Each host's sums over `sources`: its jobs' (in the order of `JOB_SUMMED`) and its own (in the
/// order of `HOST_SUMMED`).
fn host_sums(
    connection: &Connection,
    sources: &Sources,
) -> Result<std::collections::BTreeMap<i64, HostSums>> {
    let host_columns = format!("collector, {HOST_SUMMED}");
    let jobs = sums_by_collector(
        connection,
        sources,
        &Tables {
            days: Some(("rollup_hosts_days", JOB_SUMS_ROLLED)),
            hours: ("rollup_hosts", JOB_SUMS_ROLLED),
            detail: ("window_jobs", JOB_SUMS),
        },
        JOB_SUMMED,
    )?;
    let hosts = sums_by_collector(
        connection,
        sources,
        &Tables {
            days: Some(("rollup_hosts_days", &host_columns)),
            hours: ("rollup_hosts", &host_columns),
            detail: ("window_hosts", &host_columns),
        },
        HOST_SUMMED,
    )?;
    let mut by_host: std::collections::BTreeMap<i64, HostSums> = std::collections::BTreeMap::new();
    for (collector, j) in jobs {
        let sums = by_host.entry(collector).or_default();
        (sums.jobs_it, sums.jobs_overhead, sums.jobs_water) = (j[0], j[1], j[2]);
        (sums.jobs_location, sums.jobs_market, sums.jobs_embodied) = (j[3], j[4], j[5]);
    }
    for (collector, h) in hosts {
        let sums = by_host.entry(collector).or_default();
        (sums.idle, sums.idle_overhead) = (h[0], h[1]);
        (sums.unattributed, sums.unattributed_overhead) = (h[2], h[3]);
        (sums.deficit, sums.host_mj) = (h[4], h[5]);
        (sums.idle_water, sums.unattributed_water) = (h[6], h[7]);
        (sums.idle_location, sums.unattributed_location) = (h[8], h[9]);
        (sums.idle_market, sums.unattributed_market) = (h[10], h[11]);
        sums.idle_embodied = h[12];
        (sums.measured, sums.interpolated, sums.estimated) = (h[13], h[14], h[15]);
    }
    Ok(by_host)
}

/// `summed` (columns of `tables`' arms) summed per collector over `sources`.
fn sums_by_collector(
    connection: &Connection,
    sources: &Sources,
    tables: &Tables<'_>,
    summed: &str,
) -> Result<Vec<(i64, Vec<i64>)>> {
    let (union, bounds) = sources.union(tables);
    let mut statement = connection.prepare_cached(&format!(
        "SELECT collector, {} FROM ({union}) GROUP BY collector",
        crate::tables::rollups::sums(summed)
    ))?;
    let width = statement.column_count();
    let mut rows = statement.query(params_from_iter(&bounds))?;
    let mut found = Vec::new();
    while let Some(row) = rows.next()? {
        let sums = (1..width)
            .map(|index| row.get(index))
            .collect::<rusqlite::Result<_>>()?;
        found.push((row.get(0)?, sums));
    }
    Ok(found)
}

const SITE_ROLLED: &str = "facility_mj, unattributed_mj, water_ml, unattributed_water_ml, co2e_location_mg, \
unattributed_co2e_location_mg, co2e_market_mg, unattributed_co2e_market_mg, windows_it_only, windows_metered, \
windows_assumed_pue";
const SITE_DETAIL: &str = "facility_mj, unattributed_mj, water_ml, unattributed_water_ml, co2e_location_mg, \
unattributed_co2e_location_mg, co2e_market_mg, unattributed_co2e_market_mg, overhead_source = 0 AS windows_it_only, \
overhead_source = 1 AS windows_metered, overhead_source = 2 AS windows_assumed_pue";

/// Balances of the site over `bucket`.
fn site_bucket(
    connection: &Connection,
    bucket: Span,
    sources: &Sources,
    by_host: &std::collections::BTreeMap<i64, HostSums>,
) -> Result<FacilityWindow> {
    let mut sums = HostSums::default();
    for host in by_host.values() {
        sums.add(host);
    }
    let mut window = FacilityWindow {
        start_ns: bucket.start.0,
        end_ns: bucket.end.0,
        host: String::new(),
        energy_mj: Balance::default(),
        measured_method: String::new(),
        it_mj: sums.host_mj as u64,
        overhead_mj: (sums.jobs_overhead + sums.idle_overhead + sums.unattributed_overhead) as u64,
        water_ml: Balance::default(),
        co2e_location_mg: Balance::default(),
        co2e_market_mg: Balance::default(),
        co2e_embodied_mg: Balance {
            site: sums.jobs_embodied + sums.idle_embodied,
            jobs: sums.jobs_embodied,
            idle: sums.idle_embodied,
            unattributed: 0,
        },
        ppa_matched_mj: 0,
        go_matched_mj: 0,
        ppa_delivered_mj: 0,
        ppa_forfeited_mj: 0,
        go_balance_mj: 0,
        uncovered_mj: 0,
        residual_mix: None,
        revised_windows: revised_windows(connection, bucket, None)?,
        revised_hours: 0,
        it_quality: sums.quality(),
        facility_sources: FacilitySources::default(),
    };
    let mut methods = [0i64; 3];
    let mut residual_used = false;
    let (site, bounds) = sources.union(&Tables {
        days: None,
        hours: ("rollup_site", SITE_ROLLED),
        detail: ("site_windows", SITE_DETAIL),
    });
    connection
        .prepare_cached(&format!(
            "SELECT COALESCE(SUM(facility_mj), 0), COALESCE(SUM(unattributed_mj), 0), COALESCE(SUM(water_ml), 0),
                    COALESCE(SUM(unattributed_water_ml), 0), COALESCE(SUM(co2e_location_mg), 0),
                    COALESCE(SUM(unattributed_co2e_location_mg), 0), COALESCE(SUM(co2e_market_mg), 0),
                    COALESCE(SUM(unattributed_co2e_market_mg), 0),
                    COALESCE(SUM(windows_it_only), 0), COALESCE(SUM(windows_metered), 0),
                    COALESCE(SUM(windows_assumed_pue), 0)
             FROM ({site})"
        ))?
        .query_row(params_from_iter(&bounds), |row| {
            window.energy_mj = Balance {
                site: row.get(0)?,
                jobs: sums.jobs_it + sums.jobs_overhead,
                idle: sums.idle + sums.idle_overhead,
                unattributed: sums.unattributed + sums.unattributed_overhead + row.get::<_, i64>(1)?,
            };
            window.water_ml = Balance {
                site: row.get(2)?,
                jobs: sums.jobs_water,
                idle: sums.idle_water,
                unattributed: sums.unattributed_water + row.get::<_, i64>(3)?,
            };
            window.co2e_location_mg = Balance {
                site: row.get(4)?,
                jobs: sums.jobs_location,
                idle: sums.idle_location,
                unattributed: sums.unattributed_location + row.get::<_, i64>(5)?,
            };
            window.co2e_market_mg = Balance {
                site: row.get(6)?,
                jobs: sums.jobs_market,
                idle: sums.idle_market,
                unattributed: sums.unattributed_market + row.get::<_, i64>(7)?,
            };
            methods = [row.get(8)?, row.get(9)?, row.get(10)?];
            Ok(())
        })?;
    window.facility_sources = FacilitySources {
        it_only: methods[0] as u64,
        metered: methods[1] as u64,
        assumed_pue: methods[2] as u64,
    };
    window.measured_method = match methods {
        [0, _, 0] => "site energy meter delta per window (split at window edges assuming constant power between readings)".to_owned(),
        [_, 0, 0] => "no site meter: IT energy (outlets, else GPU + CPU + DRAM + host overhead factor)".to_owned(),
        [0, 0, _] => "no site meter: IT energy x the configured PUE (estimated)".to_owned(),
        [none, meter, assumed] => format!(
            "mixed: {meter} window(s) from the site meter, {assumed} from the assumed PUE, {none} from IT energy alone"
        ),
    };
    connection
        .prepare_cached(
            "SELECT COALESCE(SUM(ppa_mj), 0), COALESCE(SUM(go_mj), 0),
                    (SELECT COUNT(*) FROM hour_revisions WHERE hour_ns >= ?1 AND hour_ns < ?2),
                    COALESCE(SUM(ppa_delivered_mj), 0), COALESCE(SUM(uncovered_mj), 0),
                    COALESCE(MAX(residual_mix), 0),
                    (SELECT go_balance_after_mj FROM site_hours WHERE hour_ns >= ?1 AND hour_ns < ?2
                     ORDER BY hour_ns DESC LIMIT 1)
             FROM site_hours WHERE hour_ns >= ?1 AND hour_ns < ?2",
        )?
        .query_row(params![bucket.start.0, bucket.end.0], |row| {
            let as_u64 = |index: usize| row.get::<_, i64>(index).map(|v| v as u64);
            window.ppa_matched_mj = as_u64(0)?;
            window.go_matched_mj = as_u64(1)?;
            window.revised_hours = as_u64(2)?;
            window.ppa_delivered_mj = as_u64(3)?;
            window.ppa_forfeited_mj = window
                .ppa_delivered_mj
                .saturating_sub(window.ppa_matched_mj);
            window.uncovered_mj = as_u64(4)?;
            residual_used = row.get::<_, i64>(5)? != 0;
            window.go_balance_mj = row.get::<_, Option<i64>>(6)?.unwrap_or(0) as u64;
            Ok(())
        })?;
    if residual_used {
        window.residual_mix = connection
            .query_row(
                "SELECT mg_per_kwh, source, year FROM residual_mix",
                [],
                |row| {
                    Ok(ResidualMix {
                        mg_per_kwh: row.get::<_, i64>(0)? as u64,
                        source: row.get(1)?,
                        year: row.get(2)?,
                    })
                },
            )
            .optional()?;
    }
    Ok(window)
}

/// Balances of one host over `bucket`: its outlet energy (or components + factor) plus its
/// facility shares.
fn host_bucket(
    connection: &Connection,
    bucket: Span,
    collector: i64,
    host: &str,
    sums: &HostSums,
) -> Result<FacilityWindow> {
    let jobs = sums.jobs_it + sums.jobs_overhead;
    let idle = sums.idle + sums.idle_overhead;
    let unattributed = sums.unattributed + sums.unattributed_overhead - sums.deficit;
    let balance = |jobs: i64, idle: i64, unattributed: i64| Balance {
        site: jobs + idle + unattributed,
        jobs,
        idle,
        unattributed,
    };
    Ok(FacilityWindow {
        start_ns: bucket.start.0,
        end_ns: bucket.end.0,
        host: host.to_owned(),
        energy_mj: balance(jobs, idle, unattributed),
        measured_method: "the host's outlet meter (else its components + overhead factor) plus its share of the facility overhead".to_owned(),
        it_mj: sums.host_mj as u64,
        overhead_mj: (sums.jobs_overhead + sums.idle_overhead + sums.unattributed_overhead) as u64,
        water_ml: balance(sums.jobs_water, sums.idle_water, sums.unattributed_water),
        co2e_location_mg: balance(
            sums.jobs_location,
            sums.idle_location,
            sums.unattributed_location,
        ),
        co2e_market_mg: balance(sums.jobs_market, sums.idle_market, sums.unattributed_market),
        co2e_embodied_mg: balance(sums.jobs_embodied, sums.idle_embodied, 0),
        ppa_matched_mj: 0,
        go_matched_mj: 0,
        ppa_delivered_mj: 0,
        ppa_forfeited_mj: 0,
        go_balance_mj: 0,
        uncovered_mj: 0,
        residual_mix: None,
        revised_windows: revised_windows(connection, bucket, Some(collector))?,
        revised_hours: 0,
        it_quality: sums.quality(),
        facility_sources: FacilitySources::default(),
    })
}

/// Host windows in `bucket` (of one collector, or all) built again after late data.
fn revised_windows(connection: &Connection, bucket: Span, collector: Option<i64>) -> Result<u64> {
    Ok(connection
        .prepare_cached(
            "SELECT COUNT(*) FROM window_revisions WHERE start_ns >= ?1 AND start_ns < ?2 AND (?3 IS NULL OR collector = ?3)",
        )?
        .query_row(params![bucket.start.0, bucket.end.0, collector], |row| {
            row.get::<_, i64>(0)
        })? as u64)
}

/// How facility totals are grouped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Grouping {
    #[default]
    Site,
    Hall,
    Rack,
    Host,
}

impl Grouping {
    /// `""` or `site`, `hall`, `rack`, `host`.
    ///
    /// # Errors
    /// [`Error::BadRequest`] naming the parameter.
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "" | "site" => Ok(Self::Site),
            "hall" => Ok(Self::Hall),
            "rack" => Ok(Self::Rack),
            "host" => Ok(Self::Host),
            other => Err(Error::BadRequest(format!(
                "group_by: {other:?} is not site, hall, rack or host"
            ))),
        }
    }
}

impl Balance {
    fn add(&mut self, other: &Balance) {
        self.site += other.site;
        self.jobs += other.jobs;
        self.idle += other.idle;
        self.unattributed += other.unattributed;
    }
}

impl FacilityWindow {
    /// Adds another group member's figures (same span).
    fn absorb(&mut self, other: &FacilityWindow) {
        self.energy_mj.add(&other.energy_mj);
        self.water_ml.add(&other.water_ml);
        self.co2e_location_mg.add(&other.co2e_location_mg);
        self.co2e_market_mg.add(&other.co2e_market_mg);
        self.co2e_embodied_mg.add(&other.co2e_embodied_mg);
        self.it_mj += other.it_mj;
        self.overhead_mj += other.overhead_mj;
        self.revised_windows += other.revised_windows;
        self.it_quality.measured_mj += other.it_quality.measured_mj;
        self.it_quality.interpolated_mj += other.it_quality.interpolated_mj;
        self.it_quality.estimated_mj += other.it_quality.estimated_mj;
    }
}

/// Most steps one facility query returns: a year of hours is 8 784.
const MAX_STEPS: u64 = 100_000;

/// The steps of a facility series.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SeriesStep {
    /// One total over the span.
    #[default]
    Total,
    /// Steps of this many ns from the span's start.
    Every(i64),
    /// UTC calendar months (the first and last cut by the span).
    Month,
}

impl SeriesStep {
    /// `month`, else `step_s` seconds (0: one total).
    ///
    /// # Errors
    /// [`Error::BadRequest`] naming `step` for a word other than `month`.
    pub fn parse(step: &str, step_s: u64) -> Result<Self> {
        match step {
            "month" => Ok(Self::Month),
            "" if step_s == 0 => Ok(Self::Total),
            "" => Ok(Self::Every(
                i64::try_from(step_s)
                    .unwrap_or(i64::MAX)
                    .saturating_mul(1_000_000_000),
            )),
            other => Err(Error::BadRequest(format!(
                "step: {other:?} is not month (give other steps in seconds, step_s)"
            ))),
        }
    }

    /// The end of the step starting at `at`, within `span`.
    fn end_of(self, at: i64, span: Span) -> i64 {
        match self {
            Self::Total => span.end.0,
            Self::Every(ns) => at.saturating_add(ns.max(1)),
            Self::Month => footprint_core::time::utc_month_of(UnixNanos(at)).end.0,
        }
        .min(span.end.0)
    }
}

/// Facility totals over `span`, in steps, for the site or per hall, rack or host.
///
/// # Errors
/// [`Error::BadRequest`] for more than 100 000 steps or a step cutting an hour whose window
/// detail has aged out, or a database error.
pub fn facility_totals(
    connection: &Connection,
    span: Span,
    step: SeriesStep,
    grouping: Grouping,
) -> Result<Vec<FacilityWindow>> {
    if let SeriesStep::Every(ns) = step
        && span.len_ns() / ns.max(1) as u64 > MAX_STEPS
    {
        return Err(Error::BadRequest(format!(
            "step_s: {} s steps over {} s are more than {MAX_STEPS} steps",
            ns / 1_000_000_000,
            span.len_ns() / 1_000_000_000
        )));
    }
    // Each host with its group's name, in group order.
    let hosts: Vec<(i64, String, String)> = if grouping == Grouping::Site {
        Vec::new()
    } else {
        connection
            .prepare_cached(
                "SELECT c.id, c.host, COALESCE(p.hall, 'unplaced'), COALESCE(p.rack, 'unplaced')
                 FROM collectors c LEFT JOIN placement p ON p.host = c.host
                 WHERE c.built_until_ns IS NOT NULL",
            )?
            .query_map([], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                ))
            })?
            .map(|row| {
                row.map(|(id, host, hall, rack)| {
                    let group = match grouping {
                        Grouping::Hall => hall,
                        Grouping::Rack => format!("{hall}/{rack}"),
                        _ => host.clone(),
                    };
                    (id, host, group)
                })
            })
            .collect::<rusqlite::Result<_>>()?
    };
    let mut windows = Vec::new();
    let mut bucket_start = span.start.0;
    let none = HostSums::default();
    while bucket_start < span.end.0 {
        let bucket = Span::new(
            UnixNanos(bucket_start),
            UnixNanos(step.end_of(bucket_start, span)),
        );
        let sources = super::sources::sources(connection, bucket)?;
        let by_host = host_sums(connection, &sources)?;
        if grouping == Grouping::Site {
            windows.push(site_bucket(connection, bucket, &sources, &by_host)?);
        } else {
            let mut groups: std::collections::BTreeMap<&str, FacilityWindow> =
                std::collections::BTreeMap::new();
            for (collector, host, group) in &hosts {
                let sums = by_host.get(collector).unwrap_or(&none);
                let figures = host_bucket(connection, bucket, *collector, host, sums)?;
                match groups.get_mut(group.as_str()) {
                    Some(total) => total.absorb(&figures),
                    None => {
                        groups.insert(
                            group,
                            FacilityWindow {
                                host: group.clone(),
                                ..figures
                            },
                        );
                    }
                }
            }
            windows.extend(groups.into_values());
        }
        bucket_start = bucket.end.0;
    }
    Ok(windows)
}
