//! The disclosure report made from the ledger: what [`footprint_exporters::report`] needs, read
//! on a read-only connection with the config the aggregator stored at its last start, so that
//! `footprint report` and `footprint report verify` make the same bytes from the same ledger.

use std::path::Path;

use footprint_core::config::ConfigFile as _;
use footprint_core::time::{format_rfc3339, utc_year_of};
use footprint_core::units::NANOS_PER_HOUR;
use footprint_core::{Span, UnixNanos};
use footprint_exporters::report::inputs::{
    self, CollectorRange, FacilityFigures, FactorTable, Feed, Rejected, ReportInputs, RevisedHour,
};
use footprint_exporters::report::signing::{self, SignedReport, sha256_hex};
use footprint_exporters::report::{self, Context, Format};
use rusqlite::{Connection, OptionalExtension, params};

use crate::config::AggregatorConfig;
use crate::ledger::{self, FacilityWindow, Grouping, JobFilter, SeriesStep};
use crate::tables::schema;
use crate::{Error, Result};

/// What to report.
#[derive(Clone, Debug, Default)]
pub struct ReportRequest {
    /// `[from, to)` in ns, on the hour; both 0: the calendar year of the latest settled data.
    pub from_ns: i64,
    pub to_ns: i64,
    /// Refuse a period with hours not settled yet.
    pub require_settled: bool,
    /// The key to sign with; `None`: `disclosure.signing_key` of the stored config, if set.
    pub signing_key: Option<std::path::PathBuf>,
    /// Make the report unsigned even where a key is configured.
    pub unsigned: bool,
}

/// The config the aggregator last started with, as the ledger stored it.
///
/// # Errors
/// The ledger holds none yet, or it no longer parses.
pub fn stored_config(connection: &Connection) -> Result<AggregatorConfig> {
    let text: String = connection
        .query_row("SELECT toml FROM aggregator_config", [], |row| row.get(0))
        .optional()?
        .ok_or_else(|| {
            Error::Server(
                "the ledger holds no aggregator config yet: start the aggregator on it once (it records the config it builds with)"
                    .into(),
            )
        })?;
    Ok(AggregatorConfig::from_toml(&text)?)
}

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

/// The period a request names, checked.
///
/// # Errors
/// [`Error::BadRequest`] naming `from`/`to`: inverted, empty, off the hour, or no settled hour.
pub fn period_of(connection: &Connection, from_ns: i64, to_ns: i64) -> Result<Span> {
    let settled = ledger::settled_span(connection)?;
    let (from, to) = if from_ns == 0 && to_ns == 0 {
        let Some(settled) = settled else {
            return Err(Error::BadRequest(
                "from: the ledger has no settled hour yet, so there is no year to report".into(),
            ));
        };
        let year = utc_year_of(UnixNanos(settled.end.0 - 1));
        (year.start.0, year.end.0)
    } else {
        (from_ns, to_ns)
    };
    if to <= from {
        return Err(Error::BadRequest(format!(
            "to: {} is not after from ({}): the period is empty or inverted",
            format_rfc3339(UnixNanos(to)),
            format_rfc3339(UnixNanos(from))
        )));
    }
    for (name, at) in [("from", from), ("to", to)] {
        if at.rem_euclid(NANOS_PER_HOUR) != 0 {
            return Err(Error::BadRequest(format!(
                "{name}: {} is not on the hour: a report covers whole hours",
                format_rfc3339(UnixNanos(at))
            )));
        }
    }
    let overlaps = settled.is_some_and(|span| span.start.0 < to && from < span.end.0);
    if !overlaps {
        return Err(Error::BadRequest(format!(
            "from: no settled hour between {} and {}{}",
            format_rfc3339(UnixNanos(from)),
            format_rfc3339(UnixNanos(to)),
            settled.map_or_else(
                || " (the ledger has settled nothing yet)".to_owned(),
                |span| format!(
                    " (the ledger has settled {} to {})",
                    format_rfc3339(span.start),
                    format_rfc3339(span.end)
                )
            )
        )));
    }
    Ok(Span::new(UnixNanos(from), UnixNanos(to)))
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
    let total = site_series(connection, part, SeriesStep::Total)?
        .into_iter()
        .next()
        .unwrap_or_default();
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
        months: site_series(connection, part, SeriesStep::Month)?,
        trend_step: trend_step.0.to_owned(),
        trend: site_series(connection, part, trend_step.1)?,
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

/// The report of `inputs`, not yet signed.
pub fn build(inputs: &ReportInputs, config: &AggregatorConfig) -> report::Report {
    report::build(
        inputs,
        &Context {
            window_ns: i64::from(config.window_seconds) * 1_000_000_000,
            job_method: ledger::JOB_METHOD.to_owned(),
        },
    )
}

/// The signing key a request asks for: its own, else the config's; none when unsigned.
///
/// # Errors
/// The key is missing or unreadable ([`Error::BadRequest`] naming it).
fn signing_key(
    request: &ReportRequest,
    config: &AggregatorConfig,
) -> Result<Option<signing::SigningKey>> {
    if request.unsigned {
        return Ok(None);
    }
    let Some(path) = request
        .signing_key
        .clone()
        .or_else(|| config.disclosure.signing_key.clone())
    else {
        return Ok(None);
    };
    signing::load_signing_key(&path)
        .map(Some)
        .map_err(|error| Error::BadRequest(format!("signing_key: {error}")))
}

/// Makes the signed report the request asks for from the ledger at `path`.
///
/// # Errors
/// [`Error::BadRequest`] naming the parameter (period, key); a database error.
pub fn make_report(path: &Path, request: &ReportRequest) -> Result<SignedReport> {
    let connection = schema::open_reader(path)?;
    let config = stored_config(&connection)?;
    let span = period_of(&connection, request.from_ns, request.to_ns)?;
    let inputs = report_inputs(&connection, &config, span)?;
    let body = build(&inputs, &config);
    if request.require_settled && body.period.status != "final" {
        return Err(Error::BadRequest(format!(
            "require_settled: the period is provisional: {}",
            body.period.notice
        )));
    }
    let key = signing_key(request, &config)?;
    signing::sign(body, &inputs, key.as_ref()).map_err(|error| Error::Server(error.to_string()))
}

/// `report` in `format`.
///
/// # Errors
/// The CSV archive could not be written.
pub fn render(report: &SignedReport, format: Format) -> Result<Vec<u8>> {
    report::render(report, format).map_err(|error| Error::Server(error.to_string()))
}

/// What `footprint report verify` found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verification {
    /// The file's format: `json`, `csv` or `html`.
    pub format: String,
    /// The key whose signature holds.
    pub signed_by: Option<String>,
    /// The period and status the file states.
    pub period: String,
    /// Everything that fails, each naming the field or member; empty when the report holds.
    pub problems: Vec<String>,
    /// What a reader should know though it is not a failure.
    pub notes: Vec<String>,
}

