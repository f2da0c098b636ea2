//! The report for spreadsheets: one CSV per table (RFC 4180, UTF-8, `\r\n`), in a zip with the
//! signed JSON (`report.json`) they were written from. Entries carry a fixed date and order, so
//! the archive's bytes follow from the report alone.

use std::io::{Cursor, Read as _, Write as _};

use serde_json::Value;
use zip::write::SimpleFileOptions;

use super::figures::Field;
use super::figures::value_text;
use super::signing::SignedReport;
use super::verify::ZIP_REPORT_NAME;
use crate::Error;

struct Table {
    lines: String,
}

impl Table {
    fn new(header: &[&str]) -> Self {
        let mut table = Self {
            lines: String::new(),
        };
        table.row(header.iter().map(|cell| (*cell).to_owned()));
        table
    }

    fn row(&mut self, cells: impl IntoIterator<Item = String>) {
        let cells: Vec<String> = cells.into_iter().map(|cell| quote(&cell)).collect();
        self.lines.push_str(&cells.join(","));
        self.lines.push_str("\r\n");
    }
}

fn quote(cell: &str) -> String {
    if cell.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", cell.replace('"', "\"\""))
    } else {
        cell.to_owned()
    }
}

fn text(value: &impl serde::Serialize) -> String {
    value_text(&serde_json::to_value(value).unwrap_or(Value::Null))
}

fn field_row(table: &mut Table, section: &str, key: &str, field: &Field) {
    table.row([
        section.to_owned(),
        key.to_owned(),
        value_text(&field.value),
        field.unit.to_owned(),
        text(&field.source),
        field.method.clone(),
        field.exact.map(|e| e.value.to_string()).unwrap_or_default(),
        field.exact.map(|e| e.unit.to_owned()).unwrap_or_default(),
        field.reason.clone().unwrap_or_default(),
    ]);
}

