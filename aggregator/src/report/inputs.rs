//! What a report of a period is made of, read from the ledger: the facility's balances (in total,
//! per month, per drawing step), the jobs, the meters' coverage, refusals, revised and reopened
//! hours, intensity hours by quality, feeds, factor tables, collectors' batch ranges, the config.

use footprint_core::units::NANOS_PER_HOUR;
use footprint_core::{Span, UnixNanos};
use footprint_exporters::report::inputs::{
    self, CollectorRange, FacilityFigures, FactorTable, Feed, Rejected, ReportInputs, RevisedHour,
};
use footprint_exporters::report::signing::sha256_hex;
use rusqlite::{Connection, OptionalExtension, params};

use crate::config::AggregatorConfig;
use crate::ledger::{self, FacilityWindow, Grouping, JobFilter, SeriesStep};
use crate::{Error, Result};

/// SHA-256 of what in `config` shapes the figures: everything but addresses, paths and the key.
fn config_sha256(config: &AggregatorConfig) -> String {
    let mut shaping = config.clone();
    shaping.data_dir = std::path::PathBuf::new();
    shaping.grpc_listen = ([127, 0, 0, 1], 0).into();
    shaping.http_listen = ([127, 0, 0, 1], 0).into();
    shaping.disclosure.signing_key = None;
    // Files count by name (their contents are hashed where they are used: feeds, PPA profiles).
    let name_only = |path: &mut std::path::PathBuf| {
        *path = path.file_name().map(Into::into).unwrap_or_default();
    };
    shaping
        .carbon
        .intensity_files
        .iter_mut()
        .for_each(name_only);
    shaping
        .carbon
        .feeds
        .iter_mut()
        .for_each(|feed| name_only(&mut feed.path));
    for ppa in &mut shaping.carbon.ppa {
        if let Some(path) = &mut ppa.hourly_kwh_csv {
            name_only(path);
        }
    }
    // serde_json's maps are sorted, so the text is the same for the same config.
    let text = serde_json::to_string(&shaping).unwrap_or_default();
    sha256_hex(text.as_bytes())
}

fn figures_of(window: &FacilityWindow) -> FacilityFigures {
    let balance = |b: ledger::Balance| inputs::Balance {
        site: b.site,
        jobs: b.jobs,
        idle: b.idle,
        unattributed: b.unattributed,
    };
    FacilityFigures {
        start_ns: window.start_ns,
        end_ns: window.end_ns,
        energy_mj: balance(window.energy_mj),
        it_mj: window.it_mj as i64,
        overhead_mj: window.overhead_mj as i64,
        water_ml: balance(window.water_ml),
        co2e_location_mg: balance(window.co2e_location_mg),
        co2e_market_mg: balance(window.co2e_market_mg),
        co2e_embodied_mg: balance(window.co2e_embodied_mg),
        ppa_delivered_mj: window.ppa_delivered_mj as i64,
        ppa_matched_mj: window.ppa_matched_mj as i64,
        go_used_mj: window.go_matched_mj as i64,
        uncovered_mj: window.uncovered_mj as i64,
        it_measured_mj: window.it_quality.measured_mj as i64,
        it_interpolated_mj: window.it_quality.interpolated_mj as i64,
        it_estimated_mj: window.it_quality.estimated_mj as i64,
        windows_site_metered: window.facility_sources.metered as i64,
        windows_it_only: window.facility_sources.it_only as i64,
        windows_assumed_pue: window.facility_sources.assumed_pue as i64,
    }
}

fn site_series(
    connection: &Connection,
    span: Span,
    step: SeriesStep,
) -> Result<Vec<FacilityFigures>> {
    Ok(
        ledger::facility_totals(connection, span, step, Grouping::Site)?
            .iter()
            .map(figures_of)
            .collect(),
    )
}