impl Verification {
    pub fn holds(&self) -> bool {
        self.problems.is_empty()
    }
}

/// How far `verify` goes.
#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    /// The key the report must be signed with; `None`: any key, named.
    pub expected_key: Option<signing::VerifyingKey>,
    /// Also rebuild every settled hour of the period from the readings and compare with the
    /// roll-ups the report was made from (as long as building the ledger took).
    pub readings: bool,
}

/// Checks the report in `bytes` (any format): its hashes and signature, that it was made from
/// this ledger, that made again from the ledger at `path` it is the same, byte for byte (naming
/// each field that differs), and with `options.readings` that the ledger's figures follow from
/// its readings. `progress` hears of each hour rebuilt, out of how many.
///
/// # Errors
/// The file is not a report, or the ledger cannot be read.
pub fn verify(
    path: &Path,
    bytes: &[u8],
    options: &VerifyOptions,
    progress: impl FnMut(u64, u64),
) -> Result<Verification> {
    let expected_key = options.expected_key.as_ref();
    use footprint_exporters::report::verify as check;
    let file = check::read(bytes).map_err(Error::BadRequest)?;
    let mut verification = Verification {
        format: file.format.name().to_owned(),
        period: format!(
            "{} to {}",
            file.manifest.period_from, file.manifest.period_to
        ),
        ..Verification::default()
    };
    let integrity = check::integrity(&file);
    verification.problems.extend(integrity.problems);
    verification.signed_by = integrity.signed_by.clone();
    if let Some(expected) = expected_key {
        let expected_id = signing::key_id(expected);
        if integrity.signed_by.as_deref() != Some(expected_id.as_str()) {
            verification.problems.push(format!(
                "signature: not made by the expected key {expected_id} (the file's key: {})",
                file.signature
                    .as_ref()
                    .map_or("none", |signature| signature.key_id.as_str())
            ));
        }
    }

    let connection = schema::open_reader(path)?;
    let config = stored_config(&connection)?;
    let ledger_lines = ledger_lines(&connection)?;
    let foreign = another_ledger(&file.manifest.ledger, &ledger_lines);
    if let Some(reason) = &foreign {
        verification.problems.push(format!(
            "ledger: this report was made from another ledger (or a later copy of this one): {reason}"
        ));
        return Ok(verification);
    }
    let parse = |name: &str, text: &str| {
        footprint_core::time::parse_rfc3339(text)
            .map(|at| at.0)
            .map_err(|error| Error::BadRequest(format!("manifest.{name}: {error}")))
    };
    let span = period_of(
        &connection,
        parse("period_from", &file.manifest.period_from)?,
        parse("period_to", &file.manifest.period_to)?,
    )?;
    let inputs = report_inputs(&connection, &config, span)?;
    let body = build(&inputs, &config);
    let again = footprint_exporters::report::canonical::canonical_of(&body)
        .map_err(|error| Error::Server(error.to_string()))?;
    let differences = check::differences(&file.report_bytes, &again);
    if !differences.is_empty() {
        verification.problems.push(format!(
            "report: made again from this ledger it differs in {} field(s){}:",
            differences.len(),
            if differences.len() >= check::DIFFERENCES_LISTED {
                " or more"
            } else {
                ""
            }
        ));
        verification
            .problems
            .extend(differences.into_iter().map(|line| format!("  {line}")));
    }
    let manifest = signing::manifest(&inputs, signing::sha256_hex(again.as_bytes()));
    manifest_differences(&file.manifest, &manifest, &mut verification);
    if options.readings {
        let settings = crate::settings::LedgerSettings::from_config(&config)?;
        let window = footprint_core::window::WindowLength::from_seconds(config.window_seconds)
            .unwrap_or_default();
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        let recheck = ledger::recheck::recheck(path, &settings, window, span, threads, progress)?;
        if recheck.rows_differing > 0 {
            verification.problems.push(format!(
                "readings: {} roll-up row(s) differ from what the readings give (rebuilt {} hours):",
                recheck.rows_differing, recheck.hours
            ));
            verification.problems.extend(
                recheck
                    .differences
                    .into_iter()
                    .map(|line| format!("  {line}")),
            );
        } else {
            verification.notes.push(format!(
                "readings: {} settled hours rebuilt from the readings; every roll-up matches",
                recheck.hours
            ));
        }
    } else {
        verification.notes.push(
            "readings: not rebuilt (--figures-only): the report was checked against the ledger's settled figures only".into(),
        );
    }
    if verification.problems.is_empty() {
        // The body and manifest hold: the file itself must be what this build writes of them.
        let rebuilt = signing::assemble(body, file.manifest.clone(), file.signature.clone())
            .map_err(|error| Error::Server(error.to_string()))?;
        let rendered = render(&rebuilt, file.format)?;
        if rendered != bytes {
            let at = rendered
                .iter()
                .zip(bytes)
                .position(|(a, b)| a != b)
                .unwrap_or(rendered.len().min(bytes.len()));
            verification.problems.push(format!(
                "file: the {} differs from what this build writes of the same report, from byte {at}",
                file.format.name()
            ));
        }
    }
    Ok(verification)
}