/// The tables of `file`, by file name, in archive order.
fn tables(file: &SignedReport) -> Vec<(&'static str, String)> {
    let report = &file.report;
    let mut fields = Table::new(&[
        "section",
        "field",
        "value",
        "unit",
        "source",
        "method",
        "exact",
        "exact_unit",
        "reason",
    ]);
    let general = serde_json::to_value(&report.facility.general).unwrap_or(Value::Null);
    if let Value::Object(map) = general {
        for (key, value) in map {
            if let Ok(field) = serde_json::from_value::<FieldText>(value) {
                fields.row([
                    "general".to_owned(),
                    key,
                    value_text(&field.value),
                    field.unit,
                    field.source,
                    field.method,
                    String::new(),
                    String::new(),
                    field.reason.unwrap_or_default(),
                ]);
            }
        }
    }
    for (section, map) in [
        ("kpis", &report.facility.kpis),
        ("ict_capacity", &report.facility.ict_capacity),
        ("data_traffic", &report.facility.data_traffic),
        ("indicators", &report.facility.indicators),
        ("carbon_instruments", &report.carbon.instruments),
    ] {
        for (key, field) in map {
            field_row(&mut fields, section, key, field);
        }
    }
    let carbon = &report.carbon;
    for (key, field) in [
        ("location_based", &carbon.location_based),
        ("market_based", &carbon.market_based),
        ("embodied", &carbon.embodied),
        ("annual_matching", &carbon.annual_matching),
        ("hourly_matching_cfe", &carbon.hourly_matching_cfe),
    ] {
        field_row(&mut fields, "carbon", key, field);
    }

    let mut months = Table::new(&[
        "month",
        "from",
        "to",
        "facility_kwh",
        "it_kwh",
        "overhead_kwh",
        "jobs_kwh",
        "idle_kwh",
        "unattributed_kwh",
        "water_l",
        "pue",
        "wue_l_per_kwh",
        "co2e_location_kg",
        "co2e_market_kg",
        "co2e_embodied_kg",
        "hourly_matching_cfe",
    ]);
    for month in &report.months {
        months.row([
            month.month.clone(),
            month.from.clone(),
            month.to.clone(),
            month.facility_kwh.to_string(),
            month.it_kwh.to_string(),
            month.overhead_kwh.to_string(),
            month.jobs_kwh.to_string(),
            month.idle_kwh.to_string(),
            month.unattributed_kwh.to_string(),
            month.water_l.to_string(),
            text(&month.pue),
            text(&month.wue_l_per_kwh),
            month.co2e_location_kg.to_string(),
            month.co2e_market_kg.to_string(),
            month.co2e_embodied_kg.to_string(),
            text(&month.hourly_matching_cfe),
        ]);
    }

    let mut jobs = Table::new(&[
        "id",
        "scheduler",
        "name",
        "user",
        "project",
        "kind",
        "model",
        "start",
        "end",
        "gpu_hours",
        "gpu_kwh",
        "cpu_kwh",
        "dram_kwh",
        "host_remainder_kwh",
        "facility_overhead_kwh",
        "energy_kwh",
        "energy_mj",
        "water_l",
        "co2e_location_kg",
        "co2e_market_kg",
        "co2e_embodied_kg",
        "functional_unit",
        "functional_units",
        "sci_g_per_unit",
        "measured_share",
        "interpolated_share",
        "estimated_share",
    ]);
    for job in &report.jobs {
        jobs.row([
            job.id.clone(),
            job.scheduler.clone(),
            job.name.clone(),
            job.user.clone(),
            job.project.clone(),
            job.kind.clone(),
            job.model.clone(),
            job.start.clone(),
            job.end.clone(),
            job.gpu_hours.to_string(),
            job.energy_kwh.gpu.to_string(),
            job.energy_kwh.cpu.to_string(),
            job.energy_kwh.dram.to_string(),
            job.energy_kwh.host_remainder.to_string(),
            job.energy_kwh.facility_overhead.to_string(),
            job.energy_kwh.total.to_string(),
            job.energy_mj.total.to_string(),
            job.water_l.to_string(),
            job.co2e_kg.location_based.to_string(),
            job.co2e_kg.market_based.to_string(),
            job.co2e_kg.embodied.to_string(),
            job.functional_unit.clone(),
            job.functional_units.to_string(),
            text(&job.sci_g_per_unit),
            text(&job.energy_quality.measured),
            text(&job.energy_quality.interpolated),
            text(&job.energy_quality.estimated),
        ]);
    }

    let group_table = |lines: &[super::annex::GroupLine]| {
        let mut table = Table::new(&[
            "key",
            "jobs",
            "gpu_hours",
            "energy_kwh",
            "energy_mj",
            "water_l",
            "co2e_location_kg",
            "co2e_market_kg",
            "co2e_embodied_kg",
        ]);
        for line in lines {
            table.row([
                line.key.clone(),
                line.jobs.to_string(),
                line.gpu_hours.to_string(),
                line.energy_kwh.to_string(),
                line.energy_mj.to_string(),
                line.water_l.to_string(),
                line.co2e_kg.location_based.to_string(),
                line.co2e_kg.market_based.to_string(),
                line.co2e_kg.embodied.to_string(),
            ]);
        }
        table.lines
    };

    let mut conservation = Table::new(&[
        "quantity",
        "unit",
        "site",
        "jobs",
        "idle",
        "unattributed",
        "jobs_in_annex",
        "imbalance",
        "balanced",
    ]);
    for (quantity, line) in &report.conservation {
        conservation.row([
            (*quantity).to_owned(),
            line.unit.to_owned(),
            line.site.to_string(),
            line.jobs.to_string(),
            line.idle.to_string(),
            line.unattributed.to_string(),
            line.jobs_in_annex.to_string(),
            line.imbalance.to_string(),
            line.balanced.to_string(),
        ]);
    }

    let quality = &report.data_quality;
    let mut meters = Table::new(&[
        "host",
        "meter",
        "kind",
        "method",
        "readings",
        "coverage",
        "first_reading",
        "last_reading",
        "gaps",
        "wraps",
        "resets",
    ]);
    let mut gaps = Table::new(&["host", "meter", "from", "to", "hours"]);
    for meter in &quality.meters {
        meters.row([
            meter.host.clone(),
            meter.meter.clone(),
            meter.kind.clone(),
            meter.method.clone(),
            meter.readings.to_string(),
            text(&meter.coverage),
            meter.first_reading.clone().unwrap_or_default(),
            meter.last_reading.clone().unwrap_or_default(),
            meter.gaps.to_string(),
            meter.wraps.to_string(),
            meter.resets.to_string(),
        ]);
        for gap in &meter.gaps_listed {
            gaps.row([
                meter.host.clone(),
                meter.meter.clone(),
                gap.from.clone(),
                gap.to.clone(),
                gap.hours.to_string(),
            ]);
        }
    }
    let mut rejected = Table::new(&["field", "reason", "readings"]);
    for line in &quality.rejected {
        rejected.row([
            line.field.clone(),
            line.reason.clone(),
            line.readings.to_string(),
        ]);
    }
    let mut hours = Table::new(&["hour", "state", "revisions", "reason"]);
    for (state, lines) in [
        ("revised", &quality.revised_hours),
        ("reopened", &quality.reopened_hours),
    ] {
        for line in lines {
            hours.row([
                line.hour.clone(),
                state.to_owned(),
                line.revisions.to_string(),
                line.reason.clone(),
            ]);
        }
    }
    let mut sci = Table::new(&[
        "model",
        "functional_unit",
        "jobs",
        "functional_units",
        "sci_g_per_unit",
        "energy_wh_per_unit",
    ]);
    for line in &report.carbon.sci {
        sci.row([
            line.model.clone(),
            line.functional_unit.clone(),
            line.jobs.to_string(),
            line.functional_units.to_string(),
            text(&line.sci_g_per_unit),
            text(&line.energy_wh_per_unit),
        ]);
    }
    let mut factors = Table::new(&["name", "version", "sha256", "source"]);
    for table in &report.carbon.factor_tables {
        factors.row([
            table.name.clone(),
            table.version.clone(),
            table.sha256.clone(),
            table.source.clone(),
        ]);
    }
    for feed in &report.carbon.intensity_feeds {
        factors.row([
            format!("grid intensity feed {}", feed.file),
            format!("{}, hour-{}", feed.layout, feed.hour_convention),
            feed.sha256.clone(),
            "imported feed".to_owned(),
        ]);
    }
    vec![
        ("fields.csv", fields.lines),
        ("sci.csv", sci.lines),
        ("factor_tables.csv", factors.lines),
        ("months.csv", months.lines),
        ("jobs.csv", jobs.lines),
        ("totals_by_model.csv", group_table(&report.totals.by_model)),
        (
            "totals_by_project.csv",
            group_table(&report.totals.by_project),
        ),
        ("totals_by_user.csv", group_table(&report.totals.by_user)),
        ("conservation.csv", conservation.lines),
        ("meters.csv", meters.lines),
        ("gaps.csv", gaps.lines),
        ("rejected.csv", rejected.lines),
        ("revised_hours.csv", hours.lines),
    ]
}