fn hours_of(connection: &Connection, table: &str, span: Span) -> Result<Vec<RevisedHour>> {
    let revisions = if table == "hour_revisions" {
        "revisions"
    } else {
        "0"
    };
    Ok(connection
        .prepare(&format!(
            "SELECT hour_ns, {revisions}, reason FROM {table}
             WHERE hour_ns >= ?1 AND hour_ns < ?2 ORDER BY hour_ns"
        ))?
        .query_map(params![span.start.0, span.end.0], |row| {
            Ok(RevisedHour {
                hour_ns: row.get(0)?,
                revisions: row.get(1)?,
                reason: row.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?)
}

/// The factor tables and contracts the figures were computed with.
fn factor_tables(connection: &Connection, config: &AggregatorConfig) -> Result<Vec<FactorTable>> {
    let mut tables = Vec::new();
    let overrides = serde_json::to_string(&config.embodied).unwrap_or_default();
    tables.push(FactorTable {
        name: "embodied device table".into(),
        version: "embodied-devices-v1".into(),
        sha256: sha256_hex(
            format!(
                "{}\n{overrides}",
                footprint_core::embodied::DEFAULT_TABLE_TOML
            )
            .as_bytes(),
        ),
        source: if config.embodied.devices.is_empty() {
            "core/data/embodied-devices-v1.toml as shipped".into()
        } else {
            format!(
                "core/data/embodied-devices-v1.toml with {} entries from embodied.devices",
                config.embodied.devices.len()
            )
        },
    });
    let residual: Option<(i64, String, Option<i64>)> = connection
        .query_row(
            "SELECT mg_per_kwh, source, year FROM residual_mix",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .optional()?;
    if let Some((mg_per_kwh, source, year)) = residual {
        tables.push(FactorTable {
            name: format!("residual mix {mg_per_kwh} mg/kWh"),
            version: year.map_or_else(|| "year not stated".to_owned(), |y| y.to_string()),
            sha256: sha256_hex(format!("{mg_per_kwh}|{source}|{year:?}").as_bytes()),
            source,
        });
    }
    for ppa in &config.carbon.ppa {
        // The contract as configured, and the hourly profile's bytes where it has one.
        let mut hashed = format!("{}|{}", ppa.name, ppa.flat_kw).into_bytes();
        let source = match &ppa.hourly_kwh_csv {
            Some(path) => {
                let name = path
                    .file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
                match std::fs::read(path) {
                    Ok(bytes) => {
                        hashed.extend_from_slice(&bytes);
                        format!("{} kW flat + hourly profile {name}", ppa.flat_kw)
                    }
                    Err(error) => format!(
                        "{} kW flat + hourly profile {name} (not readable now: {error})",
                        ppa.flat_kw
                    ),
                }
            }
            None => format!("{} kW flat", ppa.flat_kw),
        };
        tables.push(FactorTable {
            name: format!("PPA {:?}", ppa.name),
            version: "as configured (carbon.ppa)".into(),
            sha256: sha256_hex(&hashed),
            source,
        });
    }
    let goo = config.carbon.guarantees_of_origin_mwh_per_year;
    if goo > 0.0 {
        tables.push(FactorTable {
            name: "guarantees of origin".into(),
            version: "as configured (carbon.guarantees_of_origin_mwh_per_year)".into(),
            sha256: sha256_hex(goo.to_string().as_bytes()),
            source: format!(
                "{goo} MWh a year, accruing evenly over the hours of each calendar year"
            ),
        });
    }
    Ok(tables)
}

/// Everything a report of `span` is made of.
///
/// # Errors
/// A database error.
pub fn report_inputs(
    connection: &Connection,
    config: &AggregatorConfig,
    span: Span,
) -> Result<ReportInputs> {
    let settled = ledger::settled_span(connection)?;
    let settled_part = settled.and_then(|settled| {
        let start = span.start.0.max(settled.start.0);
        let end = span.end.0.min(settled.end.0);
        (start < end).then(|| Span::new(UnixNanos(start), UnixNanos(end)))
    });
    let Some(part) = settled_part else {
        return Err(Error::BadRequest(
            "from: no settled hour in the period".into(),
        ));
    };
    let length = part.len_ns() as i64;
    let trend_step = if length <= 3 * 24 * NANOS_PER_HOUR {
        ("hour", SeriesStep::Every(NANOS_PER_HOUR))
    } else if length <= 92 * 24 * NANOS_PER_HOUR {
        ("day", SeriesStep::Every(24 * NANOS_PER_HOUR))
    } else {
        ("month", SeriesStep::Month)
    };
    // The months are read once: the period's total is their sum (every figure is an integer sum
    // of the same rows), and a long period's trend is the months themselves.
    let months = site_series(connection, part, SeriesStep::Month)?;
    let mut total = FacilityFigures {
        start_ns: part.start.0,
        end_ns: part.end.0,
        ..FacilityFigures::default()
    };
    for month in &months {
        total.add(month);
    }
    let trend = match trend_step.1 {
        SeriesStep::Month => months.clone(),
        step => site_series(connection, part, step)?,
    };
    let jobs = ledger::list_jobs(
        connection,
        &JobFilter {
            from_ns: part.start.0,
            to_ns: part.end.0,
            ..JobFilter::default()
        },
    )?
    .into_iter()
    .map(|job| inputs::JobFigures {
        id: job.id,
        scheduler: job.scheduler,
        name: job.name,
        user: job.user,
        project: job.project,
        kind: job.kind,
        model: job.model,
        functional_unit: job.functional_unit,
        functional_units: job.functional_units,
        first_window_ns: job.first_window_ns,
        last_window_ns: job.last_window_ns,
        gpu_ns: job.gpu_ns as i64,
        gpu_mj: job.gpu_energy_mj as i64,
        cpu_mj: job.cpu_energy_mj as i64,
        dram_mj: job.dram_energy_mj as i64,
        remainder_mj: job.remainder_mj as i64,
        overhead_mj: job.overhead_mj as i64,
        water_ml: job.water_ml as i64,
        co2e_location_mg: job.co2e_location_mg as i64,
        co2e_market_mg: job.co2e_market_mg as i64,
        co2e_embodied_mg: job.co2e_embodied_mg as i64,
        measured_mj: job.energy_quality.measured_mj as i64,
        interpolated_mj: job.energy_quality.interpolated_mj as i64,
        estimated_mj: job.energy_quality.estimated_mj as i64,
    })
    .collect();
    let max_gap_ns = i64::try_from(config.max_sample_gap_s)
        .unwrap_or(i64::MAX / 1_000_000_000)
        .saturating_mul(1_000_000_000);
    let rejected = connection
        .prepare(
            "SELECT r.field, r.reason, COUNT(*) FROM rejections r
             WHERE r.received_ns >= ?1 AND r.received_ns < ?2
             GROUP BY r.field, r.reason ORDER BY COUNT(*) DESC, r.field, r.reason",
        )?
        .query_map(params![span.start.0, span.end.0], |row| {
            Ok(Rejected {
                field: row.get(0)?,
                reason: row.get(1)?,
                readings: row.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut intensity_hours = [0i64; 4];
    if !config.carbon.zone.trim().is_empty() {
        for hour in ledger::intensity::intensity_hours(connection, &config.carbon.zone, part)? {
            let slot = match hour.intensity.map(|(_, quality)| quality) {
                Some(footprint_core::Quality::Measured) => 0,
                Some(footprint_core::Quality::Interpolated) => 1,
                Some(footprint_core::Quality::Estimated) => 2,
                None => 3,
            };
            intensity_hours[slot] += 1;
        }
    } else {
        intensity_hours[3] = length / NANOS_PER_HOUR;
    }
    let feeds = connection
        .prepare(
            "SELECT file, sha256, layout, hour_convention, hours FROM feeds
             WHERE id IN (SELECT DISTINCT feed FROM intensity WHERE zone = ?1 AND hour_ns >= ?2 AND hour_ns < ?3)
             ORDER BY id",
        )?
        .query_map(params![config.carbon.zone, part.start.0, part.end.0], |row| {
            Ok(Feed {
                file: row.get(0)?,
                sha256: row.get(1)?,
                layout: row.get(2)?,
                hour_convention: row.get(3)?,
                hours: row.get(4)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let (outlet, components): (i64, i64) = connection.query_row(
        "SELECT COALESCE(SUM(metered), 0), COALESCE(SUM(1 - metered), 0) FROM (
           SELECT c.id, EXISTS (SELECT 1 FROM meters m WHERE m.collector = c.id AND m.kind IN (4, 5)) AS metered
           FROM collectors c
           WHERE c.built_until_ns IS NOT NULL
             AND EXISTS (SELECT 1 FROM meters m WHERE m.collector = c.id AND m.kind IN (1, 2, 3, 4, 5)))",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    let collectors = connection
        .prepare(
            "SELECT c.name, c.host,
                    COALESCE((SELECT MIN(seq) FROM batches b WHERE b.collector = c.id), 0),
                    COALESCE((SELECT MAX(seq) FROM batches b WHERE b.collector = c.id), 0)
             FROM collectors c ORDER BY c.name",
        )?
        .query_map([], |row| {
            Ok(CollectorRange {
                collector: row.get(0)?,
                host: row.get(1)?,
                first_seq: row.get(2)?,
                last_seq: row.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let attribution = &config.attribution;
    Ok(ReportInputs {
        from_ns: span.start.0,
        to_ns: span.end.0,
        ledger_settled: settled.map(|span| (span.start.0, span.end.0)),
        settled_hours: length / NANOS_PER_HOUR,
        reopened_hours: hours_of(connection, "hours_reopened", span)?,
        total,
        months,
        trend_step: trend_step.0.to_owned(),
        trend,
        jobs,
        meters: ledger::coverage::meter_coverage(connection, part, max_gap_ns)?,
        rejected,
        revised_hours: hours_of(connection, "hour_revisions", span)?,
        intensity_hours,
        zone: config.carbon.zone.clone(),
        feeds,
        factor_tables: factor_tables(connection, config)?,
        hosts_with_outlet_meter: outlet,
        hosts_from_components: components,
        host_overhead_factor: attribution.host_overhead_factor.to_string(),
        attribution_policy: format!(
            "cpu_baseline = {:?}, package_baseline_w = {}, dram_baseline_w = {}",
            attribution.cpu_baseline, attribution.package_baseline_w, attribution.dram_baseline_w
        ),
        max_sample_gap_s: i64::try_from(config.max_sample_gap_s).unwrap_or(i64::MAX),
        collectors,
        config_sha256: config_sha256(config),
        disclosure: config.disclosure.clone(),
        software_version: env!("CARGO_PKG_VERSION").to_owned(),
    })
}