fn ledger_lines(connection: &Connection) -> Result<Vec<CollectorRange>> {
    Ok(connection
        .prepare(
            "SELECT c.name, c.host, COALESCE((SELECT MAX(seq) FROM batches b WHERE b.collector = c.id), 0)
             FROM collectors c",
        )?
        .query_map([], |row| {
            Ok(CollectorRange {
                collector: row.get(0)?,
                host: row.get(1)?,
                first_seq: 0,
                last_seq: row.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?)
}

/// Why the report's ledger is not this one (or an extension of it), if it is not.
fn another_ledger(seen: &[signing::CollectorLine], here: &[CollectorRange]) -> Option<String> {
    let missing: Vec<&str> = seen
        .iter()
        .filter(|line| !here.iter().any(|h| h.collector == line.collector))
        .map(|line| line.collector.as_str())
        .collect();
    if !missing.is_empty() {
        return Some(format!(
            "it saw collector(s) {} that this ledger never heard from",
            missing.join(", ")
        ));
    }
    seen.iter().find_map(|line| {
        let here = here.iter().find(|h| h.collector == line.collector)?;
        (here.last_seq < line.last_seq || here.host != line.host).then(|| {
            format!(
                "collector {} ({}) had sent up to batch {} when it was made; this ledger holds it ({}) up to {}",
                line.collector, line.host, line.last_seq, here.host, here.last_seq
            )
        })
    })
}

fn manifest_differences(
    found: &signing::Manifest,
    expected: &signing::Manifest,
    verification: &mut Verification,
) {
    if found.software != expected.software {
        verification.notes.push(format!(
            "manifest.software: made by {}, verified by {}",
            found.software, expected.software
        ));
    }
    if found.config_sha256 != expected.config_sha256 {
        verification.problems.push(format!(
            "manifest.config_sha256: made with config {}, the ledger now holds config {} (the aggregator restarted with another config since)",
            found.config_sha256, expected.config_sha256
        ));
    }
    let pairs = [
        (
            "schema_version",
            serde_json::json!(found.schema_version),
            serde_json::json!(expected.schema_version),
        ),
        (
            "site",
            serde_json::json!(found.site),
            serde_json::json!(expected.site),
        ),
        (
            "meters",
            serde_json::json!(found.meters),
            serde_json::json!(expected.meters),
        ),
        (
            "factor_tables",
            serde_json::json!(found.factor_tables),
            serde_json::json!(expected.factor_tables),
        ),
        (
            "intensity_feeds",
            serde_json::json!(found.intensity_feeds),
            serde_json::json!(expected.intensity_feeds),
        ),
    ];
    for (name, found, expected) in pairs {
        if found != expected {
            verification.problems.push(format!(
                "manifest.{name}: the file has {found}, the ledger gives {expected}"
            ));
        }
    }
    if verification.signed_by.is_some()
        && found
            .ledger
            .iter()
            .zip(&expected.ledger)
            .any(|(a, b)| a.last_seq < b.last_seq)
    {
        verification.notes.push(
            "ledger: batches arrived after the report was made; the period's figures are unchanged"
                .into(),
        );
    }
}