/// A [`Field`] read back from JSON with its source as text.
#[derive(serde::Deserialize)]
struct FieldText {
    value: Value,
    unit: String,
    source: String,
    method: String,
    reason: Option<String>,
}

/// The zip of `file`'s tables and its signed JSON.
///
/// # Errors
/// The archive could not be written (it is written in memory).
pub fn render(file: &SignedReport) -> Result<Vec<u8>, Error> {
    let options = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .last_modified_time(zip::DateTime::default())
        .unix_permissions(0o644);
    let mut archive = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let zip_error = |error: zip::result::ZipError| Error::Report(format!("CSV archive: {error}"));
    let mut entries = tables(file);
    entries.push((ZIP_REPORT_NAME, file.json.clone()));
    for (name, content) in entries {
        archive.start_file(name, options).map_err(zip_error)?;
        archive
            .write_all(content.as_bytes())
            .map_err(|error| Error::Report(format!("CSV archive: {error}")))?;
    }
    Ok(archive.finish().map_err(zip_error)?.into_inner())
}

/// The signed JSON inside a CSV archive.
///
/// # Errors
/// Not a zip, or no `report.json` in it.
pub fn report_json_of(bytes: &[u8]) -> Result<String, String> {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|error| format!("not a report archive: {error}"))?;
    let mut entry = archive
        .by_name(ZIP_REPORT_NAME)
        .map_err(|error| format!("{ZIP_REPORT_NAME}: {error}"))?;
    let mut json = String::new();
    entry
        .read_to_string(&mut json)
        .map_err(|error| format!("{ZIP_REPORT_NAME}: {error}"))?;
    Ok(json)
}

/// The names of the archive's tables, for the documentation and tests.
pub fn table_names(file: &SignedReport) -> Vec<&'static str> {
    tables(file).into_iter().map(|(name, _)| name).collect()
}
